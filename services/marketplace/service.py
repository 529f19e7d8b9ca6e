"""The marketplace: loading plugins, the catalog, and each tenant's installed plugins.

Loading: entry points of the group ``guiju``, checked against the SDK's API version. A plugin that
fails to import, lacks a manifest, or declares an API range excluding ours is refused with its
reason; the others load. Allow- and deny-lists come from settings.

The catalog lists plugin versions (deployed by the operator, or submitted by publishers and
approved). A tenant's admin installs a version after consenting to its scopes, configures it
(validated against its settings schema; secrets encrypted), pins, upgrades, rolls back, disables
and uninstalls it. Only a tenant's installed, enabled plugins exist for its automations.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pluggy
from guiju_sdk import API_VERSION, ENTRY_POINT_GROUP, PluginInfo, api_version_supported, manifest, registry
from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.audit import service as audit
from services.db import open_session
from services.db.statements import insert_ignoring_conflicts
from services.marketplace.models import (
    PluginInstallation,
    PluginListing,
    PluginSequence,
    PluginSequenceKey,
    PluginVersion,
)
from services.marketplace.schemas import (
    CircuitOut,
    ConfigIn,
    InstallationOut,
    InstallIn,
    ListingOut,
    UninstallPreviewOut,
    UpgradeIn,
    UpgradePlanOut,
    VersionOut,
)
from services.marketplace.secrets import KeyRing, secret_context
from services.outbox import service as outbox
from services.outputs import struct_from
from services.patterns import schema_validator
from services.records import service as records
from services.settings import Settings, load_settings
from tenants.base import utcnow
from tenants.context import system_scope
from tenants.errors import Conflict, FieldProblem, NotFound, ValidationProblem
from tenants.isolation import session_tenant_id
from tenants.models import Role
from tenants.principal import Principal

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


# ---------------------------------------------------------------- settings of the marketplace


@dataclass
class _Config:
    settings: Settings | None = None
    keyring: KeyRing | None = None


_config = _Config()


def configure(settings: Settings) -> None:
    """Use ``settings`` (app and worker start-up): the secrets' key ring, admins, circuit breaker."""
    _config.settings = settings
    _config.keyring = KeyRing.from_settings(settings)


def settings() -> Settings:
    if _config.settings is None:
        configure(load_settings("embedded"))
    assert _config.settings is not None
    return _config.settings


def keyring() -> KeyRing:
    if _config.keyring is None:
        configure(settings())
    assert _config.keyring is not None
    return _config.keyring


# ---------------------------------------------------------------- manifests and versions


def version_key(version: str) -> Version:
    """Semantic versions in order (``1.10.0`` after ``1.9.0``, ``2.0.0-rc.1`` before ``2.0.0``)."""
    try:
        return Version(version)
    except InvalidVersion:
        return Version("0")


def manifest_scopes(manifest: Mapping[str, Any]) -> list[str]:
    """The scopes a version's manifest asks for."""
    return [str(s) for s in manifest.get("scopes") or []]


def _action_names(manifest: Mapping[str, Any]) -> list[str]:
    return [str(a.get("name")) for a in manifest.get("actions") or [] if isinstance(a, dict)]


def _settings_schema(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    schema = manifest.get("settings_schema")
    return schema if isinstance(schema, dict) else None


def version_available(row: PluginVersion) -> bool:
    """Whether tenants can install (or run) ``row`` on this deployment: remote versions once
    approved; in-process ones only where the workers run that very version's code."""
    return row.status == "approved" and runs_here(row.plugin, row.version, row.kind)


def runs_here(plugin: str, version: str, kind: str) -> bool:
    """Whether an approved version's code can run in this process: a remote one always; an
    in-process one only while this process has loaded that very version."""
    if kind == "remote":
        return True
    loaded = _active.infos.get(plugin)
    return loaded is not None and loaded.version == version


async def _versions(db: AsyncSession, plugin: str) -> list[PluginVersion]:
    rows = list(await db.scalars(select(PluginVersion).where(PluginVersion.plugin == plugin)))
    return sorted(rows, key=lambda r: version_key(r.version), reverse=True)


def _latest_available(versions: list[PluginVersion]) -> PluginVersion | None:
    return next((v for v in versions if version_available(v)), None)


async def _version(db: AsyncSession, plugin: str, version: str) -> PluginVersion:
    row = await db.get(PluginVersion, (plugin, version))
    if row is None:
        raise NotFound(f"The plugin {plugin!r} has no version {version!r}.", code="plugin_version_not_found")
    return row


async def list_deployed_plugins() -> None:
    """At start-up: the loaded plugins join the catalog (:func:`sync_deployed_plugins`)."""
    if not _active.infos:
        return
    with system_scope():
        async with open_session(system=True) as db:
            await sync_deployed_plugins(db)


async def sync_deployed_plugins(db: AsyncSession) -> None:
    """List the plugins this deployment loaded (the operator installed them) as approved versions.

    Runs at start-up in a system-scope session; several processes may run it at once, so every
    write tolerates the row being there already.
    """
    for name, info in sorted(_active.infos.items()):
        document = manifest.manifest_from_plugin(info, _active.registrations[name])
        listing = await db.get(PluginListing, name)
        if listing is None:
            await insert_ignoring_conflicts(
                db,
                PluginListing,
                [{"name": name, "publisher": info.publisher, "category": info.category, "created_at": utcnow()}],
                conflict=["name"],
            )
        elif listing.publisher_tenant_id is None and (listing.publisher, listing.category) != (
            info.publisher,
            info.category,
        ):
            # The operator's listing follows the code deployed (a partner's listing is the partner's).
            listing.publisher, listing.category = info.publisher, info.category
        existing = await db.get(PluginVersion, (name, info.version))
        if existing is None:
            await insert_ignoring_conflicts(
                db,
                PluginVersion,
                [
                    {
                        "plugin": name,
                        "version": info.version,
                        "kind": "python",
                        "manifest": document,
                        "status": "approved",
                        "check_report": None,
                        "submitted_at": utcnow(),
                        "reviewed_at": utcnow(),
                        "review_reason": "deployed by the operator",
                    }
                ],
                conflict=["plugin", "version"],
            )
        elif existing.kind == "python" and existing.manifest != document:
            existing.manifest = document  # the code deployed under this version is what runs


# ---------------------------------------------------------------- the catalog


def _version_out(row: PluginVersion) -> VersionOut:
    return struct_from(
        VersionOut,
        row,
        api_range=str(row.manifest.get("api_range", "")),
        scopes=manifest_scopes(row.manifest),
        available=version_available(row),
    )


def _listing_out(listing: PluginListing, versions: list[PluginVersion], installed: str | None) -> ListingOut:
    approved = [v for v in versions if v.status == "approved"]
    latest = _latest_available(approved) or approved[0]
    document = latest.manifest
    return ListingOut(
        name=listing.name,
        publisher=listing.publisher,
        category=listing.category,
        summary=dict(document.get("summary") or {}),
        pricing=str(document.get("pricing", "free")),
        kind=latest.kind,
        latest_version=latest.version,
        scopes=manifest_scopes(document),
        settings_schema=_settings_schema(document),
        actions=list(document.get("actions") or []),
        triggers=list(document.get("triggers") or []),
        versions=[_version_out(v) for v in approved],
        installed_version=installed,
    )


async def list_catalog(
    db: AsyncSession, principal: Principal, *, category: str | None = None, query: str | None = None
) -> list[ListingOut]:
    """Listings with at least one approved version, for the tenant browsing them."""
    principal.require_tenant()
    installed = {i.plugin: i.version for i in await db.scalars(select(PluginInstallation))}
    rows = await db.scalars(select(PluginVersion).where(PluginVersion.status == "approved"))
    by_plugin: dict[str, list[PluginVersion]] = {}
    for row in rows:
        by_plugin.setdefault(row.plugin, []).append(row)
    listings = await db.scalars(select(PluginListing).where(PluginListing.name.in_(list(by_plugin))))
    found: list[ListingOut] = []
    needle = (query or "").strip().lower()
    for listing in listings:
        if category and listing.category != category:
            continue
        versions = sorted(by_plugin[listing.name], key=lambda r: version_key(r.version), reverse=True)
        out = _listing_out(listing, versions, installed.get(listing.name))
        text = " ".join((out.name, out.publisher, *out.summary.values())).lower()
        if needle and needle not in text:
            continue
        found.append(out)
    return sorted(found, key=lambda o: o.name)


async def get_listing(db: AsyncSession, principal: Principal, name: str) -> ListingOut:
    principal.require_tenant()
    listing = await db.get(PluginListing, name)
    versions = [v for v in await _versions(db, name) if v.status == "approved"] if listing else []
    if listing is None or not versions:
        raise NotFound(f"No plugin {name!r} in the marketplace.", code="plugin_not_found")
    installation = await db.get(PluginInstallation, (principal.require_tenant(), name))
    return _listing_out(listing, versions, installation.version if installation else None)


# ---------------------------------------------------------------- a tenant's installations

MASK = "********"
HEALTH_REQUESTED = events.PLUGIN_HEALTH_REQUESTED.name
POLL_DUE = events.PLUGIN_POLL_DUE.name  # a polled trigger's turn, for one workspace
# A notification for the workspace's messaging plugin to send on (e-mail, chat robots).
NOTIFICATION_FORWARDED = events.NOTIFICATION_FORWARDED.name
MESSAGING_PLUGIN, MESSAGING_NOTIFY_ACTION = "messaging", "deliver_notification"


def _problem(pointer: str, code: str, message: str) -> FieldProblem:
    return FieldProblem(pointer=pointer, code=code, message=message)


async def _installation(
    db: AsyncSession, principal: Principal, plugin: str, *, lock: bool = False
) -> PluginInstallation:
    tenant_id = principal.require_tenant()
    statement = select(PluginInstallation).where(
        PluginInstallation.tenant_id == tenant_id, PluginInstallation.plugin == plugin
    )
    found = await db.scalar(statement.with_for_update() if lock else statement)
    if found is None:
        raise NotFound(f"The plugin {plugin!r} is not installed.", code="plugin_not_installed")
    return found


async def installation_out(db: AsyncSession, installation: PluginInstallation) -> InstallationOut:
    row = await db.get(PluginVersion, (installation.plugin, installation.version))
    schema = _settings_schema(row.manifest) if row else None
    newer = _latest_available(await _versions(db, installation.plugin))
    upgrade = (
        newer.version if newer is not None and version_key(newer.version) > version_key(installation.version) else None
    )
    return InstallationOut(
        plugin=installation.plugin,
        version=installation.version,
        previous_version=installation.previous_version,
        pinned=installation.pinned,
        enabled=installation.enabled,
        granted_scopes=list(installation.granted_scopes),
        granted_collections=list(installation.granted_collections),
        config=dict(installation.config),
        secrets={
            name: MASK if name in installation.secrets else None for name in sorted(registry.secret_fields(schema))
        },
        upgrade_available=upgrade,
        circuit=CircuitOut(
            consecutive_failures=installation.consecutive_failures,
            open_until=installation.circuit_open_until,
            last_error=installation.last_error,
        ),
        health=installation.health,
        installed_at=installation.created_at,
        updated_at=installation.updated_at,
    )


async def list_installations(db: AsyncSession, principal: Principal) -> list[PluginInstallation]:
    principal.require_role(Role.MEMBER)
    return list(await db.scalars(select(PluginInstallation).order_by(PluginInstallation.plugin)))


async def get_installation(db: AsyncSession, principal: Principal, plugin: str) -> PluginInstallation:
    principal.require_role(Role.MEMBER)
    return await _installation(db, principal, plugin)


def _grant_problems(required: list[str], consented: list[str], pointer: str = "/scopes") -> list[FieldProblem]:
    problems = [
        _problem(pointer, "scope_not_consented", f"the plugin needs the scope {scope!r}: consent to it to go on")
        for scope in required
        if scope not in consented
    ]
    problems += [
        _problem(f"{pointer}/{i}", "unknown_scope", f"the plugin does not ask for {scope!r}")
        for i, scope in enumerate(consented)
        if scope not in required
    ]
    return problems


def config_problems(
    schema: dict[str, Any] | None, config: Mapping[str, Any], secrets: Mapping[str, Any], pointer: str = "/values"
) -> list[FieldProblem]:
    """Every way ``config`` plus ``secrets`` (values, or placeholders for stored ones) fails ``schema``.

    A secret's value never appears in a message: the message names the rule it breaks instead.
    """
    if schema is None:
        extra = sorted({*config, *secrets})
        return [_problem(f"{pointer}/{k}", "unknown_setting", "the plugin has no settings") for k in extra]
    document = {**config, **secrets}
    secret_names = registry.secret_fields(schema)
    problems: list[FieldProblem] = []
    # The partner's schema runs on RE2: its patterns cannot stall the process whatever the tenant types.
    for error in sorted(schema_validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path)):
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required":
            missing = str(error.message).split("'")[1] if "'" in error.message else ""
            path = [missing] if missing else path
        where = "/".join([pointer.rstrip("/"), *path]) if path else pointer
        secret = bool(path) and path[0] in secret_names
        message = f"breaks the rule {error.validator}: {error.validator_value!r}" if secret else error.message
        problems.append(_problem(where, f"invalid_{error.validator}", message))
    return problems


def _split_settings(schema: dict[str, Any] | None, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    secret_names = registry.secret_fields(schema)
    plain = {k: v for k, v in values.items() if k not in secret_names}
    secret = {k: v for k, v in values.items() if k in secret_names}
    return plain, secret


def _stored_secrets(installation: PluginInstallation) -> dict[str, str]:
    """The installation's secrets decrypted, to validate them against a schema (never shown)."""
    ring = keyring()
    return {
        name: ring.decrypt(token, secret_context(installation.tenant_id, installation.plugin, name))
        for name, token in installation.secrets.items()
    }


def _encrypt_secrets(tenant_id: uuid.UUID, plugin: str, secrets: Mapping[str, Any]) -> dict[str, str]:
    ring = keyring()
    return {k: ring.encrypt(str(v), secret_context(tenant_id, plugin, k)) for k, v in secrets.items()}


async def _collection_problems(db: AsyncSession, keys: list[str]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    for i, key in enumerate(keys):
        try:
            await records.get_collection_by_key(db, key)
        except NotFound:
            problems.append(_problem(f"/collections/{i}", "unknown_collection", f"no collection {key!r}"))
    return problems


def _api_problem(row: PluginVersion) -> FieldProblem | None:
    api_range = str(row.manifest.get("api_range", ""))
    try:
        supported = api_version_supported(api_range)
    except ValueError as exc:
        return _problem("/version", "incompatible_api", f"malformed api_range {api_range!r}: {exc}")
    if supported:
        return None
    return _problem(
        "/version",
        "incompatible_api",
        f"{row.plugin} {row.version} supports plugin API {api_range}; this platform provides "
        f"{API_VERSION[0]}.{API_VERSION[1]}",
    )


async def _installable(db: AsyncSession, plugin: str, version: str | None) -> PluginVersion:
    versions = await _versions(db, plugin)
    if not any(v.status == "approved" for v in versions):
        raise NotFound(f"No plugin {plugin!r} in the marketplace.", code="plugin_not_found")
    row = _latest_available(versions) if version is None else next((v for v in versions if v.version == version), None)
    if row is None or not version_available(row):
        raise Conflict(
            f"{plugin} {version or ''} cannot be installed on this platform now: it is not approved or its "
            "code is not deployed.".replace("  ", " "),
            code="plugin_version_unavailable",
        )
    return row


async def install(db: AsyncSession, principal: Principal, plugin: str, data: InstallIn) -> PluginInstallation:
    """Install ``plugin`` for the principal's tenant once its admin consented to every scope."""
    tenant_id = principal.require_role(Role.ADMIN)
    row = await _installable(db, plugin, data.version)
    if await db.get(PluginInstallation, (tenant_id, plugin)) is not None:
        raise Conflict(f"The plugin {plugin!r} is installed already.", code="plugin_already_installed")
    schema = _settings_schema(row.manifest)
    plain, secret = _split_settings(schema, data.config)
    problems = [p for p in [_api_problem(row)] if p is not None]
    problems += _grant_problems(manifest_scopes(row.manifest), data.scopes)
    problems += await _collection_problems(db, data.collections)
    problems += config_problems(schema, plain, secret, "/config")
    if problems:
        raise ValidationProblem(f"{plugin} cannot be installed as asked.", code="invalid_installation", errors=problems)
    now = utcnow()
    installation = PluginInstallation(
        tenant_id=tenant_id,
        plugin=plugin,
        version=row.version,
        granted_scopes=list(data.scopes),
        granted_collections=list(dict.fromkeys(data.collections)),
        config=plain,
        secrets=_encrypt_secrets(tenant_id, plugin, secret),
        installed_by=principal.user_id,
        created_at=now,
        updated_at=now,
    )
    db.add(installation)
    await db.flush()
    await _changed(db, principal, events.PLUGIN_INSTALLED, installation, {"version": row.version})
    return installation


async def _changed(
    db: AsyncSession,
    principal: Principal | None,
    event: events.EventType[Any],
    installation: PluginInstallation,
    detail: dict[str, Any],
) -> None:
    """Audit the change and emit its event (lifecycle hooks run from it, in a worker)."""
    await audit.record_change(
        db,
        actor_id=principal.user_id if principal else None,
        action=event.name,
        subject_type="plugin",
        subject_id=installation.plugin,
        after={"plugin": installation.plugin, "version": installation.version}
        | {k: v for k, v in detail.items() if k != "secrets"},
    )
    await outbox.emit(db, event.name, {"plugin": installation.plugin, "version": installation.version, **detail})


async def configure_installation(
    db: AsyncSession, principal: Principal, plugin: str, data: ConfigIn
) -> PluginInstallation:
    """Change settings: a field left out keeps its value, null removes it; secrets are re-encrypted."""
    tenant_id = principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    row = await _version(db, plugin, installation.version)
    schema = _settings_schema(row.manifest)
    plain_in, secret_in = _split_settings(schema, data.values)
    config = {k: v for k, v in {**installation.config, **plain_in}.items() if v is not None}
    # A secret left out, or sent back as its mask, keeps its stored token; null removes it.
    kept = {k for k in installation.secrets if k not in secret_in or secret_in[k] == MASK}
    new_secrets = {k: v for k, v in secret_in.items() if v is not None and v != MASK}
    stored = _stored_secrets(installation)
    problems = config_problems(schema, config, {**{k: stored[k] for k in kept}, **new_secrets})
    if problems:
        raise ValidationProblem("The settings are not valid.", code="invalid_settings", errors=problems)
    previous = dict(installation.config)
    removed = sorted(set(installation.secrets) - kept - set(new_secrets))
    installation.config = config
    installation.secrets = {
        **{k: v for k, v in installation.secrets.items() if k in kept},
        **_encrypt_secrets(tenant_id, plugin, new_secrets),
    }
    installation.updated_at = utcnow()
    changed_secrets = sorted(set(new_secrets) | set(removed))
    await _changed(
        db,
        principal,
        events.PLUGIN_CONFIGURED,
        installation,
        {"previous": previous, "secrets_changed": changed_secrets},
    )
    return installation


async def set_enabled(db: AsyncSession, principal: Principal, plugin: str, enabled: bool) -> PluginInstallation:
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if installation.enabled != enabled:
        installation.enabled = enabled
        if enabled:  # a deliberate re-enable closes the circuit too
            installation.consecutive_failures, installation.circuit_open_until = 0, None
        installation.updated_at = utcnow()
        await _changed(db, principal, events.PLUGIN_ENABLED if enabled else events.PLUGIN_DISABLED, installation, {})
    return installation


async def request_health_check(db: AsyncSession, principal: Principal, plugin: str) -> PluginInstallation:
    """Ask a worker to run the plugin's health check for this workspace; the result lands in
    ``health`` (plugin code runs only in workers)."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin)
    await outbox.emit(db, HEALTH_REQUESTED, {"plugin": plugin, "version": installation.version})
    return installation


async def set_pinned(db: AsyncSession, principal: Principal, plugin: str, pinned: bool) -> PluginInstallation:
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if installation.pinned != pinned:
        installation.pinned = pinned
        installation.updated_at = utcnow()
        await _changed(db, principal, events.PLUGIN_PINNED if pinned else events.PLUGIN_UNPINNED, installation, {})
    return installation


# ---------------------------------------------------------------- upgrade, rollback, uninstall


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
            _problem("/scopes", "scope_not_consented", f"{target.version} needs the new scope {s!r}: consent to it")
            for s in added
            if s not in (consented or [])
        ]
    schema = _settings_schema(target.manifest)
    plain, _ = _split_settings(schema, installation.config)
    stray = sorted(set(installation.config) - set(plain))
    problems += [_problem(f"/config/{k}", "setting_became_secret", "re-enter it as a secret") for k in stray]
    problems += config_problems(schema, plain, _stored_secrets(installation), "/config")
    removed_actions = sorted(set(_action_names(current.manifest)) - set(_action_names(target.manifest)))
    in_use = await _in_use(db, installation.plugin)
    problems += [
        _problem(
            "/version",
            "action_in_use",
            f"{target.version} drops the action {name!r}, which {in_use[name]} automation(s) use",
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
        raise Conflict(f"{plugin} is pinned to {installation.version}: unpin it to upgrade.", code="plugin_pinned")
    target = await _installable(db, plugin, data.version)
    if version_key(target.version) <= version_key(installation.version):
        raise Conflict(f"{plugin} {target.version} is not newer than {installation.version}.", code="not_an_upgrade")
    plan = await _plan(db, installation, target, data.scopes)
    if plan.problems or data.dry_run:
        if plan.problems and not data.dry_run:
            raise ValidationProblem(
                f"{plugin} cannot be upgraded to {target.version}.", code="upgrade_incompatible", errors=plan.problems
            )
        return plan
    await _move_to(db, principal, installation, target, manifest_scopes(target.manifest), events.PLUGIN_UPGRADED)
    return msgspec.structs.replace(plan, applied=True)


async def rollback(db: AsyncSession, principal: Principal, plugin: str) -> PluginInstallation:
    """Return to the version (and grant) before the last upgrade; a second rollback undoes it."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, principal, plugin, lock=True)
    if not installation.previous_version:
        raise Conflict(f"{plugin} has no earlier version to return to.", code="nothing_to_roll_back")
    target = await _version(db, plugin, installation.previous_version)
    if not version_available(target):
        raise Conflict(
            f"{plugin} {target.version} is no longer available on this platform.", code="plugin_version_unavailable"
        )
    plan = await _plan(db, installation, target, installation.previous_scopes)
    if plan.problems:
        raise ValidationProblem(
            f"{plugin} cannot go back to {target.version}.", code="rollback_incompatible", errors=plan.problems
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
            errors=[_problem("/confirm", "confirmation_required", f"pass confirm={plugin}")],
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


# ---------------------------------------------------------------- what a tenant's automations may use


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


# ---------------------------------------------------------------- key rotation


def platform_secret_context(plugin: str, version: str) -> str:
    """The associated data of a remote plugin version's signing secret."""
    return f"platform|{plugin}|{version}"


async def rotate_secrets() -> int:
    """Re-encrypt every stored plugin secret (tenants' settings, remote plugins' signing keys) that
    is not under the key ring's current key; returns how many tokens changed. Run after putting a
    new key first in ``GUIJU_SECRETS_KEYS``, before removing the old one."""
    ring = keyring()
    changed = 0
    with system_scope():
        async with open_session(system=True) as db:
            for installation in await db.scalars(select(PluginInstallation).with_for_update()):
                tokens = dict(installation.secrets)
                for name, token in tokens.items():
                    if ring.key_id_of(token) != ring.current_id:
                        context = secret_context(installation.tenant_id, installation.plugin, name)
                        tokens[name] = ring.encrypt(ring.decrypt(token, context), context)
                        changed += 1
                installation.secrets = tokens
            for version in await db.scalars(
                select(PluginVersion).where(PluginVersion.signing_secret.is_not(None)).with_for_update()
            ):
                token = version.signing_secret or ""
                if ring.key_id_of(token) != ring.current_id:
                    context = platform_secret_context(version.plugin, version.version)
                    version.signing_secret = ring.encrypt(ring.decrypt(token, context), context)
                    changed += 1
    return changed


# ---------------------------------------------------------------- numbering for plugins

MAX_SEQUENCE_NAME = 200


async def next_number(db: AsyncSession, plugin: str, sequence: str, *, key: str | None = None) -> int:
    """The next number of ``plugin``'s ``sequence`` in the session's tenant, or the number ``key``
    was given before. Gapless: the sequence's row stays locked until the transaction ends, so a
    rolled-back action gives its number back and concurrent callers wait their turn."""
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise RuntimeError("next_number needs a tenant-scoped session")
    for what, text in (("sequence", sequence), ("key", key)):
        if text is not None and not 0 < len(text) <= MAX_SEQUENCE_NAME:
            raise ValueError(f"a {what} name has 1 to {MAX_SEQUENCE_NAME} characters")
    at = {"tenant_id": tenant_id, "plugin": plugin, "name": sequence}
    await insert_ignoring_conflicts(
        db, PluginSequence, [{**at, "last_number": 0, "created_at": utcnow()}], conflict=tuple(at)
    )
    row = await db.scalar(
        select(PluginSequence)
        .filter_by(**at)
        .with_for_update()
        .execution_options(populate_existing=True)  # the locked row's number, not a remembered one
    )
    assert row is not None  # inserted above, and sequences are never deleted while a tenant lives
    if key is not None:
        given = await db.scalar(select(PluginSequenceKey.number).filter_by(**at, key=key))
        if given is not None:
            return int(given)
    row.last_number += 1
    if key is not None:
        db.add(PluginSequenceKey(**at, key=key, number=row.last_number))
    await db.flush()
    return row.last_number


# ---------------------------------------------------------------- notifications sent on


async def messaging_installed(db: AsyncSession) -> bool:
    """Whether the session's workspace has the messaging plugin installed and enabled (and this
    platform deploys it). One short query, and none where the platform does not deploy it: the
    notify action asks this for every notification it sends."""
    if MESSAGING_PLUGIN not in installed_plugin_names():
        return False
    enabled = await db.scalar(select(PluginInstallation.enabled).where(PluginInstallation.plugin == MESSAGING_PLUGIN))
    return bool(enabled)


async def forward_notification(
    db: AsyncSession,
    recipients: list[dict[str, str]],
    title: str,
    body: str,
    link: str | None,
    *,
    key: str,
) -> None:
    """Ask the messaging plugin to send a notification on, once this transaction commits (it runs
    on the plugin's queue). ``recipients`` are ``{"email", "name", "locale"}``; ``key`` makes the
    plugin's sending idempotent."""
    sent: dict[str, Any] = {"recipients": recipients, "title": title or "-"}
    if body:
        sent["body"] = body
    if link:
        # Sent outside the app: a link within it (a run's page, say) is made absolute.
        sent["link"] = (
            link if link.startswith(("https://", "http://")) else settings().public_url + "/" + link.lstrip("/")
        )
    await outbox.emit(db, NOTIFICATION_FORWARDED, {"plugin": MESSAGING_PLUGIN, "key": key, "input": sent})
