"""The action kinds that call out: webhook (an HTTP request, signed, to a checked public address)
and plugin (a plugin's action, on the plugin's own queue).

Their effects are outside our database, so they carry ``ctx.idempotency_key`` for the other side
to deduplicate retries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import os
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from services import netguard
from services.automation.action_base import (
    ActionContext,
    PermanentActionError,
    RetryableActionError,
    ValidationEnv,
    _jsonable,
    _Kind,
    expression_problems,
    resolve,
)
from services.marketplace import host as plugin_host
from tenants.errors import FieldProblem

WEBHOOK_TIMEOUT_SECONDS: Final = 10.0
SIGNATURE_HEADER: Final = "X-Guiju-Signature"
MAX_RESPONSE_KEPT: Final = 4_000  # characters of a webhook's answer kept in the action's output


# ---------------------------------------------------------------- webhook


def http_allowed_hosts() -> frozenset[str]:
    """Hosts an outbound webhook may reach over plain http and at non-public addresses (tests, a
    private network): ``GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS``, comma-separated. Every other URL must be
    https and resolve only to public addresses."""
    raw = os.environ.get("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", "")
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


def url_problem(url: Any, pointer: str) -> FieldProblem | None:
    if not isinstance(url, str) or not url:
        return FieldProblem.of(pointer, "required", "url is required")
    if len(url) > 2000:
        return FieldProblem.of(pointer, "too_long", "at most 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return FieldProblem.of(pointer, "invalid_url", "not a URL")
    if not parts.hostname:
        return FieldProblem.of(pointer, "invalid_url", "the URL names no host")
    if parts.username or parts.password:
        return FieldProblem.of(pointer, "invalid_url", "put credentials in headers, not in the URL")
    if parts.hostname.lower() not in http_allowed_hosts():
        try:
            literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None  # a name: checked when the webhook is sent, against what it resolves to
        refused = address_refusal(literal) if literal is not None else None
        if refused is not None:
            return FieldProblem.of(
                pointer, "forbidden_address", "webhooks cannot call {refused} addresses", refused=refused
            )
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and parts.hostname.lower() in http_allowed_hosts():
        return None
    return FieldProblem.of(pointer, "insecure_url", "webhooks go over https")


async def resolve_public(host: str, port: int) -> netguard.IPAddress:
    """The public address to send a webhook to (see :func:`services.netguard.resolve_public`)."""
    try:
        return await netguard.resolve_public(host, port)
    except netguard.HostRefused as exc:
        raise PermanentActionError(
            f"webhook refused: {exc}; webhooks only call public addresses "
            "(allow a private host with GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS)"
        ) from exc
    except netguard.HostUnresolved as exc:
        raise RetryableActionError(f"webhook {exc}") from exc


address_refusal = netguard.address_refusal
pinned_target = netguard.pinned_target
IPAddress = netguard.IPAddress


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Guiju-Signature`` value: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (it is either seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


_HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "content-type", "idempotency-key", SIGNATURE_HEADER.lower(), "transfer-encoding"}
)


class Webhook(_Kind):
    name = "webhook"
    keys = frozenset({"url", "method", "headers", "body", "secret"})
    time_limit_ms = 30_000
    effects_in_db = False

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        found = url_problem(config.get("url"), f"{pointer}/url")
        problems += [found] if found else []
        if config.get("method", "POST") not in {"POST", "PUT", "PATCH"}:
            problems.append(FieldProblem.of(f"{pointer}/method", "invalid_method", "method is POST, PUT or PATCH"))
        headers = config.get("headers", {})
        if not isinstance(headers, dict):
            problems.append(FieldProblem.of(f"{pointer}/headers", "invalid_type", "headers is an object of texts"))
        else:
            for key, value in headers.items():
                if not isinstance(value, str) or key.lower() in _HOP_HEADERS:
                    problems.append(
                        FieldProblem.of(
                            f"{pointer}/headers/{key}", "invalid_header", "a header is text and not one Guiju sets"
                        )
                    )
                else:
                    problems += expression_problems(value, f"{pointer}/headers/{key}", env)
        problems += expression_problems(config.get("body"), f"{pointer}/body", env)
        secret = config.get("secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            problems.append(
                FieldProblem.of(f"{pointer}/secret", "weak_secret", "a signing secret has at least 16 characters")
            )
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        url = config.get("url")
        bad_url = url_problem(url, "/url")
        if bad_url is not None:
            raise PermanentActionError(f"webhook url: {bad_url.message}")
        assert isinstance(url, str)
        body_value = (
            resolve(config["body"], context)
            if "body" in config
            else {
                "event": {k: ctx.event.get(k) for k in ("id", "type", "occurred_at", "payload")},
                "outputs": ctx.outputs,
            }
        )
        body = json.dumps(_jsonable(body_value), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            str(k): str(resolve(v, context))
            for k, v in (config.get("headers") or {}).items()
            if str(k).lower() not in _HOP_HEADERS
        }
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = ctx.idempotency_key
        headers["User-Agent"] = "Guiju-Webhook/1"
        secret = config.get("secret")
        if isinstance(secret, str) and secret:
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        target: str = url
        extensions: dict[str, Any] = {}
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in http_allowed_hosts():
            # Checked right before sending, and the request goes to the checked address itself.
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await resolve_public(host, port)
            target, pinned_headers, extensions = pinned_target(url, address)
            headers.update(pinned_headers)
        try:
            # trust_env=False: no proxy from the environment, so the connection goes where we checked.
            async with httpx.AsyncClient(
                timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            ) as client:
                response = await client.request(
                    str(config.get("method", "POST")), target, content=body, headers=headers, extensions=extensions
                )
        except httpx.HTTPError as exc:  # connect, read, timeout: may pass
            raise RetryableActionError(f"webhook {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            raise RetryableActionError(
                f"webhook answered {status}", retry_after=retry_after_seconds(response.headers.get("Retry-After"))
            )
        if status >= 300:
            raise PermanentActionError(f"webhook answered {status}: {response.text[:500]}")
        try:
            answer: Any = response.json() if response.content else None
        except ValueError:
            answer = response.text[:MAX_RESPONSE_KEPT]
        if len(response.content) > MAX_RESPONSE_KEPT:
            answer = None
        return {"status": status, "response": answer}


# ---------------------------------------------------------------- plugin


class PluginActionKind(_Kind):
    name = "plugin"
    keys = frozenset({"plugin", "action", "input"})
    time_limit_ms = 60_000
    effects_in_db = False

    def queue(self, config: dict[str, Any]) -> str:
        return f"plugin.{config.get('plugin')}"

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        plugin, action = config.get("plugin"), config.get("action")
        if not isinstance(plugin, str) or not plugin:
            problems.append(FieldProblem.of(f"{pointer}/plugin", "required", "plugin is the plugin's name"))
        elif plugin not in env.installed_plugins:
            problems.append(
                FieldProblem.of(
                    f"{pointer}/plugin", "plugin_not_installed", "the plugin '{plugin}' is not installed", plugin=plugin
                )
            )
        if not isinstance(action, str) or not action:
            problems.append(FieldProblem.of(f"{pointer}/action", "required", "action is the plugin action's name"))
        elif (
            isinstance(plugin, str)
            and plugin in env.installed_plugins
            and f"{plugin}.{action}" not in env.plugin_actions
        ):
            problems.append(
                FieldProblem.of(
                    f"{pointer}/action",
                    "unknown_plugin_action",
                    "the plugin '{plugin}' has no action '{action}'",
                    plugin=plugin,
                    action=action,
                )
            )
        payload = config.get("input", {})
        if not isinstance(payload, dict):
            problems.append(FieldProblem.of(f"{pointer}/input", "invalid_type", "input is an object"))
        return problems + expression_problems(payload, f"{pointer}/input", env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        plugin, action = str(config.get("plugin")), str(config.get("action"))
        try:
            result = await plugin_host.call_action(
                db,
                ctx.tenant_id,
                plugin,
                action,
                _jsonable(resolve(config.get("input") or {}, context)),
                idempotency_key=ctx.idempotency_key,
                execution_id=str(ctx.execution_id),
            )
        except plugin_host.PluginCallFailed as exc:
            follow_up = (
                functools.partial(plugin_host.count_failure, plugin=plugin, error=str(exc)) if exc.unhealthy else None
            )
            if exc.retryable:
                raise RetryableActionError(str(exc), retry_after=exc.retry_after, follow_up=follow_up) from exc
            raise PermanentActionError(str(exc), follow_up=follow_up) from exc
        return _jsonable(result)  # type: ignore[no-any-return]
