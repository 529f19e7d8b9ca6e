"""The template gallery: listing and previewing packs, installing them into a workspace, upgrading
an installed pack with a three-way merge, and uninstalling it.

Packs are the platform's own (``services/gallery/packs``) and those plugins ship through the SDK's
``guiju_templates`` hook. An install is one transaction: it creates the pack's collections,
procedures (published), automations, document templates and sample records through the services
that own them, with their checks, audit and events; any refusal rolls all of it back. What it
created is remembered with its *base* (the item as installed), so an upgrade can tell the
workspace's own changes from the new version's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.audit import service as audit
from services.automation import service as automation
from services.db import open_session
from services.files import service as files
from services.gallery import loader
from services.gallery.loader import LANGUAGES, Pack, PackInvalid, PackItem
from services.gallery.merge import ABSENT, MergeResult, merge
from services.gallery.models import TemplateInstallation, TemplateItem
from services.gallery.schemas import (
    AutomationPreviewOut,
    ChangelogOut,
    ChangeOut,
    CollectionPreviewOut,
    ConflictOut,
    FlowEdgeOut,
    FlowNodeOut,
    InstallationOut,
    InstalledItemOut,
    InstallIn,
    InstallReportOut,
    ItemPlanOut,
    PackPreviewOut,
    PackSummaryOut,
    ProcedurePreviewOut,
    ProgressOut,
    RequiredPluginOut,
    RoleAssignmentOut,
    RoleOut,
    UninstallIn,
    UninstallReportOut,
    UpgradeIn,
    UpgradeReportOut,
)
from services.marketplace import service as marketplace
from services.outbox import service as outbox
from services.records import service as records
from services.settings import Settings
from services.sops.definition import (
    ApprovalStep,
    DecisionStep,
    Definition,
    ParallelStep,
    successors,
)
from services.sops.procedures import service as procedures
from services.sops.procedures import validation as procedure_validation
from services.sops.runs import service as runs
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

BUILTIN_PACKS = Path(__file__).with_name("packs")
PLATFORM_PUBLISHER = "Guiju"
LOCAL_PUBLISHER = "Local"
NDJSON = "application/x-ndjson"
Progress = Callable[[ProgressOut], Awaitable[None]]


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class RefusedPack:
    """A pack that failed its checks: not listed, not installable; its problems are kept for the operator."""

    directory: Path
    publisher: str
    problems: list[FieldProblem]


@dataclass(frozen=True)
class Catalog:
    packs: dict[str, Pack]
    refused: list[RefusedPack]


_catalogs: dict[tuple[tuple[str, str, str | None, int], ...], Catalog] = {}
_local_directories: list[Path] = []


def configure(settings: Settings) -> None:
    """Offer the operator's own packs (``GUIJU_TEMPLATE_PACKS``) too."""
    _local_directories[:] = [Path(d).expanduser() for d in settings.template_packs]


def _packs_in(directory: Path, publisher: str) -> list[tuple[Path, str, str | None]]:
    if not directory.is_dir():
        return []
    return [(path, publisher, None) for path in sorted(directory.iterdir()) if path.is_dir()]


def pack_sources() -> list[tuple[Path, str, str | None]]:
    """Every pack directory: the platform's own, the operator's, then those of the loaded plugins."""
    sources = _packs_in(BUILTIN_PACKS, PLATFORM_PUBLISHER)
    for directory in _local_directories:
        sources += _packs_in(directory, LOCAL_PUBLISHER)
    return sources + [(path, publisher, plugin) for path, publisher, plugin in marketplace.template_pack_sources()]


def catalog() -> Catalog:
    """The packs on offer, each checked once per process (and again when the plugins change)."""
    sources = pack_sources()
    # A pack whose pack.yaml changed (a new version put in place) is read again.
    key = tuple((str(path), publisher, plugin, _stamp(path)) for path, publisher, plugin in sources)
    found = _catalogs.get(key)
    if found is None:
        found = _load_catalog(sources)
        _catalogs.clear()
        _catalogs[key] = found
    return found


def _stamp(directory: Path) -> int:
    try:
        return (directory / "pack.yaml").stat().st_mtime_ns
    except OSError:
        return 0


def _load_catalog(sources: list[tuple[Path, str, str | None]]) -> Catalog:
    packs: dict[str, Pack] = {}
    refused: list[RefusedPack] = []
    for directory, publisher, plugin in sources:
        try:
            pack = loader.load_pack(directory, publisher=publisher, plugin=plugin)
        except PackInvalid as exc:
            refused.append(RefusedPack(directory, publisher, list(exc.errors or [])))
            continue
        if pack.id in packs:
            first = packs[pack.id]
            problem = FieldProblem(
                "pack.yaml#/id", "duplicate_pack", f"the pack '{pack.id}' is already offered by {first.publisher}"
            )
            refused.append(RefusedPack(directory, publisher, [problem]))
            continue
        packs[pack.id] = pack
    return Catalog(packs, refused)


def _pack(pack_id: str) -> Pack:
    pack = catalog().packs.get(pack_id)
    if pack is None:
        raise NotFound(f"No template pack '{pack_id}' in the gallery.", code="template_pack_not_found")
    return pack


_localized: dict[tuple[int, str], dict[tuple[str, str], dict[str, Any]]] = {}


def localized_items(pack: Pack, language: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Each item of ``pack`` in ``language``, owners naming pack roles as members (references unresolved)."""
    key = (id(pack), language)
    found = _localized.get(key)
    if found is None:
        found = {(i.kind, i.key): loader.localize(loader.owners_as_members(i.data), language) for i in pack.items}
        if len(_localized) > 256:
            _localized.clear()
        _localized[key] = found
    return found


def _language(value: str | None) -> str:
    return value if value in LANGUAGES else LANGUAGES[0]


# ---------------------------------------------------------------- listing and preview


def _summary(pack: Pack, installed: str | None) -> PackSummaryOut:
    meta = pack.meta
    upgradable = False
    if installed is not None:
        try:
            upgradable = Version(pack.version) > Version(installed)
        except InvalidVersion:
            upgradable = False
    return PackSummaryOut(
        id=pack.id,
        version=pack.version,
        industry=pack.industry,
        title=dict(meta["title"]),
        summary=dict(meta["summary"]),
        publisher=pack.publisher,
        plugin=pack.plugin,
        tags=list(meta.get("tags") or []),
        required_plugins=_required_names(pack),
        procedures=len(pack.of_kind("procedure")),
        collections=len(pack.of_kind("collection")),
        automations=len(pack.of_kind("automation")),
        installed_version=installed,
        upgrade_available=upgradable,
    )


def _required_names(pack: Pack) -> list[str]:
    names = [str(p["name"]) for p in pack.required_plugins]
    if pack.plugin is not None and pack.plugin not in names:
        names.insert(0, pack.plugin)
    return names


async def _installed_versions(db: AsyncSession) -> dict[str, str]:
    rows = await db.execute(select(TemplateInstallation.pack_id, TemplateInstallation.version))
    return {pack_id: version for pack_id, version in rows}


async def list_packs(
    db: AsyncSession,
    principal: Principal,
    *,
    industry: str | None = None,
    plugin: str | None = None,
    query: str | None = None,
) -> list[PackSummaryOut]:
    """The gallery: every pack on offer (filtered by industry, required plugin and text), with the
    version this workspace installed."""
    principal.require_tenant()
    installed = await _installed_versions(db)
    words = (query or "").lower().split()
    found: list[PackSummaryOut] = []
    for pack in catalog().packs.values():
        if industry and pack.industry != industry:
            continue
        if plugin and plugin not in _required_names(pack):
            continue
        if words:
            text = " ".join(
                [
                    pack.id,
                    pack.publisher,
                    *pack.meta["title"].values(),
                    *pack.meta["summary"].values(),
                    *(pack.meta.get("tags") or []),
                ]
            ).lower()
            if not all(word in text for word in words):
                continue
        found.append(_summary(pack, installed.get(pack.id)))
    return sorted(found, key=lambda p: (p.industry, p.id))


async def _required_plugins(db: AsyncSession, pack: Pack) -> list[RequiredPluginOut]:
    installed = await marketplace.installed_plugin_versions(db)
    listed = {str(p["name"]): p for p in pack.required_plugins}
    out: list[RequiredPluginOut] = []
    for name in _required_names(pack):
        entry = listed.get(name, {})
        versions = str(entry.get("versions") or "")
        why = dict(entry.get("why") or {"zh-CN": "提供此模板包的插件", "en": "the plugin that ships this pack"})
        version = installed.get(name)
        fits = version is not None and _in_range(version, versions)
        out.append(
            RequiredPluginOut(
                name=name,
                versions=versions,
                why=why,
                deployed=marketplace.loaded_plugin(name) is not None,
                installed=fits,
            )
        )
    return out


def _in_range(version: str, versions: str) -> bool:
    try:
        return not versions or SpecifierSet(versions).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


async def get_pack(db: AsyncSession, principal: Principal, pack_id: str, language: str | None = None) -> PackPreviewOut:
    """A pack's preview: its procedures as flowcharts, steps, collections, automations and what it needs."""
    principal.require_tenant()
    pack = _pack(pack_id)
    if language is None:
        language = (await accounts.current_tenant(db, principal)).locale
    language = _language(language)
    items = localized_items(pack, language)
    installed = (await _installed_versions(db)).get(pack.id)
    roles = {r["key"]: loader.localize(r["title"], language) for r in pack.roles}
    procedures_out = [_procedure_preview(items[("procedure", i.key)], roles) for i in pack.of_kind("procedure")]
    collections_out = [
        CollectionPreviewOut(
            key=i.key,
            name=items[("collection", i.key)]["name"],
            fields=items[("collection", i.key)]["fields"],
            samples=len(i.data.get("samples") or []),
        )
        for i in pack.of_kind("collection")
    ]
    automations_out = []
    for item in pack.of_kind("automation"):
        data = items[("automation", item.key)]
        trigger = data["trigger"]
        used = sorted(
            {str(a.get("plugin")) for a in data["actions"] if a.get("kind") == "plugin"}
            | ({str(trigger.get("plugin"))} if trigger.get("type") == "plugin" else set())
        )
        automations_out.append(
            AutomationPreviewOut(
                key=item.key,
                name=data["name"],
                description=data["description"],
                trigger=str(trigger.get("type")),
                plugins=used,
            )
        )
    return PackPreviewOut(
        pack=_summary(pack, installed),
        language=language,
        roles=[RoleOut(key=r["key"], title=dict(r["title"]), description=r.get("description")) for r in pack.roles],
        required_plugins=await _required_plugins(db, pack),
        procedures=procedures_out,
        collections=collections_out,
        automations=automations_out,
        documents=[items[("document", i.key)]["title"] for i in pack.of_kind("document")],
        changelog=[
            ChangelogOut(version=e["version"], date=e.get("date"), changes=dict(e["changes"]))
            for e in pack.meta["changelog"]
        ],
    )


def _owner_label(owner: Mapping[str, Any], roles: Mapping[str, str]) -> str:
    user = str(owner.get("user_id") or "")
    if user.startswith("@role:"):
        return roles.get(user.removeprefix("@role:"), user)
    return str(owner.get("role") or owner.get("field") or owner.get("kind"))


def _procedure_preview(data: dict[str, Any], roles: Mapping[str, str]) -> ProcedurePreviewOut:
    raw = loader.resolve(data["definition"], lambda kind, key: str(loader.check_id(kind, key)))
    definition = msgspec.convert(raw, Definition)
    nodes: list[FlowNodeOut] = []
    edges: list[FlowEdgeOut] = []
    for raw_step, step in zip(data["definition"]["steps"], definition.steps, strict=True):
        owner = raw_step.get("owner")
        due = raw_step.get("due", {}).get("within") if isinstance(raw_step.get("due"), dict) else None
        nodes.append(
            FlowNodeOut(
                key=step.key,
                kind=raw_step["kind"],
                title=step.title,
                owner=_owner_label(owner, roles) if isinstance(owner, dict) else None,
                due=_duration_text(due) if isinstance(due, dict) else None,
            )
        )
        labels: dict[str, str] = {}
        if isinstance(step, DecisionStep):
            labels = {b.next: b.when for b in step.branches if b.next}
            if step.default:
                labels.setdefault(step.default, "else")
        elif isinstance(step, ApprovalStep) and step.on_reject.goto:
            labels = {step.on_reject.goto: "rejected"}
        normal = successors(step, fallbacks=False)
        for target in normal:
            edges.append(FlowEdgeOut(source=step.key, target=target, label=labels.get(target, "")))
        for target in successors(step):
            if target not in normal:
                edges.append(FlowEdgeOut(source=step.key, target=target, label="exception"))
    return ProcedurePreviewOut(
        key=data["key"],
        title=data["title"],
        purpose=data["purpose"],
        collection=data.get("collection"),
        steps=nodes,
        edges=edges,
        mermaid=_mermaid(definition, nodes, edges),
    )


def _duration_text(within: Mapping[str, Any]) -> str:
    parts = [f"{within[unit]}{unit[0]}" for unit in ("days", "hours", "minutes") if within.get(unit)]
    return " ".join(parts) + ("" if within.get("business", True) is False else " (business)")


def _mermaid(definition: Definition, nodes: list[FlowNodeOut], edges: list[FlowEdgeOut]) -> str:
    def text(value: str) -> str:
        return value.replace('"', "#quot;").replace("\n", " ")

    lines = ["flowchart TD", "  start_((start)) --> " + definition.start]
    for node in nodes:
        label = text(node.title + (f"<br/>{node.owner}" if node.owner else ""))
        step = definition.step(node.key)
        if isinstance(step, DecisionStep):
            lines.append(f'  {node.key}{{"{label}"}}')
        elif isinstance(step, ParallelStep):
            lines.append(f'  {node.key}[["{label}"]]')
        else:
            lines.append(f'  {node.key}["{label}"]')
    for edge in edges:
        arrow = "-.->" if edge.label == "exception" else "-->"
        label = f'|"{text(edge.label)}"|' if edge.label else ""
        lines.append(f"  {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines)


# ---------------------------------------------------------------- installing


@dataclass
class _Reporter:
    """Progress as it happens: kept for the report and handed to ``progress`` when one listens."""

    progress: Progress | None
    total: int = 0
    done: int = 0
    events: list[ProgressOut] = field(default_factory=list)

    async def say(self, event: str, stage: str, item: str | None = None) -> None:
        if event == "item":
            self.done += 1
        out = ProgressOut(event=event, stage=stage, item=item, done=self.done, total=self.total)  # type: ignore[arg-type]
        self.events.append(out)
        if self.progress is not None:
            await self.progress(out)


def _at(item: PackItem, exc: ProblemError, prefix: str = "") -> ProblemError:
    """A service's refusal of ``item``, its pointers moved into the pack file that wrote it."""
    errors = [FieldProblem(f"{item.file}#{prefix}{p.pointer}", p.code, p.message) for p in (exc.errors or [])] or [
        FieldProblem(f"{item.file}#", exc.code, exc.detail or exc.title)
    ]
    detail = f"{item.file}: {exc.detail or exc.title}"
    refused = ValidationProblem(detail, code="template_item_refused", errors=errors)
    return refused


async def _map_roles(
    db: AsyncSession, pack: Pack, wanted: Mapping[str, uuid.UUID], kept: Mapping[str, str] | None = None
) -> tuple[dict[str, uuid.UUID], list[RoleAssignmentOut]]:
    """Each pack role's member: as ``wanted`` (then as already ``kept``), else the workspace's owner."""
    keys = [str(r["key"]) for r in pack.roles]
    problems = [
        FieldProblem(f"/roles/{key}", "unknown_role", f"the pack has no role '{key}' ({', '.join(keys) or 'none'})")
        for key in wanted
        if key not in keys
    ]
    members = await accounts.existing_member_ids(db, set(wanted.values()))
    problems += [
        FieldProblem(f"/roles/{key}", "not_a_member", "not a member of this workspace")
        for key, user_id in wanted.items()
        if user_id not in members
    ]
    if problems:
        raise ValidationProblem("Some roles cannot be mapped.", code="template_roles_invalid", errors=problems)
    owners = await accounts.member_ids_with_role(db, Role.OWNER)
    owner = sorted(owners)[0] if owners else None
    kept_members = await accounts.existing_member_ids(db, {uuid.UUID(v) for v in (kept or {}).values()})
    mapping: dict[str, uuid.UUID] = {}
    assignments: list[RoleAssignmentOut] = []
    for key in keys:
        chosen = wanted.get(key)
        if chosen is None and kept and key in kept and uuid.UUID(kept[key]) in kept_members:
            chosen = uuid.UUID(kept[key])
        defaulted = chosen is None
        chosen = chosen or owner
        assert chosen is not None  # a workspace always has an owner
        mapping[key] = chosen
        assignments.append(RoleAssignmentOut(role=key, user_id=chosen, defaulted_to_owner=defaulted))
    return mapping, assignments


async def _name_conflicts(db: AsyncSession, items: list[PackItem]) -> list[FieldProblem]:
    conflicts: list[FieldProblem] = []
    for item in items:
        if item.kind == "collection":
            try:
                await records.get_collection_by_key(db, item.key)
            except NotFound:
                continue
        elif item.kind == "procedure":
            if not await procedures.procedure_key_taken(db, item.key):
                continue
        else:
            continue
        conflicts.append(
            FieldProblem(
                f"{item.file}#/key",
                f"{item.kind}_key_taken",
                f"this workspace already has a {item.kind} with the key '{item.key}'",
            )
        )
    return conflicts


def _collection_order(items: list[PackItem]) -> list[PackItem]:
    """Collections that others link to first (a relation names a collection that must exist)."""
    by_key = {i.key: i for i in items}
    ordered: list[PackItem] = []
    visiting: set[str] = set()

    def visit(item: PackItem) -> None:
        if item in ordered or item.key in visiting:
            return
        visiting.add(item.key)
        for definition in item.data.get("fields") or []:
            target = definition.get("target_collection")
            if isinstance(target, str) and target in by_key and target != item.key:
                visit(by_key[target])
        ordered.append(item)

    for item in items:
        visit(item)
    return ordered


_PLACEHOLDER = {
    "start": "placeholder",
    "steps": [{"kind": "task", "key": "placeholder", "title": "-", "owner": {"kind": "starter"}}],
}


@dataclass
class _Installer:
    """Creates a pack's items in the session's workspace, in the order their references need."""

    db: AsyncSession
    principal: Principal
    pack: Pack
    installation: TemplateInstallation
    roles: Mapping[str, uuid.UUID]
    awaiting_plugins: frozenset[str]
    reporter: _Reporter
    ids: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    bases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def items(self) -> dict[tuple[str, str], dict[str, Any]]:
        return localized_items(self.pack, self.installation.language)

    def resolve(self, value: Any) -> Any:
        def id_of(kind: str, key: str) -> str:
            if kind == "role":
                return str(self.roles[key])
            return str(self.ids[(kind, key)])

        return loader.resolve(value, id_of)

    def has_references(self, value: Any, kind: str) -> bool:
        return any(k == kind for k, _ in loader.references(value))

    async def create(self, items: list[PackItem]) -> None:
        """Create ``items`` (new to the workspace) and remember each one's base."""
        collections = _collection_order([i for i in items if i.kind == "collection"])
        for item in collections:
            await self.create_collection(item)
        new_procedures = [i for i in items if i.kind == "procedure"]
        drafts: dict[str, uuid.UUID] = {}
        for item in new_procedures:
            drafts[item.key] = await self.create_procedure(item)
        for item in new_procedures:
            await self.publish_procedure(item, drafts[item.key])
        for item in items:
            if item.kind == "automation":
                await self.create_automation(item)
            elif item.kind == "document":
                await self.create_document(item)

    async def create_collection(self, item: PackItem) -> None:
        data = self.items[("collection", item.key)]
        body = records.CollectionIn(
            key=item.key,
            name=data["name"],
            entity_scoped=bool(data.get("entity_scoped", False)),
            fields=self.resolve(data["fields"]),
        )
        try:
            collection = await records.create_collection(self.db, self.principal, body)
        except ProblemError as exc:
            raise _at(item, exc) from exc
        self.ids[("collection", item.key)] = collection.id
        info = records.collection_info(collection)
        self.bases[("collection", item.key)] = {"name": info.name, "fields": records.field_dicts(info.fields)}
        await self.reporter.say("item", "collections", item.key)

    async def create_procedure(self, item: PackItem) -> uuid.UUID:
        data = self.items[("procedure", item.key)]
        # A definition naming other procedures waits until they all exist.
        definition = _PLACEHOLDER if self.has_references(data["definition"], "procedure") else data["definition"]
        collection = data.get("collection")
        owner_role = data.get("owner_role")
        body = procedures.ProcedureIn(
            key=item.key,
            title=data["title"],
            purpose=data["purpose"],
            metric=data.get("metric"),
            owner_id=self.roles[owner_role] if owner_role else None,
            collection_id=self.ids[("collection", collection)] if collection else None,
            definition=self.resolve(definition) if definition is not _PLACEHOLDER else definition,
        )
        try:
            view = await procedures.create_procedure(self.db, self.principal, body)
        except ProblemError as exc:
            raise _at(item, exc) from exc
        self.ids[("procedure", item.key)] = view.procedure.id
        assert view.draft_version_id is not None
        return view.draft_version_id

    async def publish_procedure(self, item: PackItem, draft_id: uuid.UUID) -> None:
        data = self.items[("procedure", item.key)]
        procedure_id = self.ids[("procedure", item.key)]
        try:
            if self.has_references(data["definition"], "procedure"):
                await procedures.update_draft(
                    self.db,
                    self.principal,
                    procedure_id,
                    draft_id,
                    procedures.DraftIn(definition=self.resolve(data["definition"])),
                )
            await procedures.publish(
                self.db, self.principal, procedure_id, draft_id, procedures.PublishIn(change_note=self.change_note())
            )
        except ProblemError as exc:
            raise _at(item, exc, "/definition") from exc
        self.bases[("procedure", item.key)] = await _state(self.db, self.principal, "procedure", procedure_id)
        await self.reporter.say("item", "procedures", item.key)

    def change_note(self) -> str:
        title = loader.localize(self.pack.meta["title"], self.installation.language)
        return f"{title} {self.pack.version}"

    def automation_in(self, item: PackItem) -> Any:
        data = self.items[("automation", item.key)]
        raw = item.data["description"]
        body = self.resolve({k: v for k, v in data.items() if k not in ("key", "description")})
        body["description"] = {"zh-CN": raw["zh-CN"], "en": raw["en"]}
        return msgspec.convert(body, automation.AutomationIn)

    async def create_automation(self, item: PackItem) -> None:
        missing = sorted(self.awaiting_plugins)
        reason = f"needs the plugin(s) {', '.join(missing)}: install them, then enable this automation"
        try:
            created = await automation.install_automation(
                self.db,
                self.automation_in(item),
                actor_id=self.principal.user_id,
                awaiting_plugins=self.awaiting_plugins,
                disabled_reason=reason,
            )
        except ProblemError as exc:
            raise _at(item, exc) from exc
        if created.disabled_reason == reason:
            self.notes.append(f"automation '{created.name}' was created disabled: {reason}")
        self.ids[("automation", item.key)] = created.id
        self.bases[("automation", item.key)] = automation.automation_state(created)
        await self.reporter.say("item", "automations", item.key)

    async def create_document(self, item: PackItem) -> None:
        data = self.items[("document", item.key)]
        stored = await files.save_file(
            self.db,
            tenant_id=self.installation.tenant_id,
            name=f"{data['title']}.md",
            content_type="text/markdown; charset=utf-8",
            data=str(data["body"]).encode("utf-8"),
            uploaded_by=self.principal.user_id,
        )
        self.ids[("document", item.key)] = stored.id
        self.bases[("document", item.key)] = {"title": data["title"], "body": data["body"]}
        await self.reporter.say("item", "documents", item.key)

    async def samples(self, items: list[PackItem]) -> int:
        created = 0
        for item in items:
            if item.kind != "collection":
                continue
            rows = self.resolve(self.items[("collection", item.key)].get("samples") or [])
            if not rows:
                continue
            try:
                await records.create_records_values(
                    self.db, self.ids[("collection", item.key)], rows, self.principal.user_id
                )
            except ProblemError as exc:
                raise _at(item, exc, "/samples") from exc
            created += len(rows)
            await self.reporter.say("item", "samples", item.key)
        return created

    def remember(self, keys: list[tuple[str, str]]) -> None:
        for kind, key in keys:
            self.db.add(
                TemplateItem(
                    tenant_id=self.installation.tenant_id,
                    installation_id=self.installation.id,
                    kind=kind,
                    key=key,
                    object_id=self.ids[(kind, key)],
                    base=self.bases[(kind, key)],
                )
            )


async def _state(db: AsyncSession, principal: Principal, kind: str, object_id: uuid.UUID) -> Any:
    """An item as it stands in the workspace (ABSENT when it was deleted): what a merge calls theirs."""
    try:
        if kind == "collection":
            info = await records.get_collection(db, object_id)
            return {"name": info.name, "fields": records.field_dicts(info.fields)}
        if kind == "procedure":
            return (await procedures.procedure_state(db, object_id))[0]
        if kind == "automation":
            return automation.automation_state(await automation.get_automation(db, principal, object_id))
        if kind == "document":
            described, content = await files.open_file_bytes(db, object_id)
            return {"title": described.name.removesuffix(".md"), "body": content.decode("utf-8")}
    except NotFound:
        return ABSENT
    raise ValueError(kind)


async def install(
    db: AsyncSession, principal: Principal, pack_id: str, data: InstallIn, progress: Progress | None = None
) -> InstallReportOut:
    """Install a pack into the session's workspace in its transaction (admin).

    Idempotent: installing the installed version again changes nothing. Refused whole, with every
    problem, when a role maps to a non-member (422) or a name is taken (409).
    """
    principal.require_role(Role.ADMIN)
    pack = _pack(pack_id)
    if data.version is not None and data.version != pack.version:
        raise NotFound(
            f"The gallery offers '{pack_id}' at version {pack.version}, not {data.version}.",
            code="template_version_unavailable",
        )
    reporter = _Reporter(progress, total=len(pack.items))
    await reporter.say("started", "checking")
    existing = await _installation(db, pack_id, required=False)
    if existing is not None:
        if existing.version != pack.version:
            raise Conflict(
                f"Version {existing.version} of '{pack_id}' is installed: upgrade it to {pack.version} instead.",
                code="template_installed",
            )
        report = await _already_installed(db, pack, existing)
        await reporter.say("finished", "done")
        report.progress = reporter.events
        return report
    language = _language(data.language or (await accounts.current_tenant(db, principal)).locale)
    roles, assignments = await _map_roles(db, pack, data.roles)
    conflicts = await _name_conflicts(db, list(pack.items))
    if conflicts:
        raise Conflict(
            f"{len(conflicts)} name(s) of the pack are taken in this workspace: rename or remove them first.",
            code="template_name_conflicts",
            errors=conflicts,
        )
    required = await _required_plugins(db, pack)
    missing = [p for p in required if not p.installed]
    installation = TemplateInstallation(
        tenant_id=principal.require_tenant(),
        id=new_id(),
        pack_id=pack.id,
        publisher=pack.publisher,
        version=pack.version,
        language=language,
        role_mapping={key: str(user_id) for key, user_id in roles.items()},
        installed_by=principal.user_id,
    )
    db.add(installation)
    await db.flush()
    installer = _Installer(db, principal, pack, installation, roles, frozenset(p.name for p in missing), reporter)
    sample_count = sum(len(i.data.get("samples") or []) > 0 for i in pack.of_kind("collection")) if data.samples else 0
    reporter.total = len(pack.items) + sample_count
    await installer.create(list(pack.items))
    installer.remember([(i.kind, i.key) for i in pack.items])
    if data.samples:
        created = await installer.samples(list(pack.items))
        if created:
            installer.notes.append(f"{created} sample record(s) were added")
    for assignment in assignments:
        if assignment.defaulted_to_owner:
            installer.notes.append(f"the role '{assignment.role}' maps to no member: its steps go to the owner")
    await db.flush()
    items_out = [InstalledItemOut(kind=i.kind, key=i.key, object_id=installer.ids[(i.kind, i.key)]) for i in pack.items]
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="template.installed",
        subject_type="template",
        subject_id=installation.id,
        after={"pack_id": pack.id, "version": pack.version, "language": language, "items": len(items_out)},
    )
    await outbox.emit(
        db, "template.installed", {"pack_id": pack.id, "version": pack.version, "installation_id": str(installation.id)}
    )
    await reporter.say("finished", "done")
    return InstallReportOut(
        pack_id=pack.id,
        version=pack.version,
        changed=True,
        language=language,
        roles=assignments,
        items=items_out,
        missing_plugins=missing,
        notes=installer.notes,
        progress=reporter.events,
    )


async def _already_installed(db: AsyncSession, pack: Pack, installation: TemplateInstallation) -> InstallReportOut:
    rows = await _items(db, installation)
    return InstallReportOut(
        pack_id=pack.id,
        version=installation.version,
        changed=False,
        language=installation.language,
        roles=[
            RoleAssignmentOut(role=k, user_id=uuid.UUID(v), defaulted_to_owner=False)
            for k, v in installation.role_mapping.items()
        ],
        items=[InstalledItemOut(kind=r.kind, key=r.key, object_id=r.object_id) for r in rows],
        missing_plugins=[p for p in await _required_plugins(db, pack) if not p.installed],
        notes=["already installed at this version: nothing changed"],
        progress=[],
    )


async def install_stream(principal: Principal, pack_id: str, data: InstallIn) -> AsyncIterator[bytes]:
    """:func:`install` in its own transaction, its progress as newline-delimited JSON while it
    works; the last line is the report (``event: "report"``) or the refusal (``event: "problem"``)."""
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def said(event: ProgressOut) -> None:
        await lines.put(msgspec.json.encode(event) + b"\n")

    async def work() -> None:
        try:
            async with open_session(principal.require_tenant()) as db:
                report = await install(db, principal, pack_id, data, said)
            await lines.put(msgspec.json.encode({"event": "report", "report": report}) + b"\n")
        except ProblemError as exc:
            problem = {"type": "about:blank", "title": exc.title, "status": exc.status, "code": exc.code}
            problem |= {"detail": exc.detail, "errors": exc.errors or []}
            await lines.put(msgspec.json.encode({"event": "problem", "problem": problem}) + b"\n")
        finally:
            await lines.put(None)

    task = asyncio.create_task(work())
    try:
        while (line := await lines.get()) is not None:
            yield line
    finally:
        await task


# ---------------------------------------------------------------- installations


async def _installation(db: AsyncSession, pack_id: str, *, required: bool = True) -> TemplateInstallation | None:
    found = await db.scalar(select(TemplateInstallation).where(TemplateInstallation.pack_id == pack_id))
    if found is None and required:
        raise NotFound(f"The pack '{pack_id}' is not installed in this workspace.", code="template_not_installed")
    return found


async def _items(db: AsyncSession, installation: TemplateInstallation) -> list[TemplateItem]:
    rows = await db.scalars(select(TemplateItem).where(TemplateItem.installation_id == installation.id))
    return list(rows)


async def installation_out(db: AsyncSession, installation: TemplateInstallation) -> InstallationOut:
    offered = catalog().packs.get(installation.pack_id)
    return InstallationOut(
        id=installation.id,
        pack_id=installation.pack_id,
        publisher=installation.publisher,
        version=installation.version,
        language=installation.language,
        roles=dict(installation.role_mapping),
        items=[InstalledItemOut(kind=r.kind, key=r.key, object_id=r.object_id) for r in await _items(db, installation)],
        latest_version=offered.version if offered is not None else None,
        created_at=installation.created_at,
        updated_at=installation.updated_at,
    )


async def list_installations(db: AsyncSession, principal: Principal) -> list[InstallationOut]:
    principal.require_tenant()
    rows = await db.scalars(select(TemplateInstallation).order_by(TemplateInstallation.pack_id))
    return [await installation_out(db, row) for row in rows]


async def get_installation(db: AsyncSession, principal: Principal, pack_id: str) -> InstallationOut:
    principal.require_tenant()
    found = await _installation(db, pack_id)
    assert found is not None
    return await installation_out(db, found)


# ---------------------------------------------------------------- upgrading


def _ours(installer: _Installer, item: PackItem) -> Any:
    """The new version's item as it would stand in this workspace (references resolved)."""
    data = installer.items[(item.kind, item.key)]
    if item.kind == "collection":
        defs, _ = records.parse_field_defs(installer.resolve(data["fields"]))
        return {"name": data["name"], "fields": records.field_dicts(defs)}
    if item.kind == "procedure":
        definition, _ = procedure_validation.decode_definition(installer.resolve(data["definition"]))
        assert definition is not None  # the pack was checked
        return {
            "title": data["title"],
            "purpose": data["purpose"],
            "metric": data.get("metric"),
            "definition": procedures.definition_to_json(definition),
        }
    if item.kind == "automation":
        return automation.automation_in_state(installer.automation_in(item))
    return {"title": data["title"], "body": data["body"]}


def _absent_sides(base: Any, theirs: Any, ours: Any) -> list[str]:
    return [name for name, value in (("base", base), ("theirs", theirs), ("ours", ours)) if value is ABSENT]


def _shown(value: Any) -> Any:
    return None if value is ABSENT else value


@dataclass
class _Plan:
    item: ItemPlanOut
    row: TemplateItem | None
    pack_item: PackItem | None
    result: MergeResult | None = None


async def _holds_data(db: AsyncSession, kind: str, object_id: uuid.UUID) -> bool:
    if kind == "collection":
        return await records.count_records(db, object_id) > 0
    if kind == "procedure":
        return await runs.procedure_has_runs(db, object_id)
    return False


async def _plan(
    db: AsyncSession,
    principal: Principal,
    installer: _Installer,
    rows: list[TemplateItem],
    resolutions: Mapping[str, str],
) -> list[_Plan]:
    pack = installer.pack
    by_row = {(r.kind, r.key): r for r in rows}
    plans: list[_Plan] = []
    for item in pack.items:
        row = by_row.get((item.kind, item.key))
        if row is None:
            plans.append(_Plan(ItemPlanOut(kind=item.kind, key=item.key, action="create"), None, item))
            continue
        theirs = await _state(db, principal, item.kind, row.object_id)
        ours = _ours(installer, item)
        if theirs is ABSENT:
            note = "deleted in this workspace: not recreated"
            plans.append(_Plan(ItemPlanOut(kind=item.kind, key=item.key, action="keep", note=note), row, item))
            continue
        prefix = f"{item.kind}:{item.key}"
        scoped = {k.removeprefix(prefix): v for k, v in resolutions.items() if k.startswith(prefix + "/")}
        if item.kind == "document":
            # A stored file does not change: a new version of the template is stored beside it.
            action: Literal["recreate", "unchanged"] = "recreate" if ours != row.base else "unchanged"
            changes = [ChangeOut(id=prefix + "/body", before=theirs, after=ours)] if action == "recreate" else []
            plans.append(_Plan(ItemPlanOut(kind=item.kind, key=item.key, action=action, changes=changes), row, item))
            continue
        result = merge(row.base, theirs, ours, scoped)  # type: ignore[arg-type]
        plan_out = ItemPlanOut(
            kind=item.kind,
            key=item.key,
            action="update" if result.changes or result.conflicts else "unchanged",
            changes=[
                ChangeOut(id=prefix + c.path, before=_shown(c.before), after=_shown(c.after)) for c in result.changes
            ],
            conflicts=[
                ConflictOut(
                    id=prefix + c.path,
                    base=_shown(c.base),
                    theirs=_shown(c.theirs),
                    ours=_shown(c.ours),
                    absent=_absent_sides(c.base, c.theirs, c.ours),
                )
                for c in result.conflicts
            ],
            kept=[prefix + path for path in result.kept],
        )
        plans.append(_Plan(plan_out, row, item, result))
    in_pack = {(i.kind, i.key) for i in pack.items}
    for row in rows:
        if (row.kind, row.key) in in_pack:
            continue
        theirs = await _state(db, principal, row.kind, row.object_id)
        holds = theirs is not ABSENT and await _holds_data(db, row.kind, row.object_id)
        fate: Literal["remove", "keep"]
        if theirs is ABSENT:
            fate, note = "remove", "no longer in the pack, and already deleted here"
        elif theirs == row.base and not holds and row.kind != "document":
            fate, note = "remove", "no longer in the pack"
        else:
            fate, note = "keep", "no longer in the pack; kept as this workspace's own"
        plans.append(_Plan(ItemPlanOut(kind=row.kind, key=row.key, action=fate, note=note), row, None))
    return plans


async def upgrade(
    db: AsyncSession, principal: Principal, pack_id: str, data: UpgradeIn, progress: Progress | None = None
) -> UpgradeReportOut:
    """Upgrade an installed pack to the gallery's version with a three-way merge (admin).

    A dry run (the default) only reports: every change, every conflict field by field. Applying
    needs every conflict resolved (409 ``template_merge_conflicts`` otherwise, nothing changed).
    Procedures get a new published version; runs under way keep the version they started on.
    """
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, pack_id)
    assert installation is not None
    pack = _pack(pack_id)
    if Version(pack.version) <= Version(installation.version):
        raise Conflict(
            f"'{pack_id}' is at {installation.version}; the gallery offers {pack.version}: nothing to upgrade.",
            code="template_up_to_date",
        )
    roles, _ = await _map_roles(db, pack, {}, installation.role_mapping)
    required = await _required_plugins(db, pack)
    missing = [p for p in required if not p.installed]
    reporter = _Reporter(progress)
    installer = _Installer(db, principal, pack, installation, roles, frozenset(p.name for p in missing), reporter)
    rows = await _items(db, installation)
    for row in rows:
        installer.ids[(row.kind, row.key)] = row.object_id
    new_items = [i for i in pack.items if (i.kind, i.key) not in installer.ids]
    for item in new_items:  # stand-ins until they exist
        installer.ids[(item.kind, item.key)] = loader.check_id(item.kind, item.key)
    plans = await _plan(db, principal, installer, rows, data.resolutions)
    unresolved = [c.id for p in plans for c in p.item.conflicts]
    report = UpgradeReportOut(
        pack_id=pack_id,
        from_version=installation.version,
        to_version=pack.version,
        dry_run=data.dry_run,
        applied=False,
        items=[p.item for p in plans],
        conflicts=len(unresolved),
        unresolved=unresolved,
        missing_plugins=missing,
    )
    if data.dry_run:
        return report
    if unresolved:
        raise Conflict(
            f"{len(unresolved)} conflict(s) need a resolution (ours or theirs): see the dry run.",
            code="template_merge_conflicts",
            errors=[
                FieldProblem(c, "merge_conflict", "both the workspace and the new version changed this")
                for c in unresolved
            ],
        )
    conflicts = await _name_conflicts(db, new_items)
    if conflicts:
        raise Conflict(
            f"{len(conflicts)} name(s) of the new version are taken in this workspace.",
            code="template_name_conflicts",
            errors=conflicts,
        )
    reporter.total = len(plans)
    await reporter.say("started", "upgrading")
    for item in new_items:
        del installer.ids[(item.kind, item.key)]
    await installer.create(new_items)
    installer.remember([(i.kind, i.key) for i in new_items])
    # Now that every item exists, the merge is made again with real ids, and applied.
    plans = await _plan(db, principal, installer, rows, data.resolutions)
    for plan in plans:
        await _apply(db, principal, installer, plan)
    installation.version = pack.version
    installation.role_mapping = {key: str(user_id) for key, user_id in roles.items()}
    installation.updated_at = utcnow()
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="template.upgraded",
        subject_type="template",
        subject_id=installation.id,
        before={"version": report.from_version},
        after={"version": pack.version, "resolutions": dict(data.resolutions)},
    )
    await outbox.emit(
        db,
        "template.upgraded",
        {"pack_id": pack_id, "from_version": report.from_version, "to_version": pack.version},
    )
    await reporter.say("finished", "done")
    report.items = [p.item for p in plans]
    report.applied = True
    report.progress = reporter.events
    return report


async def _apply(db: AsyncSession, principal: Principal, installer: _Installer, plan: _Plan) -> None:
    item, row = plan.pack_item, plan.row
    out = plan.item
    if row is None or out.action in ("create",):
        return
    if out.action == "remove":
        if await _state(db, principal, row.kind, row.object_id) is not ABSENT:
            await _remove(db, principal, row, delete_data=False)
        await db.delete(row)
    elif out.action == "keep" and item is None:
        await db.delete(row)  # no longer the pack's: the workspace owns it now
    elif item is not None and out.action in ("update", "recreate", "unchanged", "keep"):
        ours = _ours(installer, item)
        if out.action == "update" and plan.result is not None:
            await _write(db, principal, installer, item, row.object_id, plan.result.value)
        elif out.action == "recreate":
            await installer.create_document(item)
            row.object_id = installer.ids[(item.kind, item.key)]
        row.base = ours
    await installer.reporter.say("item", "upgrading", f"{out.kind}:{out.key}")


async def _write(
    db: AsyncSession, principal: Principal, installer: _Installer, item: PackItem, object_id: uuid.UUID, merged: Any
) -> None:
    """Put the merged item into the workspace through the service that owns it."""
    try:
        if item.kind == "collection":
            patch = records.CollectionPatch(
                name=merged["name"], fields=merged["fields"], summary=f"upgraded to {installer.change_note()}"
            )
            await records.alter_collection(db, principal, object_id, patch)
        elif item.kind == "procedure":
            await procedures.update_procedure(
                db,
                principal,
                object_id,
                procedures.ProcedurePatch(
                    title=merged["title"], purpose=merged["purpose"], metric=merged.get("metric")
                ),
            )
            _, draft_id = await procedures.procedure_state(db, object_id)
            if draft_id is None:
                draft_id = (await procedures.new_draft(db, principal, object_id)).id
            await procedures.update_draft(
                db, principal, object_id, draft_id, procedures.DraftIn(definition=merged["definition"])
            )
            await procedures.publish(
                db,
                principal,
                object_id,
                draft_id,
                procedures.PublishIn(change_note=f"upgraded to {installer.change_note()}"),
            )
        elif item.kind == "automation":
            body = msgspec.convert(
                {k: merged[k] for k in ("name", "trigger", "conditions", "actions")}
                | {"description": merged["description"]},
                automation.AutomationPatch,
            )
            await automation.update_automation(db, principal, object_id, body)
    except ProblemError as exc:
        raise _at(item, exc) from exc


# ---------------------------------------------------------------- uninstalling


async def _remove(db: AsyncSession, principal: Principal, row: TemplateItem, *, delete_data: bool) -> int:
    """Delete one installed item; the number of records deleted with it."""
    if row.kind == "automation":
        await automation.delete_automation(db, principal, row.object_id)
    elif row.kind == "procedure":
        await procedures.delete_procedure(db, principal, row.object_id)
        await automation.delete_default_escalations(db, row.object_id)
    elif row.kind == "collection":
        return await records.delete_collection(db, principal, row.object_id, with_records=delete_data)
    return 0


async def uninstall(db: AsyncSession, principal: Principal, pack_id: str, data: UninstallIn) -> UninstallReportOut:
    """Remove an installed pack's definitions that hold no data (admin). Records are kept unless
    ``delete_data`` (confirmed with the pack's id); procedures that have runs, and documents, are kept."""
    principal.require_role(Role.ADMIN)
    installation = await _installation(db, pack_id)
    assert installation is not None
    if data.delete_data and data.confirm != pack_id:
        raise ValidationProblem(
            "Deleting the pack's records needs confirmation.",
            code="confirmation_required",
            errors=[FieldProblem("/confirm", "confirmation_required", f"send confirm: '{pack_id}' to delete data")],
        )
    removed: list[InstalledItemOut] = []
    kept: list[InstalledItemOut] = []
    deleted_records = 0
    order = {"automation": 0, "document": 1, "procedure": 2, "collection": 3}
    for row in sorted(await _items(db, installation), key=lambda r: order.get(r.kind, 9)):
        out = InstalledItemOut(kind=row.kind, key=row.key, object_id=row.object_id)
        if await _state(db, principal, row.kind, row.object_id) is ABSENT:
            out.note = "already deleted"
            removed.append(out)
            continue
        if row.kind == "document":
            out.note = "a file: kept in the workspace's files"
            kept.append(out)
            continue
        if row.kind == "procedure" and await runs.procedure_has_runs(db, row.object_id):
            out.note = "has runs: kept (archive it to stop new runs)"
            kept.append(out)
            continue
        if row.kind == "collection" and not data.delete_data:
            held = await records.count_records(db, row.object_id)
            if held:
                out.note = f"holds {held} record(s): kept"
                kept.append(out)
                continue
        deleted_records += await _remove(db, principal, row, delete_data=data.delete_data)
        removed.append(out)
    await db.execute(delete(TemplateItem).where(TemplateItem.installation_id == installation.id))
    await db.delete(installation)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="template.uninstalled",
        subject_type="template",
        subject_id=installation.id,
        before={"pack_id": pack_id, "version": installation.version},
        after={"removed": len(removed), "kept": len(kept), "records_deleted": deleted_records},
    )
    await outbox.emit(db, "template.uninstalled", {"pack_id": pack_id, "version": installation.version})
    return UninstallReportOut(pack_id=pack_id, removed=removed, kept=kept, records_deleted=deleted_records)


def schema_document() -> dict[str, Any]:
    """The published JSON Schema of a pack's files."""
    return loader.pack_schema()
