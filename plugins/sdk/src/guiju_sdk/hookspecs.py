"""Hook specifications: what the host asks of plugins.

Hooks receive a ``register`` callback instead of returning values, so the host controls what is
registered and can add arguments later; pluggy only passes the arguments an implementation names,
so a plugin written for an older API keeps working when a hook gains an argument.
"""

from __future__ import annotations

import pluggy

from guiju_sdk.types import Register, RegisterAction
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
