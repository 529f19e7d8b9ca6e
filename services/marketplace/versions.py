"""Plugin versions: their order, what their manifests declare, whether they run on this deployment,
and the deployed plugins listed in the catalog at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guiju_sdk import manifest
from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import open_session
from services.db.statements import insert_ignoring_conflicts
from services.marketplace.loading import _active
from services.marketplace.models import PluginListing, PluginVersion
from tenants.base import utcnow
from tenants.context import system_scope
from tenants.errors import NotFound


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
        raise NotFound(
            "The plugin '{plugin}' has no version '{version}'.",
            code="plugin_version_not_found",
            plugin=plugin,
            version=version,
        )
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
