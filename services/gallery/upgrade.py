"""Upgrading an installed pack to the gallery's version with a three-way merge: the item as installed
(base), as the workspace has it now (theirs) and as the new version writes it (ours)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from packaging.version import Version
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.audit import service as audit
from services.automation import service as automation
from services.gallery import loader
from services.gallery.catalog import _pack
from services.gallery.install import (
    Progress,
    _at,
    _installation,
    _Installer,
    _items,
    _map_roles,
    _name_conflicts,
    _Reporter,
    _state,
)
from services.gallery.listing import _required_plugins
from services.gallery.loader import PackItem
from services.gallery.merge import ABSENT, MergeResult, merge
from services.gallery.models import TemplateItem
from services.gallery.schemas import ChangeOut, ConflictOut, ItemPlanOut, UpgradeIn, UpgradeReportOut
from services.gallery.uninstall import _remove
from services.outbox import service as outbox
from services.records import service as records
from services.sops.procedures import service as procedures
from services.sops.procedures import validation as procedure_validation
from services.sops.runs import service as runs
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, ProblemError
from tenants.models import Role
from tenants.principal import Principal


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
        return automation.automation_in_state(installer.automation_in(item)[0])
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
            "'{pack_id}' is at {installed}; the gallery offers {offered}: nothing to upgrade.",
            code="template_up_to_date",
            pack_id=pack_id,
            installed=installation.version,
            offered=pack.version,
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
            "{count} conflict(s) need a resolution (ours or theirs): see the dry run.",
            code="template_merge_conflicts",
            errors=[
                FieldProblem(c, "merge_conflict", "both the workspace and the new version changed this")
                for c in unresolved
            ],
            count=len(unresolved),
        )
    conflicts, _ = await _name_conflicts(db, new_items, {})
    if conflicts:
        raise Conflict(
            "{count} name(s) of the new version are taken in this workspace.",
            code="template_name_conflicts",
            errors=conflicts,
            count=len(conflicts),
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
        events.TEMPLATE_UPGRADED.name,
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
