"""The task board: "my tasks" as a person works through them (the My tasks page, the dashboard).

The same steps as :func:`services.sops.runs.tasks.my_tasks` (assigned to the caller, and those the
caller's role may claim), with what a card shows — the procedure's title, the run's version for the
step's number — in one statement (steps ⋈ runs ⋈ procedures), sorted by urgency: overdue, due soon,
then by due time, then steps without a time limit. Counts per view come from one more statement.

A step is *due soon* in the last quarter of its time limit (from ready to due), and at most the last
24 hours of it. Pages are numbered (a board holds open steps only: at most a few thousand).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import Boolean, String, Uuid, and_, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from services.sops.definition import HUMAN_STEPS
from services.sops.engine import Actor, RunStatus
from services.sops.procedures import service as procedures
from services.sops.procedures.models import Procedure
from services.sops.runs.models import Run, RunException, StepInstance
from services.sops.runs.state import TASK_STATUSES
from services.sops.runs.tasks import claimable_roles, custom_plans
from tenants.base import UTCDateTime, utcnow
from tenants.errors import Forbidden, NotFound
from tenants.isolation import session_tenant_id

View = Literal["all", "mine", "claimable", "overdue"]
VIEWS: tuple[View, ...] = ("all", "mine", "claimable", "overdue")
Sla = Literal["overdue", "due_soon", "on_time", "none"]

DUE_SOON_SHARE = 0.25
DUE_SOON_AT_MOST = timedelta(hours=24)
MAX_SEARCH = 100

_steps = StepInstance.__table__
_runs = Run.__table__
_procedures = Procedure.__table__


class _left_within_share(FunctionElement[bool]):
    """Whether the time left until a step's due time (from now) is at most the due-soon share of its
    time limit (from ready to due): ``(due - now) / share <= due - ready``."""

    type = Boolean()
    inherit_cache = True


@compiles(_left_within_share)
def _left_within_share_postgres(element: _left_within_share, compiler: SQLCompiler, **kw: Any) -> str:
    # Intervals: an epoch (extract) is a numeric on Postgres, slow to compute for every open step.
    due, ready, now = (compiler.process(c, **kw) for c in element.clauses)
    return f"(({due} - {now}) * {1 / DUE_SOON_SHARE!r} <= ({due} - {ready}))"


@compiles(_left_within_share, "sqlite")
def _left_within_share_sqlite(element: _left_within_share, compiler: SQLCompiler, **kw: Any) -> str:
    due, ready, now = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({due}) - julianday({now})) * {1 / DUE_SOON_SHARE!r} <= julianday({due}) - julianday({ready}))"


def sla_state(ready_at: datetime | None, due_at: datetime | None, now: datetime) -> Sla:
    """Where a step stands against its time limit (the same rule as the board's order)."""
    if due_at is None:
        return "none"
    if due_at < now:
        return "overdue"
    left = due_at - now
    if left <= DUE_SOON_AT_MOST and (ready_at is None or left <= (due_at - ready_at) * DUE_SOON_SHARE):
        return "due_soon"
    return "on_time"


# The statements are built once per shape (view, filters used) with bound parameters: building a
# statement costs more Python than running it. Parameters: tenant_id, user_id, roles, now,
# soon_edge, procedure_id, pattern, offset, limit.
_TENANT = bindparam("tenant_id", type_=Uuid())
_NOW = bindparam("now", type_=UTCDateTime())


def _urgency() -> Any:
    due, ready = _steps.c.due_at, _steps.c.ready_at
    soon = and_(
        due <= bindparam("soon_edge", type_=UTCDateTime()),
        or_(ready.is_(None), _left_within_share(due, ready, _NOW)),
    )
    return case((due.is_(None), 3), (due < _NOW, 0), (soon, 1), else_=2)


@dataclass(frozen=True)
class BoardFilters:
    view: View = "all"
    procedure_id: uuid.UUID | None = None
    search: str = ""  # part of a run's title (the record's number, for runs started from a record)


@dataclass(frozen=True)
class BoardTask:
    run_id: uuid.UUID
    run_title: str
    procedure_id: uuid.UUID
    procedure_title: str
    step_id: int
    key: str
    title: str
    kind: str
    status: str
    assignee_id: uuid.UUID | None
    role: str | None
    ready_at: datetime | None
    due_at: datetime | None
    sla: Sla
    position: int | None  # the step's number in its procedure version, from 1
    step_count: int | None


@dataclass(frozen=True)
class TaskCounts:
    all: int = 0
    mine: int = 0
    claimable: int = 0
    overdue: int = 0


@dataclass(frozen=True)
class TaskBoard:
    tasks: list[BoardTask]
    has_more: bool
    counts: TaskCounts
    # The procedures the caller has open steps of (matching the search), by title: the filter's choices.
    procedures: list[tuple[uuid.UUID, str]]
    now: datetime


_STEP_COLUMNS = (
    _steps.c.run_id,
    _steps.c.run_title,
    _steps.c.procedure_id,
    _steps.c.step_id,
    _steps.c.key,
    _steps.c.title,
    _steps.c.kind,
    _steps.c.status,
    _steps.c.assignee_id,
    _steps.c.role,
    _steps.c.ready_at,
    _steps.c.due_at,
)


def _tenant(db: AsyncSession) -> uuid.UUID:
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise Forbidden("Choose a workspace first.", code="no_tenant_selected")
    return tenant_id


def _assigned() -> Any:
    return _steps.c.assignee_id == bindparam("user_id", type_=Uuid())


def _claimable() -> Any:
    return and_(_steps.c.assignee_id.is_(None), _steps.c.role.in_(bindparam("roles", expanding=True)))


def _filtered(query: Any, view: View, by_procedure: bool, searching: bool) -> Any:
    """The caller's open steps (those of the view) of the tenant, with the filters used applied."""
    if view == "mine":
        whose = _assigned()
    elif view == "claimable":
        whose = _claimable()
    else:
        whose = or_(_assigned(), _claimable())
    query = query.where(_steps.c.tenant_id == _TENANT, whose, _steps.c.status.in_(TASK_STATUSES))
    if view == "overdue":
        query = query.where(_steps.c.due_at < _NOW)
    if by_procedure:
        query = query.where(_steps.c.procedure_id == bindparam("procedure_id", type_=Uuid()))
    if searching:
        query = query.where(_steps.c.run_title.ilike(bindparam("pattern", type_=String()), escape="/"))
    return query


def _with_names(steps: Any) -> Any:
    """The rows of ``steps`` (a subquery of step columns) with their run's version and their
    procedure's title, looked up by key for each chosen step (after the choice, not before it)."""
    version = (
        select(_runs.c.version_id)
        .where(_runs.c.tenant_id == _TENANT, _runs.c.id == steps.c.run_id)
        .scalar_subquery()
        .label("version_id")
    )
    title = (
        select(_procedures.c.title)
        .where(_procedures.c.tenant_id == _TENANT, _procedures.c.id == steps.c.procedure_id)
        .scalar_subquery()
        .label("procedure_title")
    )
    return select(steps, version, title).select_from(steps)


@cache
def _board_statement(view: View, by_procedure: bool, searching: bool) -> Any:
    urgency = _urgency().label("urgency")
    chosen = (
        _filtered(select(*_STEP_COLUMNS, urgency), view, by_procedure, searching)
        .order_by(urgency, _steps.c.due_at.asc().nulls_last(), _steps.c.run_id, _steps.c.step_id)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .subquery("chosen")
    )
    return _with_names(chosen).order_by(
        chosen.c.urgency, chosen.c.due_at.asc().nulls_last(), chosen.c.run_id, chosen.c.step_id
    )


@cache
def _one_statement() -> Any:
    one = (
        select(*_STEP_COLUMNS)
        .where(
            _steps.c.tenant_id == _TENANT,
            _steps.c.run_id == bindparam("run_id", type_=Uuid()),
            _steps.c.step_id == bindparam("step_id"),
        )
        .subquery("one")
    )
    return _with_names(one)


@cache
def _counts_statement(searching: bool) -> Any:
    """The counts of every view per procedure (with its title): the procedures the caller has open
    steps of are the choices of the procedure filter, and the counts come from the same rows."""
    count = func.count()
    title = (
        select(_procedures.c.title)
        .where(_procedures.c.tenant_id == _TENANT, _procedures.c.id == _steps.c.procedure_id)
        .scalar_subquery()
        .label("title")
    )
    return _filtered(
        select(
            _steps.c.procedure_id,
            title,
            count.label("all"),
            count.filter(_assigned()).label("mine"),
            count.filter(_steps.c.assignee_id.is_(None)).label("claimable"),
            count.filter(_steps.c.due_at < _NOW).label("overdue"),
        )
        .select_from(_steps)
        .group_by(_steps.c.procedure_id),
        "all",
        False,
        searching,
    )


def _pattern(search: str) -> str:
    escaped = search.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _params(tenant_id: uuid.UUID, actor: Actor, filters: BoardFilters, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "user_id": actor.user_id,
        "roles": claimable_roles(actor),
        "now": now,
        "soon_edge": now + DUE_SOON_AT_MOST,
        "procedure_id": filters.procedure_id,
        "pattern": _pattern(_search(filters)),
    }


def _search(filters: BoardFilters) -> str:
    return filters.search.strip()[:MAX_SEARCH]


async def _rows(db: AsyncSession, *queries: Any, params: dict[str, Any] | None = None) -> list[list[Any]]:
    """The rows of each statement, run on the session's connection (one planning setting for all)."""
    connection = await custom_plans(db)
    return [list((await connection.execute(query, params or {})).all()) for query in queries]


async def _tasks_of(db: AsyncSession, rows: list[Any], now: datetime) -> list[BoardTask]:
    # Published definitions are cached by version: a board's few versions are read once.
    positions: dict[uuid.UUID, dict[str, int]] = {}
    counts: dict[uuid.UUID, int] = {}
    for version_id in {r.version_id for r in rows}:
        try:
            definition = await procedures.definition_by_version_id(db, version_id)
        except NotFound:
            continue
        positions[version_id] = {step.key: i for i, step in enumerate(definition.steps, start=1)}
        counts[version_id] = len(definition.steps)
    return [
        BoardTask(
            run_id=r.run_id,
            run_title=r.run_title,
            procedure_id=r.procedure_id,
            procedure_title=r.procedure_title,
            step_id=r.step_id,
            key=r.key,
            title=r.title,
            kind=r.kind,
            status=r.status,
            assignee_id=r.assignee_id,
            role=r.role,
            ready_at=r.ready_at,
            due_at=r.due_at,
            sla=sla_state(r.ready_at, r.due_at, now),
            position=positions.get(r.version_id, {}).get(r.key),
            step_count=counts.get(r.version_id),
        )
        for r in rows
    ]


async def task_counts(db: AsyncSession, actor: Actor, filters: BoardFilters | None = None) -> TaskCounts:
    """How many of the caller's open steps each view holds (with the procedure and search filters)."""
    filters = filters or BoardFilters()
    params = _params(_tenant(db), actor, filters, utcnow())
    (rows,) = await _rows(db, _counts_statement(bool(_search(filters))), params=params)
    return _counts_of(rows, filters.procedure_id)


def _counts_of(rows: list[Any], procedure_id: uuid.UUID | None) -> TaskCounts:
    chosen = [r for r in rows if procedure_id is None or r.procedure_id == procedure_id]
    return TaskCounts(
        all=sum(r.all for r in chosen),
        mine=sum(r.mine for r in chosen),
        claimable=sum(r.claimable for r in chosen),
        overdue=sum(r.overdue for r in chosen),
    )


async def task_board(
    db: AsyncSession, actor: Actor, filters: BoardFilters, *, page: int = 1, per_page: int = 20
) -> TaskBoard:
    """One page of the caller's board, most urgent first, with the counts of every view."""
    now = utcnow()
    params = _params(_tenant(db), actor, filters, now)
    params.update(offset=(max(1, page) - 1) * per_page, limit=per_page + 1)
    searching = bool(_search(filters))
    rows, counts = await _rows(
        db,
        _board_statement(filters.view, filters.procedure_id is not None, searching),
        _counts_statement(searching),
        params=params,
    )
    tasks = await _tasks_of(db, rows[:per_page], now)
    procedures_of_tasks = sorted(((r.procedure_id, r.title) for r in counts), key=lambda p: p[1])
    return TaskBoard(
        tasks=tasks,
        has_more=len(rows) > per_page,
        counts=_counts_of(counts, filters.procedure_id),
        procedures=procedures_of_tasks,
        now=now,
    )


async def board_task(db: AsyncSession, run_id: uuid.UUID, step_id: int) -> BoardTask | None:
    """One step of the tenant's runs as a board card (whoever holds it), None if there is none."""
    params = {"tenant_id": _tenant(db), "run_id": run_id, "step_id": step_id}
    (rows,) = await _rows(db, _one_statement(), params=params)
    tasks = await _tasks_of(db, rows, utcnow())
    return tasks[0] if tasks else None


# ---------------------------------------------------------------- the dashboard's overview

_exceptions = RunException.__table__


@dataclass(frozen=True)
class OpenException:
    run_id: uuid.UUID
    run_title: str
    label: str  # the exception kind's label in the procedure, else its key
    step_title: str | None
    raised_at: datetime


@dataclass(frozen=True)
class ProcedureLoad:
    procedure_id: uuid.UUID
    title: str
    running: int


async def open_exceptions(db: AsyncSession, *, limit: int = 5) -> list[OpenException]:
    """The tenant's newest open exceptions, with their run's title and their kind's label."""
    tenant_id = _tenant(db)
    query = (
        select(
            _exceptions.c.run_id,
            _exceptions.c.kind,
            _exceptions.c.raised_at,
            _runs.c.title.label("run_title"),
            _runs.c.version_id,
            _steps.c.title.label("step_title"),
        )
        .select_from(_exceptions)
        .join(_runs, and_(_runs.c.tenant_id == _exceptions.c.tenant_id, _runs.c.id == _exceptions.c.run_id))
        .outerjoin(
            _steps,
            and_(
                _steps.c.tenant_id == _exceptions.c.tenant_id,
                _steps.c.run_id == _exceptions.c.run_id,
                _steps.c.step_id == _exceptions.c.step_id,
            ),
        )
        .where(_exceptions.c.tenant_id == tenant_id, _exceptions.c.status == "open")
        .order_by(_exceptions.c.raised_at.desc())
        .limit(limit)
    )
    found: list[OpenException] = []
    (rows,) = await _rows(db, query)
    for row in rows:
        label = row.kind
        try:
            definition = await procedures.definition_by_version_id(db, row.version_id)
        except NotFound:
            definition = None
        if definition is not None:
            kinds = (k for s in definition.steps if isinstance(s, HUMAN_STEPS) for k in s.exceptions)
            label = next((k.label for k in kinds if k.key == row.kind), row.kind)
        found.append(OpenException(row.run_id, row.run_title, label, row.step_title, row.raised_at))
    return found


async def runs_in_flight(db: AsyncSession) -> list[ProcedureLoad]:
    """How many runs of each procedure are running, busiest first."""
    tenant_id = _tenant(db)
    running = func.count().label("running")
    query = (
        select(_runs.c.procedure_id, _procedures.c.title, running)
        .select_from(_runs)
        .join(_procedures, and_(_procedures.c.tenant_id == _runs.c.tenant_id, _procedures.c.id == _runs.c.procedure_id))
        .where(_runs.c.tenant_id == tenant_id, _runs.c.status == RunStatus.RUNNING.value)
        .group_by(_runs.c.procedure_id, _procedures.c.title)
        .order_by(running.desc(), _procedures.c.title)
    )
    (rows,) = await _rows(db, query)
    return [ProcedureLoad(r.procedure_id, r.title, int(r.running)) for r in rows]
