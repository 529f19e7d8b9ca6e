"""Hook specifications: what the host asks of plugins.

Hooks receive a ``register`` callback instead of returning values, so the host controls what is
registered and can add arguments later; pluggy only passes the arguments an implementation names,
so a plugin written for an older API keeps working when a hook gains an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from guiju_sdk.context import PluginContext
from guiju_sdk.types import (
    Register,
    RegisterAction,
    RegisterDocumentKind,
    RegisterHealth,
    RegisterSettingsSchema,
    RegisterTemplatePack,
    RegisterTrigger,
)
from guiju_sdk.version import PROJECT_NAME

#: Marker for hook specifications (used by the host).
hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Marker a plugin puts on each hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class GuijuSpec:
    """The hooks a Guiju plugin may implement."""

    @hookspec
    def guiju_plugin_info(self, register: Register) -> None:
        """Register the plugin's manifest: call ``register(PluginInfo(...))`` exactly once.

        Every plugin implements this hook; the host refuses a plugin without it, or one whose
        ``api_range`` does not include the host's :data:`guiju_sdk.API_VERSION`.
        """

    @hookspec
    def guiju_actions(self, register: RegisterAction) -> None:
        """Register the actions this plugin offers to automations.

        Call ``register(name, handler, labels={"zh-CN": ..., "en": ...}, input_schema=...,
        output_schema=..., time_limit_ms=...)`` once per action. ``name`` is unique within the
        plugin (automations name it ``"<plugin>.<name>"``); ``handler`` receives an
        :class:`guiju_sdk.ActionCall` and returns a JSON object. The host runs it in a worker, on
        the plugin's own queue, within ``time_limit_ms``; raise :class:`guiju_sdk.ActionFailed`
        to report a failure (retryable or not). ``input_schema``/``output_schema`` are JSON Schemas
        shown to people building automations.
        """

    @hookspec
    def guiju_triggers(self, register: RegisterTrigger) -> None:
        """Register the triggers this plugin offers to automations (API 1.2).

        Call ``register(name, labels={...}, payload_schema=..., poll=..., poll_seconds=...)`` once
        per trigger. Automations name it ``"<plugin>.<name>"``. A trigger fires in one of two ways:
        the plugin's code calls ``context.emit_event(name, payload)`` (from an action, say), or the
        host calls ``poll(context)`` every ``poll_seconds`` (at least 60) for each tenant that
        installed the plugin and uses the trigger, and each object it returns is one event.
        """

    @hookspec
    def guiju_document_kinds(self, register: RegisterDocumentKind) -> None:
        """Register the document kinds this plugin generates from a record (API 1.2).

        Call ``register(name, generate, labels={...}, formats=("pdf", "xlsx"),
        record_schema=...)``. ``generate(context, values, format)`` returns a
        :class:`guiju_sdk.Document`; the host stores it, attaches it to the record and emits an event.
        """

    @hookspec
    def guiju_templates(self, register: RegisterTemplatePack) -> None:
        """Register the template packs this plugin ships (API 1.2): ``register(path)`` per pack
        directory. They appear in the gallery under the plugin's publisher."""

    @hookspec
    def guiju_settings_schema(self, register: RegisterSettingsSchema) -> None:
        """Register the JSON Schema of the per-tenant configuration (API 1.2), once.

        An object schema; mark secret properties ``"writeOnly": true``: the host encrypts them at
        rest, never returns them (only masked), and hands them to the plugin through
        ``context.secret(name)`` only.
        """

    @hookspec
    def guiju_installed(self, context: PluginContext) -> None:
        """A tenant installed the plugin (API 1.2): prepare what it needs.

        Lifecycle hooks run in a worker after the change has committed, and may be ``async def``.
        Raising does not undo the change: the message is shown to the tenant's admin as the
        installation's last error."""

    @hookspec
    def guiju_configuration_changed(self, context: PluginContext, previous: Mapping[str, Any]) -> None:
        """A tenant changed the plugin's configuration (API 1.2); ``context.config`` is the new one
        and ``previous`` the old (secrets left out of both)."""

    @hookspec
    def guiju_uninstalled(self, context: PluginContext, delete_data: bool) -> None:
        """A tenant uninstalled the plugin (API 1.2); ``delete_data`` says whether the tenant asked
        for the plugin's data to be deleted too."""

    @hookspec
    def guiju_health_check(self, context: PluginContext, register: RegisterHealth) -> None:
        """Check that the plugin works for a tenant (API 1.2): its configuration, the systems it
        reaches. Call ``register(Health(ok, message))``; raising counts as not healthy."""
