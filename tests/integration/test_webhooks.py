"""Webhook subscriptions end to end: a real HTTP receiver on this machine verifies every delivery
with the standardwebhooks package, as a third party would."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services import events
from services.broker import tenant_session
from services.outbox import service as outbox
from services.webhooks import service as webhooks
from services.webhooks.models import WebhookSubscription
from tenants.base import utcnow
from tenants.errors import ValidationProblem
from tenants.models import Role
from tenants.principal import Principal
from tests.conftest import Api, World, deliver_events, variant


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A small HTTP server: each path answers from its plan (status, seconds to wait), then 200,
    and refuses (401) a delivery none of its path's secrets verify."""

    port: int = 0
    plans: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    secrets: dict[str, list[str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        self.received.append(Received(path, headers, body))
        plan = self.plans.get(path) or []
        status, wait = plan.pop(0) if plan else (200, 0.0)
        if status == 200 and not verified_by_any(self.secrets.get(path, []), headers, body):
            return 401, 0.0
        return status, wait


def verified_by_any(secrets: list[str], headers: dict[str, str], body: bytes) -> bool:
    return any(verifies(secret, headers, body) for secret in secrets)


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, wait = found.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            time.sleep(wait)
            try:
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {status}".encode())
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
async def hooks(world: World) -> AsyncIterator[World]:
    """The app with fast retries, a short timeout, an early turn-off and this machine allowed."""
    fast = variant(
        world,
        webhook_allow_http_hosts=("127.0.0.1",),
        webhook_delivery_retry_seconds=(0.05, 0.05),
        webhook_delivery_timeout_seconds=0.5,
        webhook_delivery_disable_after=4,
    )
    yield fast
    webhooks.configure(world.settings)


async def emit(tenant_id: str, event: events.EventType[Any], payload: dict[str, Any]) -> str:
    async with tenant_session(uuid.UUID(tenant_id)) as db:
        row = await outbox.emit(db, event.name, payload)
    return str(row.id)


async def deliver_all() -> None:
    await deliver_events()
    await asyncio.to_thread(dramatiq.get_broker().join, webhooks.QUEUE, timeout=30_000)


async def subscribe(api: Api, url: str, event_types: list[str], receiver: Receiver, path: str) -> dict[str, Any]:
    created = await api.post("/api/v1/webhooks", {"url": url, "event_types": event_types})
    assert created.status_code == 201, created.text
    receiver.secrets[path] = [created.json()["secret"]]
    return dict(created.json())


RECORD = {"collection_id": str(uuid.uuid4()), "record_id": str(uuid.uuid4()), "values": {"code": "A-1"}}


async def test_an_event_reaches_the_receiver_signed(hooks: World, receiver: Receiver) -> None:
    admin, body = await hooks.signup()
    sub = await subscribe(admin, receiver.url("/a"), ["record.created"], receiver, "/a")
    assert (
        sub["secret"].startswith("whsec_") and "secret" not in (await admin.get(f"/api/v1/webhooks/{sub['id']}")).json()
    )
    event_id = await emit(body["tenant"]["id"], events.RECORD_CREATED, {**RECORD, "_cause": {"depth": 1}})
    await emit(body["tenant"]["id"], events.RECORD_UPDATED, RECORD)  # not subscribed
    await deliver_all()

    [got] = receiver.at("/a")
    assert verifies(sub["secret"], got.headers, got.body)
    assert got.headers["webhook-id"] == event_id
    delivered = Webhook(sub["secret"]).verify(got.body, got.headers)
    assert delivered["type"] == "record.created" and delivered["id"] == event_id
    assert delivered["data"] == RECORD  # the platform's own keys stay home
    page = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries")).json()
    [delivery] = page["items"]
    assert delivery["status"] == "succeeded" and delivery["response_status"] == 200 and delivery["attempts"] == 1
    assert delivery["response_excerpt"] == "answer 200" and event_id in delivery["request_excerpt"]

    # A redelivered outbox event delivers nothing twice.
    await webhooks.fan_out([{"id": event_id, "type": "record.created", "tenant_id": body["tenant"]["id"],
                             "occurred_at": utcnow().isoformat(), "payload": RECORD}])  # fmt: skip
    await deliver_all()
    assert len(receiver.at("/a")) == 1


async def test_retries_after_errors_then_succeeds_and_redelivers_by_hand(hooks: World, receiver: Receiver) -> None:
    admin, body = await hooks.signup()
    sub = await subscribe(admin, receiver.url("/flaky"), ["record.created"], receiver, "/flaky")
    receiver.plans["/flaky"] = [(500, 0.0), (503, 0.0)]
    event_id = await emit(body["tenant"]["id"], events.RECORD_CREATED, RECORD)
    await deliver_all()

    attempts = receiver.at("/flaky")
    assert [a.headers["webhook-id"] for a in attempts] == [event_id] * 3  # the same id on every attempt
    [delivery] = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries")).json()["items"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 3
    assert (await admin.get(f"/api/v1/webhooks/{sub['id']}")).json()["consecutive_failures"] == 0

    again = await admin.post(f"/api/v1/webhooks/{sub['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202, again.text
    await deliver_all()
    assert [a.headers["webhook-id"] for a in receiver.at("/flaky")] == [event_id] * 4
    detail = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries/{delivery['id']}")).json()
    assert detail["attempts"] == 4 and detail["status"] == "succeeded" and detail["event"]["id"] == event_id
    assert [(a["response_status"], a["manual"]) for a in detail["history"]] == [
        (500, False),
        (503, False),
        (200, False),
        (200, True),
    ]


async def test_a_receiver_that_times_out_is_retried(hooks: World, receiver: Receiver) -> None:
    admin, body = await hooks.signup()
    sub = await subscribe(admin, receiver.url("/slow"), ["run.started"], receiver, "/slow")
    receiver.plans["/slow"] = [(200, 1.5)]
    await emit(body["tenant"]["id"], events.RUN_STARTED, {"run_id": str(uuid.uuid4())})
    await deliver_all()
    assert len(receiver.at("/slow")) == 2
    [delivery] = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries")).json()["items"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    assert delivery["error"] is None and delivery["response_status"] == 200
    detail = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries/{delivery['id']}")).json()
    timed_out, answered = detail["history"]
    assert timed_out["response_status"] is None and timed_out["error"] == "no answer within 0.5 seconds"
    assert 400 <= timed_out["duration_ms"] < 1500 and answered["response_status"] == 200


async def test_failures_in_a_row_turn_the_subscription_off_and_tell_the_admins(
    hooks: World, receiver: Receiver
) -> None:
    admin, body = await hooks.signup()
    sub = await subscribe(admin, receiver.url("/down"), ["record.created"], receiver, "/down")
    receiver.plans["/down"] = [(500, 0.0)] * 10
    await emit(body["tenant"]["id"], events.RECORD_CREATED, RECORD)  # 3 attempts, all failing
    await deliver_all()
    first = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries")).json()["items"][0]
    assert first["status"] == "failed" and first["attempts"] == 3 and first["response_status"] == 500
    assert first["error"] and first["response_excerpt"] == "answer 500"
    assert (await admin.get(f"/api/v1/webhooks/{sub['id']}")).json()["enabled"] is True

    await emit(body["tenant"]["id"], events.RECORD_CREATED, RECORD)  # the 4th failure in a row
    await deliver_all()
    turned_off = (await admin.get(f"/api/v1/webhooks/{sub['id']}")).json()
    assert turned_off["enabled"] is False and turned_off["disabled_reason"] == "failures"
    assert len(receiver.at("/down")) == 4  # no retry once it is off
    notices = [n for n in (await admin.get("/api/v1/notifications")).json()["items"] if n["kind"] == "webhook_disabled"]
    assert len(notices) == 1 and receiver.url("/down") in notices[0]["title"] and "4" in notices[0]["title"]

    await emit(body["tenant"]["id"], events.RECORD_CREATED, RECORD)  # nothing goes to a subscription that is off
    await deliver_all()
    assert len(receiver.at("/down")) == 4
    refused = await admin.post(f"/api/v1/webhooks/{sub['id']}/deliveries/{first['id']}/redeliver")
    assert refused.status_code == 409 and refused.json()["code"] == "webhook_disabled"
    back_on = await admin.patch(f"/api/v1/webhooks/{sub['id']}", {"enabled": True})
    assert back_on.json()["enabled"] is True and back_on.json()["consecutive_failures"] == 0


async def test_rotation_signs_with_both_secrets_during_the_overlap(hooks: World, receiver: Receiver) -> None:
    admin, body = await hooks.signup()
    sub = await subscribe(admin, receiver.url("/rot"), ["record.deleted"], receiver, "/rot")
    old = sub["secret"]
    rotated = await admin.post(f"/api/v1/webhooks/{sub['id']}/rotate-secret", {"overlap_hours": 2})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["previous_secret_expires_at"] is not None
    await emit(body["tenant"]["id"], events.RECORD_DELETED, RECORD)
    await deliver_all()
    [during] = receiver.at("/rot")
    assert verifies(old, during.headers, during.body) and verifies(new, during.headers, during.body)
    assert len(during.headers["webhook-signature"].split(" ")) == 2

    async with tenant_session(uuid.UUID(body["tenant"]["id"])) as db:  # the overlap ends
        await db.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == uuid.UUID(sub["id"]))
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    await emit(body["tenant"]["id"], events.RECORD_DELETED, RECORD)
    await deliver_all()
    after = receiver.at("/rot")[1]
    assert verifies(new, after.headers, after.body) and not verifies(old, after.headers, after.body)

    at_once = await admin.post(f"/api/v1/webhooks/{sub['id']}/rotate-secret", {"overlap_hours": 0})
    assert at_once.json()["previous_secret_expires_at"] is None
    too_long = await admin.post(f"/api/v1/webhooks/{sub['id']}/rotate-secret", {"overlap_hours": 1000})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["code"] == "out_of_range"
    # The body is optional; when sent, an unknown field is listed like any other problem.
    unknown = await admin.post(f"/api/v1/webhooks/{sub['id']}/rotate-secret", {"overlap_hours": None, "extra": 1})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["code"] == "unknown_field"


async def test_urls_to_private_addresses_are_refused(hooks: World, receiver: Receiver) -> None:
    admin, body = await hooks.signup()
    for url, code in [
        ("http://10.0.0.5/hook", "forbidden_address"),
        ("https://192.168.1.20/hook", "forbidden_address"),
        ("https://[::1]/hook", "forbidden_address"),
        ("https://localhost/hook", "forbidden_address"),  # a name that resolves to loopback
        ("http://1.1.1.1/hook", "insecure_url"),
        ("https://user:pw@1.1.1.1/hook", "invalid_url"),
    ]:
        refused = await admin.post("/api/v1/webhooks", {"url": url, "event_types": ["record.created"]})
        assert refused.status_code == 422, (url, refused.text)
        assert [e["code"] for e in refused.json()["errors"]] == [code], url

    # Every problem at once.
    wrong = await admin.post(
        "/api/v1/webhooks",
        {"url": "ftp://x", "event_types": ["no.such", "mail.requested", "record.created"], "description": "d" * 201},
    )
    assert wrong.status_code == 422
    assert [(e["pointer"], e["code"]) for e in wrong.json()["errors"]] == [
        ("/url", "insecure_url"),
        ("/event_types/0", "unknown_event"),
        ("/event_types/1", "not_subscribable"),
        ("/description", "too_long"),
    ]
    assert (await admin.post("/api/v1/webhooks", {"url": "https://1.1.1.1/"})).json()["errors"][0]["code"] == "required"

    # Checked again when sending: a host no longer allowed is not called.
    sub = await subscribe(admin, receiver.url("/guarded"), ["record.created"], receiver, "/guarded")
    webhooks.configure(dataclasses.replace(hooks.settings, webhook_allow_http_hosts=()))
    await emit(body["tenant"]["id"], events.RECORD_CREATED, RECORD)
    await deliver_all()
    assert receiver.at("/guarded") == []
    [delivery] = (await admin.get(f"/api/v1/webhooks/{sub['id']}/deliveries")).json()["items"]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1 and delivery["response_status"] is None


async def test_tenants_never_see_each_others_subscriptions_or_events(hooks: World, receiver: Receiver) -> None:
    admin_a, body_a = await hooks.signup()
    admin_b, _body_b = await hooks.signup()
    sub_a = await subscribe(admin_a, receiver.url("/ta"), ["record.created"], receiver, "/ta")
    sub_b = await subscribe(admin_b, receiver.url("/tb"), ["record.created"], receiver, "/tb")
    await emit(body_a["tenant"]["id"], events.RECORD_CREATED, RECORD)
    await deliver_all()
    assert len(receiver.at("/ta")) == 1 and receiver.at("/tb") == []
    assert (await admin_b.get(f"/api/v1/webhooks/{sub_b['id']}/deliveries")).json()["items"] == []

    [delivery] = (await admin_a.get(f"/api/v1/webhooks/{sub_a['id']}/deliveries")).json()["items"]
    base = f"/api/v1/webhooks/{sub_a['id']}"
    for method, path, payload in [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("POST", f"{base}/rotate-secret", {}),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery['id']}", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/redeliver", None),
        ("GET", f"/api/v1/webhooks/{sub_b['id']}/deliveries/{delivery['id']}", None),  # B's id, A's delivery
        ("DELETE", base, None),
    ]:
        response = await admin_b.request(method, path, json=payload)
        assert response.status_code == 404, (method, path, response.text)
    assert [s["id"] for s in (await admin_b.get("/api/v1/webhooks")).json()] == [sub_b["id"]]
    assert (await admin_a.get(base)).json()["enabled"] is True


async def test_only_admins_manage_subscriptions(hooks: World) -> None:
    admin, _ = await hooks.signup()
    manager, _ = await hooks.invite_and_join(admin, "manager")
    assert (await manager.get("/api/v1/webhooks")).status_code == 403
    assert (await manager.get("/api/v1/webhooks/event-types")).status_code == 403
    choices = (await admin.get("/api/v1/webhooks/event-types")).json()
    assert {"type": "run.started", "group": events.RUNS, "description": events.RUN_STARTED.description,
            "scope": "runs:read"} in choices  # fmt: skip
    assert "mail.requested" not in {c["type"] for c in choices}


def token_principal(tenant_id: str, user_id: str, *scopes: str, client_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        user_id=uuid.UUID(user_id),
        session_id=uuid.uuid4(),
        tenant_id=uuid.UUID(tenant_id),
        role=Role.ADMIN,
        csrf_token="",
        scopes=frozenset(scopes),
        client_id=client_id or uuid.uuid4(),
    )


async def test_a_tokens_scopes_limit_what_it_subscribes_to_and_what_is_delivered(
    hooks: World, receiver: Receiver
) -> None:
    admin, body = await hooks.signup()
    tenant_id, user_id = body["tenant"]["id"], body["user"]["id"]
    app = token_principal(tenant_id, user_id, "webhooks:manage", "records:read", "records:write")
    async with tenant_session(uuid.UUID(tenant_id)) as db:
        with pytest.raises(ValidationProblem) as refused:
            await webhooks.create_subscription(
                db, app, webhooks.NewSubscription(receiver.url("/app"), ["record.created", "run.started"])
            )
    assert [(e.pointer, e.code) for e in refused.value.errors] == [("/event_types/1", "scope_missing")]
    assert {c.scope for c in webhooks.event_choices(app)} == {"records:read"}

    no_manage = token_principal(tenant_id, user_id, "records:read")
    async with tenant_session(uuid.UUID(tenant_id)) as db:
        with pytest.raises(Exception) as forbidden:
            await webhooks.list_subscriptions(db, no_manage)
    assert getattr(forbidden.value, "code", None) == "scope_required"

    async with tenant_session(uuid.UUID(tenant_id)) as db:
        made, secret = await webhooks.create_subscription(
            db, app, webhooks.NewSubscription(receiver.url("/app"), ["record.created"])
        )
        assert made.client_id == app.client_id and made.scopes == ["records:read"]
        other_app = token_principal(tenant_id, user_id, "webhooks:manage", "records:read")
        assert await webhooks.list_subscriptions(db, other_app) == []  # an app sees its own only
    receiver.secrets["/app"] = [secret]

    # A person may not widen it past the scopes of the app that made it.
    widened = await admin.patch(f"/api/v1/webhooks/{made.id}", {"event_types": ["record.created", "run.started"]})
    assert widened.status_code == 422 and widened.json()["errors"][0]["code"] == "scope_missing"
    await emit(tenant_id, events.RECORD_CREATED, RECORD)
    await emit(tenant_id, events.RUN_STARTED, {"run_id": str(uuid.uuid4())})
    await deliver_all()
    assert [Webhook(secret).verify(r.body, r.headers)["type"] for r in receiver.at("/app")] == ["record.created"]


def test_every_delivered_event_family_needs_its_read_scope() -> None:
    assert webhooks.read_scope("record.updated") == "records:read"
    assert webhooks.read_scope("step.completed") == "runs:read"
    assert webhooks.read_scope("exception.raised") == "runs:read"
    assert webhooks.read_scope("procedure.published") == "procedures:read"
    assert webhooks.read_scope("member.joined") == "members:read"
    assert webhooks.read_scope("template.installed") == "templates:read"
    assert webhooks.read_scope("automation.created") == "automations:read"
    assert webhooks.read_scope("marketplace.installed") == "plugins:read"
    assert webhooks.read_scope("plugin.erp.order_created") == "plugins:read"
    for plumbing in ("mail.requested", "action.requested", "marketplace.uninstalled", "tenant.created", "no.such"):
        assert webhooks.read_scope(plumbing) is None
    # Every group of the catalog is either delivered with a read scope of the catalog, or plumbing.
    from tenants.scopes import SCOPES

    for name in events.CATALOG:
        scope = webhooks.read_scope(name)
        assert scope is None or (scope in SCOPES and scope.endswith(":read")), name
        assert scope is not None or name in webhooks.NOT_DELIVERED, f"{name}: give its group a scope"
    assert not webhooks.event_allowed("run.started", ["records:read"])
    assert webhooks.event_allowed("run.started", None) and webhooks.event_allowed("run.started", ["runs:read"])
