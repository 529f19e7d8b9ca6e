"""Uninstalling a pack: its definitions that hold no data are removed; records are kept unless the
admin confirms their deletion, and procedures with runs and documents are always kept."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.audit import service as audit
from services.automation import service as automation
from services.gallery.install import _installation, _items, _state
from services.gallery.merge import ABSENT
from services.gallery.models import TemplateItem
from services.gallery.schemas import InstalledItemOut, UninstallIn, UninstallReportOut
from services.outbox import service as outbox
from services.records import service as records
from services.sops.procedures import service as procedures
from services.sops.runs import service as runs
from tenants.errors import FieldProblem, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


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
            errors=[
                FieldProblem.of(
                    "/confirm", "confirmation_required", "send confirm: '{pack_id}' to delete data", pack_id=pack_id
                )
            ],
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
    await outbox.emit(db, events.TEMPLATE_UNINSTALLED.name, {"pack_id": pack_id, "version": installation.version})
    return UninstallReportOut(pack_id=pack_id, removed=removed, kept=kept, records_deleted=deleted_records)
