"""A tenant's installations: install after consenting to the scopes, configure (validated against
the version's settings schema; secrets encrypted), enable, disable, pin, ask for a health check."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from guiju_sdk import API_VERSION, api_version_supported, registry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.audit import service as audit
from services.marketplace.configuration import keyring
from services.marketplace.models import PluginInstallation, PluginVersion
from services.marketplace.schemas import CircuitOut, ConfigIn, InstallationOut, InstallIn
from services.marketplace.secrets import secret_context
from services.marketplace.versions import (
    _latest_available,
    _settings_schema,
    _version,
    _versions,
    manifest_scopes,
    version_available,
    version_key,
)
from services.outbox import service as outbox
from services.patterns import schema_validator
from services.records import service as records
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MASK = "********"
HEALTH_REQUESTED = events.PLUGIN_HEALTH_REQUESTED.name
POLL_DUE = events.PLUGIN_POLL_DUE.name  # a polled trigger's turn, for one workspace


async def _installation(
    db: AsyncSession, principal: Principal, plugin: str, *, lock: bool = False
) -> PluginInstallation:
    tenant_id = principal.require_tenant()
    statement = select(PluginInstallation).where(
        PluginInstallation.tenant_id == tenant_id, PluginInstallation.plugin == plugin
    )
    found = await db.scalar(statement.with_for_update() if lock else statement)
    if found is None:
        raise NotFound("The plugin '{plugin}' is not installed.", code="plugin_not_installed", plugin=plugin)
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
        FieldProblem.of(
            pointer, "scope_not_consented", "the plugin needs the scope '{scope}': consent to it to go on", scope=scope
        )
        for scope in required
        if scope not in consented
    ]
    problems += [
        FieldProblem.of(f"{pointer}/{i}", "unknown_scope", "the plugin does not ask for '{scope}'", scope=scope)
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
        return [FieldProblem.of(f"{pointer}/{k}", "unknown_setting", "the plugin has no settings") for k in extra]
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
        problems.append(FieldProblem.of(where, f"invalid_{error.validator}", message))
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
            problems.append(
                FieldProblem.of(f"/collections/{i}", "unknown_collection", "no collection '{key}'", key=key)
            )
    return problems


def _api_problem(row: PluginVersion) -> FieldProblem | None:
    api_range = str(row.manifest.get("api_range", ""))
    try:
        supported = api_version_supported(api_range)
    except ValueError as exc:
        return FieldProblem.of(
            "/version",
            "incompatible_api",
            "malformed api_range '{api_range}': {reason}",
            api_range=api_range,
            reason=exc,
        )
    if supported:
        return None
    return FieldProblem.of(
        "/version",
        "incompatible_api",
        "{plugin} {version} supports plugin API {api_range}; this platform provides {provided}",
        plugin=row.plugin,
        version=row.version,
        api_range=api_range,
        provided=f"{API_VERSION[0]}.{API_VERSION[1]}",
    )


async def _installable(db: AsyncSession, plugin: str, version: str | None) -> PluginVersion:
    versions = await _versions(db, plugin)
    if not any(v.status == "approved" for v in versions):
        raise NotFound("No plugin '{plugin}' in the marketplace.", code="plugin_not_found", plugin=plugin)
    row = _latest_available(versions) if version is None else next((v for v in versions if v.version == version), None)
    if row is None or not version_available(row):
        if version is None:
            raise Conflict(
                "{plugin} cannot be installed on this platform now: it is not approved or its code is not deployed.",
                code="plugin_version_unavailable",
                plugin=plugin,
            )
        raise Conflict(
            "{plugin} {version} cannot be installed on this platform now: it is not approved or its code is not "
            "deployed.",
            code="plugin_version_unavailable",
            plugin=plugin,
            version=version,
        )
    return row


async def install(db: AsyncSession, principal: Principal, plugin: str, data: InstallIn) -> PluginInstallation:
    """Install ``plugin`` for the principal's tenant once its admin consented to every scope."""
    tenant_id = principal.require_role(Role.ADMIN)
    row = await _installable(db, plugin, data.version)
    if await db.get(PluginInstallation, (tenant_id, plugin)) is not None:
        raise Conflict("The plugin '{plugin}' is installed already.", code="plugin_already_installed", plugin=plugin)
    schema = _settings_schema(row.manifest)
    plain, secret = _split_settings(schema, data.config)
    problems = [p for p in [_api_problem(row)] if p is not None]
    problems += _grant_problems(manifest_scopes(row.manifest), data.scopes)
    problems += await _collection_problems(db, data.collections)
    problems += config_problems(schema, plain, secret, "/config")
    if problems:
        raise ValidationProblem(
            "{plugin} cannot be installed as asked.", code="invalid_installation", errors=problems, plugin=plugin
        )
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
