"""Inbound webhooks of automations: a secret URL per automation, an optional HMAC signature check,
and a delivery log that makes every refused call visible to the tenant.

The URL's token is ``<tenant id hex>.<random>``: the tenant part lets the call be looked up inside
one tenant (no cross-tenant read); only a SHA-256 of the whole token is stored. The signing secret
is derived from the platform's secret key and a per-automation nonce, so it is never stored and a
rotation changes both the URL and the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.automation import replays, service
from services.automation.models import Automation, AutomationWebhook, WebhookDelivery
from services.broker import tenant_session
from services.json_body import MALFORMED_JSON, decode_json_body, is_json_media_type
from services.settings import Settings
from services.web.i18n import N_
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ProblemError
from tenants.models import Role
from tenants.principal import Principal

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_DELIVERIES_LISTED = 200
_TOKEN = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{20,100})$")
_SIGNATURE = re.compile(r"^t=(\d{1,12}),v1=([0-9a-f]{64})$")


class WebhookRefused(ProblemError):
    """An inbound call refused after its automation was found: recorded in the delivery log."""


@dataclass(frozen=True)
class WebhookSecrets:
    url: str
    signing_secret: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def signing_secret(settings: Settings, tenant_id: uuid.UUID, automation_id: uuid.UUID, nonce: str) -> str:
    """The HMAC key a sender signs with (derived, never stored)."""
    message = f"automation-webhook:{tenant_id}:{automation_id}:{nonce}".encode()
    return "whsec_" + hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()


def expected_signature(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_problem(header: str | None, secret: str, body: bytes, now: float | None = None) -> str | None:
    """Why ``X-Guiju-Signature`` does not prove ``body`` was signed with ``secret`` lately; None if it does."""
    if not header:
        return N_("the X-Guiju-Signature header is missing")
    match = _SIGNATURE.match(header.strip())
    if match is None:
        return N_("the X-Guiju-Signature header is not t=<unix seconds>,v1=<hex HMAC-SHA256>")
    timestamp = int(match.group(1))
    if abs((now if now is not None else time.time()) - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return N_("the signature's timestamp is more than 5 minutes away from now")
    if not hmac.compare_digest(expected_signature(secret, body, timestamp), match.group(2)):
        return N_("the signature does not match the body")
    return None


async def rotate(
    db: AsyncSession, principal: Principal, automation_id: uuid.UUID, settings: Settings
) -> WebhookSecrets:
    """Make (or replace) an automation's webhook URL and signing secret; both are shown only now."""
    tenant_id = principal.require_role(Role.MANAGER)
    automation = await service.get_automation(db, principal, automation_id)
    if automation.trigger_type != "webhook":
        raise Conflict("This automation is not triggered by a webhook.", code="not_a_webhook_automation")
    token = f"{tenant_id.hex}.{secrets.token_urlsafe(32)}"
    nonce = secrets.token_hex(16)
    row = await db.scalar(
        select(AutomationWebhook).where(AutomationWebhook.automation_id == automation_id).with_for_update()
    )
    if row is None:
        db.add(AutomationWebhook(automation_id=automation_id, token_hash=_hash(token), signing_nonce=nonce))
    else:
        row.token_hash = _hash(token)
        row.signing_nonce = nonce
        row.rotated_at = utcnow()
    await db.flush()
    return WebhookSecrets(
        url=f"{settings.public_url.rstrip('/')}/hooks/{token}",
        signing_secret=signing_secret(settings, tenant_id, automation_id, nonce),
    )


async def list_deliveries(db: AsyncSession, principal: Principal, automation_id: uuid.UUID) -> list[WebhookDelivery]:
    """The latest inbound calls of an automation's webhook, newest first (manager or higher)."""
    principal.require_role(Role.MANAGER)
    await service.get_automation(db, principal, automation_id)
    rows = await db.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.automation_id == automation_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(MAX_DELIVERIES_LISTED)
    )
    return list(rows)


def _tenant_of(token: str) -> uuid.UUID:
    match = _TOKEN.match(token)
    if match is None:
        raise NotFound("No such webhook.", code="webhook_not_found")
    return uuid.UUID(match.group(1))


async def _record(
    tenant_id: uuid.UUID,
    automation_id: uuid.UUID,
    size: int,
    refused: ProblemError,
    delivery: replays.SignedDelivery | None = None,
) -> None:
    # Its own transaction: a refused call's request rolls back, its log row must stay.
    async with tenant_session(tenant_id) as db:
        db.add(
            WebhookDelivery(
                id=new_id(),
                automation_id=automation_id,
                status="refused",
                code=refused.code,
                detail=refused.detail or refused.title,
                size_bytes=size,
            )
        )
        if delivery is not None:
            await replays.remember_refusal(
                db, automation_id, delivery, SIGNATURE_TOLERANCE_SECONDS, _refusal_answer(refused)
            )


def _refusal_answer(refused: ProblemError) -> replays.Answer:
    body = {"code": refused.code, "title": refused.title, "detail": refused.detail}
    return replays.Answer(refused.status, {**body, "errors": [msgspec.structs.asdict(e) for e in refused.errors]})


def _replayed(earlier: replays.Answer) -> uuid.UUID:
    """The answer an earlier copy of a delivery got, given again."""
    if earlier.status == 202:
        return uuid.UUID(str(earlier.body["execution_id"]))
    if earlier.status == replays.IN_PROGRESS:  # pragma: no cover - a claim is never committed unanswered
        raise Conflict("The same delivery is being handled.", code="delivery_in_progress")
    body = earlier.body
    raise ProblemError(
        body.get("detail"),
        code=str(body.get("code")),
        status=earlier.status,
        title=str(body.get("title")),
        errors=[FieldProblem(**e) for e in body.get("errors") or []],
    )


@dataclass(frozen=True)
class InboundCall:
    token: str
    body: bytes
    too_big: bool
    content_type: str
    headers: Mapping[str, str]


async def receive(call: InboundCall, settings: Settings) -> uuid.UUID:
    """Handle one inbound call: the execution it created (or found, for a repeated delivery).

    Unknown tokens are 404 and not logged (no automation to log them against); every other refusal
    is logged against the automation, then raised as problem+json. A signed delivery sent again
    within the signature's tolerance gets the first copy's answer and starts nothing.
    """
    tenant_id = _tenant_of(call.token)
    async with tenant_session(tenant_id) as db:
        row = await db.scalar(select(AutomationWebhook).where(AutomationWebhook.token_hash == _hash(call.token)))
        if row is None:
            raise NotFound("No such webhook.", code="webhook_not_found")
        automation_id, nonce = row.automation_id, row.signing_nonce
        trigger = await db.scalar(select(Automation.trigger).where(Automation.id == automation_id))
        verify = bool((trigger or {}).get("verify_signature"))
    delivery: replays.SignedDelivery | None = None
    earlier: replays.Answer | None = None
    try:
        payload = _check(call, settings, tenant_id, automation_id, nonce, verify)
        delivery = _signed_delivery(call.headers) if verify else None
        async with tenant_session(tenant_id) as db:
            if delivery is not None:
                earlier = await replays.claim(db, automation_id, delivery, SIGNATURE_TOLERANCE_SECONDS)
            if earlier is not None:
                db.add(
                    WebhookDelivery(
                        id=new_id(),
                        automation_id=automation_id,
                        status="replayed",
                        code=str(earlier.body.get("code")) if earlier.status != 202 else None,
                        detail="the same signed delivery was received before: answered as then, nothing ran",
                        size_bytes=len(call.body),
                    )
                )
            else:
                execution_id = await service.trigger_webhook(db, automation_id, payload, dict(call.headers))
                db.add(
                    WebhookDelivery(
                        id=new_id(),
                        automation_id=automation_id,
                        status="accepted",
                        code=None,
                        detail=f"execution {execution_id}",
                        size_bytes=len(call.body),
                    )
                )
                if delivery is not None:
                    accepted = replays.Answer(202, {"execution_id": str(execution_id)})
                    await replays.answer(db, automation_id, delivery, accepted)
    except ProblemError as exc:
        await _record(tenant_id, automation_id, len(call.body), exc, delivery)
        raise
    return _replayed(earlier) if earlier is not None else execution_id


def _signed_delivery(headers: Mapping[str, str]) -> replays.SignedDelivery:
    """The delivery a verified ``X-Guiju-Signature`` header names."""
    match = _SIGNATURE.match(headers.get("x-guiju-signature", "").strip())
    assert match is not None  # verified just before
    return replays.SignedDelivery(signature=match.group(2), timestamp=int(match.group(1)))


def _check(
    call: InboundCall, settings: Settings, tenant_id: uuid.UUID, automation_id: uuid.UUID, nonce: str, verify: bool
) -> dict[str, Any]:
    if call.too_big:
        raise WebhookRefused(
            "The payload is larger than {webhook_max_bytes} bytes.",
            code="payload_too_large",
            status=413,
            title="Payload too large",
            webhook_max_bytes=settings.webhook_max_bytes,
        )
    if not is_json_media_type(call.content_type):
        raise WebhookRefused(
            "Send the payload as JSON (Content-Type: application/json).",
            code="unsupported_media_type",
            status=415,
            title="Unsupported media type",
        )
    if verify:
        secret = signing_secret(settings, tenant_id, automation_id, nonce)
        problem = signature_problem(call.headers.get("x-guiju-signature"), secret, call.body)
        if problem is not None:
            raise WebhookRefused(problem, code="bad_signature", status=401, title="The signature is not valid")
    try:
        payload = decode_json_body(call.body)
    except ProblemError as exc:
        # Senders have always been told `invalid_json` for a payload that does not parse.
        code = "invalid_json" if exc.code == MALFORMED_JSON else exc.code
        raise WebhookRefused(
            exc.message_id, code=code, status=exc.status, title=exc.title, errors=exc.errors, **exc.params
        ) from exc
    if not isinstance(payload, dict):
        raise WebhookRefused("The payload is a JSON object.", code="invalid_json", status=400)
    return payload
