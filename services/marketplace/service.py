"""Loading plugins: entry points of the group ``guiju``, checked against the SDK's API version.

A plugin that fails to import, lacks a manifest, or declares an API range excluding ours is
refused with its reason; the others load. Allow- and deny-lists come from settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pluggy
from guiju_sdk import (
    API_VERSION,
    ENTRY_POINT_GROUP,
    PROJECT_NAME,
    GuijuSpec,
    PluginInfo,
    api_version_supported,
)

from services.settings import Settings

log = logging.getLogger("guiju.plugins")


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    info: PluginInfo | None
    loaded: bool
    reason: str = ""


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(GuijuSpec)
    return manager


def plugin_info(manager: pluggy.PluginManager, plugin: object) -> PluginInfo | None:
    """Call one plugin's ``guiju_plugin_info`` hook and return what it registered."""
    collected: list[object] = []
    caller = manager.subset_hook_caller(
        "guiju_plugin_info", remove_plugins=[p for p in manager.get_plugins() if p is not plugin]
    )
    caller(register=collected.append)
    infos = [c for c in collected if isinstance(c, PluginInfo)]
    return infos[0] if len(infos) == 1 else None


def load_plugins(
    settings: Settings, manager: pluggy.PluginManager | None = None, eps: list[EntryPoint] | None = None
) -> tuple[pluggy.PluginManager, list[LoadedPlugin]]:
    manager = manager or new_plugin_manager()
    report: list[LoadedPlugin] = []
    for ep in eps if eps is not None else list(entry_points(group=ENTRY_POINT_GROUP)):
        if settings.plugins_allow and ep.name not in settings.plugins_allow:
            report.append(LoadedPlugin(ep.name, None, False, "not in GUIJU_PLUGINS_ALLOW"))
            continue
        if ep.name in settings.plugins_deny:
            report.append(LoadedPlugin(ep.name, None, False, "in GUIJU_PLUGINS_DENY"))
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            report.append(LoadedPlugin(ep.name, None, False, f"failed to import: {type(exc).__name__}: {exc}"))
            continue
        try:
            manager.register(plugin, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            report.append(LoadedPlugin(ep.name, None, False, f"invalid hook implementations: {exc}"))
            continue
        unknown = [h.name for h in manager.get_hookcallers(plugin) or [] if not h.has_spec()]
        info = plugin_info(manager, plugin)
        reason = ""
        if unknown:
            reason = f"implements unknown hooks: {', '.join(sorted(unknown))}"
        elif info is None:
            reason = "registers no manifest (implement guiju_plugin_info and call register once)"
        else:
            try:
                if not api_version_supported(info.api_range):
                    reason = (
                        f"supports plugin API {info.api_range}, the host provides {API_VERSION[0]}.{API_VERSION[1]}"
                    )
            except ValueError as exc:
                reason = f"malformed api_range: {exc}"
        if reason:
            manager.unregister(plugin)
            log.warning("plugin refused", extra={"plugin": ep.name, "reason": reason})
            report.append(LoadedPlugin(ep.name, info, False, reason))
        else:
            report.append(LoadedPlugin(ep.name, info, True))
    return manager, report
