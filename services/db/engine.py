"""Engines and sessions.

An async engine's connections belong to the event loop that opened them, and the embedded mode
runs the API and the in-process worker on different loops, so there is one :class:`Database` per
running loop. A session is always bound: to a tenant, or explicitly to system scope.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from services.settings import load_settings
from tenants.context import current_tenant_id, in_system_scope
from tenants.isolation import bind_session


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def begin_writing(session: AsyncSession) -> None:
    """Start ``session``'s transaction holding SQLite's write lock (``BEGIN IMMEDIATE``, waiting up
    to the busy timeout for another writer); nothing to do on PostgreSQL, which locks rows."""
    connection = await session.connection()
    if connection.dialect.name == "sqlite" and not connection.in_nested_transaction():
        driver = await connection.get_raw_connection()
        if not driver.driver_connection.in_transaction:  # type: ignore[union-attr]
            await connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=NullPool if ":memory:" not in url else None)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping (three extra round trips per checkout): stale connections are recycled instead,
    # and a connection that died anyway fails that one request, which the client may retry.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=True)

    def session(self, tenant_id: uuid.UUID | None = None, *, system: bool = False) -> AsyncSession:
        """A session bound to ``tenant_id`` (default: the tenant in context) or to system scope."""
        session = self.sessions()
        if system or (tenant_id is None and in_system_scope()):
            bind_session(session.sync_session, None, system=True)
        else:
            bind_session(session.sync_session, tenant_id or current_tenant_id())
        return session


_url_override: str | None = None
_default_settings: tuple[str, int] | None = None  # read once: the environment does not change under us
_databases: dict[tuple[int, str], Database] = {}


def set_database_url(url: str | None) -> None:
    """Point every later :func:`database` call at ``url`` (the CLI and tests use this)."""
    global _url_override
    _url_override = url


def database() -> Database:
    """The Database of the running event loop, created on first use."""
    global _default_settings
    if _url_override is None and _default_settings is None:
        settings = load_settings()
        _default_settings = (settings.database_url, settings.db_pool_size)
    url = _url_override or (_default_settings[0] if _default_settings else "")
    key = (id(asyncio.get_running_loop()), url)
    db = _databases.get(key)
    if db is None:
        db = Database(url, pool_size=_default_settings[1] if _default_settings else 10)
        _databases[key] = db
    return db


async def dispose_databases() -> None:
    """Close the engines of the running loop (at shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _databases if k[0] == loop_id]:
        await _databases.pop(key).engine.dispose()


@asynccontextmanager
async def open_session(tenant_id: uuid.UUID | None = None, *, system: bool = False) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed on success, rolled back on any error."""
    async with database().session(tenant_id, system=system) as session, session.begin():
        yield session
