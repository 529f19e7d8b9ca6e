"""The catalog: the listings with an approved version, as a tenant browses them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.marketplace.models import PluginInstallation, PluginListing, PluginVersion
from services.marketplace.schemas import ListingOut, VersionOut
from services.marketplace.versions import (
    _latest_available,
    _settings_schema,
    _versions,
    manifest_scopes,
    version_available,
    version_key,
)
from services.outputs import struct_from
from tenants.errors import NotFound
from tenants.principal import Principal


def _version_out(row: PluginVersion) -> VersionOut:
    return struct_from(
        VersionOut,
        row,
        api_range=str(row.manifest.get("api_range", "")),
        scopes=manifest_scopes(row.manifest),
        available=version_available(row),
    )


def _listing_out(listing: PluginListing, versions: list[PluginVersion], installed: str | None) -> ListingOut:
    approved = [v for v in versions if v.status == "approved"]
    latest = _latest_available(approved) or approved[0]
    document = latest.manifest
    return ListingOut(
        name=listing.name,
        publisher=listing.publisher,
        category=listing.category,
        summary=dict(document.get("summary") or {}),
        pricing=str(document.get("pricing", "free")),
        kind=latest.kind,
        latest_version=latest.version,
        scopes=manifest_scopes(document),
        settings_schema=_settings_schema(document),
        actions=list(document.get("actions") or []),
        triggers=list(document.get("triggers") or []),
        versions=[_version_out(v) for v in approved],
        installed_version=installed,
    )


async def list_catalog(
    db: AsyncSession, principal: Principal, *, category: str | None = None, query: str | None = None
) -> list[ListingOut]:
    """Listings with at least one approved version, for the tenant browsing them."""
    principal.require_tenant()
    installed = {i.plugin: i.version for i in await db.scalars(select(PluginInstallation))}
    rows = await db.scalars(select(PluginVersion).where(PluginVersion.status == "approved"))
    by_plugin: dict[str, list[PluginVersion]] = {}
    for row in rows:
        by_plugin.setdefault(row.plugin, []).append(row)
    listings = await db.scalars(select(PluginListing).where(PluginListing.name.in_(list(by_plugin))))
    found: list[ListingOut] = []
    needle = (query or "").strip().lower()
    for listing in listings:
        if category and listing.category != category:
            continue
        versions = sorted(by_plugin[listing.name], key=lambda r: version_key(r.version), reverse=True)
        out = _listing_out(listing, versions, installed.get(listing.name))
        text = " ".join((out.name, out.publisher, *out.summary.values())).lower()
        if needle and needle not in text:
            continue
        found.append(out)
    return sorted(found, key=lambda o: o.name)


async def get_listing(db: AsyncSession, principal: Principal, name: str) -> ListingOut:
    principal.require_tenant()
    listing = await db.get(PluginListing, name)
    versions = [v for v in await _versions(db, name) if v.status == "approved"] if listing else []
    if listing is None or not versions:
        raise NotFound("No plugin '{name}' in the marketplace.", code="plugin_not_found", name=name)
    installation = await db.get(PluginInstallation, (principal.require_tenant(), name))
    return _listing_out(listing, versions, installation.version if installation else None)
