"""The built-in plugins are built as a partner builds one: each passes ``guiju plugin check`` (its
manifest, API range, hooks, no import of the host, its own tests), and each is deployed, listed in
the marketplace, installable, configurable and removable by a workspace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.automation.actions import PermanentActionError
from services.marketplace import checks
from services.marketplace import service as marketplace
from tests.conftest import World
from tests.integration.test_automation_actions import _run
from tests.plugin_support import deployed, plugin_module

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = {"messaging": "messaging", "erp": "erp", "customs": "customs"}  # name -> category


@pytest.mark.parametrize("name", sorted(BUILT_IN))
async def test_each_built_in_plugin_passes_the_partners_checks(name: str) -> None:
    report = await asyncio.to_thread(checks.run_checks, ROOT / "plugins" / name)
    failed = {c.name: c.details for c in report.checks if not c.ok}
    assert failed == {}
    assert [c.name for c in report.checks] == list(checks.CHECK_NAMES)
    assert report.manifest is not None and report.manifest["name"] == name


@pytest.mark.parametrize("name", sorted(BUILT_IN))
async def test_each_built_in_plugin_is_listed_installed_and_removed(world: World, name: str) -> None:
    # An earlier deployment's plugin of the same name, from another publisher: the listing follows
    # the code deployed now.
    with deployed(plugin_module(name)):
        await marketplace.list_deployed_plugins()
    marketplace.activate(*marketplace.load_plugins(world.settings))
    assert name in marketplace.installed_plugin_names()
    await marketplace.list_deployed_plugins()
    api, _ = await world.signup()
    listing = (await api.get(f"/api/v1/marketplace/plugins/{name}")).json()
    assert (listing["category"], listing["publisher"]) == (BUILT_IN[name], "Guiju")
    assert listing["summary"]["zh-CN"] and listing["summary"]["en"]
    assert listing["actions"], "a built-in plugin offers actions to automations"
    assert all(a["labels"]["zh-CN"] and a["labels"]["en"] for a in listing["actions"])
    schema = listing["settings_schema"]
    assert schema["type"] == "object" and schema["properties"]

    # Consent is asked for every scope, each one listed when missing.
    refused = await api.post(f"/api/v1/plugins/{name}/install", {"scopes": []})
    assert refused.status_code == 422
    assert len(refused.json()["errors"]) >= len(listing["scopes"]) > 0
    assert (await api.get(f"/api/v1/plugins/{name}")).status_code == 404  # nothing half-installed

    installed = await api.post(f"/api/v1/plugins/{name}/install", {"scopes": listing["scopes"]})
    assert installed.status_code == 201, installed.text
    preview = await api.get(f"/api/v1/plugins/{name}/uninstall")
    assert preview.status_code == 200, preview.text
    removed = await api.delete(f"/api/v1/plugins/{name}?confirm={name}")
    assert removed.status_code in (200, 204), removed.text
    assert (await api.get(f"/api/v1/plugins/{name}")).status_code == 404


# ---------------------------------------------------------------- ERP through the host

ENTITIES = [
    {"code": "HK", "name": "Acme Trading (HK) Limited", "currency": "USD", "tax_rate": 0},
    {"code": "SZ", "name": "深圳市艾克美贸易有限公司", "currency": "CNY", "tax_rate": 0.13},
]
INVOICE_FIELDS: list[dict[str, Any]] = [
    {"key": "source_key", "label": "Source", "type": "text", "required": True, "unique": True},
    {"key": "number", "label": "Number", "type": "text", "unique": True},
    {"key": "kind", "label": "Kind", "type": "select", "options": ["receivable", "payable"]},
    *(
        {"key": key, "label": key, "type": "text"}
        for key in ("entity", "entity_name", "counterparty", "counterparty_ref", "order_id", "order_number", "currency")
    ),
    {
        "key": "lines",
        "label": "Lines",
        "type": "line_items",
        "fields": [
            *({"key": key, "label": key, "type": "text"} for key in ("line_id", "description", "sku")),
            *(
                {"key": key, "label": key, "type": "number"}
                for key in ("quantity", "unit_price", "amount", "tax_rate", "tax")
            ),
        ],
    },
    *({"key": key, "label": key, "type": "number"} for key in ("subtotal", "tax", "total", "paid_amount", "odoo_id")),
    {"key": "issue_date", "label": "Issued", "type": "date"},
    {"key": "due_date", "label": "Due", "type": "date"},
    {"key": "overdue_reported", "label": "Overdue reported", "type": "date"},
    {
        "key": "status",
        "label": "Status",
        "type": "select",
        "options": ["unpaid", "partial", "paid", "overpaid", "cancelled"],
    },
    {"key": "odoo_number", "label": "Odoo number", "type": "text"},
]
ORDER = {
    "id": "so-1001",
    "number": "SO-1001",
    "customer": {"name": "Globex GmbH", "ref": "C-GLOBEX"},
    "entity": "HK",
    "currency": "USD",
    "date": "2026-03-10",
    "lines": [
        {
            "line_id": "L1",
            "description": "Widget",
            "quantity": 100,
            "unit_price": 12.5,
            "supplier": "东莞小部件厂",
            "unit_cost": 61.5,
            "cost_currency": "CNY",
            "purchasing_entity": "SZ",
        },
        {"line_id": "L2", "description": "Gift box", "quantity": 50, "unit_price": 0.5},
    ],
}


async def _erp_workspace(world: World) -> tuple[Any, str]:
    await marketplace.list_deployed_plugins()
    api, body = await world.signup()
    for key, fields in (
        ("invoices", INVOICE_FIELDS),
        (
            "payments",
            [
                {"key": "invoice_number", "label": "Invoice", "type": "text", "required": True},
                {"key": "amount", "label": "Amount", "type": "number", "required": True},
                {"key": "currency", "label": "Currency", "type": "text"},
                {"key": "date", "label": "Date", "type": "date"},
                {"key": "reference", "label": "Reference", "type": "text"},
            ],
        ),
    ):
        made = await api.post("/api/v1/collections", {"key": key, "name": key.title(), "fields": fields})
        assert made.status_code == 201, made.text
    scopes = (await api.get("/api/v1/marketplace/plugins/erp")).json()["scopes"]
    installed = await api.post(
        "/api/v1/plugins/erp/install",
        {"scopes": scopes, "collections": ["invoices", "payments"], "config": {"entities": ENTITIES}},
    )
    assert installed.status_code == 201, installed.text
    return api, str(body["tenant"]["id"])


async def _invoices(api: Any) -> list[dict[str, Any]]:
    collections = {c["key"]: c["id"] for c in (await api.get("/api/v1/collections")).json()}
    found = await api.get(f"/api/v1/collections/{collections['invoices']}/records?limit=100")
    return sorted((r["values"] for r in found.json()["items"]), key=lambda v: str(v["number"]))


async def test_erp_invoices_an_order_once_numbered_per_entity_and_workspace(world: World) -> None:
    api, tenant_id = await _erp_workspace(world)
    generate = {"plugin": "erp", "action": "generate_invoices", "input": {"order": ORDER}}
    first = await _run(tenant_id, "plugin", generate)
    again = await _run(tenant_id, "plugin", generate)  # a retry, a second run: nothing new
    assert len(first["invoices"]) == 2
    assert all(i["created"] is False for i in again["invoices"])
    invoices = await _invoices(api)
    assert [(v["number"], v["kind"], v["entity"], v["total"]) for v in invoices] == [
        ("HK-INV-2026-00001", "receivable", "HK", 1275.0),
        ("SZ-AP-2026-00001", "payable", "SZ", 6949.5),
    ]
    # Another workspace's sequences are its own.
    api_b, tenant_b = await _erp_workspace(world)
    await _run(tenant_b, "plugin", generate)
    assert [v["number"] for v in await _invoices(api_b)] == ["HK-INV-2026-00001", "SZ-AP-2026-00001"]

    if world.backend.name == "postgres":
        # Two runs at once for a new order: the unique source key lets one write each invoice.
        racing = {**generate, "input": {"order": {**ORDER, "id": "so-1002", "number": "SO-1002"}}}
        await asyncio.gather(*(_run(tenant_id, "plugin", racing) for _ in range(3)))
        numbers = [v["number"] for v in await _invoices(api)]
        assert numbers == ["HK-INV-2026-00001", "HK-INV-2026-00002", "SZ-AP-2026-00001", "SZ-AP-2026-00002"]


async def test_erp_refuses_a_bad_order_listing_every_problem_and_writes_nothing(world: World) -> None:
    api, tenant_id = await _erp_workspace(world)
    bad = {**ORDER, "entity": "XX", "lines": [{**ORDER["lines"][0], "quantity": -1}, ORDER["lines"][1]]}
    with pytest.raises(PermanentActionError) as failed:
        await _run(tenant_id, "plugin", {"plugin": "erp", "action": "generate_invoices", "input": {"order": bad}})
    assert "XX" in str(failed.value) and "quantity" in str(failed.value)
    assert await _invoices(api) == []
