"""My tasks: the open steps a member is to do (or may claim) across runs.

One indexed query over ``step_instances``, soonest due first, with keyset pagination.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.sops.engine import Actor
from services.sops.runs.models import StepInstance
from services.sops.runs.state import (
    MAX_PAGE,
    TASK_STATUSES,
    _as_datetime,
    _decode_cursor,
    _encode_cursor,
    _role,
)
from services.validation import INT32_MAX
from tenants.base import as_uuid, utcnow
from tenants.errors import FieldProblem, Forbidden, ValidationProblem
from tenants.isolation import session_tenant_id
from tenants.models import Role

_steps = StepInstance.__table__
_TASK_COLUMNS = (
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


_CUSTOM_PLANS = text("set local plan_cache_mode = force_custom_plan")
_CUSTOM_PLANS_SET = "custom_plans_transaction"


async def custom_plans(db: AsyncSession) -> AsyncConnection:
    """The session's connection, its transaction told to plan each statement for its values.

    asyncpg prepares every statement, and after five runs Postgres may keep a generic plan, made
    without the parameters' values: for My tasks it estimates one row per (tenant, assignee), seeks
    on those two columns only and filters the statuses, reading the caller's whole finished history
    (60 times slower with 10,000 done steps). A plan made for the values seeks the open rows only;
    planning it costs a fraction of a millisecond. The setting lasts until the transaction ends, so
    it is sent once per transaction (a page reading several lists pays one round trip for it); in a
    savepoint, which could roll it back, once more.
    """
    connection = await db.connection()
    if connection.dialect.name == "postgresql":
        session = db.sync_session
        transaction = session.get_nested_transaction() or session.get_transaction()
        if db.info.get(_CUSTOM_PLANS_SET) is not transaction:
            await connection.execute(_CUSTOM_PLANS)
            db.info[_CUSTOM_PLANS_SET] = transaction
    return connection


@dataclass(frozen=True)
class TaskFilters:
    procedure_id: uuid.UUID | None = None
    status: str | None = None
    overdue: bool = False
    due_before: datetime | None = None
    include_claimable: bool = False


def assigned_to(actor: Actor) -> Any:
    """Steps assigned to the actor."""
    return _steps.c.assignee_id == actor.user_id


def claimable_roles(actor: Actor) -> list[str]:
    """The roles whose unassigned steps the actor may claim: theirs and those below (a manager may
    claim a member's step)."""
    return [r.value for r in Role if _role(actor).at_least(r)]


def claimable_by(actor: Actor) -> Any:
    """Unassigned steps the actor may claim."""
    return and_(_steps.c.assignee_id.is_(None), _steps.c.role.in_(claimable_roles(actor)))


def my_tasks_query(
    tenant_id: uuid.UUID, actor: Actor, filters: TaskFilters, *, cursor: str | None = None, limit: int = 50
) -> Select[Any]:
    """The "my tasks" statement: one indexed query with the tenant named explicitly (it runs as
    Core on the session's connection, which lock 1 does not rewrite; lock 2 still applies)."""
    statuses = (filters.status,) if filters.status else TASK_STATUSES
    mine = assigned_to(actor)
    if filters.include_claimable:
        mine = or_(mine, claimable_by(actor))
    query = (
        select(*_TASK_COLUMNS)
        .where(_steps.c.tenant_id == tenant_id, mine, _steps.c.status.in_(statuses))
        .order_by(_steps.c.due_at.asc().nulls_last(), _steps.c.run_id, _steps.c.step_id)
        .limit(limit + 1)
    )
    if filters.procedure_id is not None:
        query = query.where(_steps.c.procedure_id == filters.procedure_id)
    if filters.overdue:
        query = query.where(_steps.c.due_at < utcnow())
    if filters.due_before is not None:
        query = query.where(_steps.c.due_at < filters.due_before)
    if cursor:
        query = query.where(_after_task(_decode_cursor(cursor)))
    return query


async def my_tasks(
    db: AsyncSession, actor: Actor, filters: TaskFilters, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[Any], str | None]:
    """The caller's open steps across runs, soonest due first (no due time last), then by id."""
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise Forbidden("Choose a workspace first.", code="no_tenant_selected")
    limit = max(1, min(limit, MAX_PAGE))
    query = my_tasks_query(tenant_id, actor, filters, cursor=cursor, limit=limit)
    connection = await custom_plans(db)
    rows = list((await connection.execute(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor([last.due_at.isoformat() if last.due_at else None, str(last.run_id), last.step_id])
    return rows[:limit], next_cursor


def _after_task(values: list[Any]) -> Any:
    # The step number goes into SQL: beyond its integer column it would fail on PostgreSQL alone.
    if (
        len(values) != 3
        or not isinstance(values[2], int)
        or not 1 <= values[2] <= INT32_MAX
        or as_uuid(values[1]) is None
    ):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        )
    due, run_id, step_id = _as_datetime(values[0]), as_uuid(values[1]), values[2]
    same_due_later = or_(_steps.c.run_id > run_id, and_(_steps.c.run_id == run_id, _steps.c.step_id > step_id))
    if due is None:
        return and_(_steps.c.due_at.is_(None), same_due_later)
    return or_(
        _steps.c.due_at > due,
        and_(_steps.c.due_at == due, same_due_later),
        _steps.c.due_at.is_(None),
    )
