"""Statements for the paths that run per event, where SQLAlchemy's own overhead costs more CPU
than the database's round trip.

SQLAlchemy 2.0 compiles an ``INSERT … ON CONFLICT`` afresh on every execution (the dialects'
insert constructs carry no cache key): :func:`insert_ignoring_conflicts` renders the same SQL once
per shape as a ``text()`` statement with typed parameters, which the statement cache keeps.
:func:`execute_core` runs a Core statement on the session's connection, without the ORM's
per-statement work.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Executable, Select, Table, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from tenants.base import Base
from tenants.context import TenantContextError
from tenants.isolation import session_is_system, session_tenant_id

T = TypeVar("T")


@functools.lru_cache(maxsize=256)
def _insert_ignoring_conflicts_sql(
    table: Table, columns: tuple[str, ...], row_count: int, conflict: tuple[str, ...], returning: tuple[str, ...]
) -> Executable:
    # Identifiers come from the table's own metadata, never from data.
    unknown = [name for name in (*columns, *conflict, *returning) if name not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no columns {unknown}")
    values = ", ".join("(" + ", ".join(f":{column}_{n}" for column in columns) + ")" for n in range(row_count))
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values} "  # noqa: S608  (names checked above)
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    statement = text(sql).bindparams(
        *(bindparam(f"{column}_{n}", type_=table.c[column].type) for n in range(row_count) for column in columns)
    )
    result_columns: list[ColumnElement[Any]] = [table.c[name] for name in returning]
    return statement.columns(*result_columns) if returning else statement


async def insert_ignoring_conflicts(
    session: AsyncSession,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """``INSERT rows … ON CONFLICT (conflict) DO NOTHING [RETURNING returning]`` in one statement.

    Every row must name the same columns. Returns the ``returning`` values of the rows inserted
    (rows that hit the conflict are skipped silently). Works on Postgres and SQLite (3.35+).
    """
    if not rows:
        return []
    table = cast(Table, model.__table__)
    columns = tuple(rows[0])
    statement = _insert_ignoring_conflicts_sql(table, columns, len(rows), tuple(conflict), tuple(returning))
    params = {f"{column}_{n}": row[column] for n, row in enumerate(rows) for column in columns}
    result = await execute_core(session, statement, params)
    return [tuple(row) for row in result] if returning else []


async def execute_core(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
) -> CursorResult[Any]:
    """Run a Core statement in the session's transaction, on its connection.

    Pending ORM changes are flushed first, as ``session.execute`` would; what is skipped is the
    ORM's work per statement (its events, the tenant criteria it adds to ORM queries, its compile
    step), a large share of the CPU a short statement costs. So the statement must name its tenant
    itself, as a ``tenant_id`` condition or value bound to the ``tenant_id`` parameter. On a tenant
    session that parameter is filled from the session, never from a caller; a row or parameter set
    naming another tenant is refused. Postgres row-level security still applies, as the
    transaction's tenant settings are made when the session begins.
    """
    sync_session = session.sync_session
    tenant_id = session_tenant_id(sync_session)
    if tenant_id is not None and not session_is_system(sync_session):
        params = _bound_to_tenant(params, tenant_id)
    if session.new or session.dirty or session.deleted:
        await session.flush()
    connection = await session.connection()
    return await connection.execute(statement, params)


def _bound_to_tenant(
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, tenant_id: uuid.UUID
) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
    if params is None or isinstance(params, Mapping):
        params = params or {}
        if params.get("tenant_id", tenant_id) != tenant_id:
            raise TenantContextError("Core statement with another tenant's id on a tenant session")
        return {**params, "tenant_id": tenant_id}
    if any(row.get("tenant_id", tenant_id) != tenant_id for row in params):
        raise TenantContextError("Core statement with another tenant's rows on a tenant session")
    return params


async def one_or_raise(session: AsyncSession, query: Select[tuple[T]], missing: Exception, *, lock: bool = False) -> T:
    """The one row ``query`` finds (``SELECT … FOR UPDATE`` with ``lock``), or raise ``missing``."""
    found = await session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise missing
    return found
