"""Lock 1 of tenancy: the ORM adds the tenant criterion to every query of a tenant-scoped model.

A session is bound to one tenant (``session.info["tenant_id"]``) or opened in system scope
(``session.info["system"]``). Selects, updates and deletes of :class:`TenantScoped` models get
``tenant_id = :current`` added; inserts are stamped with the tenant; and a query of a tenant-scoped
model on a session bound to neither raises :class:`TenantContextError`, as does a Core statement
on a tenant table (no mapped class for the criterion to reach) on a tenant-bound session.

Lock 2 (Postgres Row-Level Security) is applied per transaction by :func:`apply_rls_settings`;
see ``services/db/migrations`` for the policies.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, SessionTransaction, mapped_column
from sqlalchemy.orm import with_loader_criteria as _with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.selectable import Select, TableClause
from sqlalchemy.sql.util import surface_selectables

from tenants.context import TenantContextError

TENANT_INFO_KEY = "tenant_id"
SYSTEM_INFO_KEY = "system"


class TenantScoped:
    """Mixin for tenant-owned tables: ``tenant_id`` leads the primary key.

    Subclasses declare their remaining primary-key columns after it, and lead every foreign key
    to another tenant-owned table, every unique constraint and every index with ``tenant_id``.
    """

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


def session_tenant_id(session: Session) -> uuid.UUID | None:
    value = session.info.get(TENANT_INFO_KEY)
    return value if isinstance(value, uuid.UUID) else None


def session_is_system(session: Session) -> bool:
    return bool(session.info.get(SYSTEM_INFO_KEY))


def bind_session(session: Session, tenant_id: uuid.UUID | None, *, system: bool = False) -> None:
    """Bind a session to a tenant (or to system scope) before its first query."""
    session.info[TENANT_INFO_KEY] = tenant_id
    session.info[SYSTEM_INFO_KEY] = system


def _is_tenant_scoped(mapper: Any) -> bool:
    return isinstance(mapper.class_, type) and issubclass(mapper.class_, TenantScoped)


def _tenant_tables() -> set[str]:
    return {getattr(cls, "__tablename__", "") for cls in TenantScoped.__subclasses__()} - {""}


def _table_names(from_: Any) -> set[str]:
    return {t.name for t in surface_selectables(from_) if isinstance(t, TableClause)}  # type: ignore[no-untyped-call]


def _uncovered_tenant_tables(statement: Any) -> frozenset[str]:
    """The tenant tables a select reaches only through its WHERE clause.

    ``with_loader_criteria`` reaches the entities a select names: its columns, ``select_from`` and
    joins. ``select(func.count()).where(Model.col == …)`` or ``exists().where(…)`` put the table in
    the FROM list without naming it, so it gets no tenant criterion. A table named by any select of
    the statement counts as named (a correlated subquery reads it through the enclosing select).
    """
    selects = [e for e in visitors.iterate(statement) if isinstance(e, Select)]
    named: set[str] = set()
    for select_ in selects:
        for from_ in (*select_.columns_clause_froms, *select_._from_obj):
            named |= _table_names(from_)
        for join in select_._setup_joins:
            target = inspect(join[0], raiseerr=False)
            mapper = getattr(target, "mapper", None)
            named |= {t.name for t in mapper.tables} if mapper is not None else _table_names(join[0])
    tenant_tables = _tenant_tables()
    return frozenset(
        from_.name
        for select_ in selects
        for from_ in select_.get_final_froms()
        if isinstance(from_, TableClause) and from_.name in tenant_tables and from_.name not in named
    )


# Statement shape (its cache key) → the tenant tables it leaves uncovered. Walking a statement costs
# more than running a small query; its shapes are few, so each is walked once.
_UNCOVERED: dict[Any, frozenset[str]] = {}
_UNCOVERED_LIMIT = 5_000


def _check_every_tenant_table_is_named(statement: Any) -> None:
    cache_key = statement._generate_cache_key()
    key = cache_key.key if cache_key is not None else None
    uncovered = _UNCOVERED.get(key) if key is not None else None
    if uncovered is None:
        uncovered = _uncovered_tenant_tables(statement)
        if key is not None:
            if len(_UNCOVERED) >= _UNCOVERED_LIMIT:
                _UNCOVERED.clear()
            _UNCOVERED[key] = uncovered
    if uncovered:
        raise TenantContextError(
            f"select reaches the tenant table(s) {', '.join(sorted(uncovered))} only through its WHERE "
            "clause, where the tenant criterion does not reach: name the model (select_from(Model), or "
            "select a column of it)"
        )


def _touches_tenant_table(statement: Any) -> bool:
    """Whether a statement reads or writes a tenant table, even through ``select_from`` or a join."""
    tenant_tables = _tenant_tables()
    tables: list[Any] = []
    if hasattr(statement, "table"):
        tables.append(statement.table)
    if hasattr(statement, "get_final_froms"):
        for from_ in statement.get_final_froms():
            tables.extend(surface_selectables(from_))  # type: ignore[no-untyped-call]
    return any(getattr(t, "name", None) in tenant_tables for t in tables)


@event.listens_for(Session, "do_orm_execute")
def _add_tenant_criteria(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # criteria were already applied to the parent statement
    session = state.session
    if session_is_system(session):
        return
    tenant_id = session_tenant_id(session)
    if tenant_id is None:
        if any(_is_tenant_scoped(m) for m in state.all_mappers) or _touches_tenant_table(state.statement):
            raise TenantContextError(
                "query of a tenant-scoped table with no tenant bound to the session "
                "(open a tenant session, or an explicit system_scope())"
            )
        return
    if not state.is_orm_statement and _touches_tenant_table(state.statement):
        # A Core statement (``select(Model.__table__)``, ``update(table)``) names no mapped class,
        # so the criterion below would not reach it, and on SQLite nothing else would stop it.
        raise TenantContextError(
            "Core statement on a tenant table through a tenant session gets no tenant criterion: query "
            "the mapped class, or run it with services.db.statements.execute_core naming the tenant itself"
        )
    if state.is_select:
        _check_every_tenant_table_is_named(state.statement)
    state.statement = state.statement.options(
        _with_loader_criteria(
            TenantScoped,
            lambda cls: cls.tenant_id == tenant_id,
            include_aliases=True,
            # tenant_id must stay a tracked closure variable: it becomes a bound parameter of the
            # cached statement, never a value baked into it.
        )
    )


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, flush_context: Any, instances: Any) -> None:
    system = session_is_system(session)
    tenant_id = session_tenant_id(session)
    for obj in session.new:
        if not isinstance(obj, TenantScoped):
            continue
        if obj.tenant_id is None:
            if tenant_id is None:
                raise TenantContextError(f"cannot insert {type(obj).__name__}: no tenant bound to the session")
            obj.tenant_id = tenant_id
        elif not system and obj.tenant_id != tenant_id:
            raise TenantContextError(f"cannot insert {type(obj).__name__} for another tenant")
    if not system:
        for obj in session.dirty:
            if isinstance(obj, TenantScoped) and obj.tenant_id != tenant_id:
                raise TenantContextError(f"cannot move {type(obj).__name__} to another tenant")


RLS_SETTINGS_SQL = text(
    "select set_config('app.tenant_id', :tenant_id, true), set_config('app.system_scope', :system, true)"
)


def apply_rls_settings(session: Session, connection: Connection) -> None:
    """Lock 2: tell Postgres, for this transaction only, which tenant it is serving.

    Bound parameters, transaction-local (``is_local = true``): never string-formatted, never
    session-wide, so a pooled connection carries nothing over to the next transaction.
    """
    if connection.dialect.name != "postgresql":
        return
    tenant_id = session_tenant_id(session)
    system = session_is_system(session)
    if tenant_id is None and not system and not session.info.get("_rls_applied"):
        # Nothing was ever set in this transaction, and the settings are transaction-local, so
        # they are already empty: skip the round trip.
        return
    session.info["_rls_applied"] = True
    connection.execute(
        RLS_SETTINGS_SQL,
        {"tenant_id": str(tenant_id) if tenant_id else "", "system": "on" if session_is_system(session) else "off"},
    )


@event.listens_for(Session, "after_begin")
def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    session.info.pop("_rls_applied", None)  # a new transaction starts with empty settings
    apply_rls_settings(session, connection)
