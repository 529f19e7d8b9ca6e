"""Changing a run: apply one action through the pure engine and settle what it caused.

Settling handles the transition's events — owners resolved and assigned, linked-record updates
written, sub-runs started, escalations addressed — then stores the new state with an optimistic
``lock_version`` check (of two concurrent actions on the same run exactly one wins), brings the
``step_instances`` and ``run_exceptions`` rows and their SLA timers in line with it, and emits the
events to the outbox. Starting a run settles the same way, and a sub-procedure step starts a run
while it settles: both live here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services import events
from services.audit import service as audit
from services.names import name_problems
from services.outbox import service as outbox
from services.records import service as records
from services.scheduler import service as scheduler
from services.sops import engine
from services.sops.definition import HUMAN_STEPS, Definition, Owner
from services.sops.engine import (
    Action,
    Actor,
    Assign,
    EngineError,
    Env,
    Event,
    RunState,
    RunStatus,
    SubprocedureFinished,
)
from services.sops.procedures import service as procedures
from services.sops.runs.models import Run, RunException, StepInstance
from services.sops.runs.owners import _claim_role, _owner_user_ids, _resolve_owner
from services.sops.runs.state import (
    OPEN_STATUSES,
    _apply_engine,
    _engine_problem,
    _env,
    _exception_rows,
    _find_step,
    _jsonable,
    _load_run,
    _require_running,
    _step_kind,
    _step_rows,
    decode_state,
    encode_state,
)
from tenants.base import as_uuid, new_id
from tenants.errors import Conflict, FieldProblem, ValidationProblem

# ---------------------------------------------------------------- settling a transition


@dataclass
class _Work:
    """One run's transition in progress: the state before, the state now, what happened."""

    run: Run
    definition: Definition
    before: RunState
    state: RunState
    env: Env
    events: list[Event]
    actions_requested: set[int]
    finished_child: bool = False
    # The run's step and exception rows by id, once storing the state has read them (the answer
    # to the action is built from them instead of reading them again).
    step_rows: dict[int, StepInstance] | None = None
    exception_rows: dict[int, RunException] | None = None


async def _settle(
    db: AsyncSession,
    work: _Work,
    pending: list[Event],
    *,
    actor_id: uuid.UUID | None,
    notify_parent: bool = True,
) -> None:
    """Handle every event (which may apply follow-up actions), then store state, rows and events."""
    definition = work.definition
    run = work.run
    while pending:
        event = pending.pop(0)
        work.events.append(event)
        follow: list[Action] = []
        if event.type == events.STEP_READY.name and event.step_id is not None:
            step = _find_step(work.state, event.step_id)
            step_def = definition.step(step.key)
            if step.assignee is None and isinstance(step_def, HUMAN_STEPS):
                user_id = await _resolve_owner(db, run, step_def.owner, step.key, work.state, work.env.record)
                if user_id is not None:
                    follow.append(Assign(step_id=step.id, user_id=user_id, actor=None))
        elif event.type == events.RECORD_UPDATE_REQUESTED.name:
            values = dict(event.data.get("values", event.data))
            if run.collection_id is not None and run.record_id is not None and values:
                await records.update_record_values(db, run.collection_id, run.record_id, values, actor_id)
        elif event.type == events.EXCEPTION_ESCALATED.name:
            # Tell the people it escalates to by id; the rules stay in the event for automations.
            user_ids: list[str] = []
            for rule in msgspec.convert(event.data.get("escalate_to", []), type=list[Owner]):
                for user_id in await _owner_user_ids(db, run, rule, work.state, work.env.record):
                    if str(user_id) not in user_ids:
                        user_ids.append(str(user_id))
            event.data = {**event.data, "user_ids": user_ids}
        elif event.type == events.ACTION_REQUESTED.name and event.step_id is not None:
            # Plugin actions run in the automation workers; they answer with ActionSucceeded/Failed.
            work.actions_requested.add(event.step_id)
        elif event.type == events.SUBPROCEDURE_REQUESTED.name and event.step_id is not None:
            child_procedure = as_uuid(event.data.get("procedure_id"))
            if child_procedure is None:
                step_def = definition.step(_find_step(work.state, event.step_id).key)
                child_procedure = getattr(step_def, "procedure_id", None)
            assert child_procedure is not None
            child = await start_run(
                db,
                child_procedure,
                None,
                data={},
                record_id=None,
                parent=(run.id, event.step_id),
                started_by=actor_id,
                parent_record=(run.collection_id, run.record_id),
            )
            if child.status != RunStatus.RUNNING:
                follow.append(
                    SubprocedureFinished(step_id=event.step_id, completed=child.status == RunStatus.COMPLETED)
                )
        for action in follow:
            transition = _apply_engine(definition, work.state, action, work.env)
            work.state = transition.state
            pending.extend(transition.events)
    await _store(db, work)
    finished = work.state.status != RunStatus.RUNNING
    if finished and notify_parent and run.parent_run_id is not None and run.parent_step_id is not None:
        parent = await _load_run(db, run.parent_run_id, lock=True)
        if parent.status == RunStatus.RUNNING:
            await _act(
                db,
                parent,
                SubprocedureFinished(step_id=run.parent_step_id, completed=work.state.status == RunStatus.COMPLETED),
                actor_id=actor_id,
                audit_action="run.subprocedure_finished",
            )


async def _store(db: AsyncSession, work: _Work) -> None:
    run, state, now = work.run, work.state, work.env.now
    seen = run.lock_version
    finished_at = now if state.status != RunStatus.RUNNING else None
    values: dict[str, Any] = {
        "state": encode_state(state),
        "status": state.status.value,
        "lock_version": seen + 1,
        "updated_at": now,
        "finished_at": finished_at,
    }
    result = await db.execute(
        update(Run)
        .where(Run.id == run.id, Run.lock_version == seen)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone else changed this run at the same moment; reload and retry.", code="step_conflict")
    for name, value in values.items():
        set_committed_value(run, name, value)
    await _sync_steps(db, work)
    await _sync_exceptions(db, work)
    await _emit_events(db, work)


def _timer_at(row: StepInstance) -> datetime | None:
    """The step's next SLA moment: its due-soon reminder and overdue notice until sent, its expiry,
    the end of its wait; None when there is nothing left to do (or the step is closed)."""
    if row.status not in OPEN_STATUSES:
        return None
    moments = [row.expires_at, row.wait_until]
    if row.overdue_notified_at is None:
        moments.append(row.due_at)
    if row.reminded_at is None:
        moments.append(row.remind_at)
    present = [m for m in moments if m is not None]
    return min(present) if present else None


async def _sync_steps(db: AsyncSession, work: _Work) -> None:
    before = {s.id: s for s in work.before.steps}
    changed = [s for s in work.state.steps if before.get(s.id) != s]
    touched = work.actions_requested
    if not changed and not touched:
        return
    rows = await _step_rows(db, work.run.id)
    work.step_rows = rows
    definition = work.definition
    now = work.env.now
    for step in work.state.steps:
        if step in changed or step.id in touched or step.id not in rows:
            row = rows.get(step.id)
            moment_before = _timer_at(row) if row is not None else None
            if row is None:
                step_def = definition.step(step.key)
                row = StepInstance(
                    run_id=work.run.id,
                    step_id=step.id,
                    procedure_id=work.run.procedure_id,
                    run_title=work.run.title,
                    key=step.key,
                    title=step_def.title,
                    kind=_step_kind(step_def),
                    optional=bool(getattr(step_def, "optional", False)),
                    role=_claim_role(step_def),
                    created_at=now,
                )
                db.add(row)
                rows[step.id] = row
            row.status = step.status.value
            row.assignee_id = step.assignee
            row.ready_at = step.ready_at
            row.due_at = step.due_at
            row.expires_at = step.expires_at
            row.finished_at = step.finished_at
            row.finished_by = step.finished_by
            row.outcome = step.outcome[:200] if step.outcome else None
            row.wait_until = step.wake_at
            row.remind_at = step.remind_at
            if step.id in work.actions_requested:
                row.action_requested_at = now
            row.updated_at = now
            moment = _timer_at(row)
            if moment != moment_before:  # most changes (a completion without SLA) write no timer row
                await _arm_step_timer(db, row, moment)


async def _sync_exceptions(db: AsyncSession, work: _Work) -> None:
    before = {e.id: e for e in work.before.exceptions}
    changed = [e for e in work.state.exceptions if before.get(e.id) != e]
    if not changed:
        return
    rows = await _exception_rows(db, work.run.id)
    work.exception_rows = rows
    for exc in changed:
        row = rows.get(exc.id)
        if row is None:
            row = RunException(run_id=work.run.id, exception_id=exc.id, file_ids=[], created_at=work.env.now)
            db.add(row)
            rows[exc.id] = row
        row.kind = exc.kind
        row.step_id = exc.step_id
        row.status = exc.status
        row.note = exc.note
        row.raised_by = exc.raised_by
        row.raised_at = exc.raised_at
        row.outcome = exc.outcome
        row.resolved_by = exc.resolved_by
        row.resolved_at = exc.resolved_at
        row.escalated_at = exc.escalated_at
        # The escalation timer is armed only while the exception is open and has not escalated.
        escalate_before = row.escalate_at
        row.escalate_at = exc.escalate_at if exc.status == "open" and exc.escalated_at is None else None
        if row.escalate_at != escalate_before:
            await _arm_escalation_timer(db, row)


def _event_payload(work: _Work, event: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "run_id": str(work.run.id),
        "procedure_id": str(work.run.procedure_id),
        "version_id": str(work.run.version_id),
        "run_title": work.run.title,
        "run_status": work.state.status.value,
        "record_id": str(work.run.record_id) if work.run.record_id else None,
        "collection_id": str(work.run.collection_id) if work.run.collection_id else None,
        "data": _jsonable(event.data),
    }
    if "exception_id" in event.data:
        payload["exception_id"] = event.data["exception_id"]
    if event.step_id is not None:
        step = next((s for s in work.state.steps if s.id == event.step_id), None)
        payload["step_id"] = event.step_id
        payload["step_key"] = event.step_key or (step.key if step else None)
        if step is not None:
            payload["assignee_id"] = str(step.assignee) if step.assignee else None
            payload["due_at"] = step.due_at.isoformat() if step.due_at else None
    return payload


async def _emit_events(db: AsyncSession, work: _Work) -> None:
    for event in work.events:
        # The engine names its events from the catalog (services.events): event.type is one of them.
        await outbox.emit(db, event.type, _event_payload(work, event))
        if event.type == events.ACTION_REQUESTED.name:
            await outbox.emit(db, events.STEP_ACTION_REQUESTED.name, _event_payload(work, event))


def _exception_snapshot(state: RunState, exception_id: int) -> Any:
    exc = next((e for e in state.exceptions if e.id == exception_id), None)
    return _jsonable(exc) if exc is not None else None


def _step_snapshot(state: RunState, step_id: int | None) -> Any:
    if step_id is None:
        return None
    step = next((s for s in state.steps if s.id == step_id), None)
    return _jsonable(step) if step is not None else None


async def _act(
    db: AsyncSession,
    run: Run,
    action: Action,
    *,
    actor_id: uuid.UUID | None,
    audit_action: str,
    definition: Definition | None = None,
    now: datetime | None = None,
) -> _Work:
    """Apply one action to a (locked) run and settle it, with its audit event."""
    _require_running(run)
    definition = definition or await procedures.definition_by_version_id(db, run.version_id)
    state = decode_state(run.state)
    env = await _env(db, run, definition, now)
    transition = _apply_engine(definition, state, action, env)
    work = _Work(run, definition, state, transition.state, env, [], set())
    await _settle(db, work, list(transition.events), actor_id=actor_id)
    step_id = getattr(action, "step_id", None)
    before: dict[str, Any] = {"status": state.status.value, "step": _step_snapshot(state, step_id)}
    after: dict[str, Any] = {"status": work.state.status.value, "step": _step_snapshot(work.state, step_id)}
    exception_id = getattr(action, "exception_id", None)
    if exception_id is not None:
        before["exception"] = _exception_snapshot(state, exception_id)
        after["exception"] = _exception_snapshot(work.state, exception_id)
    await audit.record_change(
        db,
        actor_id=actor_id,
        action=audit_action,
        subject_type="run",
        subject_id=run.id,
        before=before,
        after=after,
    )
    return work


# ---------------------------------------------------------------- starting a run


def _repoint(problem: ValidationProblem, pointer: str) -> list[FieldProblem]:
    """A value's problems (pointing at ``/value``) as problems of the input field at ``pointer``."""
    return [p.moved(pointer) for p in problem.errors] or [
        FieldProblem.of(pointer, problem.code, problem.message_id or problem.title, **problem.params)
    ]


def _validate_data(definition: Definition, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
    fields = {f.key: f for f in definition.data}
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for key, raw in data.items():
        field = fields.get(key)
        if field is None:
            problems.append(
                FieldProblem(pointer=f"/data/{key}", code="unknown_field", message="not a field of the run")
            )
            continue
        try:
            values[key] = records.validate_value(field.type, raw)
        except ValidationProblem as exc:
            problems += _repoint(exc, f"/data/{key}")
    return values, problems


async def start_run(
    db: AsyncSession,
    procedure_id: uuid.UUID,
    actor: Actor | None,
    data: Mapping[str, Any] | None = None,
    record_id: uuid.UUID | None = None,
    *,
    title: str | None = None,
    parent: tuple[uuid.UUID, int] | None = None,
    started_by: uuid.UUID | None = None,
    parent_record: tuple[uuid.UUID | None, uuid.UUID | None] = (None, None),
) -> Run:
    """Start a run of the procedure's latest published version.

    ``actor`` is None when the platform starts it (a trigger, a sub-procedure step); ``record_id``
    is required when the procedure is linked to a collection. Every problem of the input is listed.
    """
    version = await procedures.version_for_run(db, procedure_id)
    definition = version.definition
    values, problems = _validate_data(definition, data or {})
    if title is not None:
        problems += name_problems(title, "/title", required=False)
    if record_id is None and parent is not None and version.collection_id == parent_record[0]:
        record_id = parent_record[1]  # a sub-procedure about the same collection works on the same record
    if version.collection_id is not None and record_id is None and parent is None:
        problems.append(
            FieldProblem(pointer="/record_id", code="required", message="this procedure runs about a record")
        )
    if version.collection_id is None and record_id is not None:
        problems.append(
            FieldProblem(
                pointer="/record_id", code="not_linked", message="this procedure is not linked to a collection"
            )
        )
    if problems:
        raise ValidationProblem(errors=problems)
    starter = actor.user_id if actor is not None else started_by
    run = Run(
        id=new_id(),
        procedure_id=version.procedure_id,
        version_id=version.version_id,
        version_number=version.number,
        status=RunStatus.RUNNING.value,
        title=title or version.title,
        collection_id=version.collection_id if record_id is not None else None,
        record_id=record_id,
        parent_run_id=parent[0] if parent else None,
        parent_step_id=parent[1] if parent else None,
        started_by=starter,
        state={},
        lock_version=0,
    )
    env = await _env(db, run, definition)  # reads the record: a missing one is a 404 before anything is written
    db.add(run)
    await db.flush()
    try:
        transition = engine.start(definition, env, started_by=starter, data=values)
    except EngineError as exc:
        raise _engine_problem(exc) from exc
    work = _Work(run, definition, RunState(), transition.state, env, [], set())
    # A sub-run that finishes at once is reported by the caller, whose own state is not stored yet.
    await _settle(db, work, list(transition.events), actor_id=starter, notify_parent=False)
    await audit.record_change(
        db,
        actor_id=starter,
        action="run.started",
        subject_type="run",
        subject_id=run.id,
        after={"procedure_id": str(run.procedure_id), "version_id": str(run.version_id), "data": _jsonable(values)},
    )
    return run


# ---------------------------------------------------------------- arming the SLA timers
# (what they do when they fire: services.sops.runs.timers)

STEP_TIMER = "run.step"
ESCALATION_TIMER = "run.escalation"


def _step_timer_key(run_id: uuid.UUID, step_id: int) -> str:
    return f"step:{run_id}:{step_id}"


def _escalation_timer_key(run_id: uuid.UUID, exception_id: int) -> str:
    return f"escalate:{run_id}:{exception_id}"


async def _arm_step_timer(db: AsyncSession, row: StepInstance, moment: datetime | None) -> None:
    key = _step_timer_key(row.run_id, row.step_id)
    if moment is None:
        await scheduler.cancel(db, key)
    else:
        payload = {"run_id": str(row.run_id), "step_id": row.step_id}
        await scheduler.schedule(db, kind=STEP_TIMER, key=key, due_at=moment, payload=payload)


async def _arm_escalation_timer(db: AsyncSession, row: RunException) -> None:
    key = _escalation_timer_key(row.run_id, row.exception_id)
    if row.escalate_at is None:
        await scheduler.cancel(db, key)
    else:
        payload = {"run_id": str(row.run_id), "exception_id": row.exception_id}
        await scheduler.schedule(db, kind=ESCALATION_TIMER, key=key, due_at=row.escalate_at, payload=payload)
