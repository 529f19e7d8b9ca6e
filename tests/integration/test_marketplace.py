"""The marketplace for a tenant: install with consent, configure with encrypted secrets, only
installed plugins exist for automations, the plugin's context keeps to its grant, the circuit
breaker, upgrade / pin / rollback, and uninstall."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from guiju_sdk import ActionCall, ActionFailed, Health
from sqlalchemy import select, text

from services.automation.actions import PermanentActionError, RetryableActionError
from services.db import open_session
from services.marketplace import actors, host
from services.marketplace import service as marketplace
from services.marketplace.models import PluginInstallation
from services.scheduler import service as scheduler
from tests.conftest import World
from tests.integration.test_automation_actions import _ctx, _run
from tests.integration.test_automations import run_automations
from tests.plugin_support import (
    SETTINGS_SCHEMA,
    RemotePluginServer,
    answer,
    deployed,
    list_remote_version,
    plugin_module,
    remote_action,
    run_plugin_hooks,
)

GOOD_CONFIG = {"base_url": "https://erp.example.com", "company": "Acme", "api_key": "s3cret-key-1"}
SCOPES = ["records:read", "records:write", "events:emit"]


async def _orders(api: Any) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": "Orders",
            "fields": [
                {"key": "code", "label": "Code", "type": "text"},
                {"key": "status", "label": "Status", "type": "text"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _installation(tenant_id: str, plugin: str) -> PluginInstallation | None:
    async with open_session(uuid.UUID(tenant_id)) as db:
        return await db.scalar(select(PluginInstallation).where(PluginInstallation.plugin == plugin))


@pytest.fixture
async def erp(world: World) -> Any:
    """An in-process plugin ``erp`` with actions that use its context, deployed and listed."""
    calls: list[ActionCall] = []

    async def sync_order(call: ActionCall) -> dict[str, Any]:
        calls.append(call)
        assert call.context is not None
        mode = call.input.get("mode")
        if mode == "boom":
            raise RuntimeError("the ERP client crashed")
        if mode == "busy":
            raise ActionFailed("ERP busy", retryable=True, retry_after=2)
        if mode == "peek":
            await call.context.read_records(str(call.input["collection"]))
        found = await call.context.read_records("orders", where={"code": call.input["code"]})
        written = await call.context.write_record(
            "orders", {"status": "synced"}, record_id=found[0]["id"] if found else None
        )
        await call.context.emit_event("order_synced", {"code": call.input["code"]})
        return {"record_id": written["id"], "key": call.context.secret("api_key"), "seen": len(found)}

    module = plugin_module(
        "erp",
        "1.0.0",
        actions={"sync_order": sync_order},
        scopes=tuple(SCOPES),
        settings_schema=SETTINGS_SCHEMA,
        triggers=("order_synced",),
    )
    with deployed(module):
        await marketplace.list_deployed_plugins()
        yield calls


async def test_install_needs_consent_valid_settings_and_existing_collections(world: World, erp: Any) -> None:
    api, body = await world.signup()
    await _orders(api)
    catalog = {p["name"]: p for p in (await api.get("/api/v1/marketplace/plugins")).json()}
    erp_listing = catalog["erp"]  # (other tests' plugins are listed too: the catalog is the platform's)
    assert erp_listing["scopes"] == SCOPES and erp_listing["installed_version"] is None
    assert erp_listing["settings_schema"]["properties"]["api_key"]["writeOnly"] is True
    assert erp_listing["versions"][0]["available"] is True

    refused = await api.post(
        "/api/v1/plugins/erp/install",
        {
            "scopes": ["records:read", "files:write"],
            "collections": ["orders", "invoices"],
            "config": {"base_url": "ftp", "api_key": "xyzzy", "colour": "red"},
        },
    )
    assert refused.status_code == 422, refused.text
    problems = {(p["pointer"], p["code"]) for p in refused.json()["errors"]}
    assert ("/scopes", "scope_not_consented") in problems  # records:write and events:emit
    assert ("/scopes/1", "unknown_scope") in problems
    assert ("/collections/1", "unknown_collection") in problems
    assert ("/config/base_url", "invalid_minLength") in problems
    assert ("/config/api_key", "invalid_minLength") in problems
    assert ("/config", "invalid_additionalProperties") in problems
    assert "xyzzy" not in refused.text  # a secret's value never appears in an error
    assert await _installation(body["tenant"]["id"], "erp") is None  # nothing half-installed

    installed = await api.post(
        "/api/v1/plugins/erp/install", {"scopes": SCOPES, "collections": ["orders"], "config": GOOD_CONFIG}
    )
    assert installed.status_code == 201, installed.text
    out = installed.json()
    assert out["config"] == {"base_url": "https://erp.example.com", "company": "Acme"}
    assert out["secrets"] == {"api_key": "********"}
    assert "s3cret" not in installed.text
    again = await api.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})
    assert again.status_code == 409 and again.json()["code"] == "plugin_already_installed"

    row = await _installation(body["tenant"]["id"], "erp")
    assert row is not None and row.secrets["api_key"].startswith("v1.k0.")
    assert "s3cret" not in str(row.secrets) and "s3cret" not in str(row.config)
    listed = (await api.get("/api/v1/plugins")).json()
    assert [i["plugin"] for i in listed] == ["erp"] and "s3cret" not in str(listed)


async def test_configure_keeps_masked_secrets_and_rolls_back_invalid_settings(world: World, erp: Any) -> None:
    api, body = await world.signup()
    await _orders(api)
    assert (await api.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})).status_code == 201
    before = await _installation(body["tenant"]["id"], "erp")
    assert before is not None

    bad = await api.request(
        "PUT", "/api/v1/plugins/erp/config", json={"values": {"base_url": None, "api_key": "tiny", "company": 3}}
    )
    assert bad.status_code == 422, bad.text
    assert {p["pointer"] for p in bad.json()["errors"]} == {"/values/base_url", "/values/api_key", "/values/company"}
    unchanged = await _installation(body["tenant"]["id"], "erp")
    assert unchanged is not None and unchanged.config == before.config and unchanged.secrets == before.secrets

    kept = await api.request(
        "PUT", "/api/v1/plugins/erp/config", json={"values": {"company": "Acme Trading", "api_key": "********"}}
    )
    assert kept.status_code == 200, kept.text
    after = await _installation(body["tenant"]["id"], "erp")
    assert after is not None and after.secrets == before.secrets and after.config["company"] == "Acme Trading"

    # A stored secret is validated by its value, not by its mask (the schema asks for 8 characters or more).
    as_number = await api.request("PUT", "/api/v1/plugins/erp/config", json={"values": {"api_key": 123456789}})
    assert as_number.status_code == 422 and as_number.json()["errors"][0]["pointer"] == "/values/api_key"
    assert "123456789" not in as_number.text
    rotated = await api.request("PUT", "/api/v1/plugins/erp/config", json={"values": {"api_key": "new-key-2222"}})
    assert rotated.status_code == 200 and rotated.json()["secrets"] == {"api_key": "********"}
    final = await _installation(body["tenant"]["id"], "erp")
    assert final is not None and final.secrets["api_key"] != before.secrets["api_key"]
    ctx = host.HostContext(None, final, frozenset(SCOPES))  # type: ignore[arg-type]
    assert ctx.secret("api_key") == "new-key-2222"


async def test_secrets_are_bound_to_their_tenant_and_survive_key_rotation(world: World, erp: Any) -> None:
    api_a, a = await world.signup()
    api_b, b = await world.signup()
    for api in (api_a, api_b):
        response = await api.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})
        assert response.status_code == 201, response.text
    row_a = await _installation(a["tenant"]["id"], "erp")
    row_b = await _installation(b["tenant"]["id"], "erp")
    assert row_a is not None and row_b is not None
    moved = PluginInstallation(
        tenant_id=row_b.tenant_id, plugin="erp", version="1.0.0", secrets=dict(row_a.secrets), config={}
    )
    with pytest.raises(Exception, match="does not decrypt"):
        host.HostContext(None, moved, frozenset()).secret("api_key")  # type: ignore[arg-type]

    # Rotation: a new key in front, the old one kept; rotate-secrets re-encrypts under the new one.
    import base64
    import dataclasses

    new_key = "k1:" + base64.b64encode(b"\x01" * 32).decode()
    old_ring = marketplace.keyring()
    old_key = "k0:" + base64.b64encode(old_ring.keys[0][1]).decode()
    marketplace.configure(dataclasses.replace(world.settings, secrets_keys=(new_key, old_key)))
    try:
        assert await marketplace.rotate_secrets() >= 2
        rotated = await _installation(a["tenant"]["id"], "erp")
        assert rotated is not None and rotated.secrets["api_key"].startswith("v1.k1.")
        assert host.HostContext(None, rotated, frozenset()).secret("api_key") == "s3cret-key-1"  # type: ignore[arg-type]
    finally:
        marketplace.configure(world.settings)


async def test_only_installed_enabled_plugins_exist_for_a_tenants_automations(world: World, erp: Any) -> None:
    api_a, a = await world.signup()
    api_b, _b = await world.signup()
    for api in (api_a, api_b):
        await _orders(api)
    assert (
        await api_a.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})
    ).status_code == 201
    automation = {
        "name": "Sync",
        "trigger": {"type": "schedule", "cron": "0 9 * * *"},
        "actions": [{"kind": "plugin", "plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}}],
    }
    saved = await api_a.post("/api/v1/automations", automation)
    assert saved.status_code == 201, saved.text
    refused = await api_b.post("/api/v1/automations", automation)
    assert refused.status_code == 422
    assert {p["code"] for p in refused.json()["errors"]} == {"plugin_not_installed"}

    # B cannot run A's plugin either, even by naming it.
    with pytest.raises(PermanentActionError, match="not installed in this workspace"):
        await _run(_b["tenant"]["id"], "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "X"}})

    disabled = await api_a.post("/api/v1/plugins/erp/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    again = await api_a.post("/api/v1/automations", automation)
    assert again.status_code == 422 and again.json()["errors"][0]["code"] == "plugin_not_installed"
    with pytest.raises(PermanentActionError, match="disabled"):
        await _run(a["tenant"]["id"], "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "X"}})


async def test_the_plugin_context_keeps_to_the_grant(world: World, erp: list[ActionCall]) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    orders = await _orders(api)
    secret_collection = await api.post(
        "/api/v1/collections",
        {"key": "salaries", "name": "Salaries", "fields": [{"key": "amount", "label": "Amount", "type": "number"}]},
    )
    assert secret_collection.status_code == 201
    record = await api.post(f"/api/v1/collections/{orders['id']}/records", {"values": {"code": "A-1"}})
    assert record.status_code == 201
    installed = await api.post(
        "/api/v1/plugins/erp/install", {"scopes": SCOPES, "collections": ["orders"], "config": GOOD_CONFIG}
    )
    assert installed.status_code == 201, installed.text

    ctx = _ctx(tenant_id, {"id": "e1", "type": "t"})
    output = await _run(tenant_id, "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}}, ctx)
    assert output == {"record_id": record.json()["id"], "key": "s3cret-key-1", "seen": 1}
    assert erp[0].idempotency_key == ctx.idempotency_key
    assert erp[0].context is not None and erp[0].context.idempotency_key == ctx.idempotency_key
    updated = await api.get(f"/api/v1/collections/{orders['id']}/records/{record.json()['id']}")
    assert updated.json()["values"]["status"] == "synced"

    # A collection the admin did not grant, and another tenant's same-named collection: refused.
    with pytest.raises(PermanentActionError, match="not granted"):
        await _run(
            tenant_id,
            "plugin",
            {
                "plugin": "erp",
                "action": "sync_order",
                "input": {"code": "A-1", "mode": "peek", "collection": "salaries"},
            },
        )
    api_b, b = await world.signup()
    orders_b = await _orders(api_b)
    await api_b.post(f"/api/v1/collections/{orders_b['id']}/records", {"values": {"code": "A-1", "status": "B's"}})
    assert (
        await api_b.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "collections": [], "config": GOOD_CONFIG})
    ).status_code == 201
    with pytest.raises(PermanentActionError, match="not granted"):
        await _run(b["tenant"]["id"], "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}})
    b_records = (await api_b.get(f"/api/v1/collections/{orders_b['id']}/records")).json()["items"]
    assert [r["values"]["status"] for r in b_records] == ["B's"]


async def test_http_only_to_declared_hosts_and_public_addresses(world: World) -> None:
    api, body = await world.signup()

    async def fetch(call: ActionCall) -> dict[str, Any]:
        assert call.context is not None
        response = await call.context.http("GET", str(call.input["url"]), timeout_seconds=999)
        return {"status": response.status}

    with deployed(plugin_module("fetcher", actions={"fetch": fetch}, scopes=("http:api.partner.example",))):
        await marketplace.list_deployed_plugins()
        assert (
            await api.post("/api/v1/plugins/fetcher/install", {"scopes": ["http:api.partner.example"]})
        ).status_code == 201
        for url, reason in (
            ("https://elsewhere.example/x", "http:\\*"),
            ("http://api.partner.example/x", "only call https"),
        ):
            with pytest.raises(PermanentActionError, match=reason):
                await _run(
                    body["tenant"]["id"], "plugin", {"plugin": "fetcher", "action": "fetch", "input": {"url": url}}
                )
    with deployed(plugin_module("fetcher", actions={"fetch": fetch}, scopes=("http:*",))):
        await marketplace.list_deployed_plugins()  # the same version, redeployed asking for any host
        async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
            await db.execute(text("UPDATE plugin_installations SET granted_scopes = '[\"http:*\"]'"))
        with pytest.raises(PermanentActionError, match="public addresses"):
            await _run(
                body["tenant"]["id"],
                "plugin",
                {"plugin": "fetcher", "action": "fetch", "input": {"url": "https://127.0.0.1:9/x"}},
            )


async def test_the_circuit_opens_after_failures_and_tells_the_admins(world: World, erp: list[ActionCall]) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    await _orders(api)
    assert (
        await api.post(
            "/api/v1/plugins/erp/install", {"scopes": SCOPES, "collections": ["orders"], "config": GOOD_CONFIG}
        )
    ).status_code == 201
    threshold = world.settings.plugin_circuit_failures
    for _ in range(threshold):
        with pytest.raises(PermanentActionError) as failed:
            await _run(tenant_id, "plugin", {"plugin": "erp", "action": "sync_order", "input": {"mode": "boom"}})
        assert failed.value.follow_up is not None
        async with open_session(uuid.UUID(tenant_id)) as db:  # what the executor does after the rollback
            await failed.value.follow_up(db)
    row = await _installation(tenant_id, "erp")
    assert row is not None and row.consecutive_failures == threshold and row.circuit_open_until is not None
    assert "crashed" in (row.last_error or "")
    calls = len(erp)
    with pytest.raises(RetryableActionError, match="paused") as paused:
        await _run(tenant_id, "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}})
    assert len(erp) == calls  # not called while the circuit is open
    assert paused.value.retry_after is not None and 0 < paused.value.retry_after <= 300
    notes = (await api.get("/api/v1/notifications")).json()["items"]
    assert [n["title"] for n in notes] == [f"erp is paused after {threshold} failures in a row."]
    assert notes[0]["kind"] == "plugin_paused" and "crashed" in notes[0]["body"]
    installed = (await api.get("/api/v1/plugins/erp")).json()
    assert installed["circuit"]["open_until"] is not None

    # Disabling and enabling again is the admin's way to close the circuit at once.
    await api.post("/api/v1/plugins/erp/disable")
    reopened = await api.post("/api/v1/plugins/erp/enable")
    assert reopened.json()["circuit"] == {"consecutive_failures": 0, "open_until": None, "last_error": row.last_error}
    output = await _run(tenant_id, "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}})
    assert output["seen"] == 0


async def test_lifecycle_hooks_run_in_the_worker_with_the_tenants_context(world: World) -> None:
    api, body = await world.signup()
    seen: list[tuple[str, Any]] = []

    # Other tests' workspaces may have events still to deliver: keep this workspace's calls only.
    def installed(context: Any) -> None:
        if context.tenant_id == body["tenant"]["id"]:
            seen.append(("installed", dict(context.config)))

    def changed(context: Any, previous: Any) -> None:
        if context.tenant_id == body["tenant"]["id"]:
            seen.append(("changed", (dict(previous), dict(context.config))))

    async def uninstalled(context: Any, delete_data: bool) -> None:
        if context.tenant_id == body["tenant"]["id"]:
            seen.append(("uninstalled", (delete_data, context.secret("api_key"))))

    def crashed(context: Any) -> None:
        raise RuntimeError("cannot reach the ERP")

    hooks = {"guiju_installed": installed, "guiju_configuration_changed": changed, "guiju_uninstalled": uninstalled}
    with deployed(plugin_module("erp", settings_schema=SETTINGS_SCHEMA, hooks=hooks)):
        await marketplace.list_deployed_plugins()
        assert (await api.post("/api/v1/plugins/erp/install", {"scopes": [], "config": GOOD_CONFIG})).status_code == 201
        await run_plugin_hooks("erp")
        assert (
            await api.request("PUT", "/api/v1/plugins/erp/config", json={"values": {"company": "New"}})
        ).status_code == 200
        await run_plugin_hooks("erp")
        preview = (await api.get("/api/v1/plugins/erp/uninstall")).json()
        assert preview["automations_affected"] == 0 and any("settings" in d for d in preview["deleted"])
        unconfirmed = await api.delete("/api/v1/plugins/erp")
        assert unconfirmed.status_code == 422 and unconfirmed.json()["code"] == "confirmation_required"
        gone = await api.delete("/api/v1/plugins/erp?confirm=erp&delete_data=true")
        assert gone.status_code == 200, gone.text
        await run_plugin_hooks("erp")
    assert seen == [
        ("installed", {"base_url": "https://erp.example.com", "company": "Acme"}),
        (
            "changed",
            (
                {"base_url": "https://erp.example.com", "company": "Acme"},
                {"base_url": "https://erp.example.com", "company": "New"},
            ),
        ),
        ("uninstalled", (True, "s3cret-key-1")),
    ]
    assert await _installation(body["tenant"]["id"], "erp") is None

    with deployed(plugin_module("erp", hooks={"guiju_installed": crashed})):
        await marketplace.list_deployed_plugins()
        assert (await api.post("/api/v1/plugins/erp/install", {"scopes": []})).status_code == 201
        await run_plugin_hooks("erp")
        shown = (await api.get("/api/v1/plugins/erp")).json()
        assert shown["circuit"]["last_error"] == "guiju_installed: RuntimeError: cannot reach the ERP"


async def test_upgrade_checks_compatibility_then_pin_and_rollback(world: World) -> None:
    api, _body = await world.signup()
    await _orders(api)
    secret = "partner-signing-secret"
    endpoint = "http://127.0.0.1:9/guiju"
    await list_remote_version(
        "shipper", "1.0.0", endpoint=endpoint, secret=secret, actions=[remote_action("book"), remote_action("track")]
    )
    installed = await api.post("/api/v1/plugins/shipper/install", {"scopes": []})
    assert installed.status_code == 201 and installed.json()["upgrade_available"] is None
    await list_remote_version(
        "shipper",
        "1.1.0",
        endpoint=endpoint,
        secret=secret,
        actions=[remote_action("book")],
        scopes=["records:read"],
        settings_schema={"type": "object", "properties": {"region": {"type": "string"}}, "required": ["region"]},
    )
    assert (await api.get("/api/v1/plugins/shipper")).json()["upgrade_available"] == "1.1.0"
    automation = {
        "name": "Track",
        "trigger": {"type": "schedule", "cron": "0 9 * * *"},
        "actions": [{"kind": "plugin", "plugin": "shipper", "action": "track", "input": {}}],
    }
    assert (await api.post("/api/v1/automations", automation)).status_code == 201

    plan = await api.post("/api/v1/plugins/shipper/upgrade", {"dry_run": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["added_scopes"] == ["records:read"] and plan.json()["removed_actions"] == ["track"]
    assert {(p["pointer"], p["code"]) for p in plan.json()["problems"]} == {
        ("/scopes", "scope_not_consented"),
        ("/config/region", "invalid_required"),
        ("/version", "action_in_use"),
    }
    refused = await api.post("/api/v1/plugins/shipper/upgrade", {"scopes": ["records:read"]})
    assert refused.status_code == 422 and refused.json()["code"] == "upgrade_incompatible"
    assert (await api.get("/api/v1/plugins/shipper")).json()["version"] == "1.0.0"

    # Make it compatible: drop the automation, give the setting (the old schema allows no settings, so
    # publish a 1.1.1 that does not require it).
    await list_remote_version(
        "shipper", "1.1.1", endpoint=endpoint, secret=secret, actions=[remote_action("book")], scopes=["records:read"]
    )
    automations = (await api.get("/api/v1/automations")).json()
    await api.delete(f"/api/v1/automations/{automations[0]['id']}")
    pinned = await api.post("/api/v1/plugins/shipper/pin", {"pinned": True})
    assert pinned.json()["pinned"] is True
    held = await api.post("/api/v1/plugins/shipper/upgrade", {"scopes": ["records:read"]})
    assert held.status_code == 409 and held.json()["code"] == "plugin_pinned"
    await api.post("/api/v1/plugins/shipper/pin", {"pinned": False})
    upgraded = await api.post("/api/v1/plugins/shipper/upgrade", {"scopes": ["records:read"]})
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json()["applied"] is True and upgraded.json()["to_version"] == "1.1.1"
    now = (await api.get("/api/v1/plugins/shipper")).json()
    assert (
        now["version"] == "1.1.1" and now["granted_scopes"] == ["records:read"] and now["previous_version"] == "1.0.0"
    )

    back = await api.post("/api/v1/plugins/shipper/rollback")
    assert back.status_code == 200, back.text
    assert back.json()["version"] == "1.0.0" and back.json()["granted_scopes"] == []
    assert back.json()["previous_version"] == "1.1.1"
    audit = (await api.get("/api/v1/audit")).json()["items"]
    assert {"marketplace.installed", "marketplace.upgraded", "marketplace.rolled_back"} <= {e["action"] for e in audit}


async def test_uninstall_disables_the_automations_that_use_the_plugin(world: World, erp: Any) -> None:
    api, _body = await world.signup()
    await _orders(api)
    assert (await api.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})).status_code == 201
    automation = {
        "name": "Sync",
        "trigger": {"type": "schedule", "cron": "0 9 * * *"},
        "actions": [{"kind": "plugin", "plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}}],
    }
    saved = await api.post("/api/v1/automations", automation)
    assert saved.status_code == 201
    assert (await api.get("/api/v1/plugins/erp/uninstall")).json()["automations_affected"] == 1
    gone = await api.delete("/api/v1/plugins/erp?confirm=erp")
    assert gone.json() == {"automations_disabled": 1}
    after = (await api.get(f"/api/v1/automations/{saved.json()['id']}")).json()
    assert after["enabled"] is False and after["disabled_reason"] == "the plugin erp was uninstalled"
    assert (await api.get("/api/v1/plugins/erp")).status_code == 404


async def test_members_read_admins_change(world: World, erp: Any) -> None:
    admin, _body = await world.signup()
    member, _ = await world.invite_and_join(admin, "manager")
    refused = await member.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})
    assert refused.status_code == 403
    assert (await admin.get("/api/v1/plugins")).json() == []  # the refused install made nothing
    assert (
        await admin.post("/api/v1/plugins/erp/install", {"scopes": SCOPES, "config": GOOD_CONFIG})
    ).status_code == 201
    assert (await member.get("/api/v1/plugins")).status_code == 200
    assert (await member.post("/api/v1/plugins/erp/disable")).status_code == 403
    # A reader who may not change the settings sees them with the secret masked, in the list and alone.
    listed = await member.get("/api/v1/plugins")
    one = await member.get("/api/v1/plugins/erp")
    assert one.status_code == 200, one.text
    for installation in (listed.json()[0], one.json()):
        assert installation["plugin"] == "erp" and installation["enabled"] is True  # the refused disable
        assert installation["secrets"] == {"api_key": "********"}
        assert installation["config"] == {"base_url": "https://erp.example.com", "company": "Acme"}
    assert GOOD_CONFIG["api_key"] not in listed.text + one.text


async def test_plugin_events_fire_plugin_triggers(world: World, erp: Any) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    orders = await _orders(api)
    await api.post(f"/api/v1/collections/{orders['id']}/records", {"values": {"code": "A-1"}})
    assert (
        await api.post(
            "/api/v1/plugins/erp/install", {"scopes": SCOPES, "collections": ["orders"], "config": GOOD_CONFIG}
        )
    ).status_code == 201
    on_trigger = {
        "name": "Synced",
        "trigger": {"type": "plugin", "plugin": "erp", "trigger": "order_synced"},
        "actions": [
            {"kind": "create_record", "collection_id": orders["id"], "values": {"code": "=event.payload.code + '-log'"}}
        ],
    }
    unknown = await api.post(
        "/api/v1/automations", {**on_trigger, "trigger": {**on_trigger["trigger"], "trigger": "nope"}}
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["code"] == "unknown_plugin_trigger"
    assert (await api.post("/api/v1/automations", on_trigger)).status_code == 201, "the trigger is offered"
    await _run(tenant_id, "plugin", {"plugin": "erp", "action": "sync_order", "input": {"code": "A-1"}})
    await run_automations()
    codes = sorted(
        r["values"]["code"] for r in (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"]
    )
    assert codes == ["A-1", "A-1-log"]


async def test_health_checks_run_in_the_worker_for_in_process_and_remote_plugins(world: World) -> None:
    api, _body = await world.signup()

    def health(context: Any, register: Any) -> None:
        if "base_url" not in context.config:
            register(Health(False, "Set the ERP's address."))

    with deployed(plugin_module("erp", settings_schema={"type": "object"}, hooks={"guiju_health_check": health})):
        await marketplace.list_deployed_plugins()
        assert (await api.post("/api/v1/plugins/erp/install", {"scopes": []})).status_code == 201
        asked = await api.post("/api/v1/plugins/erp/health-check")
        assert asked.status_code == 202 and asked.json()["health"] is None
        await run_plugin_hooks("erp")
        checked = (await api.get("/api/v1/plugins/erp")).json()["health"]
        assert (checked["ok"], checked["message"]) == (False, "Set the ERP's address.")

    secret = "remote-health-secret"
    name = f"remote-{uuid.uuid4().hex[:6]}"
    with RemotePluginServer(secret, {}) as server:
        await list_remote_version(name, "1.0.0", endpoint=server.endpoint, secret=secret, actions=[remote_action("x")])
        assert (await api.post(f"/api/v1/plugins/{name}/install", {"scopes": []})).status_code == 201
        configured = dataclasses.replace(world.settings, plugin_allow_http_hosts=("127.0.0.1",))
        marketplace.configure(configured)
        try:
            server.health = answer(200, {"ok": False, "message": "the carrier's API is down"})
            await api.post(f"/api/v1/plugins/{name}/health-check")
            await run_plugin_hooks(name)
            remote_health = (await api.get(f"/api/v1/plugins/{name}")).json()["health"]
            assert (remote_health["ok"], remote_health["message"]) == (False, "the carrier's API is down")
            server.health = answer(200, {"ok": True, "message": ""})
            await api.post(f"/api/v1/plugins/{name}/health-check")
            await run_plugin_hooks(name)
            assert (await api.get(f"/api/v1/plugins/{name}")).json()["health"]["ok"] is True
            assert server.refused == []
        finally:
            marketplace.configure(world.settings)


async def test_polled_triggers_run_in_the_worker_on_the_schedulers_timer(world: World) -> None:
    api, body = await world.signup()
    orders = await _orders(api)
    polled: list[str] = []

    async def new_payments(context: Any) -> list[dict[str, Any]]:
        polled.append(context.tenant_id)
        return [{"code": "P-1"}, {"code": "P-2"}]

    with deployed(plugin_module("bank", polls={"payment_received": new_payments})):
        await marketplace.list_deployed_plugins()
        assert (await api.post("/api/v1/plugins/bank/install", {"scopes": []})).status_code == 201
        automation = {
            "name": "Log payments",
            "trigger": {"type": "plugin", "plugin": "bank", "trigger": "payment_received"},
            "actions": [
                {"kind": "create_record", "collection_id": orders["id"], "values": {"code": "=event.payload.code"}}
            ],
        }
        assert (await api.post("/api/v1/automations", automation)).status_code == 201
        assert polled == []
        await scheduler.fire_due(datetime.now(UTC) + timedelta(seconds=61))
        await run_plugin_hooks("bank")
        await run_automations()
        assert polled == [body["tenant"]["id"]]
    codes = sorted(
        r["values"]["code"] for r in (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"]
    )
    assert codes == ["P-1", "P-2"]


async def test_a_plugins_hooks_run_in_the_events_workspace_only(world: World) -> None:
    api_a, a = await world.signup()
    _api_b, b = await world.signup()
    called: list[str] = []

    def health(context: Any, register: Any) -> None:
        called.append(context.tenant_id)

    with deployed(plugin_module("erp", hooks={"guiju_health_check": health})):
        await marketplace.list_deployed_plugins()
        assert (await api_a.post("/api/v1/plugins/erp/install", {"scopes": []})).status_code == 201
        event = {
            "id": "x",
            "type": marketplace.HEALTH_REQUESTED,
            "tenant_id": a["tenant"]["id"],
            "payload": {"plugin": "erp"},
        }
        # Delivered to B's workspace (a forged or misrouted message): ignored, whatever B installed.
        assert (await _api_b.post("/api/v1/plugins/erp/install", {"scopes": []})).status_code == 201
        actors.hooks_actor_for("erp").send(b["tenant"]["id"], event)
        await run_plugin_hooks("erp")
        assert called == []
        assert (await api_a.get("/api/v1/plugins/erp")).json()["health"] is None
        actors.hooks_actor_for("erp").send(a["tenant"]["id"], event)
        await run_plugin_hooks("erp")
        assert called == [a["tenant"]["id"]]


async def test_notifications_go_on_through_messaging_only_where_it_is_installed(world: World) -> None:
    api_a, a = await world.signup()
    _api_b, b = await world.signup()
    config = {"to": [{"role": "owner"}], "title": {"en": "Hello", "zh-CN": "你好"}, "body": {"en": "Order A-1 shipped"}}
    delivered: list[ActionCall] = []

    def deliver_notification(call: ActionCall) -> dict[str, Any]:
        delivered.append(call)
        return {"channels": {"email": "sent"}}

    with deployed(plugin_module("messaging", actions={"deliver_notification": deliver_notification})):
        await marketplace.list_deployed_plugins()
        assert (await api_a.post("/api/v1/plugins/messaging/install", {"scopes": []})).status_code == 201
        sent_a = await _run(a["tenant"]["id"], "notify", config)
        sent_b = await _run(b["tenant"]["id"], "notify", config)
        await run_plugin_hooks("messaging")  # the plugin sends it on, on its own queue
        assert (await api_a.post("/api/v1/plugins/messaging/disable")).status_code == 200
        sent_disabled = await _run(a["tenant"]["id"], "notify", config, _ctx(a["tenant"]["id"], index=1))
        await run_plugin_hooks("messaging")
    assert sent_disabled["channels"] == ["in_app"]  # disabled: in the app only
    assert sent_a["channels"] == ["in_app", "messaging"]
    assert sent_b["channels"] == ["in_app"]  # deployed here, but not installed in B's workspace
    assert len(delivered) == 1
    call = delivered[0]
    assert call.tenant_id == a["tenant"]["id"]
    owner = a["user"]
    assert call.input["recipients"] == [
        {"email": owner["email"], "name": owner["display_name"], "locale": owner["locale"]}
    ]
    assert (call.input["title"], call.input["body"]) == (
        "你好" if owner["locale"] == "zh-CN" else "Hello",
        "Order A-1 shipped",
    )
