"""Loading plugins: entry points of the group ``guiju``, checked against the SDK's API version.

A plugin that fails to import, lacks a manifest, or declares an API range excluding ours is
refused with its reason; the others load. Allow- and deny-lists come from settings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy
from guiju_sdk import API_VERSION, ENTRY_POINT_GROUP, PluginInfo, api_version_supported, registry

from services.settings import Settings

log = logging.getLogger("guiju.plugins")


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    info: PluginInfo | None
    loaded: bool
    reason: str = ""


def new_plugin_manager() -> pluggy.PluginManager:
    return registry.new_manager()


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


# ---------------------------------------------------------------- the loaded plugins and their actions

MAX_ACTION_TIME_LIMIT_MS = registry.MAX_ACTION_TIME_LIMIT_MS


@dataclass(frozen=True)
class PluginAction:
    """An action a loaded plugin registered through ``guiju_actions``."""

    plugin: str
    spec: registry.ActionSpec

    @property
    def key(self) -> str:
        return f"{self.plugin}.{self.spec.name}"


@dataclass
class _Active:
    manager: pluggy.PluginManager | None = None
    names: frozenset[str] = frozenset()
    actions: dict[str, PluginAction] = field(default_factory=dict)


_active = _Active()


def collect_actions(manager: pluggy.PluginManager, plugin_names: Iterable[str]) -> dict[str, PluginAction]:
    """Each plugin's actions (``guiju_actions``); a malformed registration is logged and skipped."""
    found: dict[str, PluginAction] = {}
    for plugin_name in plugin_names:
        plugin = manager.get_plugin(plugin_name)
        if plugin is None:
            continue
        registered = registry.collect(manager, plugin)
        for problem in registered.problems:
            log.warning("plugin registration refused", extra={"plugin": plugin_name, "reason": problem})
        for spec in registered.actions.values():
            action = PluginAction(plugin_name, spec)
            found[action.key] = action
    return found


def activate(manager: pluggy.PluginManager, report: list[LoadedPlugin]) -> None:
    """Make the loaded plugins of ``report`` the process's plugins (app and worker start-up)."""
    names = frozenset(r.name for r in report if r.loaded)
    _active.manager = manager
    _active.names = names
    _active.actions = collect_actions(manager, sorted(names))


def installed_plugin_names() -> frozenset[str]:
    """Names of the plugins loaded in this process."""
    return _active.names


def plugin_actions() -> dict[str, PluginAction]:
    """Actions of the loaded plugins, by ``"plugin.action"``."""
    return dict(_active.actions)
