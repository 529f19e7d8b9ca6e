"""Lists never show another tenant's rows: every GET route without a path parameter, called by
tenant B after tenant A has rows in every table, names none of A's rows.

The routes come from the app's route table, so a new list joins this check by existing. A route
this check cannot call (it needs a query parameter, or answers a 4xx to a workspace's owner) fails
the test unless ``NOT_CALLABLE`` says why; even then its answer must be one its operation documents.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import ColumnProperty

from services.db import open_session
from tests.conftest import World
from tests.isolation import SeededTenant, seed_tenant, tenant_scoped_models

API_PREFIX = "/api/v1/"

# Lists a workspace's owner cannot read, and why; each still answers with a documented status.
NOT_CALLABLE: dict[str, str] = {
    "/api/v1/admin/plugin-versions": (
        "platform admins only (404 to anyone else); what it lists, every publisher's submissions, is "
        "platform-wide by design"
    ),
    "/api/v1/publisher/plugins": (
        "publishers only (403 to other workspaces); test_global_tables.py shows a publisher sees its own "
        "submissions alone"
    ),
}

# Lists of the catalog every tenant shares: a plugin a tenant installed is listed there for all
# (its name is public), so installed plugins' names are not private to these lists.
CATALOG_LISTS = {"/api/v1/marketplace/plugins", "/api/v1/gallery/packs", "/api/v1/gallery/schema"}


def list_routes(world: World) -> list[str]:
    """Every GET route of the API without a path parameter."""
    return sorted(
        route.path
        for route in world.app.routes
        if route.path.startswith(API_PREFIX) and "{" not in route.path and "GET" in getattr(route, "methods", ())
    )


def _holds_uuids(column_property: ColumnProperty[Any]) -> bool:
    try:
        return column_property.columns[0].type.python_type is uuid.UUID
    except NotImplementedError:
        return False


async def private_markers(tenant: SeededTenant) -> tuple[dict[str, str], dict[str, str]]:
    """What names ``tenant``'s own rows, as text an answer could hold (marker → where it comes from):
    every UUID held by any of its rows (both spellings), its addresses and workspace names; and,
    apart, the names of the plugins it installed (public in the catalog)."""
    markers: dict[str, str] = {
        tenant.body["tenant"]["name"]: "tenants.name",
        tenant.body["tenant"]["slug"]: "tenants.slug",
        tenant.body["user"]["email"]: "users.email",
    }
    installed: dict[str, str] = {}
    async with open_session(uuid.UUID(tenant.tenant_id)) as db:
        for model in tenant_scoped_models():
            properties = [p for p in sa_inspect(model).column_attrs if _holds_uuids(p) or p.key == "email"]
            for row in (await db.scalars(select(model))).all():
                for prop in properties:
                    value = getattr(row, prop.key)
                    where = f"{model.__tablename__}.{prop.key}"
                    if isinstance(value, uuid.UUID):
                        markers[str(value)] = markers[value.hex] = where
                    elif value:
                        markers[str(value)] = where
                if model.__tablename__ == "plugin_installations":
                    installed[row.plugin] = "plugin_installations.plugin"
    return markers, installed


def found(text: str, markers: dict[str, str]) -> list[str]:
    return sorted(f"{marker} ({where})" for marker, where in markers.items() if marker in text)


async def test_no_list_shows_another_tenants_rows(world: World) -> None:
    a = await seed_tenant(world, company_name="Ningbo Porcelain Works", display_name="Zhao Min")
    b = await seed_tenant(world)
    a_markers, a_plugins = await private_markers(a)
    b_markers, b_plugins = await private_markers(b)
    # Both tenants are seeded alike: the only words they share are the seed's, never a marker.
    assert not set(a_markers) & set(b_markers)
    document = world.app.openapi_schema.to_schema()

    routes = list_routes(world)
    assert len(routes) >= 20, routes
    uncalled, leaks, empty = [], [], []
    for path in routes:
        a_private = a_markers if path in CATALOG_LISTS else {**a_markers, **a_plugins}
        b_private = b_markers if path in CATALOG_LISTS else {**b_markers, **b_plugins}
        answer = await b.api.get(path)
        if leaked := found(answer.text, a_private):
            leaks.append(f"{path} ({answer.status_code}) shows {leaked}")
        if 200 <= answer.status_code < 300:
            # The list is not empty by accident: where A sees its own rows, B sees its own.
            own = await a.api.get(path)
            assert own.status_code == answer.status_code, (path, own.text)
            if found(own.text, a_private) and not found(answer.text, b_private):
                empty.append(path)
            continue
        documented = document["paths"][path]["get"]["responses"]
        assert str(answer.status_code) in documented, f"{path} answered an undocumented {answer.status_code}"
        if path not in NOT_CALLABLE:
            uncalled.append(f"{path} answered {answer.status_code}: {answer.text[:200]}")
    assert not leaks, "tenant B's lists show tenant A's rows:\n" + "\n".join(leaks)
    assert not uncalled, (
        "these lists could not be read by a workspace's owner: make them callable here or say why in "
        "NOT_CALLABLE:\n" + "\n".join(uncalled)
    )
    assert not empty, f"B sees none of its own rows in {empty}, where A sees its own"
    assert set(NOT_CALLABLE) <= set(routes), (
        f"NOT_CALLABLE names routes that are gone: {set(NOT_CALLABLE) - set(routes)}"
    )
