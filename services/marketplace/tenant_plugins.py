"""What a tenant's automations may use: its installed, enabled plugins, and the actions the
platform deploys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.marketplace.loading import _active
from services.marketplace.models import PluginInstallation, PluginVersion
from services.marketplace.versions import _action_names, version_available


@dataclass(frozen=True)
class TenantPlugins:
    """What the session tenant's installed, enabled plugins offer its automations."""

    plugins: frozenset[str]
    actions: frozenset[str]  # "plugin.action"
    triggers: frozenset[str]  # "plugin.trigger"


async def tenant_catalog(db: AsyncSession) -> TenantPlugins:
    """The session tenant's installed, enabled plugins, their actions and their triggers."""
    plugins: set[str] = set()
    actions: set[str] = set()
    triggers: set[str] = set()
    for installation in await db.scalars(select(PluginInstallation).where(PluginInstallation.enabled.is_(True))):
        row = await db.get(PluginVersion, (installation.plugin, installation.version))
        if row is None:
            continue
        plugins.add(installation.plugin)
        actions.update(f"{installation.plugin}.{name}" for name in _action_names(row.manifest))
        triggers.update(f"{installation.plugin}.{t.get('name')}" for t in row.manifest.get("triggers") or [])
    return TenantPlugins(frozenset(plugins), frozenset(actions), frozenset(triggers))


async def platform_actions(db: AsyncSession) -> dict[str, frozenset[str]]:
    """Every plugin deployed on the platform (loaded here, or a version tenants can install), with
    the actions its available versions declare: what a procedure's action step may name."""
    offered: dict[str, set[str]] = {name: set() for name in _active.infos}
    for action in _active.actions.values():
        offered[action.plugin].add(action.spec.name)
    for row in await db.scalars(select(PluginVersion).where(PluginVersion.status == "approved")):
        if version_available(row):
            offered.setdefault(row.plugin, set()).update(_action_names(row.manifest))
    return {plugin: frozenset(actions) for plugin, actions in offered.items()}
