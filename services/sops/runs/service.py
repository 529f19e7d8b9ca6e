"""The runs service: what people do with procedures.

A run keeps the version it started on. Every change goes through the pure engine
(``services.sops.engine``): load the run (locked), apply one action, then settle its events — owners
resolved and assigned, linked-record updates written, sub-runs started, outbox events emitted — and
store the new state with an optimistic ``lock_version`` check, so that of two concurrent actions on
the same run exactly one wins. ``step_instances`` and ``run_exceptions`` mirror the state for "my
tasks", listings and the SLA timers.

This module is the service's entry for the routes and the other services: reading and listing runs,
the actions people and the platform take on them, and the public names of its siblings —
``transitions`` (applying an action, settling it, starting a run), ``owners`` (who a step goes to),
``tasks`` (my tasks), ``timers`` (the SLA timers' handlers, registered on import) and ``migration``
(moving runs to another version); ``state`` holds what they share.

Functions take a session in the caller's transaction and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.audit import service as audit
from services.files import service as files
from services.outbox import service as outbox
from services.records import service as records
from services.sops import engine
from services.sops.definition import HUMAN_STEPS, FormStep, Owner, VacantOwner, WaitStep
from services.sops.engine import (
    Abort,
    Action,
    Actor,
    Assign,
    Claim,
    Complete,
    EngineError,
    EvidenceIn,
    ExceptionState,
    RaiseException,
    ResolveException,
    RunState,
    RunStatus,
    StepState,
)
from services.sops.procedures import service as procedures
from services.sops.runs.board import (
    VIEWS,
    BoardFilters,
    BoardTask,
    OpenException,
    ProcedureLoad,
    TaskBoard,
    TaskCounts,
    View,
    board_task,
    open_exceptions,
    runs_in_flight,
    sla_state,
    task_board,
    task_counts,
)
from services.sops.runs.migration import MigrationOutcome, migrate_run, migrate_runs
from services.sops.runs.models import Run, RunComment, RunException, StepInstance
from services.sops.runs.owners import _exception_kind, _is_member, _members_with_role, _owner_matches
from services.sops.runs.state import (
    MAX_PAGE,
    OPEN_STATUSES,
    TASK_STATUSES,
    _decode_cursor,
    _encode_cursor,
    _engine_problem,
    _env,
    _exception_rows,
    _find_step,
    _load_run,
    _record_values,
    _require_manager,
    _require_running,
    _role,
    _step_rows,
    decode_state,
    encode_state,
)
from services.sops.runs.tasks import TaskFilters, my_tasks, my_tasks_query
from services.sops.runs.timers import RunBusy, fire_escalation_timer, fire_step_timer
from services.sops.runs.transitions import ESCALATION_TIMER, STEP_TIMER, _act, _repoint, _Work, start_run
from tenants.base import as_uuid, new_id
from tenants.errors import Conflict, FieldProblem, Forbidden, NotFound, ValidationProblem
from tenants.models import Role

# ---------------------------------------------------------------- reading runs


async def get_run(db: AsyncSession, run_id: uuid.UUID) -> Run:
    return await _load_run(db, run_id)


@dataclass(frozen=True)
class RunDetail:
    run: Run
    state: RunState
    steps: list[StepInstance]
    exceptions: list[RunException]


def _detail_of(
    run: Run, state: RunState, steps: dict[int, StepInstance], exceptions: dict[int, RunException]
) -> RunDetail:
    return RunDetail(run, state, [steps[i] for i in sorted(steps)], [exceptions[i] for i in sorted(exceptions)])


async def run_detail(db: AsyncSession, run_id: uuid.UUID) -> RunDetail:
    run = await _load_run(db, run_id)
    return _detail_of(run, decode_state(run.state), await _step_rows(db, run_id), await _exception_rows(db, run_id))


async def _detail_after(db: AsyncSession, work: _Work) -> RunDetail:
    """The run as an action left it, from what settling the action already holds: the run row
    and the state are current, and so are the rows it read to store the state (the session's
    identity map would hand back the same objects on a second read)."""
    steps = work.step_rows if work.step_rows is not None else await _step_rows(db, work.run.id)
    exceptions = work.exception_rows
    if exceptions is None:
        # The exception rows mirror the state's exceptions: a run that never had one has no row.
        exceptions = await _exception_rows(db, work.run.id) if work.state.exceptions else {}
    return _detail_of(work.run, work.state, steps, exceptions)


async def procedure_has_runs(db: AsyncSession, procedure_id: uuid.UUID) -> bool:
    """Whether any run (finished or not) was ever started of the procedure."""
    return await db.scalar(select(Run.id).where(Run.procedure_id == procedure_id).limit(1)) is not None


async def list_runs(
    db: AsyncSession,
    *,
    status: str | None = None,
    procedure_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Run], str | None]:
    """Runs, newest first (ids are time-ordered), with keyset pagination."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Run).order_by(Run.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Run.status == status)
    if procedure_id is not None:
        query = query.where(Run.procedure_id == procedure_id)
    if cursor:
        after = as_uuid(_decode_cursor(cursor)[0])
        if after is None:
            raise ValidationProblem(
                errors=[
                    FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")
                ]
            )
        query = query.where(Run.id < after)
    rows = list((await db.scalars(query)).all())
    next_cursor = _encode_cursor([str(rows[limit - 1].id)]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# ---------------------------------------------------------------- step actions


async def _files_problems(db: AsyncSession, file_ids: Sequence[uuid.UUID | str], pointer: str) -> list[FieldProblem]:
    if not file_ids:
        return []
    wanted = [i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in file_ids]
    missing = {str(m) for m in await files.files_exist(db, wanted)}
    return [
        FieldProblem(pointer=f"{pointer}/{i}", code="file_not_found", message="no such uploaded file")
        for i, file_id in enumerate(wanted)
        if str(file_id) in missing
    ]


async def _step_action(
    db: AsyncSession, run_id: uuid.UUID, action: Action, *, actor: Actor, audit_action: str
) -> RunDetail:
    run = await _load_run(db, run_id, lock=True)
    work = await _act(db, run, action, actor_id=actor.user_id, audit_action=audit_action)
    return await _detail_after(db, work)


def _guard_own_step(state: RunState, step_id: int, actor: Actor) -> StepState:
    """A step assigned to someone else is theirs (the engine decides who may claim an open one)."""
    step = _find_step(state, step_id)
    if step.assignee is not None and step.assignee != actor.user_id:
        raise Forbidden("This step is assigned to someone else.", code="not_step_owner")
    return step


async def claim_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, Claim(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_claimed"
    )


async def assign_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, user_id: uuid.UUID) -> RunDetail:
    """Assign or reassign a step (manager or higher) to a member."""
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    _require_running(run)
    _find_step(decode_state(run.state), step_id)
    if not await _is_member(db, user_id):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/user_id", code="not_a_member", message="not a member of this workspace")]
        )
    work = await _act(
        db,
        run,
        Assign(step_id=step_id, user_id=user_id, actor=actor),
        actor_id=actor.user_id,
        audit_action="run.step_assigned",
    )
    return await _detail_after(db, work)


async def start_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, engine.Start(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_started"
    )


async def complete_step(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    step_id: int,
    *,
    values: Mapping[str, Any] | None = None,
    checked: Sequence[str] = (),
    note: str = "",
    file_ids: Sequence[uuid.UUID] = (),
    value: float | None = None,
) -> RunDetail:
    """Complete a step with its form values and evidence; every problem of the input is listed.
    Returns the run as the completion left it."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    state = decode_state(run.state)
    step = _guard_own_step(state, step_id, actor)
    definition = await procedures.definition_by_version_id(db, run.version_id)
    step_def = definition.step(step.key)
    if (
        isinstance(step_def, HUMAN_STEPS)
        and step_def.requires_acknowledgement
        and not await procedures.has_acknowledged(db, actor.user_id, run.version_id)
    ):
        raise Conflict(
            "Acknowledge the current version of this procedure before completing this step.",
            code="acknowledgement_required",
        )
    problems: list[FieldProblem] = []
    clean: dict[str, Any] = {}
    raw_values = dict(values or {})
    if isinstance(step_def, FormStep):
        fields = {f.key: f for f in step_def.fields}
        for key in raw_values:
            if key not in fields:
                problems.append(
                    FieldProblem(pointer=f"/values/{key}", code="unknown_field", message="not a field of this form")
                )
        for key, form_field in fields.items():
            raw = raw_values.get(key)
            try:
                clean[key] = records.validate_value(
                    form_field.type, raw, options=form_field.options or None, required=form_field.required
                )
            except ValidationProblem as exc:
                problems += _repoint(exc, f"/values/{key}")
    elif raw_values:
        problems.append(FieldProblem(pointer="/values", code="not_a_form", message="this step has no form"))
    problems += await _files_problems(db, file_ids, "/evidence/files")
    action = Complete(
        step_id=step_id,
        actor=actor,
        values={k: v for k, v in clean.items() if v is not None},
        checked=list(checked),
        evidence=EvidenceIn(note=note, files=[str(f) for f in file_ids], value=value),
        acknowledged=True,
    )
    if problems:
        # The engine checks the evidence and the checklist: its problems join ours in one answer,
        # unless the step cannot be completed at all (a conflict, not a problem of the input).
        try:
            engine.apply(definition, state, action, await _env(db, run, definition))
        except EngineError as exc:
            refusal = _engine_problem(exc)
            if not refusal.errors:
                raise refusal from exc
            seen = {(p.pointer, p.code) for p in problems}
            problems += [p for p in refusal.errors if (p.pointer, p.code) not in seen]
        raise ValidationProblem(errors=problems)
    work = await _act(db, run, action, actor_id=actor.user_id, audit_action="run.step_completed", definition=definition)
    return await _detail_after(db, work)


async def approve_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, note: str = "") -> RunDetail:
    return await _step_action(
        db,
        run_id,
        engine.Approve(step_id=step_id, actor=actor, note=note),
        actor=actor,
        audit_action="run.step_approved",
    )


async def reject_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, note: str = "") -> RunDetail:
    """Reject an approval step; a rejection always says why (``note``), for whoever redoes the work."""
    run = await _load_run(db, run_id, lock=True)
    if not note.strip():
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/note", code="required", message="say why the step is rejected")]
        )
    work = await _act(
        db,
        run,
        engine.Reject(step_id=step_id, actor=actor, note=note.strip()),
        actor_id=actor.user_id,
        audit_action="run.step_rejected",
    )
    return await _detail_after(db, work)


async def skip_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, engine.Skip(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_skipped"
    )


async def continue_wait(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    """End a wait step now instead of at its time (admin or higher): the run goes on as if the
    wait had elapsed, and the audit trail names who cut it short."""
    run = await _load_run(db, run_id, lock=True)
    if not _role(actor).at_least(Role.ADMIN):
        raise Forbidden("Only an admin or the owner can end a wait early.", code="role_required")
    _require_running(run)
    step = _find_step(decode_state(run.state), step_id)
    definition = await procedures.definition_by_version_id(db, run.version_id)
    if not isinstance(definition.step(step.key), WaitStep):
        raise Conflict("This step is not a wait.", code="wrong_step_kind")
    work = await _act(
        db,
        run,
        engine.WaitElapsed(step_id=step_id),
        actor_id=actor.user_id,
        audit_action="run.wait_continued",
        definition=definition,
    )
    return await _detail_after(db, work)


# ---------------------------------------------------------------- comments, exceptions, abort


async def add_comment(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    body: str,
    *,
    step_id: int | None = None,
    file_ids: Sequence[uuid.UUID] = (),
    mentions: Sequence[uuid.UUID] = (),
) -> RunComment:
    """Comment on a run or one of its steps (any member; finished runs too), with attachments;
    ``mentions`` are the members the comment calls on (the ``run.commented`` event names them,
    for their notices)."""
    run = await _load_run(db, run_id)
    problems: list[FieldProblem] = []
    if not body.strip():
        problems.append(FieldProblem(pointer="/body", code="required", message="a comment has words"))
    if step_id is not None and all(s.id != step_id for s in decode_state(run.state).steps):
        problems.append(FieldProblem(pointer="/step_id", code="step_not_found", message="the run has no such step"))
    problems += await _files_problems(db, file_ids, "/file_ids")
    mentioned = list(dict.fromkeys(mentions))
    members = await accounts.existing_member_ids(db, set(mentioned))
    problems += [
        FieldProblem(pointer=f"/mentions/{i}", code="not_a_member", message="not a member of this workspace")
        for i, user_id in enumerate(mentioned)
        if user_id not in members
    ]
    if problems:
        raise ValidationProblem(errors=problems)
    comment = RunComment(
        id=new_id(),
        run_id=run.id,
        step_id=step_id,
        author_id=actor.user_id,
        body=body,
        file_ids=[str(f) for f in file_ids],
    )
    db.add(comment)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=actor.user_id,
        action="run.commented",
        subject_type="run",
        subject_id=run.id,
        after={
            "comment_id": str(comment.id),
            "step_id": step_id,
            "body": body,
            "file_ids": comment.file_ids,
            "mentions": [str(m) for m in mentioned],
        },
    )
    await outbox.emit(
        db,
        events.RUN_COMMENTED.name,
        {
            "run_id": str(run.id),
            "procedure_id": str(run.procedure_id),
            "comment_id": str(comment.id),
            "step_id": step_id,
            "author_id": str(actor.user_id),
            "mentioned_ids": [str(m) for m in mentioned],
        },
    )
    return comment


async def list_comments(db: AsyncSession, run_id: uuid.UUID) -> list[RunComment]:
    await _load_run(db, run_id)
    return list((await db.scalars(select(RunComment).where(RunComment.run_id == run_id).order_by(RunComment.id))).all())


async def raise_exception(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    kind: str,
    *,
    step_id: int | None = None,
    note: str = "",
    file_ids: Sequence[uuid.UUID] = (),
) -> tuple[Run, int]:
    """Anyone who can see the run raises an exception in one action; returns the run and its id."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    problems = await _files_problems(db, file_ids, "/file_ids")
    if problems:
        raise ValidationProblem(errors=problems)
    before_ids = {e.id for e in decode_state(run.state).exceptions}
    work = await _act(
        db,
        run,
        RaiseException(kind=kind, actor=actor, step_id=step_id, note=note),
        actor_id=actor.user_id,
        audit_action="run.exception_raised",
    )
    new_ids = [e.id for e in work.state.exceptions if e.id not in before_ids]
    exception_id = new_ids[0] if new_ids else max(before_ids, default=0)
    if file_ids:
        await db.execute(
            update(RunException)
            .where(RunException.run_id == run.id, RunException.exception_id == exception_id)
            .values(file_ids=[str(f) for f in file_ids])
            .execution_options(synchronize_session=False)
        )
    return run, exception_id


async def _may_resolve(db: AsyncSession, actor: Actor, run: Run, state: RunState, found: ExceptionState) -> bool:
    if _role(actor).at_least(Role.MANAGER):
        return True
    definition = await procedures.definition_by_version_id(db, run.version_id)
    kind = _exception_kind(definition, state, found.kind, found.step_id)
    allowed_owners: list[Owner] = list(kind.notify) if kind else []
    if kind is not None and found.escalated_at is not None:
        allowed_owners += kind.escalate_to
    record = await _record_values(db, run)
    for owner in allowed_owners:
        if await _owner_matches(db, run, owner, actor, state, record):
            return True
    return False


async def resolvable_exceptions(db: AsyncSession, actor: Actor, run_id: uuid.UUID) -> set[int]:
    """The open exceptions of a running run that ``actor`` may resolve (for showing them the way)."""
    run = await _load_run(db, run_id)
    if run.status != RunStatus.RUNNING:
        return set()
    state = decode_state(run.state)
    return {e.id for e in state.exceptions if e.status == "open" and await _may_resolve(db, actor, run, state, e)}


async def resolve_exception(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    exception_id: int,
    outcome: Literal["resume", "abort"] | None = None,
    note: str = "",
) -> Run:
    """Resolve an open exception, saying what was done (``note``): managers, whoever the exception
    kind notifies, and, once it has escalated, whoever it escalated to."""
    run = await _load_run(db, run_id, lock=True)
    state = decode_state(run.state)
    found = next((e for e in state.exceptions if e.id == exception_id), None)
    if found is None:
        raise NotFound("The run has no such exception.", code="exception_not_found")
    _require_running(run)
    if not await _may_resolve(db, actor, run, state, found):
        raise Forbidden(
            "Only managers, the people this exception notifies, or those it escalated to resolve it.",
            code="not_notified",
        )
    await _act(
        db,
        run,
        ResolveException(exception_id=exception_id, actor=actor, outcome=outcome, note=note.strip()),
        actor_id=actor.user_id,
        audit_action="run.exception_resolved",
    )
    return run


async def abort_run(db: AsyncSession, actor: Actor, run_id: uuid.UUID, reason: str = "") -> Run:
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    await _act(db, run, Abort(actor=actor, reason=reason), actor_id=actor.user_id, audit_action="run.aborted")
    return run


# ---------------------------------------------------------------- platform-driven actions


async def apply_system_action(
    db: AsyncSession, run_id: uuid.UUID, action: Action, *, audit_action: str, now: datetime | None = None
) -> Run:
    """Apply an action the platform takes (a timer, a plugin action's result) to a running run;
    ``now`` is the platform's clock (a timer's pass), the current time by default."""
    run = await _load_run(db, run_id, lock=True)
    await _act(db, run, action, actor_id=None, audit_action=audit_action, now=now)
    return run


async def assign_step_as_platform(db: AsyncSession, run_id: uuid.UUID, step_id: int, user_id: uuid.UUID) -> Run:
    """Assign or reassign an open step to a member on the platform's behalf (an automation)."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    _find_step(decode_state(run.state), step_id)
    if not await _is_member(db, user_id):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/user_id", code="not_a_member", message="not a member of this workspace")]
        )
    await _act(
        db, run, Assign(step_id=step_id, user_id=user_id, actor=None), actor_id=None, audit_action="run.step_assigned"
    )
    return run


async def hand_over_vacant_steps(db: AsyncSession, procedure_id: uuid.UUID, role: str, user_id: uuid.UUID) -> int:
    """Assign to ``user_id``, on the platform's behalf, the open steps of running runs of a
    procedure that wait for nobody because their owner is the vacant template role ``role``
    (it now has a holder); how many were assigned."""
    rows = (
        await db.execute(
            select(StepInstance.run_id, StepInstance.step_id, StepInstance.key, Run.version_id)
            .join(Run, Run.id == StepInstance.run_id)
            .where(
                StepInstance.procedure_id == procedure_id,
                StepInstance.assignee_id.is_(None),
                StepInstance.status.in_(OPEN_STATUSES),
                Run.status == RunStatus.RUNNING,
            )
            .order_by(StepInstance.run_id, StepInstance.step_id)
        )
    ).all()
    handed = 0
    for row in rows:
        step = (await procedures.definition_by_version_id(db, row.version_id)).step(row.key)
        owner = getattr(step, "owner", None)
        if isinstance(owner, VacantOwner) and owner.role == role:
            await assign_step_as_platform(db, row.run_id, row.step_id, user_id)
            handed += 1
    return handed


async def members_with_role(db: AsyncSession, role: Role) -> list[uuid.UUID]:
    """Members holding exactly ``role``; those holding it or higher when nobody holds it exactly."""
    return await _members_with_role(db, role)


async def least_loaded_member(db: AsyncSession, role: Role, *, exclude: uuid.UUID | None = None) -> uuid.UUID | None:
    """The member of ``role`` with the fewest open steps (ties by id); ``exclude`` is passed over
    unless nobody else holds the role."""
    members = await _members_with_role(db, role)
    if exclude is not None and len(members) > 1:
        members = [m for m in members if m != exclude]
    if not members:
        return None
    loads = await db.execute(
        select(StepInstance.assignee_id, func.count())
        .where(StepInstance.assignee_id.in_(members), StepInstance.status.in_(OPEN_STATUSES))
        .group_by(StepInstance.assignee_id)
    )
    counts: dict[uuid.UUID | None, int] = {row[0]: int(row[1]) for row in loads}
    return min(members, key=lambda m: (counts.get(m, 0), str(m)))


async def step_view(
    db: AsyncSession, run_id: uuid.UUID, *, step_id: int | None = None, step_key: str | None = None
) -> dict[str, Any] | None:
    """A fresh, JSON-shaped view of one step instance (by id, or the latest instance of a key) and
    its run, for automations that re-check a step before acting; None when there is no such step."""
    query = select(StepInstance).where(StepInstance.run_id == run_id)
    if step_id is not None:
        query = query.where(StepInstance.step_id == step_id)
    elif step_key is not None:
        query = query.where(StepInstance.key == step_key).order_by(StepInstance.step_id.desc()).limit(1)
    else:
        return None
    row = await db.scalar(query.execution_options(populate_existing=True))
    if row is None:
        return None
    run = await db.scalar(select(Run).where(Run.id == run_id))
    return {
        "run_id": str(row.run_id),
        "procedure_id": str(row.procedure_id),
        "step_id": row.step_id,
        "key": row.key,
        "title": row.title,
        "status": row.status,
        # A step of a finished run is not open, whatever its last status.
        "open": row.status in OPEN_STATUSES and run is not None and run.status == RunStatus.RUNNING,
        "assignee_id": str(row.assignee_id) if row.assignee_id else None,
        "role": row.role,
        "due_at": row.due_at.isoformat() if row.due_at else None,
        "run_status": run.status if run is not None else None,
        "started_by": str(run.started_by) if run is not None and run.started_by else None,
    }


__all__ = [
    "ESCALATION_TIMER",
    "MAX_PAGE",
    "OPEN_STATUSES",
    "STEP_TIMER",
    "TASK_STATUSES",
    "VIEWS",
    "BoardFilters",
    "BoardTask",
    "MigrationOutcome",
    "OpenException",
    "ProcedureLoad",
    "RunBusy",
    "RunDetail",
    "TaskBoard",
    "TaskCounts",
    "TaskFilters",
    "View",
    "abort_run",
    "add_comment",
    "apply_system_action",
    "approve_step",
    "assign_step",
    "assign_step_as_platform",
    "board_task",
    "claim_step",
    "complete_step",
    "continue_wait",
    "decode_state",
    "encode_state",
    "fire_escalation_timer",
    "fire_step_timer",
    "get_run",
    "least_loaded_member",
    "list_comments",
    "list_runs",
    "members_with_role",
    "migrate_run",
    "migrate_runs",
    "my_tasks",
    "my_tasks_query",
    "open_exceptions",
    "procedure_has_runs",
    "raise_exception",
    "reject_step",
    "resolvable_exceptions",
    "resolve_exception",
    "run_detail",
    "runs_in_flight",
    "skip_step",
    "sla_state",
    "start_run",
    "start_step",
    "step_view",
    "task_board",
    "task_counts",
]
