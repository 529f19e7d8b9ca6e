"""Numbering for plugins: gapless sequences per tenant, optionally keyed."""

from __future__ import annotations

from guiju_sdk.context import check_sequence_name
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.statements import insert_ignoring_conflicts
from services.marketplace.models import PluginSequence, PluginSequenceKey
from tenants.base import utcnow
from tenants.isolation import session_tenant_id


async def next_number(db: AsyncSession, plugin: str, sequence: str, *, key: str | None = None) -> int:
    """The next number of ``plugin``'s ``sequence`` in the session's tenant, or the number ``key``
    was given before. Gapless: the sequence's row stays locked until the transaction ends, so a
    rolled-back action gives its number back and concurrent callers wait their turn."""
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise RuntimeError("next_number needs a tenant-scoped session")
    check_sequence_name("sequence", sequence)
    check_sequence_name("key", key)
    at = {"tenant_id": tenant_id, "plugin": plugin, "name": sequence}
    await insert_ignoring_conflicts(
        db, PluginSequence, [{**at, "last_number": 0, "created_at": utcnow()}], conflict=tuple(at)
    )
    row = await db.scalar(
        select(PluginSequence)
        .filter_by(**at)
        .with_for_update()
        .execution_options(populate_existing=True)  # the locked row's number, not a remembered one
    )
    assert row is not None  # inserted above, and sequences are never deleted while a tenant lives
    if key is not None:
        given = await db.scalar(select(PluginSequenceKey.number).filter_by(**at, key=key))
        if given is not None:
            return int(given)
    row.last_number += 1
    if key is not None:
        db.add(PluginSequenceKey(**at, key=key, number=row.last_number))
    await db.flush()
    return row.last_number
