"""Re-binding a session mid-transaction, for the ORM criteria and for Postgres RLS alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from tenants.context import system_scope
from tenants.isolation import (
    SYSTEM_INFO_KEY,
    TENANT_INFO_KEY,
    apply_rls_settings,
    bind_session,
    session_is_system,
    session_tenant_id,
)


async def _reapply(session: AsyncSession) -> None:
    if session.in_transaction():
        connection = await session.connection()
        await connection.run_sync(lambda conn: apply_rls_settings(session.sync_session, conn))


async def bind_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Bind ``session`` to ``tenant_id`` from now on, in this transaction too."""
    bind_session(session.sync_session, tenant_id)
    await _reapply(session)


@asynccontextmanager
async def system_reads(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Let the block query across tenants on ``session``, then restore its binding.

    Every use is a reviewed exception to tenant isolation (for example: the workspaces a user
    belongs to, which the login screen lists).
    """
    before = (session_tenant_id(session.sync_session), session_is_system(session.sync_session))
    with system_scope():
        bind_session(session.sync_session, None, system=True)
        await _reapply(session)
        try:
            yield session
        finally:
            session.sync_session.info[TENANT_INFO_KEY] = before[0]
            session.sync_session.info[SYSTEM_INFO_KEY] = before[1]
            await _reapply(session)
