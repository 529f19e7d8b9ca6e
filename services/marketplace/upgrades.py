"""Moving an installation between versions (upgrade, rollback) and uninstalling it, checked
against what other services keep that uses the plugin."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.marketplace.installations import (
    _api_problem,
    _changed,
    _installable,
    _installation,
    _split_settings,
    _stored_secrets,
    config_problems,
)
from services.marketplace.models import PluginInstallation, PluginVersion
from services.marketplace.schemas import UninstallPreviewOut, UpgradeIn, UpgradePlanOut
from services.marketplace.versions import (
    _action_names,
    _settings_schema,
    _version,
    manifest_scopes,
    version_available,
    version_key,
)
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


class PluginDependents(Protocol):
    """What other services keep that uses a plugin (the automation service registers itself)."""

    async def actions_in_use(self, db: AsyncSession, plugin: str) -> dict[str, int]:
        """Enabled automations per action of ``plugin`` they call or trigger they use."""
        ...

    async def disable_users(self, db: AsyncSession, plugin: str, reason: str) -> int:
        """Disable the automations that use ``plugin``, with ``reason``; how many."""
        ...


_dependents: list[PluginDependents] = []


def register_dependents(dependents: PluginDependents) -> None:
    _dependents.append(dependents)


async def _in_use(db: AsyncSession, plugin: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for dependents in _dependents:
        for name, count in (await dependents.actions_in_use(db, plugin)).items():
            counts[name] = counts.get(name, 0) + count
    return counts


async def _plan(
    db: AsyncSession, installation: PluginInstallation, target: PluginVersion, consented: list[str] | None
) -> UpgradePlanOut:
    current = await _version(db, installation.plugin, installation.version)
    old_scopes, new_scopes = set(installation.granted_scopes), manifest_scopes(target.manifest)
    added = [s for s in new_scopes if s not in old_scopes]
    problems = [p for p in [_api_problem(target)] if p is not None]
    if added:
        problems += [
            FieldProblem.of(
                "/scopes",
                "scope_not_consented",
                "{version} needs the new scope '{scope}': consent to it",
                version=target.version,
                scope=s,
            )
            for s in added
            if s not in (consented or [])
        ]
    schema = _settings_schema(target.manifest)
    plain, _ = _split_settings(schema, installation.config)
    stray = sorted(set(installation.config) - set(plain))
    problems += [FieldProblem.of(f"/config/{k}", "setting_became_secret", "re-enter it as a secret") for k in stray]
    problems += config_problems(schema, plain, _stored_secrets(installation), "/config")
    removed_actions = sorted(set(_action_names(current.manifest)) - set(_action_names(target.manifest)))
    in_use = await _in_use(db, installation.plugin)
    problems += [
        FieldProblem.of(
            "/version",
            "action_in_use",
            "{version} drops the action '{name}', which {count} automation(s) use",
            version=target.version,
            name=name,
            count=in_use[name],
        )
        for name in removed_actions
        if in_use.get(name)
    ]
    return UpgradePlanOut(
        plugin=installation.plugin,
        from_version=installation.version,
        to_version=target.version,
        added_scopes=added,
        removed_scopes=sorted(old_scopes - set(new_scopes)),
        added_actions=sorted(set(_action_names(target.manifest)) - set(_action_names(current.manifest))),
        removed_actions=removed_actions,
        problems=problems,
        applied=False,
    )


async def _move_to(
    db: AsyncSession,
    principal: Principal | None,
    installation: PluginInstallation,
    target: PluginVersion,
    scopes: list[str],
    event: events.EventType[Any],
) -> None:
    from_version = installation.version
    installation.previous_version, installation.previous_scopes = (
        installation.version,
        list(installation.granted_scopes),
    )
    installation.version, installation.granted_scopes = target.version, scopes
    installation.consecutive_failures, installation.circuit_open_until = 0, None
    installation.updated_at = utcnow()
    await _changed(db, principal, event, installation, {"from_version": from_version})


async def upgrade(db: AsyncSession, principal: Principal, plugin: str, data: UpgradeIn) -> UpgradePlanOut:
    """Check (and unless ``dry_run``, apply) an upgrade: the API range, new scopes, the settings
    against the new schema, and no dropped action still in use. Refused while pinned."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if installation.pinned and not data.dry_run:
        raise Conflict(
            "{plugin} is pinned to {version}: unpin it to upgrade.",
            code="plugin_pinned",
            plugin=plugin,
            version=installation.version,
        )
    target = await _installable(db, plugin, data.version)
    if version_key(target.version) <= version_key(installation.version):
        raise Conflict(
            "{plugin} {version} is not newer than {installed}.",
            code="not_an_upgrade",
            plugin=plugin,
            version=target.version,
            installed=installation.version,
        )
    plan = await _plan(db, installation, target, data.scopes)
    if plan.problems or data.dry_run:
        if plan.problems and not data.dry_run:
            raise ValidationProblem(
                "{plugin} cannot be upgraded to {version}.",
                code="upgrade_incompatible",
                errors=plan.problems,
                plugin=plugin,
                version=target.version,
            )
        return plan
    await _move_to(db, principal, installation, target, manifest_scopes(target.manifest), events.PLUGIN_UPGRADED)
    return msgspec.structs.replace(plan, applied=True)


async def rollback(db: AsyncSession, principal: Principal, plugin: str) -> PluginInstallation:
    """Return to the version (and grant) before the last upgrade; a second rollback undoes it."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if not installation.previous_version:
        raise Conflict("{plugin} has no earlier version to return to.", code="nothing_to_roll_back", plugin=plugin)
    target = await _version(db, plugin, installation.previous_version)
    if not version_available(target):
        raise Conflict(
            "{plugin} {version} is no longer available on this platform.",
            code="plugin_version_unavailable",
            plugin=plugin,
            version=target.version,
        )
    plan = await _plan(db, installation, target, installation.previous_scopes)
    if plan.problems:
        raise ValidationProblem(
            "{plugin} cannot go back to {version}.",
            code="rollback_incompatible",
            errors=plan.problems,
            plugin=plugin,
            version=target.version,
        )
    await _move_to(
        db, principal, installation, target, list(installation.previous_scopes or []), events.PLUGIN_ROLLED_BACK
    )
    return installation


async def uninstall_preview(db: AsyncSession, principal: Principal, plugin: str) -> UninstallPreviewOut:
    """What uninstalling does, said before the admin confirms."""
    principal.require_role(Role.ADMIN)
    await _installation(db, principal, plugin)
    in_use = sum((await _in_use(db, plugin)).values())
    return UninstallPreviewOut(
        plugin=plugin,
        deleted=[
            "its settings and encrypted secrets",
            "its grant: the scopes and collections consented to at install",
        ],
        kept=[
            "records it wrote in your collections, and files it stored: they are your workspace's",
            "the history of automation executions that called it",
        ],
        automations_affected=in_use,
        with_delete_data=(
            f"{plugin} is also asked to delete the data it keeps outside Guiju for this workspace "
            "(in its own service or the systems it connects to); without it, that data is left as it is"
        ),
    )


async def uninstall(db: AsyncSession, principal: Principal, plugin: str, *, delete_data: bool, confirm: str) -> int:
    """Uninstall once ``confirm`` repeats the plugin's name; disables the automations using it and
    returns how many."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if confirm != plugin:
        raise ValidationProblem(
            "Confirm by repeating the plugin's name.",
            code="confirmation_required",
            errors=[FieldProblem.of("/confirm", "confirmation_required", "pass confirm={plugin}", plugin=plugin)],
        )
    disabled = 0
    for dependents in _dependents:
        disabled += await dependents.disable_users(db, plugin, f"the plugin {plugin} was uninstalled")
    # The lifecycle hook runs later, in a worker, after the row is gone: the event carries what the
    # plugin's context needs (secrets stay encrypted in it).
    await _changed(
        db,
        principal,
        events.PLUGIN_UNINSTALLED,
        installation,
        {
            "delete_data": delete_data,
            "config": dict(installation.config),
            "secrets": dict(installation.secrets),
            "granted_scopes": list(installation.granted_scopes),
            "granted_collections": list(installation.granted_collections),
        },
    )
    await db.delete(installation)
    return disabled
