"""The isolation suite's registry: what every tenant-owned table and every path parameter needs.

A new tenant-owned table must be seeded here (``seed_tenant`` makes at least one row of every
tenant-scoped table); a new path parameter must say which of tenant A's rows it names. The tests
fail when either is missing, so nothing joins the platform without its isolation test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.db import open_session
from services.gallery import service as gallery
from services.marketplace import service as marketplace
from tenants.base import Base
from tenants.isolation import TenantScoped
from tests.conftest import World, deliver_events, unique_email
from tests.plugin_support import list_remote_version, remote_action

FIXTURE_PACKS = Path(__file__).resolve().parent / "fixtures" / "packs" / "v1"


def tenant_scoped_models() -> list[type[Any]]:
    return sorted(
        (m.class_ for m in Base.registry.mappers if issubclass(m.class_, TenantScoped)), key=lambda c: c.__tablename__
    )


@dataclass
class SeededTenant:
    """A tenant with at least one row in every tenant-owned table, and its ids by path parameter."""

    api: Any
    body: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str:
        return str(self.body["tenant"]["id"])


async def seed_tenant(world: World, **signup: Any) -> SeededTenant:
    """Sign up a tenant (``signup`` overrides the sign-up body) and give it rows in every table."""
    api, body = await world.signup(**signup)
    seeded = SeededTenant(api, body)
    entity = await api.post("/api/v1/entities", {"name": f"Branch {unique_email()[:12]}"})
    invitation = await api.post("/api/v1/invitations", {"email": unique_email("pending")})
    assert entity.status_code == invitation.status_code == 201
    seeded.ids = {
        "user_id": body["user"]["id"],
        "entity_id": entity.json()["id"],
        "invitation_id": invitation.json()["id"],
    }
    uploaded = await api.post("/api/v1/files", files={"file": ("seed.txt", b"seed", "text/plain")})
    assert uploaded.status_code == 201, uploaded.text
    seeded.ids["file_id"] = uploaded.json()["id"]
    calendar = await api.request(
        "PUT", "/api/v1/calendar", json={"holidays": [{"date": "2025-10-01", "name": "National Day"}]}
    )
    assert calendar.status_code == 200, calendar.text
    collection = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": "Orders",
            "fields": [{"key": "code", "label": "Code", "type": "text", "unique": True}],
        },
    )
    assert collection.status_code == 201, collection.text
    seeded.ids["collection_id"] = collection.json()["id"]
    record = await api.post(f"/api/v1/collections/{seeded.ids['collection_id']}/records", {"values": {"code": "A-1"}})
    assert record.status_code == 201, record.text
    seeded.ids["record_id"] = record.json()["id"]
    await _seed_procedure(api, seeded)
    await _seed_run(api, seeded)
    await _seed_automation(api, seeded)
    await _seed_notifications_and_webhooks(world, api, seeded)
    await _seed_plugin(api, seeded)
    await _seed_template(world, api, seeded)
    await _seed_webhook_subscription(api, seeded)
    await _seed_api_access(api, seeded)
    return seeded


async def _seed_api_access(api: Any, seeded: SeededTenant) -> None:
    """A developer app holding a token in the workspace (a connected app), and a personal token."""
    from datetime import timedelta

    from services.oauth.models import OAuthToken
    from tenants.base import utcnow

    registered = await api.post(
        "/api/v1/oauth/clients",
        {
            "name": "Seed sync",
            "publisher": "Seed Ltd",
            "kind": "confidential",
            "redirect_uris": ["https://seed.example/callback"],
            "scopes": ["records:read"],
        },
    )
    assert registered.status_code == 201, registered.text
    seeded.ids["client_pk"] = registered.json()["client"]["id"]
    personal = await api.post("/api/v1/personal-tokens", {"name": "seed script", "scopes": ["records:read"]})
    assert personal.status_code == 201, personal.text
    seeded.ids["token_id"] = personal.json()["token"]["id"]
    tenant_id = uuid.UUID(seeded.tenant_id)
    async with open_session(tenant_id) as db:
        db.add(
            OAuthToken(
                kind="oauth",
                access_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
                client_pk=uuid.UUID(seeded.ids["client_pk"]),
                tenant_id=tenant_id,
                user_id=uuid.UUID(seeded.ids["user_id"]),
                role="owner",
                scope="records:read",
                grant_type="authorization_code",
                access_expires_at=utcnow() + timedelta(hours=1),
            )
        )
        await db.flush()


async def _seed_template(world: World, api: Any, seeded: SeededTenant) -> None:
    """The fixture template pack installed (its installation and items)."""
    gallery.configure(dataclasses.replace(world.settings, template_packs=(str(FIXTURE_PACKS),)))
    installed = await api.post("/api/v1/templates/mini-shop/install", {"samples": False})
    assert installed.status_code == 201, installed.text
    seeded.ids["pack_id"] = "mini-shop"
    # The onboarding wizard's saved answers (a page form: same-site, with its CSRF token).
    chosen = await api.client.post(
        "/onboarding/packs",
        data={"packs": "mini-shop", "csrf_token": api.csrf},
        headers={"Origin": str(api.client.base_url).rstrip("/")},
    )
    assert chosen.status_code == 303, chosen.text


async def _seed_plugin(api: Any, seeded: SeededTenant) -> None:
    """A remote plugin of the catalog, installed by this tenant alone (with a secret setting)."""
    name = f"seed-{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}}
    await list_remote_version(
        name,
        "1.0.0",
        endpoint="https://plugins.example.com/seed",
        secret="seed-signing-secret",
        actions=[remote_action("ping")],
        settings_schema=schema,
    )
    installed = await api.post(f"/api/v1/plugins/{name}/install", {"scopes": [], "config": {"token": "seed-token"}})
    assert installed.status_code == 201, installed.text
    seeded.ids["name"] = seeded.ids["plugin"] = name
    seeded.ids["version"] = "1.0.0"
    # A numbering sequence of the plugin's, with a number given to a key (PluginContext.next_number).
    async with open_session(uuid.UUID(seeded.tenant_id)) as db:
        assert await marketplace.next_number(db, name, "seed-invoices", key="seed-order") == 1


async def _seed_procedure(api: Any, seeded: SeededTenant) -> None:
    """A procedure linked to the collection, with a published version the owner acknowledged, the
    short links of its QR codes and a suggestion."""
    definition = {
        "start": "confirm",
        "steps": [{"kind": "task", "key": "confirm", "title": "Confirm", "owner": {"kind": "role", "role": "member"}}],
    }
    procedure = await api.post(
        "/api/v1/procedures",
        {
            "key": "seed_procedure",
            "title": "Seed",
            "collection_id": seeded.ids["collection_id"],
            "definition": definition,
        },
    )
    assert procedure.status_code == 201, procedure.text
    seeded.ids["procedure_id"] = procedure.json()["id"]
    seeded.ids["version_id"] = procedure.json()["draft_version_id"]
    version_path = f"/api/v1/procedures/{seeded.ids['procedure_id']}/versions/{seeded.ids['version_id']}"
    published = await api.post(f"{version_path}/publish", {"change_note": "seed"})
    assert published.status_code == 200, published.text
    acknowledged = await api.post(f"{version_path}/acknowledge")
    assert acknowledged.status_code == 200, acknowledged.text
    # Its QR sheet (the short links of its codes) and a suggestion on its step (page forms).
    sheet = await api.get(f"/sops/{seeded.ids['procedure_id']}/qr")
    assert sheet.status_code == 200, sheet.text
    suggested = await api.client.post(
        f"/sops/{seeded.ids['procedure_id']}/steps/confirm/suggest",
        data={"text": "Name the carrier", "csrf_token": api.csrf},
        headers={"Origin": str(api.client.base_url).rstrip("/")},
    )
    assert suggested.status_code == 303, suggested.text


async def _seed_run(api: Any, seeded: SeededTenant) -> None:
    """A run with an open step, a comment and an open exception."""
    definition = {
        "start": "check",
        "steps": [
            {
                "kind": "task",
                "key": "check",
                "title": "Check",
                "owner": {"kind": "starter"},
                "exceptions": [{"key": "broken", "label": "Broken"}],
            }
        ],
    }
    procedure = await api.post("/api/v1/procedures", {"key": "seed_run", "title": "Seed run", "definition": definition})
    assert procedure.status_code == 201, procedure.text
    published = await api.post(
        f"/api/v1/procedures/{procedure.json()['id']}/versions/{procedure.json()['draft_version_id']}/publish",
        {"change_note": "seed"},
    )
    assert published.status_code == 200, published.text
    run = await api.post("/api/v1/runs", {"procedure_id": procedure.json()["id"]})
    assert run.status_code == 201, run.text
    seeded.ids["run_id"] = run.json()["id"]
    seeded.ids["step_id"] = str(run.json()["steps"][0]["id"])
    comment = await api.post(f"/api/v1/runs/{seeded.ids['run_id']}/comments", {"body": "seed"})
    assert comment.status_code == 201, comment.text
    raised = await api.post(
        f"/api/v1/runs/{seeded.ids['run_id']}/exceptions", {"kind": "broken", "step_id": run.json()["steps"][0]["id"]}
    )
    assert raised.status_code == 201, raised.text
    seeded.ids["exception_id"] = str(raised.json()["id"])


async def _seed_automation(api: Any, seeded: SeededTenant) -> None:
    collection_id = seeded.ids["collection_id"]
    automation = await api.post(
        "/api/v1/automations",
        {
            "name": "Seed",
            "trigger": {"type": "record_event", "collection_id": collection_id, "events": ["updated"]},
            "actions": [{"kind": "create_record", "collection_id": collection_id, "values": {}}],
        },
    )
    assert automation.status_code == 201, automation.text
    seeded.ids["automation_id"] = automation.json()["id"]
    records = f"/api/v1/collections/{collection_id}/records"
    other = await api.post(records, {"values": {"code": "B-1"}})
    assert other.status_code == 201, other.text
    changed = await api.patch(f"{records}/{other.json()['id']}", {"values": {"code": "B-2"}})
    assert changed.status_code == 200, changed.text
    await deliver_events()
    executions = await api.get(f"/api/v1/automations/{seeded.ids['automation_id']}/executions")
    assert len(executions.json()) == 1, executions.text
    seeded.ids["execution_id"] = executions.json()[0]["id"]


async def _seed_notifications_and_webhooks(world: World, api: Any, seeded: SeededTenant) -> None:
    """A webhook automation called once (its URL and a delivery) that notifies the owner; the owner's
    notification settings; a procedure with a due step (its default escalations)."""
    from tests.integration.test_notifications import notify_by_webhook

    await notify_by_webhook(api, (await world.client()).client, seeded.ids["user_id"], "Seed")
    await _seed_signed_delivery(world, api)
    items = (await api.get("/api/v1/notifications")).json()["items"]
    notifications = [n for n in items if n["kind"] == "message"]  # the run seeded before notified too
    assert len(notifications) == 1, items
    seeded.ids["notification_id"] = notifications[0]["id"]
    chosen = await api.request("PUT", "/api/v1/notifications/preferences", {"email": ["mentioned"], "messaging": []})
    assert chosen.status_code == 200, chosen.text
    due_step = {
        "kind": "task",
        "key": "due",
        "title": "Due",
        "owner": {"kind": "starter"},
        "due": {"within": {"hours": 1}},
    }
    procedure = await api.post(
        "/api/v1/procedures",
        {"key": "seed_sla", "title": "Seed SLA", "definition": {"start": "due", "steps": [due_step]}},
    )
    assert procedure.status_code == 201, procedure.text
    published = await api.post(
        f"/api/v1/procedures/{procedure.json()['id']}/versions/{procedure.json()['draft_version_id']}/publish",
        {"change_note": "seed"},
    )
    assert published.status_code == 200, published.text
    await deliver_events()


async def _seed_signed_delivery(world: World, api: Any) -> None:
    """A signed webhook call (remembered, so that a replay of it starts nothing)."""
    created = await api.post(
        "/api/v1/automations",
        {
            "name": "Signed seed",
            "trigger": {"type": "webhook", "verify_signature": True},
            "actions": [{"kind": "wait", "duration": {"minutes": 5, "business": False}}],
        },
    )
    assert created.status_code == 201, created.text
    rotated = await api.post(f"/api/v1/automations/{created.json()['id']}/webhook/rotate")
    assert rotated.status_code == 200, rotated.text
    url, secret = rotated.json()["url"], rotated.json()["signing_secret"]
    body, now = b'{"seed": 1}', int(time.time())
    signature = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    called = await (await world.client()).client.post(
        url[url.index("/hooks/") :],
        content=body,
        headers={"Content-Type": "application/json", "X-Guiju-Signature": f"t={now},v1={signature}"},
    )
    assert called.status_code == 202, called.text


async def _seed_webhook_subscription(api: Any, seeded: SeededTenant) -> None:
    """A webhook subscription (turned off: nothing is sent from the seed) and one delivery in its log."""
    from services.webhooks.models import WebhookAttempt, WebhookDelivery

    created = await api.post(
        "/api/v1/webhooks",
        {"url": "https://1.1.1.1/hooks", "event_types": ["record.created"], "enabled": False},
    )
    assert created.status_code == 201, created.text
    seeded.ids["subscription_id"] = created.json()["id"]
    tenant_id, event_id = uuid.UUID(seeded.tenant_id), uuid.uuid4()
    async with open_session(tenant_id) as db:
        delivery = WebhookDelivery(
            tenant_id=tenant_id,
            subscription_id=uuid.UUID(seeded.ids["subscription_id"]),
            event_id=event_id,
            event_type="record.created",
            event={"id": str(event_id), "type": "record.created", "timestamp": "2026-01-01T00:00:00+00:00", "data": {}},
            status="failed",
        )
        db.add(delivery)
        await db.flush()
        db.add(WebhookAttempt(tenant_id=tenant_id, delivery_id=delivery.id, response_status=500))
        await db.flush()
        seeded.ids["delivery_id"] = str(delivery.id)


# Routes whose path names something every tenant shares (a plugin of the catalog), not a tenant's row:
# another tenant may read or install it too.
SHARED_ROUTES = {
    ("GET", "/api/v1/marketplace/plugins/{name:str}"),
    ("POST", "/api/v1/plugins/{name:str}/install"),
    ("GET", "/api/v1/gallery/packs/{pack_id:str}"),
    ("POST", "/api/v1/templates/{pack_id:str}/install"),
    # A pack of the gallery: each workspace answers about its own install of it (both seeded
    # tenants installed the same pack); tests/integration/test_gallery.py shows another
    # workspace's install stays invisible.
    ("GET", "/api/v1/templates/{pack_id:str}"),
    ("POST", "/api/v1/templates/{pack_id:str}/upgrade"),
    ("POST", "/api/v1/templates/{pack_id:str}/uninstall"),
    # A role of that pack, named by the pack: each workspace hands over its own install's role;
    # tests/integration/test_pack_roles.py shows another workspace's holder stays unchanged.
    ("PUT", "/api/v1/pack-roles/{key:str}"),
}

# Bodies for writes whose validation would otherwise answer before the lookup does.
REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/members/{user_id:uuid}"): {"role": "member"},
    ("PATCH", "/api/v1/collections/{collection_id:uuid}"): {"name": "Peek"},
    ("PATCH", "/api/v1/automations/{automation_id:uuid}"): {"name": "Peek"},
    ("PATCH", "/api/v1/webhooks/{subscription_id:uuid}"): {"description": "Peek"},
    ("PATCH", "/api/v1/oauth/clients/{client_pk:uuid}"): {"name": "Peek"},
    ("POST", "/api/v1/collections/{collection_id:uuid}/purge"): {"field_keys": ["code"]},
    ("POST", "/api/v1/collections/{collection_id:uuid}/rename"): {"key": "peek"},
    ("POST", "/api/v1/collections/{collection_id:uuid}/records"): {"values": {}},
    ("PATCH", "/api/v1/collections/{collection_id:uuid}/records/{record_id:uuid}"): {"values": {}},
    ("PATCH", "/api/v1/procedures/{procedure_id:uuid}"): {"title": "Peek"},
    ("PUT", "/api/v1/procedures/{procedure_id:uuid}/versions/{version_id:uuid}"): {
        "definition": {
            "start": "a",
            "steps": [{"kind": "task", "key": "a", "title": "A", "owner": {"kind": "starter"}}],
        }
    },
    ("POST", "/api/v1/procedures/{procedure_id:uuid}/versions/{version_id:uuid}/publish"): {"change_note": "peek"},
    ("POST", "/api/v1/runs/{run_id:uuid}/steps/{step_id:int}/assign"): {
        "user_id": "00000000-0000-0000-0000-000000000001"
    },
    ("POST", "/api/v1/runs/{run_id:uuid}/steps/{step_id:int}/complete"): {},
    ("POST", "/api/v1/runs/{run_id:uuid}/steps/{step_id:int}/approve"): {},
    ("POST", "/api/v1/runs/{run_id:uuid}/steps/{step_id:int}/reject"): {},
    ("POST", "/api/v1/runs/{run_id:uuid}/comments"): {"body": "peek"},
    ("POST", "/api/v1/runs/{run_id:uuid}/exceptions"): {"kind": "broken"},
    ("POST", "/api/v1/runs/{run_id:uuid}/exceptions/{exception_id:int}/resolve"): {},
    ("POST", "/api/v1/runs/{run_id:uuid}/abort"): {},
    ("POST", "/api/v1/runs/{run_id:uuid}/migrate"): {"version_id": "00000000-0000-0000-0000-000000000001"},
    ("PUT", "/api/v1/plugins/{name:str}/config"): {"values": {}},
    ("POST", "/api/v1/plugins/{name:str}/pin"): {"pinned": True},
    ("POST", "/api/v1/plugins/{name:str}/upgrade"): {"dry_run": True},
    ("POST", "/api/v1/admin/plugin-versions/{plugin:str}/{version:str}/reject"): {"reason": "peek"},
}
