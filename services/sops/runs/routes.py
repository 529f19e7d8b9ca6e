"""HTTP routes of the sops runs service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from services.outputs import struct_from
from services.schema_docs import Cursor
from services.sops.engine import Actor, RunStatus, StepStatus
from services.sops.runs import service
from services.sops.runs.models import Run, RunComment, RunException, StepInstance
from services.sops.runs.schemas import (
    AbortIn,
    AssignIn,
    BulkMigrateIn,
    BulkMigrationOut,
    CommentIn,
    CommentOut,
    CompleteIn,
    DecisionNoteIn,
    ExceptionOut,
    MigrateIn,
    MigrationResult,
    RaiseExceptionIn,
    ResolveExceptionIn,
    RunDetailOut,
    RunOut,
    RunPage,
    StartRunIn,
    StepOut,
    TaskOut,
    TaskPage,
)
from services.validation import INT32_MAX
from tenants.base import utcnow
from tenants.principal import Principal
from tenants.scopes import api_scopes

#: A step's or an exception's number within its run (an ``integer`` column).
RunItemNumber = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="its number within the run")]


def actor_of(principal: Principal) -> Actor:
    principal.require_tenant()
    assert principal.role is not None
    return Actor(user_id=principal.user_id, role=principal.role.value)


def run_out(run: Run) -> RunOut:
    return struct_from(RunOut, run)


def _overdue(status: str, due_at: datetime | None, now: datetime) -> bool:
    return due_at is not None and due_at < now and status in service.OPEN_STATUSES


def step_out(row: StepInstance, now: datetime) -> StepOut:
    return struct_from(StepOut, row, id=row.step_id, overdue=_overdue(row.status, row.due_at, now))


def exception_out(row: RunException, resolution_note: str = "") -> ExceptionOut:
    return struct_from(
        ExceptionOut, row, id=row.exception_id, file_ids=list(row.file_ids or []), resolution_note=resolution_note
    )


def comment_out(row: RunComment) -> CommentOut:
    return struct_from(CommentOut, row, file_ids=list(row.file_ids or []))


async def detail_out(db: AsyncSession, run_id: uuid.UUID) -> RunDetailOut:
    return run_detail_out(await service.run_detail(db, run_id))


def run_detail_out(detail: service.RunDetail) -> RunDetailOut:
    now = utcnow()
    notes = {e.id: e.resolution_note for e in detail.state.exceptions}
    return struct_from(
        RunDetailOut,
        detail.run,
        data=dict(detail.state.data),
        steps=[step_out(s, now) for s in detail.steps],
        exceptions=[exception_out(e, notes.get(e.exception_id, "")) for e in detail.exceptions],
    )


class RunsController(Controller):
    path = "/api/v1/runs"
    tags = ["runs"]
    opt = api_scopes("runs")

    @post("/", status_code=201, summary="Start a run of a procedure's latest published version")
    async def start(
        self, data: JSONBody[StartRunIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> RunDetailOut:
        run = await service.start_run(
            db, data.procedure_id, actor_of(principal), data.data, data.record_id, title=data.title
        )
        return await detail_out(db, run.id)

    @get("/", summary="Runs, newest first, with filters and keyset pagination")
    async def list_runs(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        status: Annotated[
            str | None, QueryParameter(max_length=16, schema_extra={"enum": [s.value for s in RunStatus]})
        ] = None,
        procedure_id: FromQuery[uuid.UUID | None] = None,
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = 50,
    ) -> RunPage:
        actor_of(principal)
        rows, next_cursor = await service.list_runs(
            db, status=status, procedure_id=procedure_id, cursor=cursor, limit=limit
        )
        return RunPage(items=[run_out(r) for r in rows], next_cursor=next_cursor)

    @post("/migrate", status_code=200, summary="Move every running run of a procedure to a version (manager)")
    async def migrate_all(
        self, data: JSONBody[BulkMigrateIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> BulkMigrationOut:
        outcomes = await service.migrate_runs(db, actor_of(principal), data.procedure_id, data.version_id)
        return BulkMigrationOut(
            results=[MigrationResult(run_id=o.run_id, migrated=o.migrated, problems=o.problems) for o in outcomes]
        )

    @get("/{run_id:uuid}", summary="A run with its steps and exceptions")
    async def get_run(
        self, run_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> RunDetailOut:
        actor_of(principal)
        return await detail_out(db, run_id)

    @post("/{run_id:uuid}/steps/{step_id:int}/claim", status_code=200, summary="Claim a step your role may do")
    async def claim(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.claim_step(db, actor_of(principal), run_id, step_id))

    @post("/{run_id:uuid}/steps/{step_id:int}/assign", status_code=200, summary="Assign or reassign (manager)")
    async def assign(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        data: JSONBody[AssignIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.assign_step(db, actor_of(principal), run_id, step_id, data.user_id))

    @post("/{run_id:uuid}/steps/{step_id:int}/start", status_code=200, summary="Start working on a step")
    async def start_step(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.start_step(db, actor_of(principal), run_id, step_id))

    @post("/{run_id:uuid}/steps/{step_id:int}/complete", status_code=200, summary="Complete a step with evidence")
    async def complete(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        data: JSONBody[CompleteIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        detail = await service.complete_step(
            db,
            actor_of(principal),
            run_id,
            step_id,
            values=data.values,
            checked=data.checked,
            note=data.evidence.note,
            file_ids=data.evidence.files,
            value=data.evidence.value,
        )
        return run_detail_out(detail)

    @post("/{run_id:uuid}/steps/{step_id:int}/approve", status_code=200, summary="Approve an approval step")
    async def approve(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        data: JSONBody[DecisionNoteIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.approve_step(db, actor_of(principal), run_id, step_id, data.note))

    @post("/{run_id:uuid}/steps/{step_id:int}/reject", status_code=200, summary="Reject an approval step")
    async def reject(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        data: JSONBody[DecisionNoteIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.reject_step(db, actor_of(principal), run_id, step_id, data.note))

    @post("/{run_id:uuid}/steps/{step_id:int}/continue", status_code=200, summary="End a wait step now (admin)")
    async def continue_wait(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.continue_wait(db, actor_of(principal), run_id, step_id))

    @post("/{run_id:uuid}/steps/{step_id:int}/skip", status_code=200, summary="Skip an optional step")
    async def skip(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        return run_detail_out(await service.skip_step(db, actor_of(principal), run_id, step_id))

    @get("/{run_id:uuid}/comments", summary="Comments on a run, oldest first")
    async def list_comments(
        self, run_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[CommentOut]:
        actor_of(principal)
        return [comment_out(c) for c in await service.list_comments(db, run_id)]

    @post("/{run_id:uuid}/comments", status_code=201, summary="Comment on a run or a step, with attachments")
    async def add_comment(
        self,
        run_id: FromPath[uuid.UUID],
        data: JSONBody[CommentIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CommentOut:
        comment = await service.add_comment(
            db,
            actor_of(principal),
            run_id,
            data.body,
            step_id=data.step_id,
            file_ids=data.file_ids,
            mentions=data.mentions,
        )
        return comment_out(comment)

    @post("/{run_id:uuid}/exceptions", status_code=201, summary="Raise an exception (anyone on the run)")
    async def raise_exception(
        self,
        run_id: FromPath[uuid.UUID],
        data: JSONBody[RaiseExceptionIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ExceptionOut:
        _run, exception_id = await service.raise_exception(
            db, actor_of(principal), run_id, data.kind, step_id=data.step_id, note=data.note, file_ids=data.file_ids
        )
        detail = await service.run_detail(db, run_id)
        return exception_out(next(e for e in detail.exceptions if e.exception_id == exception_id))

    @post(
        "/{run_id:uuid}/exceptions/{exception_id:int}/resolve",
        status_code=200,
        summary="Resolve an exception (manager, or whoever it notifies)",
    )
    async def resolve_exception(
        self,
        run_id: FromPath[uuid.UUID],
        exception_id: RunItemNumber,
        data: JSONBody[ResolveExceptionIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        await service.resolve_exception(db, actor_of(principal), run_id, exception_id, data.outcome, data.note)
        return await detail_out(db, run_id)

    @post("/{run_id:uuid}/abort", status_code=200, summary="Abort a run (manager)")
    async def abort(
        self,
        run_id: FromPath[uuid.UUID],
        data: JSONBody[AbortIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        await service.abort_run(db, actor_of(principal), run_id, data.reason)
        return await detail_out(db, run_id)

    @post("/{run_id:uuid}/migrate", status_code=200, summary="Move a running run to another version (manager)")
    async def migrate(
        self,
        run_id: FromPath[uuid.UUID],
        data: JSONBody[MigrateIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RunDetailOut:
        await service.migrate_run(db, actor_of(principal), run_id, data.version_id)
        return await detail_out(db, run_id)


class MyTasksController(Controller):
    path = "/api/v1/my"
    tags = ["runs"]
    opt = api_scopes("runs")

    @get("/tasks", summary="My open steps across runs, soonest due first")
    async def my_tasks(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        procedure_id: FromQuery[uuid.UUID | None] = None,
        status: Annotated[
            str | None, QueryParameter(max_length=16, schema_extra={"enum": [s.value for s in StepStatus]})
        ] = None,
        overdue: FromQuery[bool] = False,
        due_before: FromQuery[datetime | None] = None,
        include_claimable: Annotated[
            bool, QueryParameter(description="also the unassigned steps your role may claim (false: yours only)")
        ] = True,
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = 50,
    ) -> TaskPage:
        actor = actor_of(principal)
        filters = service.TaskFilters(
            procedure_id=procedure_id,
            status=status,
            overdue=overdue,
            due_before=due_before,
            include_claimable=include_claimable,
        )
        rows, next_cursor = await service.my_tasks(db, actor, filters, cursor=cursor, limit=limit)
        now = utcnow()
        return TaskPage(items=[task_out(r, now) for r in rows], next_cursor=next_cursor)


def task_out(row: Any, now: datetime) -> TaskOut:
    return struct_from(TaskOut, row, overdue=_overdue(row.status, row.due_at, now))


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [RunsController, MyTasksController]
