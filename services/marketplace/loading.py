"""Loading plugins, and the plugins this process loaded.

Loading: entry points of the group ``guiju``, checked against the SDK's API version. A plugin that
fails to import, lacks a manifest, or declares an API range excluding ours is refused with its
reason; the others load. Allow- and deny-lists come from settings. :func:`activate` makes the
loaded ones the process's plugins, which the rest of the marketplace reads.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pluggy
from guiju_sdk import API_VERSION, ENTRY_POINT_GROUP, PluginInfo, api_version_supported, manifest, registry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.marketplace.models import PluginInstallation
from services.settings import Settings

log = logging.getLogger("guiju.plugins")


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    info: PluginInfo | None
    loaded: bool
    reason: str = ""
    deprecations: tuple[str, ...] = ()  # deprecated hooks or arguments it uses (it loads all the same)


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
            if not reason:
                reason = _manifest_refusal(ep.name, info, manager, plugin)
        if reason:
            manager.unregister(plugin)
            log.warning("plugin refused", extra={"plugin": ep.name, "reason": reason})
            report.append(LoadedPlugin(ep.name, info, False, reason))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # logged and reported instead
                deprecated = tuple(registry.deprecations(manager, plugin))
            for message in deprecated:
                log.warning("plugin uses a deprecated API", extra={"plugin": ep.name, "reason": message})
            report.append(LoadedPlugin(ep.name, info, True, deprecations=deprecated))
    return manager, report


def _manifest_refusal(entry_point: str, info: PluginInfo, manager: pluggy.PluginManager, plugin: object) -> str:
    """Why the manifest a plugin registers cannot be listed ("" when it can)."""
    if info.name != entry_point:
        return f"its manifest names it {info.name!r}, the entry point is called {entry_point!r}: make them the same"
    problems = manifest.manifest_problems(manifest.manifest_from_plugin(info, registry.collect(manager, plugin)))
    return f"invalid manifest: {'; '.join(problems)}" if problems else ""


# ---------------------------------------------------------------- the loaded plugins (this process)

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
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    registrations: dict[str, registry.Registrations] = field(default_factory=dict)
    actions: dict[str, PluginAction] = field(default_factory=dict)
    # Approved versions ready to call (see host.runnable_version), by database, plugin and version.
    runnable: dict[tuple[str, str, str], Any] = field(default_factory=dict)


_active = _Active()


def collect_actions(manager: pluggy.PluginManager, plugin_names: Iterable[str]) -> dict[str, PluginAction]:
    """Each plugin's actions (``guiju_actions``); a malformed registration is logged and skipped."""
    found: dict[str, PluginAction] = {}
    for plugin_name in plugin_names:
        for spec in _collect(manager, plugin_name).actions.values():
            action = PluginAction(plugin_name, spec)
            found[action.key] = action
    return found


def _collect(manager: pluggy.PluginManager, plugin_name: str) -> registry.Registrations:
    plugin = manager.get_plugin(plugin_name)
    if plugin is None:
        return registry.Registrations()
    registered = registry.collect(manager, plugin)
    for problem in registered.problems:
        log.warning("plugin registration refused", extra={"plugin": plugin_name, "reason": problem})
    return registered


def activate(manager: pluggy.PluginManager, report: list[LoadedPlugin]) -> None:
    """Make the loaded plugins of ``report`` the process's plugins (app and worker start-up)."""
    loaded = [r for r in report if r.loaded and r.info is not None]
    _active.manager = manager
    _active.runnable = {}  # in-process versions' manifests are re-read once their code changed
    _active.infos = {r.name: r.info for r in loaded if r.info is not None}
    _active.registrations = {r.name: _collect(manager, r.name) for r in loaded}
    _active.actions = {
        f"{name}.{spec.name}": PluginAction(name, spec)
        for name, registered in _active.registrations.items()
        for spec in registered.actions.values()
    }


def installed_plugin_names() -> frozenset[str]:
    """Names of the plugins loaded in this process."""
    return frozenset(_active.infos)


def plugin_actions() -> dict[str, PluginAction]:
    """Actions of the loaded plugins, by ``"plugin.action"``."""
    return dict(_active.actions)


def loaded_plugin(name: str) -> tuple[PluginInfo, registry.Registrations] | None:
    """The manifest and registrations of a plugin loaded in this process."""
    info = _active.infos.get(name)
    return (info, _active.registrations[name]) if info is not None else None


def template_pack_sources() -> list[tuple[Path, str, str]]:
    """The template packs the loaded plugins ship: each pack's directory, publisher and plugin."""
    return [
        (path, info.publisher, name)
        for name, info in sorted(_active.infos.items())
        for path in _active.registrations[name].template_packs
    ]


async def installed_plugin_versions(db: AsyncSession) -> dict[str, str]:
    """The session tenant's installed, enabled plugins and their versions."""
    rows = await db.execute(
        select(PluginInstallation.plugin, PluginInstallation.version).where(PluginInstallation.enabled.is_(True))
    )
    return {plugin: version for plugin, version in rows}


def runnable_cache() -> dict[tuple[str, str, str], Any]:
    """The process's cache of runnable versions (emptied whenever plugins are activated)."""
    return _active.runnable


def poll_seconds(plugin: str, trigger: str) -> int | None:
    """How often the host polls a loaded plugin's trigger; None when the trigger is not polled."""
    registered = _active.registrations.get(plugin)
    spec = registered.triggers.get(trigger) if registered else None
    return spec.poll_seconds if spec is not None and spec.poll is not None else None


def plugin_manager() -> pluggy.PluginManager | None:
    """The plugin manager of this process's loaded plugins."""
    return _active.manager
