"""Webhook subscriptions: an app or an admin subscribes a URL to events of the catalog; every event
of those types is delivered there, signed the Standard Webhooks way, retried with backoff, logged,
and the subscription turns itself off after too many failures in a row.

- Who manages them: the workspace's admins; a token also needs the ``webhooks:manage`` scope, and
  sees only the subscriptions its own app (OAuth client) made.
- Which events: each family of events needs a read scope (:data:`EVENT_SCOPES`). A token subscribes
  only to events its scopes read, and the subscription keeps those scopes: its deliveries carry
  nothing else, whoever changes it later.
- The secret: never stored, derived from the platform's secret key and a nonce per subscription
  (as the automations' inbound webhooks do); a rotation draws a new nonce and keeps the previous
  one signing for an overlap, each delivery then carrying both signatures.
- Delivery: :func:`fan_out` (an outbox subscriber) inserts one delivery per subscription and event,
  unique, so a redelivered event delivers nothing twice, and sends the ``deliver_webhook`` actor
  after commit. :func:`deliver` makes one attempt: it reads what to send in one transaction, calls
  the receiver outside any (a slow receiver holds no database connection), and records the answer
  in another, scheduling the next attempt after the configured wait.
- ``webhook-id`` is the event's id on every attempt and redelivery: receivers deduplicate on it.
  Order is not guaranteed (retries overtake).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook

from services import events, netguard
from services.accounts import service as accounts
from services.broker import send_after_commit, tenant_session
from services.db.statements import insert_ignoring_conflicts
from services.json_body import decode_json_body
from services.notifications import service as notifications
from services.outbox import service as outbox
from services.settings import Settings, load_settings
from services.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, Forbidden, NotFound, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MANAGE_SCOPE: Final = "webhooks:manage"
QUEUE: Final = "webhooks"
DELIVER_ACTOR: Final = "deliver_webhook"
EXCERPT_BYTES: Final = 2048  # of the body sent and of the answer, kept in the delivery log
MAX_EVENT_TYPES: Final = 100
MAX_PAGE: Final = 200
MAX_OVERLAP_HOURS: Final = 7 * 24
USER_AGENT: Final = "Guiju-Webhooks/1"

# ---------------------------------------------------------------- which events, and who may read them

#: The read scope each group of the event catalog needs: a token subscribes to (and a subscription
#: receives) an event only with its group's scope.
EVENT_SCOPES: Final[Mapping[str, str]] = {
    events.RECORDS: "records:read",
    events.RUNS: "runs:read",
    events.PROCEDURES: "procedures:read",
    events.WORKSPACE: "members:read",
    events.TEMPLATES: "templates:read",
    events.AUTOMATIONS: "automations:read",
    events.PLUGINS: "plugins:read",
}

#: Events that are the platform's own plumbing (requests between its parts, timers, a sign-up that
#: precedes every subscription, an uninstall that carries encrypted secrets): never delivered.
NOT_DELIVERED: Final = frozenset(
    {
        events.TENANT_CREATED.name,
        events.ACTION_REQUESTED.name,
        events.STEP_ACTION_REQUESTED.name,
        events.WAIT_SCHEDULED.name,
        events.SUBPROCEDURE_REQUESTED.name,
        events.RECORD_UPDATE_REQUESTED.name,
        events.PLUGIN_UNINSTALLED.name,
        events.PLUGIN_HEALTH_REQUESTED.name,
        events.PLUGIN_POLL_DUE.name,
        events.PLUGIN_VERSION_SUBMITTED.name,
        events.NOTIFICATION_FORWARDED.name,
        events.MAIL_REQUESTED.name,
    }
)


@dataclass(frozen=True)
class EventChoice:
    """An event type (or a family's pattern) one may subscribe to, and the scope it needs."""

    type: str
    group: str
    description: str
    scope: str


def read_scope(event_type: str) -> str | None:
    """The scope that reads ``event_type``; None when it is never delivered (unknown, or plumbing)."""
    if event_type in NOT_DELIVERED:
        return None
    family = events.family_of(event_type)
    if family is not None:
        return EVENT_SCOPES.get(family.group)
    entry = events.CATALOG.get(event_type)
    return EVENT_SCOPES.get(entry.group) if entry is not None else None


def event_allowed(event_type: str, scopes: Iterable[str] | None) -> bool:
    """Whether ``scopes`` (None: a browser session's, unlimited) read ``event_type``."""
    scope = read_scope(event_type)
    return scope is not None and (scopes is None or scope in set(scopes))


def event_choices(principal: Principal) -> list[EventChoice]:
    """The event types ``principal`` may subscribe to, in catalog order."""
    found = [
        EventChoice(name, entry.group, entry.description, scope)
        for name, entry in events.CATALOG.items()
        if (scope := read_scope(name)) is not None
    ]
    found += [
        EventChoice(family.pattern, family.group, family.description, EVENT_SCOPES[family.group])
        for family in events.FAMILIES
        if family.group in EVENT_SCOPES
    ]
    return [choice for choice in found if principal.allows(choice.scope)]


# ---------------------------------------------------------------- settings and secrets


class _Config:
    settings: Settings | None = None


_config = _Config()


def configure(settings: Settings) -> None:
    """Use ``settings`` (app and worker start-up): the secret key, timeouts, retry waits, allow-list."""
    _config.settings = settings


def settings() -> Settings:
    if _config.settings is None:
        _config.settings = load_settings("embedded")
    return _config.settings


def signing_secret(tenant_id: uuid.UUID, subscription_id: uuid.UUID, nonce: str) -> str:
    """The ``whsec_<base64>`` secret of a subscription's nonce (derived, never stored)."""
    message = f"webhook-subscription:{tenant_id}:{subscription_id}:{nonce}".encode()
    key = hmac.new(settings().secret_key.encode(), message, hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode()


def signing_secrets(subscription: WebhookSubscription, now: datetime | None = None) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous during its overlap."""
    found = [signing_secret(subscription.tenant_id, subscription.id, subscription.secret_nonce)]
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret_nonce and expires is not None and expires > (now or utcnow()):
        found.append(signing_secret(subscription.tenant_id, subscription.id, subscription.previous_secret_nonce))
    return found


def signature_header(secrets_now: list[str], message_id: str, moment: datetime, body: bytes) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret, space-separated (Standard Webhooks)."""
    return " ".join(Webhook(secret).sign(message_id, moment, body) for secret in secrets_now)


# ---------------------------------------------------------------- checks


def _allowed_hosts() -> frozenset[str]:
    return frozenset(h.lower() for h in settings().webhook_allow_http_hosts)


def url_problem(url: str, pointer: str = "/url") -> FieldProblem | None:
    """What is wrong with ``url`` on its face (the address it resolves to is checked apart)."""
    if not url:
        return FieldProblem.of(pointer, "required", "url is required")
    if len(url) > 2000:
        return FieldProblem.of(pointer, "too_long", "at most 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return FieldProblem.of(pointer, "invalid_url", "not a URL")
    host = (parts.hostname or "").lower()
    if not host:
        return FieldProblem.of(pointer, "invalid_url", "the URL names no host")
    if parts.username or parts.password:
        return FieldProblem.of(pointer, "invalid_url", "put credentials in headers, not in the URL")
    allowed = host in _allowed_hosts()
    if not allowed:
        try:
            refused = netguard.address_refusal(ipaddress.ip_address(host))
        except ValueError:
            refused = None  # a name: checked against what it resolves to
        if refused is not None:
            return FieldProblem.of(
                pointer, "forbidden_address", "webhooks cannot call {refused} addresses", refused=refused
            )
    if parts.scheme == "https" or (parts.scheme == "http" and allowed):
        return None
    return FieldProblem.of(pointer, "insecure_url", "webhooks go over https")


async def address_problem(url: str, pointer: str = "/url") -> FieldProblem | None:
    """Whether ``url``'s host resolves only to public addresses (hosts of the allow-list pass)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in _allowed_hosts():
        return None
    try:
        await netguard.resolve_public(host, parts.port or (443 if parts.scheme == "https" else 80))
    except netguard.HostRefused:
        return FieldProblem.of(pointer, "forbidden_address", "webhooks only call public addresses")
    except netguard.HostUnresolved:
        return FieldProblem.of(pointer, "unresolved_host", "the URL's host does not resolve")
    return None


def event_type_problems(
    event_types: list[str], principal: Principal, kept_scopes: Iterable[str] | None
) -> list[FieldProblem]:
    """Every problem of a subscription's event types for ``principal`` (and the scopes the
    subscription keeps from the token that made it)."""
    if not event_types:
        return [FieldProblem.of("/event_types", "required", "choose at least one event type")]
    if len(event_types) > MAX_EVENT_TYPES:
        return [FieldProblem.of("/event_types", "too_many", "at most {max} event types", max=MAX_EVENT_TYPES)]
    problems: list[FieldProblem] = []
    for index, name in enumerate(event_types):
        pointer = f"/event_types/{index}"
        scope = read_scope(name)
        if not events.is_known(name):
            problems.append(FieldProblem.of(pointer, "unknown_event", "'{event}' is not an event", event=name))
        elif scope is None:
            problems.append(
                FieldProblem.of(pointer, "not_subscribable", "'{event}' is not delivered to webhooks", event=name)
            )
        elif not principal.allows(scope) or not event_allowed(name, kept_scopes):
            problems.append(
                FieldProblem.of(pointer, "scope_missing", "'{event}' needs the {scope} scope", event=name, scope=scope)
            )
    return problems


def require_manager(principal: Principal) -> uuid.UUID:
    tenant_id = principal.require_role(Role.ADMIN)
    if not principal.allows(MANAGE_SCOPE):
        raise Forbidden("This needs the {scope} scope.", code="scope_required", scope=MANAGE_SCOPE)
    return tenant_id


def _read_scopes(principal: Principal) -> list[str] | None:
    if principal.scopes is None:
        return None
    return sorted(scope for scope in principal.scopes if scope.endswith(":read"))


# ---------------------------------------------------------------- managing subscriptions


@dataclass(frozen=True)
class NewSubscription:
    url: str
    event_types: list[str]
    description: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class SubscriptionChange:
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


async def _problems(
    principal: Principal,
    *,
    url: str | None,
    event_types: list[str] | None,
    description: str | None,
    kept_scopes: Iterable[str] | None,
) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if url is not None:
        found = url_problem(url)
        if found is None:
            found = await address_problem(url)
        problems += [found] if found else []
    if event_types is not None:
        problems += event_type_problems(event_types, principal, kept_scopes)
    if description is not None and len(description) > 200:
        problems.append(FieldProblem.of("/description", "too_long", "at most {max} characters", max=200))
    return problems


async def create_subscription(
    db: AsyncSession, principal: Principal, data: NewSubscription
) -> tuple[WebhookSubscription, str]:
    """Subscribe ``data.url``; returns the subscription and its secret, shown only now."""
    tenant_id = require_manager(principal)
    scopes = _read_scopes(principal)
    problems = await _problems(
        principal, url=data.url, event_types=data.event_types, description=data.description, kept_scopes=scopes
    )
    if problems:
        raise ValidationProblem(errors=problems)
    subscription = WebhookSubscription(
        tenant_id=tenant_id,
        id=new_id(),
        url=data.url,
        description=data.description,
        event_types=list(dict.fromkeys(data.event_types)),
        enabled=data.enabled,
        client_id=principal.client_id if principal.by_token else None,
        scopes=scopes,
        created_by=principal.user_id,
        secret_nonce=secrets.token_hex(16),
    )
    db.add(subscription)
    await db.flush()
    return subscription, signing_secret(tenant_id, subscription.id, subscription.secret_nonce)


def _visible(principal: Principal) -> Any:
    """Which subscriptions ``principal`` sees: a token, those its own app made; a session, all."""
    if not principal.by_token:
        return True
    if principal.client_id is None:
        return WebhookSubscription.client_id.is_(None)
    return WebhookSubscription.client_id == principal.client_id


async def list_subscriptions(db: AsyncSession, principal: Principal) -> list[WebhookSubscription]:
    require_manager(principal)
    query = select(WebhookSubscription).where(_visible(principal)).order_by(WebhookSubscription.id)
    return list((await db.scalars(query)).all())


async def get_subscription(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
) -> WebhookSubscription:
    require_manager(principal)
    query = select(WebhookSubscription).where(WebhookSubscription.id == subscription_id, _visible(principal))
    found = await db.scalar(query.with_for_update() if for_update else query)
    if found is None:
        raise NotFound("No such webhook subscription.", code="webhook_not_found")
    return found


async def update_subscription(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, change: SubscriptionChange
) -> WebhookSubscription:
    """Change a subscription; turning it back on clears its failures in a row."""
    subscription = await get_subscription(db, principal, subscription_id, for_update=True)
    problems = await _problems(
        principal,
        url=change.url,
        event_types=change.event_types,
        description=change.description,
        kept_scopes=subscription.scopes,
    )
    if problems:
        raise ValidationProblem(errors=problems)
    if change.url is not None:
        subscription.url = change.url
    if change.event_types is not None:
        subscription.event_types = list(dict.fromkeys(change.event_types))
    if change.description is not None:
        subscription.description = change.description
    if change.enabled is not None and change.enabled != subscription.enabled:
        subscription.enabled = change.enabled
        subscription.consecutive_failures = 0
        subscription.disabled_reason = None if change.enabled else "by_hand"
        subscription.disabled_at = None if change.enabled else utcnow()
    subscription.updated_at = utcnow()
    await db.flush()
    return subscription


async def delete_subscription(db: AsyncSession, principal: Principal, subscription_id: uuid.UUID) -> None:
    subscription = await get_subscription(db, principal, subscription_id, for_update=True)
    await db.delete(subscription)
    await db.flush()


async def rotate_secret(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, overlap_hours: int | None = None
) -> tuple[WebhookSubscription, str]:
    """Draw a new secret (returned, shown only now); the current one goes on signing, next to the
    new, for ``overlap_hours`` (the setting's by default; 0: it stops at once)."""
    hours = settings().webhook_secret_overlap_hours if overlap_hours is None else overlap_hours
    if not 0 <= hours <= MAX_OVERLAP_HOURS:
        raise ValidationProblem(
            errors=[
                FieldProblem.of("/overlap_hours", "out_of_range", "between 0 and {max} hours", max=MAX_OVERLAP_HOURS)
            ]
        )
    subscription = await get_subscription(db, principal, subscription_id, for_update=True)
    now = utcnow()
    subscription.previous_secret_nonce = subscription.secret_nonce if hours else None
    subscription.previous_secret_expires_at = now + timedelta(hours=hours) if hours else None
    subscription.secret_nonce = secrets.token_hex(16)
    subscription.updated_at = now
    await db.flush()
    return subscription, signing_secret(subscription.tenant_id, subscription.id, subscription.secret_nonce)


# ---------------------------------------------------------------- the delivery log


def _encode_cursor(delivery_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([str(delivery_id)])).decode()


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(decode_json_body(base64.urlsafe_b64decode(cursor.encode()))[0])
    except (ValueError, TypeError, IndexError, KeyError, ProblemError) as exc:
        raise ValidationProblem(
            errors=[FieldProblem.of("/query/cursor", "invalid_cursor", "not a cursor of this list")]
        ) from exc


async def list_deliveries(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[WebhookDelivery], str | None]:
    """A subscription's deliveries, newest first (ids are time-ordered), with keyset pagination."""
    await get_subscription(db, principal, subscription_id)
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == subscription_id)
        .order_by(WebhookDelivery.id.desc())
    )
    if cursor:
        query = query.where(WebhookDelivery.id < _decode_cursor(cursor))
    rows = list((await db.scalars(query.limit(limit + 1))).all())
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def _delivery(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> tuple[WebhookSubscription, WebhookDelivery]:
    subscription = await get_subscription(db, principal, subscription_id)
    delivery = await db.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == subscription_id
        )
    )
    if delivery is None:
        raise NotFound("No such webhook delivery.", code="webhook_delivery_not_found")
    return subscription, delivery


async def get_delivery(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """A delivery and every attempt of it, oldest first."""
    delivery = (await _delivery(db, principal, subscription_id, delivery_id))[1]
    attempts = await db.scalars(
        select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id).order_by(WebhookAttempt.id)
    )
    return delivery, list(attempts.all())


async def redeliver(
    db: AsyncSession, principal: Principal, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Send a delivery once more, now (same ``webhook-id``); its outcome lands in the log."""
    subscription, delivery = await _delivery(db, principal, subscription_id, delivery_id)
    if not subscription.enabled:
        raise Conflict("Turn the subscription on before redelivering.", code="webhook_disabled")
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow()
    await db.flush()
    send_after_commit(
        db,
        DELIVER_ACTOR,
        queue_name=QUEUE,
        kwargs={"tenant_id": str(delivery.tenant_id), "delivery_id": str(delivery.id), "attempt": None},
    )
    return delivery


# ---------------------------------------------------------------- from events to deliveries


def _event_body(message: Mapping[str, Any]) -> dict[str, Any]:
    """What a receiver gets: the event's id, type, time and payload (without the platform's ``_`` keys)."""
    payload = message.get("payload") or {}
    return {
        "id": message["id"],
        "type": message["type"],
        "timestamp": message["occurred_at"],
        "data": {k: v for k, v in payload.items() if not str(k).startswith("_")},
    }


async def fan_out(messages: list[dict[str, Any]]) -> None:
    """The outbox subscriber: one delivery per enabled subscription of each event's type (and whose
    scopes read it), each sent to the delivery actor after commit."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if message.get("tenant_id") and read_scope(str(message["type"])) is not None:
            by_tenant.setdefault(str(message["tenant_id"]), []).append(message)
    for tenant, found in by_tenant.items():
        tenant_id = uuid.UUID(tenant)
        async with tenant_session(tenant_id) as db:
            subscriptions = (
                await db.scalars(select(WebhookSubscription).where(WebhookSubscription.enabled.is_(True)))
            ).all()
            rows = [
                {
                    "tenant_id": tenant_id,
                    "id": new_id(),
                    "subscription_id": subscription.id,
                    "event_id": uuid.UUID(message["id"]),
                    "event_type": message["type"],
                    "event": _event_body(message),
                    "status": "pending",
                    "attempts": 0,
                    "request_excerpt": "",
                    "response_excerpt": "",
                    "created_at": utcnow(),
                }
                for message in found
                for subscription in subscriptions
                if message["type"] in subscription.event_types and event_allowed(message["type"], subscription.scopes)
            ]
            inserted = await insert_ignoring_conflicts(
                db, WebhookDelivery, rows, conflict=("tenant_id", "subscription_id", "event_id"), returning=("id",)
            )
            for (delivery_id,) in inserted:
                send_after_commit(
                    db,
                    DELIVER_ACTOR,
                    queue_name=QUEUE,
                    kwargs={"tenant_id": tenant, "delivery_id": str(delivery_id), "attempt": 1},
                )


#: What :func:`fan_out` listens to: every delivered event of the catalog, and the delivered families.
SUBSCRIBED_TYPES: Final = (
    *(name for name in events.CATALOG if read_scope(name) is not None),
    *(f"{family.prefix}*" for family in events.FAMILIES if family.group in EVENT_SCOPES),
)
for _event_type in SUBSCRIBED_TYPES:
    outbox.subscribe(_event_type, fan_out)


# ---------------------------------------------------------------- one attempt


@dataclass(frozen=True)
class _Request:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class _Answer:
    status: int | None
    excerpt: str
    duration_ms: int
    error: str | None
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _request_for(subscription: WebhookSubscription, delivery: WebhookDelivery) -> _Request:
    body = json.dumps(delivery.event, ensure_ascii=False, separators=(",", ":")).encode()
    now = utcnow()
    message_id = str(delivery.event_id)
    return _Request(
        url=subscription.url,
        body=body,
        headers={
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(signing_secrets(subscription, now), message_id, now, body),
        },
    )


async def _send(request: _Request) -> _Answer:
    """POST the request to its checked address; never raises (the answer says what went wrong)."""
    config = settings()
    started = time.monotonic()

    def answer(status: int | None, excerpt: bytes, error: str | None, permanent: bool = False) -> _Answer:
        elapsed = int((time.monotonic() - started) * 1000)
        return _Answer(status, excerpt[:EXCERPT_BYTES].decode(errors="replace"), elapsed, error, permanent)

    headers = dict(request.headers)
    target = request.url
    extensions: dict[str, Any] = {}
    parts = urlsplit(request.url)
    host = (parts.hostname or "").lower()
    if url_problem(request.url) is not None:
        return answer(None, b"", "the URL is not allowed (https, public addresses only)", permanent=True)
    if host not in _allowed_hosts():
        # Checked right before sending, and the request goes to the checked address itself.
        try:
            address = await netguard.resolve_public(host, parts.port or (443 if parts.scheme == "https" else 80))
        except netguard.HostRefused as exc:
            return answer(None, b"", f"refused: {exc}", permanent=True)
        except netguard.HostUnresolved as exc:
            return answer(None, b"", str(exc))
        target, pinned, extensions = netguard.pinned_target(request.url, address)
        headers.update(pinned)
    try:
        # trust_env=False: no proxy from the environment, so the connection goes where we checked.
        async with (
            httpx.AsyncClient(
                timeout=config.webhook_delivery_timeout_seconds, follow_redirects=False, trust_env=False
            ) as client,
            client.stream("POST", target, content=request.body, headers=headers, extensions=extensions) as response,
        ):
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) >= EXCERPT_BYTES:
                    break
            return answer(response.status_code, received, None if response.is_success else "not a 2xx answer")
    except httpx.TimeoutException:
        return answer(None, b"", f"no answer within {config.webhook_delivery_timeout_seconds:g} seconds")
    except httpx.HTTPError as exc:
        return answer(None, b"", f"{type(exc).__name__}: {exc}"[:1000])


async def deliver(tenant_id: uuid.UUID, delivery_id: uuid.UUID, attempt: int | None) -> None:
    """One attempt of a delivery (``attempt``: its number in the automatic schedule; None: a manual
    redelivery, which schedules no retry)."""
    async with tenant_session(tenant_id) as db:
        delivery = await db.get(WebhookDelivery, (tenant_id, delivery_id))
        if delivery is None or delivery.status != "pending":
            return  # deleted with its subscription, or done (a message sent twice)
        subscription = await db.get(WebhookSubscription, (tenant_id, delivery.subscription_id))
        if subscription is None:
            return
        if not subscription.enabled or not event_allowed(delivery.event_type, subscription.scopes):
            delivery.status = "failed"
            delivery.error = "the subscription is turned off" if not subscription.enabled else "not in its scopes"
            return
        request = _request_for(subscription, delivery)
    answer = await _send(request)
    async with tenant_session(tenant_id) as db:
        await _record(db, tenant_id, delivery_id, request, answer, attempt)


async def _record(
    db: AsyncSession,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    request: _Request,
    answer: _Answer,
    attempt: int | None,
) -> None:
    delivery = await db.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update())
    if delivery is None:
        return
    subscription = await db.scalar(
        select(WebhookSubscription).where(WebhookSubscription.id == delivery.subscription_id).with_for_update()
    )
    if subscription is None:
        return
    now = utcnow()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.request_excerpt = request.body[:EXCERPT_BYTES].decode(errors="replace")
    delivery.response_status = answer.status
    delivery.response_excerpt = answer.excerpt
    delivery.duration_ms = answer.duration_ms
    delivery.error = answer.error
    db.add(
        WebhookAttempt(
            tenant_id=tenant_id,
            id=new_id(),
            delivery_id=delivery_id,
            manual=attempt is None,
            response_status=answer.status,
            response_excerpt=answer.excerpt,
            duration_ms=answer.duration_ms,
            error=answer.error,
            created_at=now,
        )
    )
    if answer.succeeded:
        delivery.status, delivery.next_attempt_at = "succeeded", None
        subscription.consecutive_failures = 0
        return
    subscription.consecutive_failures += 1
    config = settings()
    waits = config.webhook_delivery_retry_seconds
    if subscription.enabled and subscription.consecutive_failures >= config.webhook_delivery_disable_after:
        await _disable(db, subscription, answer.error or "")
    if attempt is not None and attempt <= len(waits) and subscription.enabled and not answer.permanent:
        wait = waits[attempt - 1]
        delivery.status, delivery.next_attempt_at = "pending", now + timedelta(seconds=wait)
        send_after_commit(
            db,
            DELIVER_ACTOR,
            queue_name=QUEUE,
            kwargs={"tenant_id": str(tenant_id), "delivery_id": str(delivery_id), "attempt": attempt + 1},
            delay_ms=int(wait * 1000),
        )
    else:
        delivery.status, delivery.next_attempt_at = "failed", None


async def _disable(db: AsyncSession, subscription: WebhookSubscription, error: str) -> None:
    """Turn a subscription off after too many failures in a row, and tell the workspace's admins."""
    now = utcnow()
    subscription.enabled = False
    subscription.disabled_reason = "failures"
    subscription.disabled_at = now
    admins = await accounts.member_ids_with_role(db, Role.ADMIN)
    await notifications.send(
        db,
        admins,
        "webhook_disabled",
        {"url": subscription.url, "failures": subscription.consecutive_failures, "error": error[:500]},
        dedupe_key=f"webhook-disabled:{subscription.id}:{now.isoformat()}",
    )
