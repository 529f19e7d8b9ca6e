"""Moving running runs to another published version of their procedure.

A run keeps the version it started on until a manager moves it; it moves only when every open step
has a counterpart in the new version (the engine lists what stands in the way).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services import events
from services.audit import service as audit
from services.outbox import service as outbox
from services.sops import engine
from services.sops.engine import Actor, RunStatus
from services.sops.procedures import service as procedures
from services.sops.procedures.service import PublishedVersion
from services.sops.runs.models import Run, StepInstance
from services.sops.runs.owners import _claim_role
from services.sops.runs.state import OPEN_STATUSES, _load_run, _require_manager, decode_state
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, NotFound


async def _migration_problems(run: Run, old: PublishedVersion, new: PublishedVersion) -> list[str]:
    if new.procedure_id != run.procedure_id:
        return ["the version belongs to another procedure"]
    if run.status != RunStatus.RUNNING:
        return [f"the run is {run.status}"]
    if new.version_id == run.version_id:
        return ["the run is already on this version"]
    return list(engine.migration_problems(old.definition, new.definition, decode_state(run.state)))


async def _move_run(db: AsyncSession, actor: Actor, run: Run, old: PublishedVersion, new: PublishedVersion) -> None:
    seen = run.lock_version
    result = await db.execute(
        update(Run)
        .where(Run.id == run.id, Run.lock_version == seen)
        .values(version_id=new.version_id, version_number=new.number, lock_version=seen + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone else changed this run at the same moment; reload and retry.", code="step_conflict")
    set_committed_value(run, "version_id", new.version_id)
    set_committed_value(run, "version_number", new.number)
    set_committed_value(run, "lock_version", seen + 1)
    by_key = new.definition.by_key()
    for row in (await db.scalars(select(StepInstance).where(StepInstance.run_id == run.id))).all():
        step_def = by_key.get(row.key)
        if step_def is not None and row.status in OPEN_STATUSES:
            row.title = step_def.title
            row.role = _claim_role(step_def)
    await audit.record_change(
        db,
        actor_id=actor.user_id,
        action="run.migrated",
        subject_type="run",
        subject_id=run.id,
        before={"version_id": str(old.version_id), "number": old.number},
        after={"version_id": str(new.version_id), "number": new.number},
    )
    await outbox.emit(
        db,
        events.RUN_MIGRATED.name,
        {
            "run_id": str(run.id),
            "procedure_id": str(run.procedure_id),
            "from_version_id": str(old.version_id),
            "to_version_id": str(new.version_id),
        },
    )


async def migrate_run(db: AsyncSession, actor: Actor, run_id: uuid.UUID, version_id: uuid.UUID) -> Run:
    """Move a running run to another published version of its procedure (manager or higher);
    409 ``migration_refused`` listing every reason when an open step has no counterpart."""
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    new = await procedures.version_by_id(db, version_id)
    old = await procedures.version_by_id(db, run.version_id)
    problems = await _migration_problems(run, old, new)
    if problems:
        raise Conflict(
            "The run cannot move to that version.",
            code="migration_refused",
            errors=[FieldProblem(pointer="", code="migration_refused", message=p) for p in problems],
        )
    await _move_run(db, actor, run, old, new)
    return run


@dataclass(frozen=True)
class MigrationOutcome:
    run_id: uuid.UUID
    migrated: bool
    problems: list[str]


async def migrate_runs(
    db: AsyncSession, actor: Actor, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> list[MigrationOutcome]:
    """Move every running run of a procedure that can move; report each run's result."""
    _require_manager(actor)
    new = await procedures.version_by_id(db, version_id)
    if new.procedure_id != procedure_id:
        raise NotFound("No such published version of this procedure.", code="version_not_found")
    runs = (
        await db.scalars(
            select(Run)
            .where(Run.procedure_id == procedure_id, Run.status == RunStatus.RUNNING.value)
            .order_by(Run.id)
            .with_for_update()
        )
    ).all()
    outcomes: list[MigrationOutcome] = []
    for run in runs:
        old = await procedures.version_by_id(db, run.version_id)
        problems = await _migration_problems(run, old, new)
        if run.version_id == new.version_id:
            continue
        if not problems:
            await _move_run(db, actor, run, old, new)
        outcomes.append(MigrationOutcome(run.id, not problems, problems))
    return outcomes
