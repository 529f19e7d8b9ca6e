"""Installing a pack into a workspace, and the installations a workspace holds.

An install is one transaction: it creates the pack's collections, procedures (published),
automations, document templates and sample records through the services that own them, with their
checks, audit and events; any refusal rolls all of it back. What it created is remembered with its
*base* (the item as installed), so an upgrade can tell the workspace's own changes from the new
version's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.audit import service as audit
from services.automation import service as automation
from services.db import open_session
from services.files import service as files
from services.gallery import loader
from services.gallery.catalog import _language, _pack, catalog, localized_items
from services.gallery.listing import _required_plugins
from services.gallery.loader import Pack, PackItem
from services.gallery.merge import ABSENT
from services.gallery.models import TemplateInstallation, TemplateItem
from services.gallery.schemas import (
    CollectionChoiceIn,
    InstallationOut,
    InstalledItemOut,
    InstallIn,
    InstallReportOut,
    ProgressOut,
    RoleAssignmentOut,
)
from services.outbox import service as outbox
from services.records import service as records
from services.sops.procedures import service as procedures
from tenants.base import new_id
from tenants.errors import Conflict, FieldProblem, NotFound, ProblemError, ValidationProblem, Words, english
from tenants.models import Role
from tenants.principal import Principal

NDJSON = "application/x-ndjson"
Progress = Callable[[ProgressOut], Awaitable[None]]


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
    errors = [p.moved(f"{item.file}#{prefix}{p.pointer}") for p in (exc.errors or [])] or [
        FieldProblem.of(f"{item.file}#", exc.code, exc.message_id or exc.title, **exc.params)
    ]
    return ValidationProblem(
        "{file}: {problem}", code="template_item_refused", errors=errors, file=item.file, problem=exc.worded()
    )


async def _map_roles(
    db: AsyncSession, pack: Pack, wanted: Mapping[str, uuid.UUID | None], kept: Mapping[str, str] | None = None
) -> tuple[dict[str, uuid.UUID], list[RoleAssignmentOut]]:
    """Each pack role's member: as ``wanted`` (then as already ``kept``); a role with neither stays
    unassigned (left out of the mapping) — never silently the owner's."""
    keys = [str(r["key"]) for r in pack.roles]
    problems = [
        FieldProblem.of(
            f"/roles/{key}",
            "unknown_role",
            "the pack has no role '{key}' ({roles})",
            key=key,
            roles=", ".join(keys) or "none",
        )
        for key in wanted
        if key not in keys
    ]
    chosen_ids = {v for v in wanted.values() if v is not None}
    members = await accounts.existing_member_ids(db, chosen_ids)
    problems += [
        FieldProblem(f"/roles/{key}", "not_a_member", "not a member of this workspace")
        for key, user_id in wanted.items()
        if user_id is not None and user_id not in members
    ]
    if problems:
        raise ValidationProblem("Some roles cannot be mapped.", code="template_roles_invalid", errors=problems)
    kept_members = await accounts.existing_member_ids(db, {uuid.UUID(v) for v in (kept or {}).values()})
    mapping: dict[str, uuid.UUID] = {}
    assignments: list[RoleAssignmentOut] = []
    for key in keys:
        chosen = wanted.get(key)
        if key not in wanted and kept and key in kept and uuid.UUID(kept[key]) in kept_members:
            chosen = uuid.UUID(kept[key])
        if chosen is not None:
            mapping[key] = chosen
        assignments.append(RoleAssignmentOut(role=key, user_id=chosen, unassigned=chosen is None))
    return mapping, assignments


def vacate(value: Any, vacant: frozenset[str]) -> Any:
    """``value`` (an item with owners as members) with each unassigned pack role taken out: a step
    owner naming one becomes ``vacant`` (nobody can claim it), a recipient naming one is dropped."""
    if not vacant:
        return value
    refs = {f"@role:{key}" for key in vacant}
    if isinstance(value, dict):
        if value.get("kind") == "member" and value.get("user_id") in refs:
            return {"kind": "vacant", "role": str(value["user_id"]).removeprefix("@role:")}
        return {k: None if isinstance(v, str) and v in refs else vacate(v, vacant) for k, v in value.items()}
    if isinstance(value, list):
        return [vacate(v, vacant) for v in value if not (isinstance(v, str) and v in refs)]
    return value


def rekey(value: Any, keys: Mapping[str, str]) -> Any:
    """``value`` with each collection named by its pack key (``collection: orders``, an expression's
    ``'orders'``, a relation's ``target_collection``) named by its key in this workspace."""
    if not keys:
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in ("collection", "target_collection", "collection_key") and isinstance(v, str):
                if v in keys:
                    v = keys[v]
                elif len(v) > 2 and v[0] == v[-1] and v[0] in "'\"" and v[1:-1] in keys:
                    v = f"{v[0]}{keys[v[1:-1]]}{v[0]}"
                out[k] = v
            else:
                out[k] = rekey(v, keys)
        return out
    if isinstance(value, list):
        return [rekey(v, keys) for v in value]
    return value


class KeysTaken(Conflict):
    """409 ``template_name_conflicts``: names of the pack the workspace holds; each collection clash
    comes with a suggested free key (``clashes``), to be decided in the install's ``collections``."""

    code = "template_name_conflicts"

    def __init__(self, detail: str, errors: list[FieldProblem], clashes: list[dict[str, str]], **params: Any) -> None:
        super().__init__(detail, errors=errors, **params)
        self.clashes = clashes

    def to_problem(self, instance: str | None = None, words: Words = english) -> dict[str, Any]:
        return super().to_problem(instance, words) | {"clashes": self.clashes}


async def _name_conflicts(
    db: AsyncSession, items: list[PackItem], choices: Mapping[str, CollectionChoiceIn]
) -> tuple[list[FieldProblem], list[dict[str, str]]]:
    """The pack's names the workspace holds and no choice decides, and each clash's suggested key."""
    conflicts: list[FieldProblem] = []
    clashes: list[dict[str, str]] = []
    planned = {c.key for c in choices.values() if c.action == "install_as" and c.key}
    for item in items:
        if item.kind == "collection":
            if item.key in choices or not await records.key_taken(db, item.key):
                continue
            suggested = await records.free_key(db, item.key, planned)
            planned.add(suggested)
            clashes.append({"kind": "collection", "key": item.key, "suggested": suggested})
            conflicts.append(
                FieldProblem.of(
                    f"{item.file}#/key",
                    "collection_key_taken",
                    "this workspace already has a collection with the key '{key}': use it (use_existing) "
                    "or install the pack's under another key (install_as, e.g. '{suggested}')",
                    key=item.key,
                    suggested=suggested,
                )
            )
        elif item.kind == "procedure":
            if not await procedures.procedure_key_taken(db, item.key):
                continue
            conflicts.append(
                FieldProblem.of(
                    f"{item.file}#/key",
                    "procedure_key_taken",
                    "this workspace already has a procedure with the key '{key}'",
                    key=item.key,
                )
            )
    return conflicts, clashes


async def _collection_keys(
    db: AsyncSession, pack: Pack, choices: Mapping[str, CollectionChoiceIn]
) -> tuple[dict[str, str], dict[str, uuid.UUID]]:
    """The workspace key of each collection installed under another one, and the id of each existing
    collection the pack uses instead of its own; 422 ``template_collections_invalid`` for a choice
    that cannot be followed, 409 ``collection_key_taken`` for a new key that is taken."""
    keys = {i.key for i in pack.of_kind("collection")}
    renamed: dict[str, str] = {}
    existing: dict[str, uuid.UUID] = {}
    problems: list[FieldProblem] = []
    for key, choice in choices.items():
        at = f"/collections/{key}"
        if key not in keys:
            problems.append(FieldProblem.of(at, "unknown_collection", "the pack has no collection '{key}'", key=key))
        elif choice.action == "use_existing":
            try:
                existing[key] = (await records.get_collection_by_key(db, key)).id
            except NotFound:
                problems.append(
                    FieldProblem.of(at, "no_existing_collection", "the workspace has no collection '{key}'", key=key)
                )
        elif not choice.key or not records.KEY_RE.fullmatch(choice.key):
            problems.append(FieldProblem(f"{at}/key", "invalid_key", "lower_snake_case, starting with a letter"))
        elif choice.key in renamed.values() or (choice.key in keys and choice.key not in choices):
            problems.append(FieldProblem.of(f"{at}/key", "duplicate_key", "'{key}' is chosen twice", key=choice.key))
        else:
            renamed[key] = choice.key
    if problems:
        raise ValidationProblem(
            "Some collection choices cannot be followed.", code="template_collections_invalid", errors=problems
        )
    taken = [(key, new) for key, new in renamed.items() if await records.key_taken(db, new)]
    if taken:
        raise Conflict(
            "Some new collection keys are taken: {keys}",
            code="collection_key_taken",
            keys=", ".join(f"'{new}'" for _, new in taken),
            errors=[
                FieldProblem.of(f"/collections/{key}/key", "collection_key_taken", "'{new}' is taken", new=new)
                for key, new in taken
            ],
        )
    return renamed, existing


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
    renamed: Mapping[str, str] = field(default_factory=dict)  # pack collection key -> workspace key
    existing: Mapping[str, uuid.UUID] = field(default_factory=dict)  # pack collections the workspace's replace
    _items: dict[tuple[str, str], dict[str, Any]] | None = None

    @property
    def vacant(self) -> frozenset[str]:
        return frozenset(str(r["key"]) for r in self.pack.roles) - set(self.roles)

    @property
    def items(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each item in the installation's language, unassigned roles taken out, collections named
        by their keys in this workspace (a procedure's own ``collection`` stays the pack's key)."""
        if self._items is None:
            localized = localized_items(self.pack, self.installation.language)
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for (kind, key), data in localized.items():
                data = vacate(data, self.vacant)
                if kind == "collection":
                    data = {**data, "fields": rekey(data["fields"], self.renamed)}
                elif kind == "procedure":
                    data = {**data, "definition": rekey(data["definition"], self.renamed)}
                elif kind == "automation":
                    data = rekey(data, self.renamed)
                found[(kind, key)] = data
            self._items = found
        return self._items

    def installed_key(self, item: PackItem) -> str | None:
        if item.kind != "collection":
            return None
        return item.key if item.key in self.existing else self.renamed.get(item.key)

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
        if item.key in self.existing:
            self.ids[("collection", item.key)] = self.existing[item.key]
            await self.reporter.say("item", "collections", item.key)
            return
        data = self.items[("collection", item.key)]
        body = records.CollectionIn(
            key=self.renamed.get(item.key, item.key),
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
            owner_id=self.roles.get(owner_role) if owner_role else None,
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

    def automation_in(self, item: PackItem) -> tuple[Any, list[str]]:
        """The automation to create, and the unassigned roles that left one of its notices with
        nobody to tell (it is then created disabled, its notice addressed to the admins meanwhile)."""
        data = self.items[("automation", item.key)]
        raw = item.data["description"]
        body = self.resolve({k: v for k, v in data.items() if k not in ("key", "description")})
        body["description"] = {"zh-CN": raw["zh-CN"], "en": raw["en"]}
        silenced: list[str] = []
        for action in body.get("actions") or []:
            if isinstance(action, dict) and action.get("kind") == "notify" and action.get("to") == []:
                action["to"] = [{"role": "admin"}]
                silenced = sorted(self.vacant & {k for kind, k in loader.references(item.data) if kind == "role"})
        if silenced:
            body["enabled"] = False
        return msgspec.convert(body, automation.AutomationIn), silenced

    def disabled_reason(self, plugins: list[str], roles: list[str]) -> str:
        zh = self.installation.language == "zh-CN"
        parts: list[str] = []
        if plugins:
            parts.append(
                f"需要插件 {'、'.join(plugins)}：安装后再启用此自动化"
                if zh
                else f"needs the plugin(s) {', '.join(plugins)}: install them, then enable this automation"
            )
        if roles:
            titles = [self.role_title(r) for r in roles]
            parts.append(
                f"角色「{'、'.join(titles)}」暂未分配成员：分配后再启用此自动化"
                if zh
                else f"the role(s) {', '.join(titles)} have no member yet: assign them, then enable this automation"
            )
        return ("；" if zh else "; ").join(parts)

    def role_title(self, key: str) -> str:
        role = next((r for r in self.pack.roles if r["key"] == key), None)
        return str(loader.localize(role["title"], self.installation.language)) if role else key

    async def create_automation(self, item: PackItem) -> None:
        body, silenced = self.automation_in(item)
        uses = automation.plugins_used(body)
        reason = self.disabled_reason(sorted(self.awaiting_plugins & uses), silenced)
        try:
            created = await automation.install_automation(
                self.db,
                body,
                actor_id=self.principal.user_id,
                awaiting_plugins=self.awaiting_plugins,
                disabled_reason=reason or None,
            )
        except ProblemError as exc:
            raise _at(item, exc) from exc
        if created.disabled_reason:
            self.notes.append(f"automation '{created.name}' was created disabled: {created.disabled_reason}")
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
        """Add the pack's sample records, marked as samples (the workspace's own collections get none)."""
        created = 0
        for item in items:
            if item.kind != "collection" or item.key in self.existing:
                continue
            rows = self.resolve(self.items[("collection", item.key)].get("samples") or [])
            if not rows:
                continue
            try:
                await records.create_records_values(
                    self.db, self.ids[("collection", item.key)], rows, self.principal.user_id, sample=True
                )
            except ProblemError as exc:
                raise _at(item, exc, "/samples") from exc
            created += len(rows)
            await self.reporter.say("item", "samples", item.key)
        return created

    def remember(self, keys: list[tuple[str, str]]) -> None:
        """Record what the pack created (an existing collection it uses stays the workspace's own)."""
        for kind, key in keys:
            if kind == "collection" and key in self.existing:
                continue
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
            "The gallery offers '{pack_id}' at version {offered}, not {asked}.",
            code="template_version_unavailable",
            pack_id=pack_id,
            offered=pack.version,
            asked=data.version,
        )
    reporter = _Reporter(progress, total=len(pack.items))
    await reporter.say("started", "checking")
    existing = await _installation(db, pack_id, required=False)
    if existing is not None:
        if existing.version != pack.version:
            raise Conflict(
                "Version {installed} of '{pack_id}' is installed: upgrade it to {offered} instead.",
                code="template_installed",
                installed=existing.version,
                pack_id=pack_id,
                offered=pack.version,
            )
        report = await _already_installed(db, pack, existing)
        await reporter.say("finished", "done")
        report.progress = reporter.events
        return report
    language = _language(data.language or (await accounts.current_tenant(db, principal)).locale)
    roles, assignments = await _map_roles(db, pack, data.roles)
    renamed, kept_collections = await _collection_keys(db, pack, data.collections)
    conflicts, clashes = await _name_conflicts(db, list(pack.items), data.collections)
    if conflicts:
        raise KeysTaken(
            "{count} name(s) of the pack are taken in this workspace: choose for each collection (use the existing "
            "one or install under another key), rename or remove the others first.",
            conflicts,
            clashes,
            count=len(conflicts),
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
    installer = _Installer(
        db,
        principal,
        pack,
        installation,
        roles,
        frozenset(p.name for p in missing),
        reporter,
        renamed=renamed,
        existing=kept_collections,
    )
    sample_count = sum(len(i.data.get("samples") or []) > 0 for i in pack.of_kind("collection")) if data.samples else 0
    reporter.total = len(pack.items) + sample_count
    await installer.create(list(pack.items))
    installer.remember([(i.kind, i.key) for i in pack.items])
    created = 0
    if data.samples:
        created = await installer.samples(list(pack.items))
        if created:
            installer.notes.append(f"{created} sample record(s) were added, marked as samples")
    for assignment in assignments:
        if assignment.unassigned:
            installer.notes.append(
                f"the role '{assignment.role}' has no member: nobody can claim its steps until an admin assigns them"
            )
    await db.flush()
    existing_keys = {("collection", key) for key in kept_collections}
    items_out = [
        InstalledItemOut(
            kind=i.kind,
            key=i.key,
            object_id=installer.ids[(i.kind, i.key)],
            installed_key=installer.installed_key(i),
            note="the workspace's existing collection" if (i.kind, i.key) in existing_keys else None,
        )
        for i in pack.items
    ]
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="template.installed",
        subject_type="template",
        subject_id=installation.id,
        after={"pack_id": pack.id, "version": pack.version, "language": language, "items": len(items_out)},
    )
    await outbox.emit(
        db,
        events.TEMPLATE_INSTALLED.name,
        {"pack_id": pack.id, "version": pack.version, "installation_id": str(installation.id)},
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
        unassigned_roles=[a.role for a in assignments if a.unassigned],
        samples=created,
    )


async def _already_installed(db: AsyncSession, pack: Pack, installation: TemplateInstallation) -> InstallReportOut:
    rows = await _items(db, installation)
    return InstallReportOut(
        pack_id=pack.id,
        version=installation.version,
        changed=False,
        language=installation.language,
        roles=[
            RoleAssignmentOut(
                role=key,
                user_id=uuid.UUID(installation.role_mapping[key]) if key in installation.role_mapping else None,
                unassigned=key not in installation.role_mapping,
            )
            for key in (str(r["key"]) for r in pack.roles)
        ],
        unassigned_roles=[str(r["key"]) for r in pack.roles if r["key"] not in installation.role_mapping],
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
        raise NotFound(
            "The pack '{pack_id}' is not installed in this workspace.", code="template_not_installed", pack_id=pack_id
        )
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
