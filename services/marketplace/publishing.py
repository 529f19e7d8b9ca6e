"""Publishing: publishers submit plugin versions, automated checks run, platform admins review.

A publisher is a workspace with the publisher flag (granted by a platform admin). It submits either
a remote plugin's manifest (its endpoint; checked at once, and given the key its requests are
signed with) or an in-process plugin's distribution (``uv build --sdist``, or a wheel that carries
its tests), which a worker checks with ``guiju plugin check`` (the plugin's code runs there, in the
sandbox of :mod:`services.marketplace.sandbox`, never in the API and never unconfined). Versions
that pass wait for a platform admin, who approves them (listed; tenants on older versions see the
upgrade) or rejects them with a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import secrets
import tarfile
import tempfile
import tomllib
import uuid
import zipfile
from collections.abc import Mapping
from datetime import timedelta
from importlib.metadata import PathDistribution
from pathlib import Path, PurePosixPath
from typing import Any

from guiju_sdk import manifest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import broker, events
from services.accounts import service as accounts
from services.audit import service as audit
from services.broker import tenant_session
from services.db import open_session
from services.files import service as files
from services.marketplace import archives, checks, service
from services.marketplace.models import PluginListing, PluginPublisher, PluginVersion
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.patterns import schema_pattern_problems
from services.validation import check
from tenants.base import utcnow
from tenants.context import system_scope
from tenants.errors import Conflict, FieldProblem, Forbidden, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

log = logging.getLogger("guiju.plugins")
SUBMITTED = events.PLUGIN_VERSION_SUBMITTED.name
# The actor that checks a submitted distribution, on its own queue: a submission's tests may take
# minutes, and must never hold up the events or the automations' actions (see actors.py).
CHECK_SUBMISSION_ACTOR = "check_submission"
CHECKS_QUEUE = "marketplace.checks"
MAX_SOURCE_BYTES = 20 * 1024 * 1024


# ---------------------------------------------------------------- who may do what


async def require_platform_admin(db: AsyncSession, principal: Principal, *, sensitive: bool = False) -> None:
    """Platform admins are named by e-mail in settings; to anyone else the admin API does not exist.

    The address must be verified (else whoever signed up with it first would be an admin), and a
    ``sensitive`` action (approving, rejecting, granting publisher rights, downloading a source to
    deploy) needs the password confirmed within GUIJU_REAUTHENTICATION_WINDOW_MINUTES.
    """
    user = await accounts.get_user(db, principal.user_id)
    settings = service.settings()
    if user.email.lower() not in settings.platform_admins:
        raise NotFound("Not found.", code="not_found")
    if user.email_verified_at is None:
        raise Forbidden("Verify your e-mail address first: platform admin rights need it.", code="email_not_verified")
    if sensitive:
        principal.require_recent_password(timedelta(minutes=settings.reauthentication_window_minutes))


async def grant_publisher(db: AsyncSession, principal: Principal, tenant_id: uuid.UUID, name: str) -> PluginPublisher:
    """Give a workspace the publisher flag, under the public ``name`` its listings show."""
    await require_platform_admin(db, principal, sensitive=True)
    clean = clean_name(name)
    if not clean or len(clean) > 200:
        raise ValidationProblem(
            "A publisher needs a name.", errors=[FieldProblem.of("/name", "required", "1 to 200 characters")]
        )
    check(name_problems(name, "/name", required=False))
    taken = await db.scalar(select(PluginPublisher).where(PluginPublisher.name == clean))
    existing = await db.get(PluginPublisher, tenant_id)
    if taken is not None and taken.publisher_tenant_id != tenant_id:
        raise Conflict("The publisher name '{clean}' is taken.", code="publisher_name_taken", clean=clean)
    if existing is None:
        existing = PluginPublisher(publisher_tenant_id=tenant_id, name=clean)
        db.add(existing)
    existing.name = clean
    await db.flush()
    return existing


async def _publisher(db: AsyncSession, principal: Principal) -> PluginPublisher:
    tenant_id = principal.require_role(Role.ADMIN)
    publisher = await db.get(PluginPublisher, tenant_id)
    if publisher is None:
        raise Forbidden("This workspace is not a publisher: ask the platform for the flag.", code="not_a_publisher")
    return publisher


async def _claim(db: AsyncSession, publisher: PluginPublisher, name: str, version: str, category: str) -> None:
    """Create the listing (or check it is this publisher's) and refuse a version already submitted."""
    listing = await db.get(PluginListing, name)
    if listing is None:
        db.add(
            PluginListing(
                name=name,
                publisher=publisher.name,
                publisher_tenant_id=publisher.publisher_tenant_id,
                category=category,
            )
        )
        await db.flush()
    elif listing.publisher_tenant_id != publisher.publisher_tenant_id:
        raise Conflict("The plugin name '{name}' belongs to another publisher.", code="plugin_name_taken", name=name)
    else:
        listing.category = category
    if await db.get(PluginVersion, (name, version)) is not None:
        raise Conflict(
            "{name} {version} was submitted already: submit a new version.",
            code="version_exists",
            name=name,
            version=version,
        )


def _manifest_problems(document: Mapping[str, Any]) -> list[FieldProblem]:
    found: list[FieldProblem] = []
    for message in manifest.manifest_problems(document):
        pointer, _, text = message.partition(": ")
        found.append(
            FieldProblem.of(
                f"/manifest{pointer}" if pointer.startswith("/") else "/manifest", "invalid_manifest", text or message
            )
        )
    found += [FieldProblem.of(f"/manifest{p}", "invalid_pattern", why) for p, why in schema_patterns_of(document)]
    return found


def schema_patterns_of(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The patterns of a manifest's schemas (settings, actions' input and output) RE2 cannot run,
    as (pointer into the manifest, why): the platform validates tenants' values with them."""
    found = schema_pattern_problems(document.get("settings_schema"), "/settings_schema")
    actions = document.get("actions")
    for index, action in enumerate(actions if isinstance(actions, list) else []):
        if isinstance(action, Mapping):
            for key in ("input_schema", "output_schema"):
                found += schema_pattern_problems(action.get(key), f"/actions/{index}/{key}")
    return found


# ---------------------------------------------------------------- submitting


async def submit_remote(db: AsyncSession, principal: Principal, document: dict[str, Any]) -> tuple[PluginVersion, str]:
    """Submit a remote plugin's version; returns it (pending review) and the signing key, which is
    shown this once: the plugin's service verifies every request of ours with it."""
    publisher = await _publisher(db, principal)
    problems = _manifest_problems(document)
    if document.get("kind") != "remote":
        problems.append(FieldProblem.of("/manifest/kind", "invalid_manifest", 'a manifest submitted alone is "remote"'))
    endpoint = str(document.get("endpoint") or "")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    if endpoint.startswith("http://") and host not in service.settings().plugin_allow_http_hosts:
        problems.append(
            FieldProblem.of("/manifest/endpoint", "insecure_endpoint", "remote plugins are reached over https")
        )
    if problems:
        raise ValidationProblem("The manifest is not valid.", code="invalid_manifest", errors=problems)
    name, version = str(document["name"]), str(document["version"])
    await _claim(db, publisher, name, version, str(document.get("category", "other")))
    signing_key = secrets.token_urlsafe(32)
    row = PluginVersion(
        plugin=name,
        version=version,
        kind="remote",
        manifest={**document, "publisher": publisher.name},
        endpoint=endpoint,
        signing_secret=service.keyring().encrypt(signing_key, service.platform_secret_context(name, version)),
        status="pending",
        check_report={"ok": True, "checks": [{"name": "manifest", "ok": True, "details": []}]},
        submitted_by=principal.user_id,
    )
    db.add(row)
    await db.flush()
    await _audit(db, principal, "marketplace.version_submitted", row)
    return row, signing_key


def _pyproject_of(archive: tarfile.TarFile) -> tuple[str, str]:
    """The plugin's name (its ``guiju`` entry point) and version, read from the sdist's pyproject."""
    members = [m for m in archive.getmembers() if PurePosixPath(m.name).name == "pyproject.toml"]
    top = min(members, key=lambda m: len(PurePosixPath(m.name).parts), default=None)
    extracted = archive.extractfile(top) if top is not None else None
    if extracted is None:
        raise ValueError("the archive holds no pyproject.toml")
    project = tomllib.loads(extracted.read().decode()).get("project") or {}
    group = (project.get("entry-points") or {}).get("guiju") or {}
    if len(group) != 1:
        raise ValueError("pyproject.toml must declare exactly one entry point in the group 'guiju'")
    return str(next(iter(group))), str(project.get("version") or "")


def _wheel_metadata(data: bytes) -> tuple[str, str]:
    """The plugin's name (its ``guiju`` entry point) and version, read from a wheel's metadata."""
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        names = wheel.namelist()
        info = next((n.split("/")[0] for n in names if n.count("/") == 1 and ".dist-info/" in n), None)
        if info is None:
            raise ValueError("the wheel has no .dist-info directory")
        distribution = PathDistribution(zipfile.Path(wheel, at=f"{info}/"))
        found = [ep.name for ep in distribution.entry_points.select(group="guiju")]
        if len(found) != 1:
            raise ValueError("the wheel must declare exactly one entry point in the group 'guiju'")
        return found[0], str(distribution.version or "")


def _name_and_version(filename: str, data: bytes) -> tuple[str, str]:
    if filename.endswith(".whl"):
        return _wheel_metadata(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return _pyproject_of(archive)


async def submit_source(db: AsyncSession, principal: Principal, filename: str, data: bytes) -> PluginVersion:
    """Submit an in-process plugin's distribution (a source distribution, or a wheel carrying its
    tests); a worker runs the checks."""
    publisher = await _publisher(db, principal)
    if not filename.endswith((".tar.gz", ".whl")):
        raise ValidationProblem(
            "Submit the plugin's source distribution (.tar.gz, as `uv build --sdist` makes it) or its wheel (.whl).",
            code="invalid_source",
            errors=[FieldProblem.of("/file", "invalid_source", "a .tar.gz source distribution or a .whl")],
        )
    if len(data) > MAX_SOURCE_BYTES:
        raise ValidationProblem(
            "The source is too large.",
            code="invalid_source",
            errors=[
                FieldProblem.of(
                    "/file", "too_large", "at most {MAX_SOURCE_BYTES} bytes", MAX_SOURCE_BYTES=MAX_SOURCE_BYTES
                )
            ],
        )
    if (too_much := archives.unpacked_size_problem(filename, data)) is not None:
        raise ValidationProblem(
            "The source is too large once unpacked.",
            code="invalid_source",
            errors=[FieldProblem.of("/file", "too_large", too_much)],
        )
    try:
        name, version = _name_and_version(filename, data)
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        tomllib.TOMLDecodeError,
        UnicodeDecodeError,
    ) as exc:
        raise ValidationProblem(
            "The distribution cannot be read.",
            code="invalid_source",
            errors=[FieldProblem.of("/file", "invalid_source", str(exc))],
        ) from exc
    problems = [p for p in (manifest.plugin_name_problem(name),) if p]
    if problems or not version:
        raise ValidationProblem(
            "The distribution does not name the plugin or its version.",
            code="invalid_source",
            errors=[
                FieldProblem.of("/file", "invalid_source", p) for p in problems or ["pyproject.toml has no version"]
            ],
        )
    await _claim(db, publisher, name, version, "other")
    stored = await files.save_file(
        db,
        tenant_id=publisher.publisher_tenant_id,
        name=filename,
        content_type="application/zip" if filename.endswith(".whl") else "application/gzip",
        data=data,
        uploaded_by=principal.user_id,
    )
    row = PluginVersion(
        plugin=name,
        version=version,
        kind="python",
        manifest={"name": name, "version": version, "publisher": publisher.name},
        source_file_id=stored.id,
        source_sha256=hashlib.sha256(data).hexdigest(),
        status="checking",
        submitted_by=principal.user_id,
    )
    db.add(row)
    await db.flush()
    await _audit(db, principal, "marketplace.version_submitted", row)
    await outbox.emit(db, SUBMITTED, {"plugin": name, "version": version})
    return row


async def _audit(db: AsyncSession, principal: Principal, action: str, row: PluginVersion) -> None:
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action=action,
        subject_type="plugin_version",
        subject_id=f"{row.plugin}@{row.version}",
        after={"plugin": row.plugin, "version": row.version, "status": row.status},
    )


async def list_submissions(db: AsyncSession, principal: Principal) -> list[PluginVersion]:
    """The publisher's versions, newest first, with their checks and reviews."""
    publisher = await _publisher(db, principal)
    names = select(PluginListing.name).where(PluginListing.publisher_tenant_id == publisher.publisher_tenant_id)
    rows = await db.scalars(select(PluginVersion).where(PluginVersion.plugin.in_(names)))
    return sorted(rows, key=lambda r: r.submitted_at, reverse=True)


# ---------------------------------------------------------------- the checks, in a worker


def _unpack(filename: str, data: bytes, into: Path) -> Path:
    """What the checks run on: a wheel as it is, an sdist extracted safely (no absolute paths,
    links out, devices) to its project's root, once its unpacked size is known to be bounded."""
    if (too_much := archives.unpacked_size_problem(filename, data)) is not None:
        raise ValueError(too_much)
    if filename.endswith(".whl"):
        wheel = into / Path(filename).name
        wheel.write_bytes(data)
        return wheel
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    roots = sorted(into.rglob("pyproject.toml"), key=lambda p: len(p.parts))
    if not roots:
        raise ValueError("the archive holds no pyproject.toml")
    return roots[0].parent


async def run_submission_checks(plugin: str, version: str) -> str | None:
    """Check a submitted source distribution; its new status (None when there was nothing to do)."""
    with system_scope():
        async with open_session(system=True) as db:
            row = await db.get(PluginVersion, (plugin, version))
            listing = await db.get(PluginListing, plugin)
            if row is None or row.status != "checking" or row.source_file_id is None or listing is None:
                return None
            publisher_id, file_id = listing.publisher_tenant_id, row.source_file_id
    assert publisher_id is not None
    async with tenant_session(publisher_id) as db:
        meta, data = await files.open_file_bytes(db, file_id)
    with tempfile.TemporaryDirectory(prefix="guiju-submission-") as scratch:
        try:
            root = _unpack(meta.name, data, Path(scratch))
        except (tarfile.TarError, OSError, ValueError) as exc:
            report: dict[str, Any] = {"ok": False, "checks": [{"name": "manifest", "ok": False, "details": [str(exc)]}]}
            probed = None
        else:
            # In the sandbox, always: a submission's code never runs unconfined.
            result = await asyncio.to_thread(checks.run_checks, root, settings=service.settings())
            report, probed = result.as_dict(), result.manifest
    if probed is not None and (probed.get("name"), probed.get("version")) != (plugin, version):
        report["ok"] = False
        report["checks"].append(
            {
                "name": "manifest",
                "ok": False,
                "details": [
                    f"the plugin registers {probed.get('name')} {probed.get('version')}, the distribution says "
                    f"{plugin} {version}: make them the same"
                ],
            }
        )
    if probed is not None and (unusable := schema_patterns_of(probed)):
        report["ok"] = False
        report["checks"].append(
            {"name": "patterns", "ok": False, "details": [f"{pointer}: {why}" for pointer, why in unusable]}
        )
    with system_scope():
        async with open_session(system=True) as db:
            row = await db.get(PluginVersion, (plugin, version))
            if row is None or row.status != "checking":
                return None
            row.check_report = report
            if probed is not None:
                row.manifest = probed
            if report["ok"]:
                row.status = "pending"
            else:
                row.status, row.review_reason = "rejected", "the automated checks failed (see the report)"
            listing = await db.get(PluginListing, plugin)
            if listing is not None and probed is not None:
                listing.category = str(probed.get("category", listing.category))
            return row.status


async def _on_submitted(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        payload = message.get("payload") or {}
        broker.send(
            CHECK_SUBMISSION_ACTOR,
            queue_name=CHECKS_QUEUE,
            kwargs={"plugin": str(payload["plugin"]), "version": str(payload["version"])},
        )


outbox.subscribe(SUBMITTED, _on_submitted)


# ---------------------------------------------------------------- review


async def list_for_review(
    db: AsyncSession, principal: Principal, status: str | None = "pending"
) -> list[PluginVersion]:
    await require_platform_admin(db, principal)
    statement = select(PluginVersion).order_by(PluginVersion.submitted_at)
    if status:
        statement = statement.where(PluginVersion.status == status)
    return list(await db.scalars(statement))


async def review(
    db: AsyncSession, principal: Principal, plugin: str, version: str, *, approve: bool, reason: str = ""
) -> PluginVersion:
    """Approve a version that passed its checks, or reject it with a reason the publisher sees."""
    await require_platform_admin(db, principal, sensitive=True)
    row = await db.get(PluginVersion, (plugin, version), with_for_update=True)
    if row is None:
        raise NotFound(
            "No version {version} of {plugin}.", code="plugin_version_not_found", version=version, plugin=plugin
        )
    if row.status != "pending":
        raise Conflict(
            "{plugin} {version} is {state}, not awaiting review.",
            code="not_pending",
            plugin=plugin,
            version=version,
            state=row.status,
        )
    if not approve and not reason.strip():
        raise ValidationProblem(
            "Say why the version is rejected.",
            errors=[FieldProblem.of("/reason", "required", "the publisher reads it")],
        )
    row.status = "approved" if approve else "rejected"
    row.review_reason = reason.strip() or None
    row.reviewed_by, row.reviewed_at = principal.user_id, utcnow()
    log.info("plugin version reviewed", extra={"plugin": plugin, "version": version, "status": row.status})
    return row


async def source_of(db: AsyncSession, principal: Principal, plugin: str, version: str) -> tuple[str, bytes]:
    """A submitted source distribution, for the operator to review or deploy."""
    await require_platform_admin(db, principal, sensitive=True)
    row = await db.get(PluginVersion, (plugin, version))
    listing = await db.get(PluginListing, plugin)
    if row is None or row.source_file_id is None or listing is None or listing.publisher_tenant_id is None:
        raise NotFound(
            "{plugin} {version} has no source distribution.",
            code="plugin_version_not_found",
            plugin=plugin,
            version=version,
        )
    async with tenant_session(listing.publisher_tenant_id) as publisher_db:
        meta, data = await files.open_file_bytes(publisher_db, row.source_file_id)
    return meta.name, data
