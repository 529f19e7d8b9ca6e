"""Calling a plugin's action, in process or remote, and the circuit breaker around it.

Plugin code runs only in workers (the automation executor calls :func:`call_action` on the plugin's
own queue). A call checks the installation (enabled, circuit closed), the version (approved, its
code deployed here) and the input against the declared schema, runs the action with a context bound
to the tenant and its grant, and checks the output; failures that are the plugin's count toward
the tenant x plugin circuit breaker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from guiju_sdk import ActionCall, ActionFailed, ScopeDenied, registry, remote
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.marketplace import service
from services.marketplace.context import HostContext, _client
from services.marketplace.models import PluginInstallation, PluginVersion
from services.notifications import service as notifications
from services.patterns import schema_validator
from tenants.base import utcnow
from tenants.models import Role

log = logging.getLogger("guiju.plugins")
MAX_ERROR_KEPT = 2_000


class PluginCallFailed(Exception):
    """A plugin call failed: ``retryable`` when trying later may succeed (after ``retry_after``);
    ``unhealthy`` when the failure is the plugin's (a crash, a hang, garbage, "try later"), which
    the caller counts toward the circuit breaker with :func:`count_failure` once the action's
    transaction has been rolled back."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, unhealthy: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.unhealthy = unhealthy


# ---------------------------------------------------------------- calling an action


async def _installation_for(db: AsyncSession, tenant_id: uuid.UUID, plugin: str) -> PluginInstallation:
    installation = await db.scalar(
        select(PluginInstallation).where(PluginInstallation.tenant_id == tenant_id, PluginInstallation.plugin == plugin)
    )
    if installation is None:
        raise PluginCallFailed(f"the plugin {plugin!r} is not installed in this workspace", retryable=False)
    if not installation.enabled:
        raise PluginCallFailed(f"the plugin {plugin!r} is disabled in this workspace", retryable=False)
    now = utcnow()
    if installation.circuit_open_until is not None and installation.circuit_open_until > now:
        wait = (installation.circuit_open_until - now).total_seconds()
        raise PluginCallFailed(
            f"{plugin} is paused for this workspace after {installation.consecutive_failures} failures in a row "
            f"(last: {installation.last_error}); it is tried again in {wait:.0f} s",
            retryable=True,
            retry_after=wait,
        )
    return installation


@dataclass(frozen=True)
class DeclaredAction:
    """An action as its version's manifest declares it, with its schemas compiled."""

    name: str
    time_limit_seconds: float
    input_validator: Any
    output_validator: Any


@dataclass(frozen=True)
class RunnableVersion:
    """What calling an approved plugin version needs, read from its row once per process: an
    approved version never changes (a review only ends a pending one, a key rotation re-encrypts
    the same signing secret), so the per-call work is the installation's read alone."""

    plugin: str
    version: str
    kind: str
    scopes: frozenset[str]
    actions: Mapping[str, DeclaredAction]
    endpoint: str | None
    signing_secret: bytes | None


def _validator(schema: Any) -> Any:
    # A partner's schema: its patterns run on RE2, never on a backtracking engine.
    return schema_validator(schema) if isinstance(schema, dict) and schema else None


async def runnable_version(db: AsyncSession, plugin: str, version: str) -> RunnableVersion | None:
    """The approved ``plugin`` ``version`` ready to call here, or None when it cannot run here."""
    cache = service.runnable_cache()
    key = (str(db.get_bind().engine.url), plugin, version)
    found: RunnableVersion | None = cache.get(key)
    if found is None:
        row = await db.get(PluginVersion, (plugin, version))
        if row is None or row.status != "approved":
            return None
        found = RunnableVersion(
            plugin=plugin,
            version=version,
            kind=row.kind,
            scopes=frozenset(service.manifest_scopes(row.manifest)),
            actions={
                str(a["name"]): DeclaredAction(
                    name=str(a["name"]),
                    time_limit_seconds=int(a.get("time_limit_ms") or 30_000) / 1000,
                    input_validator=_validator(a.get("input_schema")),
                    output_validator=_validator(a.get("output_schema")),
                )
                for a in row.manifest.get("actions") or []
                if isinstance(a, dict) and a.get("name")
            },
            endpoint=row.endpoint,
            signing_secret=_signing_secret(row) if row.signing_secret else None,
        )
        cache[key] = found
    return found if service.runs_here(plugin, version, found.kind) else None


def _signing_secret(version: PluginVersion) -> bytes:
    token = version.signing_secret or ""
    return service.keyring().decrypt(token, service.platform_secret_context(version.plugin, version.version)).encode()


def _schema_problem(validator: Any, value: Any, what: str) -> str | None:
    if validator is None or validator.is_valid(value):
        return None
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    listed = "; ".join(f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors[:5])
    return f"{what} does not match its schema: {listed}"


async def call_action(
    db: AsyncSession,
    tenant_id: uuid.UUID,
    plugin: str,
    action: str,
    payload: dict[str, Any],
    *,
    idempotency_key: str,
    execution_id: str,
) -> dict[str, Any]:
    """Run ``plugin.action`` for ``tenant_id`` with ``payload``; its output.

    Raises :class:`PluginCallFailed`. The plugin's effects in our database happen in ``db`` (the
    executor's transaction); its failures count toward the tenant x plugin circuit breaker.
    """
    installation = await _installation_for(db, tenant_id, plugin)
    version = await runnable_version(db, plugin, installation.version)
    if version is None:
        raise PluginCallFailed(
            f"{plugin} {installation.version} does not run on this platform now (not approved, or its code is "
            "not deployed): upgrade the plugin or ask the operator",
            retryable=False,
        )
    declared = version.actions.get(action)
    if declared is None:
        raise PluginCallFailed(f"{plugin} {version.version} has no action {action!r}", retryable=False)
    problem = _schema_problem(declared.input_validator, payload, f"the input of {plugin}.{action}")
    if problem:
        raise PluginCallFailed(problem, retryable=False)
    try:
        if version.kind == "remote":
            output = await call_remote(version, installation, declared, payload, idempotency_key, execution_id)
        else:
            output = await _call_in_process(db, version, installation, action, payload, idempotency_key, execution_id)
    except PluginCallFailed:
        raise  # it says itself whether it is the plugin's failure
    except ActionFailed as exc:
        # A plugin that says "try later" is unwell; one that refuses the input is not.
        raise PluginCallFailed(
            f"{plugin}.{action}: {exc}", retryable=exc.retryable, retry_after=exc.retry_after, unhealthy=exc.retryable
        ) from exc
    except ScopeDenied as exc:
        raise PluginCallFailed(f"{plugin}.{action} was refused: {exc}", retryable=False) from exc
    except TimeoutError as exc:
        raise PluginCallFailed(
            f"{plugin}.{action} took longer than {declared.time_limit_seconds:g} s", retryable=True, unhealthy=True
        ) from exc
    except Exception as exc:  # a plugin's bug fails its action, never the worker
        raise PluginCallFailed(
            f"{plugin}.{action} failed: {type(exc).__name__}: {exc}", retryable=False, unhealthy=True
        ) from exc
    if installation.consecutive_failures:  # commits with the action's effects
        installation.consecutive_failures, installation.circuit_open_until = 0, None
    return output


def checked_output(declared: DeclaredAction, version: RunnableVersion, output: Any) -> dict[str, Any]:
    """The plugin's output once it is a JSON object matching the declared output schema."""
    what = f"{version.plugin}.{declared.name}"
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise PluginCallFailed(
            f"{what} returned {type(output).__name__}, not an object", retryable=False, unhealthy=True
        )
    problem = _schema_problem(declared.output_validator, output, f"the output of {what}")
    if problem:
        raise PluginCallFailed(problem, retryable=False, unhealthy=True)
    return output


async def _call_in_process(
    db: AsyncSession,
    version: RunnableVersion,
    installation: PluginInstallation,
    action: str,
    payload: dict[str, Any],
    idempotency_key: str,
    execution_id: str,
) -> dict[str, Any]:
    loaded = service.loaded_plugin(version.plugin)
    spec = loaded[1].actions.get(action) if loaded else None
    if spec is None:
        raise PluginCallFailed(f"{version.plugin} has no action {action!r} in this deployment", retryable=False)
    context = HostContext(db, installation, version.scopes, idempotency_key)
    call = ActionCall(
        input=payload,
        idempotency_key=idempotency_key,
        tenant_id=str(installation.tenant_id),
        execution_id=execution_id,
        context=context,
    )
    output = await registry.call_plugin(spec.handler, call, time_limit_seconds=spec.time_limit_ms / 1000)
    return checked_output(version.actions[action], version, output)


async def call_remote(
    version: RunnableVersion,
    installation: PluginInstallation,
    declared: DeclaredAction,
    payload: dict[str, Any],
    idempotency_key: str,
    execution_id: str,
) -> dict[str, Any]:
    """One signed call of a remote plugin's action, its answer read and checked: the whole remote
    path after the installation's read."""
    if not version.endpoint or not version.signing_secret:
        raise PluginCallFailed(f"{version.plugin} {version.version} has no endpoint", retryable=False)
    body = remote.action_request_body(
        input=payload,
        idempotency_key=idempotency_key,
        tenant_id=str(installation.tenant_id),
        execution_id=execution_id,
        config=installation.config,
    )
    headers = {"Content-Type": "application/json", **remote.sign(version.signing_secret, body)}
    try:
        response = await _client().post(
            remote.action_url(version.endpoint, declared.name),
            content=body,
            headers=headers,
            timeout=declared.time_limit_seconds,
        )
    except httpx.TimeoutException as exc:
        raise TimeoutError from exc
    except httpx.HTTPError as exc:
        raise ActionFailed(f"{version.plugin} could not be reached: {type(exc).__name__}", retryable=True) from exc
    try:
        answer = remote.parse_action_answer(response.status_code, response.content, response.headers.get("Retry-After"))
    except ActionFailed as exc:
        if response.is_success:  # a success we cannot read: the plugin is unwell, not the input
            raise PluginCallFailed(f"{version.plugin}.{declared.name}: {exc}", retryable=False, unhealthy=True) from exc
        raise
    return checked_output(declared, version, answer)


# ---------------------------------------------------------------- the circuit breaker


async def count_failure(db: AsyncSession, plugin: str, error: str) -> None:
    """Count one failure of ``plugin`` in ``db``'s tenant; open the circuit and tell the workspace's
    admins when failures in a row reach the threshold."""
    config = service.settings()
    installation = await db.scalar(
        select(PluginInstallation).where(PluginInstallation.plugin == plugin).with_for_update()
    )
    if installation is None:
        return
    installation.consecutive_failures += 1
    installation.last_error = error[:MAX_ERROR_KEPT]
    now = utcnow()
    if installation.consecutive_failures < max(1, config.plugin_circuit_failures) or (
        installation.circuit_open_until is not None and installation.circuit_open_until > now
    ):
        return
    installation.circuit_open_until = now + timedelta(seconds=config.plugin_circuit_cooldown_seconds)
    admins = await accounts.member_ids_with_role(db, Role.ADMIN)
    await notifications.send(
        db,
        admins,
        "plugin_paused",
        {
            "plugin": plugin,
            "failures": installation.consecutive_failures,
            "until": installation.circuit_open_until.isoformat(),
            "error": (installation.last_error or "")[:500],
        },
        link=f"/plugins/{plugin}",
        dedupe_key=f"plugin-circuit:{plugin}:{installation.circuit_open_until.isoformat()}",
    )
    log.warning("plugin circuit opened", extra={"plugin": plugin, "tenant_id": str(installation.tenant_id)})
