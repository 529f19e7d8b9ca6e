"""What marketplace events ask of a plugin: its lifecycle hooks, its health check, polling its
triggers, sending a notification on.

The plugin's hooks actor calls :func:`handle_marketplace_event` on the plugin's queue, in the event's
workspace. A plugin's failure here is kept on the installation for the workspace's admin to see.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from guiju_sdk import Health, registry, remote
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.marketplace import service
from services.marketplace.calls import (
    MAX_ERROR_KEPT,
    PluginCallFailed,
    _installation_for,
    _signing_secret,
    call_action,
)
from services.marketplace.context import HostContext, _client
from services.marketplace.models import PluginInstallation, PluginVersion
from services.outbox import service as outbox
from tenants.base import utcnow
from tenants.isolation import session_tenant_id

log = logging.getLogger("guiju.plugins")


# ---------------------------------------------------------------- lifecycle hooks

_LIFECYCLE_HOOKS = {
    events.PLUGIN_INSTALLED.name: "guiju_installed",
    events.PLUGIN_CONFIGURED.name: "guiju_configuration_changed",
    events.PLUGIN_UNINSTALLED.name: "guiju_uninstalled",
}


async def _installation_in_event(db: AsyncSession, message: Mapping[str, Any]) -> PluginInstallation | None:
    payload = message.get("payload") or {}
    plugin = str(payload.get("plugin"))
    if message["type"] != events.PLUGIN_UNINSTALLED.name:
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
    polled = [e for e in (found or []) if isinstance(e, dict)][:MAX_POLLED_EVENTS]
    for payload in polled:
        await outbox.emit(db, events.plugin_event_name(plugin, trigger), payload)
    return len(polled)


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
