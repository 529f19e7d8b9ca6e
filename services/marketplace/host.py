"""Calling plugins: the host's ``PluginContext``, in-process and remote actions, the circuit breaker.

Plugin code runs only in workers (the automation executor calls :func:`call_action` on the plugin's
own queue). Every call gets a context bound to one tenant and to what its admin granted: a plugin
cannot reach another tenant's data or a collection it was not granted, whatever it asks for.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from guiju_sdk import (
    ActionCall,
    ActionFailed,
    Health,
    HttpResponse,
    RecordRejected,
    ScopeDenied,
    StoredFile,
    registry,
    remote,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import netguard
from services.accounts import service as accounts
from services.files import service as files
from services.mail import service as mail_service
from services.mail.service import Mail
from services.marketplace import service
from services.marketplace.models import PluginInstallation, PluginVersion
from services.marketplace.secrets import secret_context
from services.notifications import service as notifications
from services.outbox import service as outbox
from services.patterns import schema_validator
from services.records import service as records
from services.settings import Settings
from tenants.base import utcnow
from tenants.errors import NotFound, ProblemError
from tenants.isolation import session_tenant_id
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


# ---------------------------------------------------------------- the context


@dataclass
class HostContext:
    """The host's :class:`guiju_sdk.PluginContext`: one tenant, one plugin, its grant."""

    db: AsyncSession
    installation: PluginInstallation
    declared_scopes: frozenset[str]
    idempotency_key: str | None = None

    @property
    def tenant_id(self) -> str:
        return str(self.installation.tenant_id)

    @property
    def plugin(self) -> str:
        return self.installation.plugin

    @property
    def config(self) -> Mapping[str, Any]:
        return dict(self.installation.config)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            logging.getLogger(f"guiju.plugin.{self.plugin}"), {"plugin": self.plugin, "tenant_id": self.tenant_id}
        )

    def _require(self, scope: str) -> None:
        # Both: the version asks for it, and this tenant's admin consented to it.
        if scope not in self.declared_scopes or scope not in self.installation.granted_scopes:
            raise ScopeDenied(f"{self.plugin} was not granted the scope {scope!r}")

    def _collection(self, collection: str, scope: str) -> str:
        self._require(scope)
        if collection not in self.installation.granted_collections:
            raise ScopeDenied(f"the collection {collection!r} is not granted to {self.plugin}")
        return collection

    def secret(self, name: str) -> str | None:
        token = self.installation.secrets.get(name)
        if token is None:
            return None
        return service.keyring().decrypt(token, secret_context(self.installation.tenant_id, self.plugin, name))

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        key = self._collection(collection, "records:read")
        found = await records.find_records(self.db, key, dict(where or {}), limit=min(max(1, limit), 500))
        return [{"id": str(record_id), "values": values} for record_id, values in found]

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        key = self._collection(collection, "records:read")
        info = await records.get_collection_by_key(self.db, key)
        try:
            values = await records.get_record_values(self.db, info.id, uuid.UUID(record_id))
        except (ValueError, NotFound):
            return None
        return {"id": record_id, "values": values}

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        key = self._collection(collection, "records:write")
        info = await records.get_collection_by_key(self.db, key)
        try:
            # A savepoint: a refused write (a duplicate unique value, say) leaves the action's
            # transaction usable, so the plugin can read what is there and go on.
            async with self.db.begin_nested():
                if record_id is None:
                    record = await records.create_record_values(self.db, info.id, values, actor_id=None)
                    written = record.id
                else:
                    written = uuid.UUID(record_id)
                    await records.update_record_values(self.db, info.id, written, values, actor_id=None)
        except ProblemError as exc:
            if exc.status >= 500:
                raise
            problems = [{"pointer": e.pointer, "code": e.code, "message": e.message} for e in exc.errors]
            raise RecordRejected(f"{collection}: {exc.detail or exc.title}", problems) from None
        return {"id": str(written), "values": await records.get_record_values(self.db, info.id, written)}

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        return await service.next_number(self.db, self.plugin, sequence, key=key)

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        self._require("messages:send")
        wanted = {uuid.UUID(str(user_id)) for user_id in to}
        members = await accounts.existing_member_ids(self.db, wanted)
        if wanted - members:
            raise ScopeDenied(f"{len(wanted - members)} recipient(s) are not members of this workspace")
        await notifications.notify(self.db, sorted(members), title[:300], body)

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        self._require("events:emit")
        await outbox.emit(self.db, f"plugin.{self.plugin}.{type}", dict(payload))

    async def http(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 10.0,
    ) -> HttpResponse:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        declared = f"http:{host}" in self.declared_scopes and f"http:{host}" in self.installation.granted_scopes
        if not declared:
            self._require("http:*")
        allowed_plain = host in service.settings().plugin_allow_http_hosts
        if parts.scheme != "https" and not (parts.scheme == "http" and allowed_plain):
            raise ScopeDenied(f"{self.plugin} may only call https URLs, not {parts.scheme}://{host}")
        extra_headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        target = url
        if not allowed_plain:
            address = await self._public_address(host, parts.port or 443, "call")
            target, extra_headers, extensions = netguard.pinned_target(url, address)
        timeout = min(max(0.1, timeout_seconds), service.settings().plugin_http_max_timeout_seconds)
        try:
            response = await _client().request(
                method,
                target,
                json=json,
                content=content,
                headers={**dict(headers or {}), **extra_headers},
                timeout=timeout,
                extensions=extensions,
            )
        except httpx.TimeoutException as exc:
            raise ActionFailed(f"{method} {host} took longer than {timeout:g} s", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ActionFailed(f"{method} {host} failed: {type(exc).__name__}", retryable=True) from exc
        return HttpResponse(status=response.status_code, headers=dict(response.headers), body=response.content)

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        self._require("files:write")
        stored = await files.save_file(
            self.db,
            tenant_id=self.installation.tenant_id,
            name=name,
            content_type=content_type,
            data=content,
            uploaded_by=None,
        )
        return StoredFile(id=str(stored.id), name=stored.name, content_type=stored.content_type, size=stored.size)

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        self._require("files:read")
        try:
            found, data = await files.open_file_bytes(self.db, uuid.UUID(file_id))
        except (ValueError, NotFound):
            raise LookupError(f"this workspace has no file {file_id!r}") from None
        return StoredFile(id=str(found.id), name=found.name, content_type=found.content_type, size=found.size), data

    async def resolve_address(self, host: str, port: int) -> str:
        self._require("mail:send")
        name = host.strip().lower()
        if name in service.settings().plugin_allow_http_hosts:
            return name  # a host the operator allows (a local mail relay, a test server)
        return str(await self._public_address(name, port, "connect to"))

    async def _public_address(self, host: str, port: int, verb: str) -> netguard.IPAddress:
        """The checked address to reach ``host`` at: refused when not public, retryable when it
        does not resolve (DNS may answer later)."""
        try:
            return await netguard.resolve_public(host, port)
        except netguard.HostRefused as exc:
            raise ScopeDenied(f"{self.plugin} may only {verb} public addresses: {exc}") from exc
        except netguard.HostUnresolved as exc:
            raise ActionFailed(str(exc), retryable=True) from exc


_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    """One connection pool per event loop (keep-alive to plugins and the hosts they call)."""
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None or client.is_closed:
        client = _clients[loop_id] = httpx.AsyncClient(follow_redirects=False)
    return client


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
    await notifications.notify(
        db,
        admins,
        f"{plugin} paused after {installation.consecutive_failures} failures in a row",
        f"Guiju stopped calling {plugin} for this workspace until "
        f"{installation.circuit_open_until:%Y-%m-%d %H:%M} UTC; automations that use it retry after that. "
        f"Last error: {installation.last_error}",
        link=f"/plugins/{plugin}",
        dedupe_key=f"plugin-circuit:{plugin}:{installation.circuit_open_until.isoformat()}",
    )
    log.warning("plugin circuit opened", extra={"plugin": plugin, "tenant_id": str(installation.tenant_id)})


# ---------------------------------------------------------------- lifecycle hooks

_LIFECYCLE_HOOKS = {
    "marketplace.installed": "guiju_installed",
    "marketplace.configured": "guiju_configuration_changed",
    "marketplace.uninstalled": "guiju_uninstalled",
}


async def _installation_in_event(db: AsyncSession, message: Mapping[str, Any]) -> PluginInstallation | None:
    payload = message.get("payload") or {}
    plugin = str(payload.get("plugin"))
    if message["type"] != "marketplace.uninstalled":
        found: PluginInstallation | None = await db.scalar(
            select(PluginInstallation).where(PluginInstallation.plugin == plugin)
        )
        return found
    # Gone from the table: rebuilt, never added to the session, from what the event carries.
    return PluginInstallation(
        tenant_id=uuid.UUID(str(message["tenant_id"])),
        plugin=plugin,
        version=str(payload.get("version")),
        enabled=False,
        config=dict(payload.get("config") or {}),
        secrets=dict(payload.get("secrets") or {}),
        granted_scopes=list(payload.get("granted_scopes") or []),
        granted_collections=list(payload.get("granted_collections") or []),
    )


async def check_health(db: AsyncSession, installation: PluginInstallation, version: PluginVersion) -> Health:
    """Run the plugin's health check for ``installation``'s tenant (a remote plugin: its signed
    ``GET /health``); a raise or no answer is unhealthy, with the reason."""
    try:
        if version.kind == "remote":
            if not version.endpoint or not version.signing_secret:
                return Health(False, "the plugin has no endpoint")
            headers = remote.sign(_signing_secret(version), b"")
            response = await _client().get(remote.health_url(version.endpoint), headers=headers, timeout=10.0)
            return remote.parse_health_answer(response.status_code, response.content)
        manager = service.plugin_manager()
        if manager is None or service.loaded_plugin(installation.plugin) is None:
            return Health(False, f"{installation.plugin} is not deployed on this platform")
        reported: list[Health] = []
        context = HostContext(db, installation, frozenset(service.manifest_scopes(version.manifest)))
        await registry.call_hook(
            manager,
            installation.plugin,
            "guiju_health_check",
            time_limit_seconds=registry.LIFECYCLE_TIME_LIMIT_SECONDS,
            context=context,
            register=reported.append,
        )
        return reported[-1] if reported else Health(True)
    except Exception as exc:  # the plugin's failure is what the check reports
        return Health(False, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_KEPT])


def _signing_secret(version: PluginVersion) -> bytes:
    token = version.signing_secret or ""
    return service.keyring().decrypt(token, service.platform_secret_context(version.plugin, version.version)).encode()


async def run_lifecycle_hook(db: AsyncSession, message: Mapping[str, Any]) -> None:
    """Call the plugin's hook for one marketplace event, in ``db``'s tenant; a failure is kept on
    the installation (``last_error``) for its admin to see, never raised."""
    installation = await _installation_in_event(db, message)
    if installation is None:
        return
    version = await db.get(PluginVersion, (installation.plugin, installation.version))
    if version is None:
        return
    if message["type"] == service.HEALTH_REQUESTED:
        health = await check_health(db, installation, version)
        installation.health = {"ok": health.ok, "message": health.message, "checked_at": utcnow().isoformat()}
        return
    hook = _LIFECYCLE_HOOKS[str(message["type"])]
    payload = message.get("payload") or {}
    arguments: dict[str, Any] = {}
    if hook == "guiju_configuration_changed":
        arguments["previous"] = dict(payload.get("previous") or {})
    if hook == "guiju_uninstalled":
        arguments["delete_data"] = bool(payload.get("delete_data"))
    if version.kind == "remote":
        return  # a remote plugin reads the tenant's configuration from every action call
    try:
        manager = service.plugin_manager()
        if manager is None or service.loaded_plugin(installation.plugin) is None:
            return
        context = HostContext(db, installation, frozenset(service.manifest_scopes(version.manifest)))
        await registry.call_hook(
            manager,
            installation.plugin,
            hook,
            time_limit_seconds=registry.LIFECYCLE_TIME_LIMIT_SECONDS,
            context=context,
            **arguments,
        )
    except Exception as exc:  # the plugin's failure is the tenant's to see, not the worker's
        log.warning("plugin lifecycle hook failed", extra={"plugin": installation.plugin, "hook": hook})
        if hook != "guiju_uninstalled":
            installation.last_error = f"{hook}: {type(exc).__name__}: {exc}"[:MAX_ERROR_KEPT]


# ---------------------------------------------------------------- polled triggers

MAX_POLLED_EVENTS = 500


async def poll_trigger(db: AsyncSession, plugin: str, trigger: str) -> int:
    """Poll a plugin's trigger for ``db``'s workspace; each object it returns is emitted as the
    event ``plugin.<plugin>.<trigger>`` (the automations on that trigger run from it). How many."""
    installation = await db.scalar(select(PluginInstallation).where(PluginInstallation.plugin == plugin))
    loaded = service.loaded_plugin(plugin)
    spec = loaded[1].triggers.get(trigger) if loaded else None
    if installation is None or not installation.enabled or spec is None or spec.poll is None:
        return 0
    version = await db.get(PluginVersion, (plugin, installation.version))
    if version is None or not service.version_available(version):
        return 0
    context = HostContext(db, installation, frozenset(service.manifest_scopes(version.manifest)))
    try:
        found = await registry.call_plugin(spec.poll, context, time_limit_seconds=registry.LIFECYCLE_TIME_LIMIT_SECONDS)
    except Exception as exc:  # shown to the workspace's admin; the next poll tries again
        installation.last_error = f"polling {trigger}: {type(exc).__name__}: {exc}"[:MAX_ERROR_KEPT]
        return 0
    events = [e for e in (found or []) if isinstance(e, dict)][:MAX_POLLED_EVENTS]
    for payload in events:
        await outbox.emit(db, f"plugin.{plugin}.{trigger}", payload)
    return len(events)


HOOK_EVENTS = tuple(_LIFECYCLE_HOOKS)


async def send_notification_on(db: AsyncSession, message: Mapping[str, Any]) -> None:
    """Have the messaging plugin send a notification on. A failure that may pass is raised (the
    hooks actor retries the message); any other is kept on the installation for its admin."""
    payload = message.get("payload") or {}
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None or not await service.messaging_installed(db):
        return  # uninstalled or disabled since: nothing to send on
    try:
        await call_action(
            db,
            tenant_id,
            service.MESSAGING_PLUGIN,
            service.MESSAGING_NOTIFY_ACTION,
            dict(payload.get("input") or {}),
            idempotency_key=str(payload.get("key") or message.get("id")),
            execution_id=str(message.get("id")),
        )
    except PluginCallFailed as exc:
        if exc.retryable:
            raise
        installation = await _installation_for(db, tenant_id, service.MESSAGING_PLUGIN)
        installation.last_error = f"sending a notification on: {exc}"[:MAX_ERROR_KEPT]


async def handle_marketplace_event(db: AsyncSession, message: Mapping[str, Any]) -> None:
    """Run what a marketplace event asks of a plugin in ``db``'s workspace: a lifecycle hook, a
    health check or a trigger's poll (the plugin's hooks actor calls it, on the plugin's queue).
    An event of another workspace than ``db``'s is ignored."""
    if str(message.get("tenant_id")) != str(session_tenant_id(db.sync_session)):
        log.warning("a plugin hook's event names another workspace", extra={"event_id": message.get("id")})
        return
    if message["type"] == service.POLL_DUE:
        payload = message.get("payload") or {}
        await poll_trigger(db, str(payload.get("plugin")), str(payload.get("trigger")))
    elif message["type"] == service.NOTIFICATION_FORWARDED:
        await send_notification_on(db, message)
    else:
        await run_lifecycle_hook(db, message)


# ---------------------------------------------------------------- the platform's own mail


@dataclass
class PlatformContext:
    """The :class:`guiju_sdk.PluginContext` of the platform's own calls into a plugin (its mail):
    the operator's configuration, and no workspace's data, files, messages or events."""

    plugin: str
    config: Mapping[str, Any]
    secrets: Mapping[str, str]
    idempotency_key: str | None = None

    @property
    def tenant_id(self) -> str:
        return ""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger(f"guiju.plugin.{self.plugin}"), {"plugin": self.plugin})

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def _refuse(self, what: str) -> ScopeDenied:
        return ScopeDenied(f"the platform's own call into {self.plugin} reaches no workspace's {what}")

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        raise self._refuse("records")

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        raise self._refuse("records")

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        raise self._refuse("records")

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        raise self._refuse("sequences")

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        raise self._refuse("members")

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        raise self._refuse("automations")

    async def http(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 10.0,
    ) -> HttpResponse:
        raise self._refuse("hosts")

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        raise self._refuse("files")

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        raise self._refuse("files")

    async def resolve_address(self, host: str, port: int) -> str:
        return host  # the operator's own mail server, from the platform's settings


SMTP_SECURITY = {"smtp": ("starttls", 587), "smtps": ("tls", 465), "smtp+plain": ("none", 25)}
PLATFORM_MAIL_ACTION = "send_email"


def smtp_settings(smtp_url: str, mail_from: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The messaging plugin's configuration and secrets for ``GUIJU_SMTP_URL`` and
    ``GUIJU_MAIL_FROM``; ``ValueError`` saying what is wrong with them."""
    parts = urlsplit(smtp_url)
    if parts.scheme not in SMTP_SECURITY or not parts.hostname:
        raise ValueError(f"GUIJU_SMTP_URL must be {', '.join(f'{s}://host' for s in SMTP_SECURITY)}[:port]")
    name, address = parseaddr(mail_from)
    if "@" not in address:
        raise ValueError("GUIJU_MAIL_FROM must be an address, such as 'Guiju <no-reply@example.com>'")
    security, default_port = SMTP_SECURITY[parts.scheme]
    config: dict[str, Any] = {
        "smtp_host": parts.hostname,
        "smtp_port": parts.port or default_port,
        "smtp_security": security,
        "smtp_from_address": address,
        "smtp_from_name": name or "Guiju",
    }
    secrets: dict[str, str] = {}
    if parts.username:
        config["smtp_username"] = unquote(parts.username)
        secrets["smtp_password"] = unquote(parts.password or "")
    return config, secrets


@dataclass
class PlatformMailTransport:
    """Platform mail sent by the messaging plugin's ``send_email`` action, as a workspace's mail is."""

    handler: Any
    time_limit_seconds: float
    config: Mapping[str, Any]
    secrets: Mapping[str, str]

    async def send(self, mail: Mail) -> None:
        context = PlatformContext(service.MESSAGING_PLUGIN, self.config, self.secrets, f"platform-mail:{mail.key}")
        call = ActionCall(
            {"to": [{"address": mail.to, "locale": mail.locale}], "subject": mail.subject, "text": mail.body},
            context.idempotency_key or "",
            "",
            f"platform-mail:{mail.key}",
            context,
        )
        # A failure is raised: the outbox delivers the request again later.
        await registry.call_plugin(self.handler, call, time_limit_seconds=self.time_limit_seconds)


def use_platform_mail(settings: Settings) -> None:
    """Send the platform's mail through the messaging plugin when this process deploys it and an
    SMTP server is set (app and worker start-up, after the plugins are activated); else to the log."""
    loaded = service.loaded_plugin(service.MESSAGING_PLUGIN)
    action = loaded[1].actions.get(PLATFORM_MAIL_ACTION) if loaded else None
    if not settings.smtp_url or action is None:
        if settings.smtp_url:
            log.warning("GUIJU_SMTP_URL is set but the messaging plugin is not deployed: mail goes to the log")
        mail_service.set_transport(None)
        return
    config, secrets = smtp_settings(settings.smtp_url, settings.mail_from)
    mail_service.set_transport(PlatformMailTransport(action.handler, action.time_limit_ms / 1000, config, secrets))
