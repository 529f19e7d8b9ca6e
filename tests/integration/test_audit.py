"""The audit trail: a hash chain per tenant that finds altered and deleted events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.audit.models import AuditEvent, AuditHead
from services.audit.service import GENESIS_HASH, event_hash, list_events, record_change, verify_chain
from services.cli import main
from services.db import open_session
from tests.conftest import Backend, World


async def append(tenant_id: uuid.UUID, count: int, *, start: int = 1) -> None:
    for n in range(start, start + count):
        async with open_session(tenant_id) as db:
            await record_change(
                db,
                actor_id=uuid.UUID(int=n),
                action="record.updated",
                subject_type="record",
                subject_id=f"rec-{n}",
                before={"n": n - 1, "when": datetime(2026, 1, n, tzinfo=UTC)},
                after={"n": n, "who": uuid.UUID(int=n), "tags": ["a", "b"], "price": 12.5},
            )


async def verify(tenant_id: uuid.UUID) -> Any:
    async with open_session(tenant_id) as db:
        return await verify_chain(db, tenant_id)


async def cli_verify(slug: str) -> Result:
    # The command runs its own event loop, so it goes to a thread.
    return await asyncio.to_thread(CliRunner().invoke, main, ["audit", "verify", "--tenant", slug])


@pytest.fixture
async def admin_engine(backend: Backend) -> AsyncIterator[AsyncEngine]:
    """The migration role: what someone with direct database access could do, bypassing the app."""
    engine = create_async_engine(backend.admin_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def new_tenant(world: World) -> tuple[uuid.UUID, str, Any]:
    api, body = await world.signup()
    return uuid.UUID(body["tenant"]["id"]), body["tenant"]["slug"], api


async def test_appends_form_a_chain(world: World) -> None:
    tenant_id, slug, _api = await new_tenant(world)
    await append(tenant_id, 3)
    async with open_session(tenant_id) as db:
        events = sorted(await list_events(db, limit=10), key=lambda e: e.seq)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    # UUIDs and datetimes are stored as their JSON forms, and the stored form is what was hashed.
    assert events[1].after == {"n": 2, "who": str(uuid.UUID(int=2)), "tags": ["a", "b"], "price": 12.5}
    assert events[1].before == {"n": 1, "when": "2026-01-02T00:00:00Z"}
    for e in events:
        assert e.hash == event_hash(
            tenant_id=tenant_id,
            seq=e.seq,
            occurred_at=e.created_at,
            actor_id=e.actor_id,
            action=e.action,
            subject_type=e.subject_type,
            subject_id=e.subject_id,
            before=e.before,
            after=e.after,
            prev_hash=e.prev_hash,
        )
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.head_seq, result.head_hash) == (True, 3, 3, events[-1].hash)
    cli = await cli_verify(slug)
    assert cli.exit_code == 0, cli.output
    assert f"audit chain of {slug} is intact: 3 event(s)" in cli.output


async def test_an_empty_chain_is_intact_and_an_unknown_tenant_is_refused(world: World) -> None:
    tenant_id, slug, _api = await new_tenant(world)
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.head_seq) == (True, 0, None)
    assert (await cli_verify(slug)).exit_code == 0
    unknown = await cli_verify("no-such-tenant")
    assert unknown.exit_code == 2
    assert "no tenant with slug" in unknown.output


async def test_record_change_needs_a_tenant(world: World) -> None:
    from tenants.context import TenantContextError

    with pytest.raises(TenantContextError):
        async with open_session(system=True) as db:
            await record_change(db, actor_id=None, action="x.y", subject_type="x", subject_id="1")


@pytest.mark.parametrize("column", ["after", "before", "action", "actor_id", "created_at"])
async def test_an_altered_event_is_found(world: World, admin_engine: AsyncEngine, column: str) -> None:
    tenant_id, slug, _api = await new_tenant(world)
    await append(tenant_id, 4)
    forged: dict[str, Any] = {
        "after": {"n": 999},
        "before": None,
        "action": "record.created",
        "actor_id": uuid.UUID(int=77),
        "created_at": datetime(2020, 1, 1, tzinfo=UTC),
    }
    async with admin_engine.begin() as conn:
        changed = await conn.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq == 2)
            .values({column: forged[column]})
        )
        assert changed.rowcount == 1
    result = await verify(tenant_id)
    assert not result.intact
    assert result.first_broken_seq == 2
    assert [(p.kind, p.seq) for p in result.problems] == [("altered", 2)]
    cli = await cli_verify(slug)
    assert cli.exit_code == 1
    assert "BROKEN" in cli.output
    assert "seq 2: altered" in cli.output


async def test_a_rehashed_event_breaks_the_next_link(world: World, admin_engine: AsyncEngine) -> None:
    """Someone who recomputes an altered event's hash is caught by its successor's link."""
    tenant_id, _slug, _api = await new_tenant(world)
    await append(tenant_id, 3)
    async with open_session(tenant_id) as db:
        event = (await db.scalars(select(AuditEvent).where(AuditEvent.seq == 2))).one()
        forged_hash = event_hash(
            tenant_id=tenant_id,
            seq=2,
            occurred_at=event.created_at,
            actor_id=event.actor_id,
            action=event.action,
            subject_type=event.subject_type,
            subject_id=event.subject_id,
            before=event.before,
            after={"n": -1},
            prev_hash=event.prev_hash,
        )
    async with admin_engine.begin() as conn:
        await conn.execute(
            update(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq == 2)
            .values(after={"n": -1}, hash=forged_hash)
        )
    result = await verify(tenant_id)
    assert [(p.kind, p.seq) for p in result.problems] == [("broken_link", 3)]


async def test_a_deleted_middle_event_is_found(world: World, admin_engine: AsyncEngine) -> None:
    tenant_id, slug, _api = await new_tenant(world)
    await append(tenant_id, 5)
    async with admin_engine.begin() as conn:
        await conn.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq.in_([2, 3])))
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.first_broken_seq) == (False, 3, 2)
    assert [(p.kind, p.seq) for p in result.problems] == [("missing", 2)]
    assert "2–3 deleted" in result.problems[0].message
    cli = await cli_verify(slug)
    assert cli.exit_code == 1
    assert "seq 2: missing" in cli.output


async def test_a_deleted_first_event_is_found(world: World, admin_engine: AsyncEngine) -> None:
    tenant_id, _slug, _api = await new_tenant(world)
    await append(tenant_id, 2)
    async with admin_engine.begin() as conn:
        await conn.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq == 1))
    result = await verify(tenant_id)
    assert [(p.kind, p.seq) for p in result.problems] == [("missing", 1)]


async def test_a_deleted_tail_is_found(world: World, admin_engine: AsyncEngine) -> None:
    tenant_id, slug, _api = await new_tenant(world)
    await append(tenant_id, 4)
    async with admin_engine.begin() as conn:
        await conn.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq == 4))
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.head_seq) == (False, 3, 4)
    assert [(p.kind, p.seq) for p in result.problems] == [("missing", 4)]
    cli = await cli_verify(slug)
    assert cli.exit_code == 1
    assert "seq 4: missing" in cli.output
    assert "end of the chain" in cli.output


async def test_a_rewound_head_with_a_deleted_tail_is_found(world: World, admin_engine: AsyncEngine) -> None:
    """Deleting the tail and moving the head back to the new last event still breaks the head's hash."""
    tenant_id, _slug, _api = await new_tenant(world)
    await append(tenant_id, 3)
    async with admin_engine.begin() as conn:
        await conn.execute(delete(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq == 3))
        await conn.execute(update(AuditHead).where(AuditHead.tenant_id == tenant_id).values(last_seq=2))
    result = await verify(tenant_id)
    assert [(p.kind, p.seq) for p in result.problems] == [("head_mismatch", 2)]


async def test_concurrent_appends_in_one_tenant_keep_a_gapless_chain(world: World) -> None:
    tenant_id, _slug, _api = await new_tenant(world)

    async def writer(n: int) -> None:
        async with open_session(tenant_id) as db:
            await record_change(
                db, actor_id=None, action="run.updated", subject_type="run", subject_id=str(n), after={"n": n}
            )
            await asyncio.sleep(0.01)  # hold the head a moment so the others queue behind it

    await asyncio.gather(*(writer(n) for n in range(12)))
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.first_seq, result.last_seq) == (True, 12, 1, 12)
    async with open_session(tenant_id) as db:
        subjects = {e.subject_id for e in await list_events(db, limit=100)}
    assert subjects == {str(n) for n in range(12)}


async def test_a_rolled_back_change_leaves_no_event(world: World) -> None:
    tenant_id, _slug, _api = await new_tenant(world)
    await append(tenant_id, 1)
    with pytest.raises(RuntimeError):
        async with open_session(tenant_id) as db:
            await record_change(db, actor_id=None, action="record.deleted", subject_type="record", subject_id="x")
            raise RuntimeError("the change failed")
    await append(tenant_id, 1, start=2)
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked, result.last_seq) == (True, 2, 2)


async def test_events_of_a_rolled_back_savepoint_are_dropped_and_the_rest_kept(world: World) -> None:
    tenant_id, _slug, _api = await new_tenant(world)
    async with open_session(tenant_id) as db:
        await record_change(db, actor_id=None, action="record.created", subject_type="record", subject_id="kept-1")
        with pytest.raises(RuntimeError):
            async with db.begin_nested():
                await record_change(
                    db, actor_id=None, action="record.updated", subject_type="record", subject_id="lost"
                )
                raise RuntimeError("the step failed")
        async with db.begin_nested():
            await record_change(db, actor_id=None, action="record.updated", subject_type="record", subject_id="kept-2")
    result = await verify(tenant_id)
    assert (result.intact, result.events_checked) == (True, 2)
    async with open_session(tenant_id) as db:
        events = await list_events(db, limit=10)
    assert [(e.seq, e.subject_id) for e in events] == [(2, "kept-2"), (1, "kept-1")]


async def test_tenants_have_independent_chains(world: World, admin_engine: AsyncEngine) -> None:
    a_id, _a_slug, _ = await new_tenant(world)
    b_id, b_slug, _ = await new_tenant(world)
    await append(a_id, 2)
    await append(b_id, 3)
    async with open_session(a_id) as db:
        assert [e.seq for e in await list_events(db, limit=10)] == [2, 1]
    async with open_session(b_id) as db:
        b_events = await list_events(db, limit=10)
        assert [e.seq for e in b_events] == [3, 2, 1]
        assert b_events[-1].prev_hash == GENESIS_HASH
    async with admin_engine.begin() as conn:
        await conn.execute(delete(AuditEvent).where(AuditEvent.tenant_id == a_id, AuditEvent.seq == 1))
    assert not (await verify(a_id)).intact
    assert (await verify(b_id)).intact
    assert (await cli_verify(b_slug)).exit_code == 0


async def test_the_audit_api_lists_pages_and_verifies_for_admins(world: World) -> None:
    tenant_id, _slug, owner = await new_tenant(world)
    await append(tenant_id, 5)
    first = await owner.get("/api/v1/audit", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["seq"] for e in page["items"]] == [5, 4]
    assert page["items"][0]["action"] == "record.updated"
    assert page["items"][0]["after"]["n"] == 5
    rest = (await owner.get("/api/v1/audit", params={"limit": 10, "before_seq": page["next_before_seq"]})).json()
    assert [e["seq"] for e in rest["items"]] == [3, 2, 1]
    assert rest["next_before_seq"] is None
    filtered = (await owner.get("/api/v1/audit", params={"subject_type": "record", "subject_id": "rec-3"})).json()
    assert [e["seq"] for e in filtered["items"]] == [3]
    assert (await owner.get("/api/v1/audit", params={"limit": 0})).status_code in (400, 422)
    verified = await owner.get("/api/v1/audit/verify")
    assert verified.status_code == 200
    assert verified.json()["intact"] is True
    assert verified.json()["events_checked"] == 5

    member, _ = await world.invite_and_join(owner, "member")
    assert (await member.get("/api/v1/audit")).status_code == 403
    assert (await member.get("/api/v1/audit/verify")).status_code == 403
