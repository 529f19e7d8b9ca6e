"""The one way a tenant's work outside a request carries its tenant: services.broker.tenant_session
(actors, outbox subscribers, timers, commands) and the tenant_actor decorator built on it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import dramatiq
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit.service import list_events, record_change
from services.broker import tenant_actor, tenant_session
from tenants.context import current_tenant_id
from tenants.isolation import session_tenant_id
from tests.conftest import World


async def _tenant(world: World) -> uuid.UUID:
    _api, body = await world.signup()
    return uuid.UUID(body["tenant"]["id"])


async def _subjects(tenant_id: uuid.UUID) -> list[str]:
    async with tenant_session(tenant_id) as db:
        return [e.subject_id for e in await list_events(db, limit=100) if e.subject_type == "probe"]


async def test_a_tenant_session_puts_the_tenant_in_context_and_binds_one_transaction(world: World) -> None:
    a, b = await _tenant(world), await _tenant(world)
    assert current_tenant_id() is None
    async with tenant_session(a) as db:
        assert current_tenant_id() == a and session_tenant_id(db.sync_session) == a
        await record_change(db, actor_id=None, action="probe.done", subject_type="probe", subject_id="kept")
    assert current_tenant_id() is None
    with pytest.raises(RuntimeError):
        async with tenant_session(a) as db:
            await record_change(db, actor_id=None, action="probe.done", subject_type="probe", subject_id="lost")
            raise RuntimeError("the work failed")
    assert current_tenant_id() is None
    assert await _subjects(a) == ["kept"]
    assert await _subjects(b) == []  # the ORM criteria (and, on PostgreSQL, RLS) keep B apart


async def test_a_tenant_actor_runs_in_a_transaction_of_the_tenant_its_message_names(world: World) -> None:
    a, b = await _tenant(world), await _tenant(world)
    queue = f"tenant-actor-test-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[Any, ...]] = []

    async def note(db: AsyncSession, subject: str, *, fail: bool = False) -> None:
        seen.append((session_tenant_id(db.sync_session), current_tenant_id(), subject))
        await record_change(db, actor_id=None, action="probe.done", subject_type="probe", subject_id=subject)
        if fail:
            raise RuntimeError("the work failed")

    note.__name__ = note.__qualname__ = f"note_{queue.replace('-', '_')}"
    actor = tenant_actor(note, queue_name=queue, max_retries=0)
    actor.send(str(a), "positional")
    actor.send_with_options(kwargs={"tenant_id": str(b), "subject": "by-name"})
    actor.send_with_options(args=(str(a), "rolled-back"), kwargs={"fail": True})
    await asyncio.to_thread(dramatiq.get_broker().join, queue, timeout=30_000, fail_fast=False)
    assert sorted(seen, key=lambda s: s[2]) == [(b, b, "by-name"), (a, a, "positional"), (a, a, "rolled-back")]
    assert await _subjects(a) == ["positional"]
    assert await _subjects(b) == ["by-name"]
