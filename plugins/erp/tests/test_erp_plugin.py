"""The plugin as the host loads it: its manifest, settings schema and health check."""

from __future__ import annotations

from erp_odoo_fake import FakeOdoo
from erp_testing import CONFIG, ENTITIES, CheckedHarness, erp_context, odoo_context
from guiju_sdk import manifest_from_plugin, manifest_problems, registry
from jsonschema import Draft202012Validator


def test_the_manifest_is_valid_and_asks_for_what_is_used(harness: CheckedHarness) -> None:
    info = harness.info()
    assert (info.name, info.version, info.publisher, info.category) == ("erp", "1.0.0", "Guiju", "erp")
    assert set(info.scopes) == {"records:read", "records:write", "files:write", "events:emit", "http:*"}
    manifest = manifest_from_plugin(info, harness.registrations)
    assert manifest_problems(manifest) == []
    assert sorted(harness.registrations.actions) == [
        "export_accounting",
        "generate_invoices",
        "odoo_push_invoices",
        "odoo_push_sale_order",
        "odoo_sync_payments",
        "odoo_upsert_partners",
        "reconcile",
    ]
    overdue = harness.registrations.triggers["invoice_overdue"]
    assert overdue.poll is not None and overdue.poll_seconds == 3600
    assert harness.registrations.triggers["invoice_created"].poll is None  # fired by generate_invoices


def test_the_settings_schema_accepts_the_documented_configuration(harness: CheckedHarness) -> None:
    schema = harness.registrations.settings_schema
    assert schema is not None
    assert registry.secret_fields(schema) == {"odoo_api_key"}
    validator = Draft202012Validator(schema)
    full = {
        **CONFIG,
        "invoices_collection": "invoices",
        "payments_collection": "payments",
        "accounts": {"revenue": {"code": "600101", "name": "主营业务收入-出口"}},
        "odoo_url": "https://acme.odoo.com",
        "odoo_database": "acme-prod",
        "odoo_username": "finance@acme.example",
        "odoo_timeout_seconds": 20,
    }
    assert list(validator.iter_errors(full)) == []
    wrong = {"entities": [dict(ENTITIES[0], currency="dollars", tax_rate=13)]}
    assert {tuple(e.absolute_path) for e in validator.iter_errors(wrong)} == {
        ("entities", 0, "currency"),
        ("entities", 0, "tax_rate"),
    }
    for name, prop in schema["properties"].items():
        assert prop.get("title"), f"{name} has no title"


async def test_health_without_odoo(harness: CheckedHarness) -> None:
    health = await harness.health(erp_context())
    assert health.ok is True
    assert health.message == "Entities HK, SZ configured"


async def test_health_reports_the_settings_to_fix(harness: CheckedHarness) -> None:
    health = await harness.health(erp_context({"entities": []}))
    assert health.ok is False
    assert "add at least one entity" in health.message

    partial = await harness.health(erp_context({**CONFIG, "odoo_url": "https://acme.odoo.com"}))
    assert partial.ok is False
    assert "odoo_database is not set" in partial.message


async def test_health_checks_the_odoo_login(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    healthy = await harness.health(odoo_context(odoo))
    assert healthy.ok is True
    assert f"Odoo at {odoo.url} accepts finance@acme.example" in healthy.message

    refused = await harness.health(odoo_context(odoo, api_key="wrong"))
    assert refused.ok is False
    assert "refused the login" in refused.message

    odoo.mode = "502"
    down = await harness.health(odoo_context(odoo))
    assert down.ok is False
    assert "HTTP 502" in down.message
