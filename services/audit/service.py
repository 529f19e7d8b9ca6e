"""The audit trail: every change to collections, records, procedures and runs, hash-chained per tenant.

Each event's hash is SHA-256 over a canonical JSON encoding (msgspec, dict keys sorted) of the list
``[tenant_id, seq, occurred_at, actor_id, action, subject_type, subject_id, before, after, prev_hash]``;
the first event of a tenant links to ``GENESIS_HASH``. Changing any stored field of an event breaks
its hash; deleting an event leaves a gap in ``seq``; deleting the last events leaves the tenant's
head pointing past the end. :func:`verify_chain` finds all three.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.audit.models import AuditEvent, AuditHead
from services.db.commit_hooks import BeforeCommit
from tenants.base import new_id, utcnow
from tenants.context import TenantContextError
from tenants.isolation import session_tenant_id

GENESIS_HASH = "0" * 64
VERIFY_BATCH = 1000
MAX_REPORTED_PROBLEMS = 100

_EVENT_COLUMNS = (
    AuditEvent.tenant_id,
    AuditEvent.seq,
    AuditEvent.created_at,
    AuditEvent.actor_id,
    AuditEvent.action,
    AuditEvent.subject_type,
    AuditEvent.subject_id,
    AuditEvent.before,
    AuditEvent.after,
    AuditEvent.prev_hash,
    AuditEvent.hash,
)

ProblemKind = Literal["altered", "broken_link", "missing", "head_mismatch"]


class AuditProblem(msgspec.Struct, frozen=True):
    """One thing wrong with a chain: ``seq`` is the first event concerned."""

    kind: ProblemKind
    seq: int
    message: str


class AuditVerification(msgspec.Struct):
    """The result of walking one tenant's chain."""

    tenant_id: uuid.UUID
    intact: bool
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    head_seq: int | None
    head_hash: str | None
    first_broken_seq: int | None
    problems: list[AuditProblem]


# ---------------------------------------------------------------- canonical form


def _normalise(value: Any) -> Any:
    """The JSON value as the database will give it back (UUIDs, datetimes and structs become JSON)."""
    return None if value is None else msgspec.json.decode(msgspec.json.encode(value))


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def _timestamp(moment: datetime) -> str:
    # A fixed format (always microseconds, always Z) so the same instant always hashes the same.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *,
    tenant_id: uuid.UUID,
    seq: int,
    occurred_at: datetime,
    actor_id: uuid.UUID | None,
    action: str,
    subject_type: str,
    subject_id: str,
    before: Any,
    after: Any,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of an event's canonical encoding."""
    return _hash_parts(
        _prefix(tenant_id, occurred_at, actor_id, action, subject_type, subject_id),
        _canonical(before),
        _canonical(after),
        seq,
        prev_hash,
    )


def _prefix(
    tenant_id: uuid.UUID,
    occurred_at: datetime,
    actor_id: uuid.UUID | None,
    action: str,
    subject_type: str,
    subject_id: str,
) -> tuple[str, str, str | None, str, str, str]:
    return (
        str(tenant_id),
        _timestamp(occurred_at),
        str(actor_id) if actor_id else None,
        action,
        subject_type,
        subject_id,
    )


def _hash_parts(
    prefix: tuple[str, str, str | None, str, str, str], before: bytes, after: bytes, seq: int, prev_hash: str
) -> str:
    tenant, occurred, actor, action, subject_type, subject_id = prefix
    encoded = _canonical(
        [
            tenant,
            seq,
            occurred,
            actor,
            action,
            subject_type,
            subject_id,
            msgspec.Raw(before),
            msgspec.Raw(after),
            prev_hash,
        ]
    )
    return hashlib.sha256(encoded).hexdigest()


def _stored_hash(event: Any) -> str:
    """The hash an event (a row of ``audit_events``) should carry, from its stored fields."""
    return event_hash(
        tenant_id=event.tenant_id,
        seq=event.seq,
        occurred_at=event.created_at,
        actor_id=event.actor_id,
        action=event.action,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        before=event.before,
        after=event.after,
        prev_hash=event.prev_hash,
    )


# ---------------------------------------------------------------- appending

# Events wait in the session until its transaction commits, and are chained then: the tenant's head
# row is locked only for the moment of the commit, not for the rest of the request, so concurrent
# writers in one tenant queue for a few milliseconds instead of for each other's whole request.
# A rolled-back savepoint drops the events recorded in it (services.db.commit_hooks).


@dataclass(frozen=True)
class _PendingEvent:
    tenant_id: uuid.UUID
    event_id: uuid.UUID
    occurred_at: datetime
    actor_id: uuid.UUID | None
    action: str
    subject_type: str
    subject_id: str
    before: Any
    after: Any
    prefix: tuple[str, str, str | None, str, str, str]
    before_bytes: bytes
    after_bytes: bytes


def _lock_head(session: Session, tenant_id: uuid.UUID) -> tuple[int, str]:
    """Lock the tenant's head until the transaction ends, creating it on first use.

    ``SELECT … FOR UPDATE`` first; only a new tenant inserts (or-nothing, so two first appends
    racing both end up queued on the one row). On SQLite the database's write lock, taken first,
    serialises appends.
    """
    locked = select(AuditHead.last_seq, AuditHead.last_hash).where(AuditHead.tenant_id == tenant_id).with_for_update()
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no FOR UPDATE, and its driver begins a transaction only at the first write: a
        # plain read here could see a head another commit is about to move. A no-op write takes the
        # database's write lock first, so the read below is the head as the last commit left it.
        session.execute(
            update(AuditHead)
            .where(AuditHead.tenant_id == tenant_id)
            .values(last_seq=AuditHead.last_seq)
            .execution_options(synchronize_session=False)
        )
    row = session.execute(locked).one_or_none()
    if row is None:
        upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        now = utcnow()
        session.execute(
            upsert(AuditHead)
            .values(tenant_id=tenant_id, last_seq=0, last_hash=GENESIS_HASH, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        row = session.execute(locked).one()
    return int(row.last_seq), str(row.last_hash)


async def record_change(
    db: AsyncSession,
    *,
    actor_id: uuid.UUID | None,
    action: str,
    subject_type: str,
    subject_id: uuid.UUID | str,
    before: Any = None,
    after: Any = None,
) -> None:
    """Record an audit event for the session's tenant, written and chained when the caller's
    transaction commits (and dropped if it, or the savepoint it was recorded in, rolls back).

    ``action`` is e.g. ``record.updated``; ``before``/``after`` are JSON-able (msgspec encodes
    UUIDs, datetimes and structs).
    """
    session = db.sync_session
    tenant_id = session_tenant_id(session)
    if tenant_id is None:
        raise TenantContextError("record_change needs a session bound to a tenant")
    occurred_at = utcnow()
    subject = str(subject_id)
    before_value, after_value = _normalise(before), _normalise(after)
    _PENDING_EVENTS.add(
        session,
        _PendingEvent(
            tenant_id=tenant_id,
            event_id=new_id(),
            occurred_at=occurred_at,
            actor_id=actor_id,
            action=action,
            subject_type=subject_type,
            subject_id=subject,
            before=before_value,
            after=after_value,
            prefix=_prefix(tenant_id, occurred_at, actor_id, action, subject_type, subject),
            before_bytes=_canonical(before_value),
            after_bytes=_canonical(after_value),
        ),
    )


def _chain_pending_events(session: Session, pending: list[_PendingEvent]) -> None:
    """Chain and write the events the transaction recorded, just before it commits."""
    by_tenant: dict[uuid.UUID, list[_PendingEvent]] = {}
    for entry in pending:
        by_tenant.setdefault(entry.tenant_id, []).append(entry)
    for tenant_id, entries in by_tenant.items():
        last_seq, last_hash = _lock_head(session, tenant_id)
        rows = []
        for entry in entries:
            last_seq += 1
            digest = _hash_parts(entry.prefix, entry.before_bytes, entry.after_bytes, last_seq, last_hash)
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "seq": last_seq,
                    "id": entry.event_id,
                    "created_at": entry.occurred_at,
                    "actor_id": entry.actor_id,
                    "action": entry.action,
                    "subject_type": entry.subject_type,
                    "subject_id": entry.subject_id,
                    "before": entry.before,
                    "after": entry.after,
                    "prev_hash": last_hash,
                    "hash": digest,
                }
            )
            last_hash = digest
        session.execute(insert(AuditEvent), rows)
        session.execute(
            update(AuditHead)
            .where(AuditHead.tenant_id == tenant_id)
            .values(last_seq=last_seq, last_hash=last_hash, updated_at=utcnow())
            # This module reads the head by columns, never as objects: nothing to synchronise, and the
            # default ("auto") evaluates the criteria in Python at every commit.
            .execution_options(synchronize_session=False)
        )


_PENDING_EVENTS = BeforeCommit[_PendingEvent]("audit.events", _chain_pending_events)


# ---------------------------------------------------------------- reading and verifying


async def list_events(
    db: AsyncSession,
    *,
    subject_type: str | None = None,
    subject_id: uuid.UUID | str | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> list[AuditEvent]:
    """The session tenant's events, newest first; pass the last ``seq`` seen as ``before_seq`` for the next page."""
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if subject_type is not None:
        query = query.where(AuditEvent.subject_type == subject_type)
    if subject_id is not None:
        query = query.where(AuditEvent.subject_id == str(subject_id))
    if before_seq is not None:
        query = query.where(AuditEvent.seq < before_seq)
    return list(await db.scalars(query))


async def verify_chain(db: AsyncSession, tenant_id: uuid.UUID) -> AuditVerification:
    """Walk ``tenant_id``'s events in ``seq`` order, recomputing every hash and link.

    Reports altered events (content no longer matches the hash), broken links (an event rehashed
    after a change no longer matches its successor's ``prev_hash``), gaps (deleted events) and a
    head that does not match the last event (deleted tail).
    """
    problems: list[AuditProblem] = []

    def report(kind: ProblemKind, seq: int, message: str) -> None:
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append(AuditProblem(kind=kind, seq=seq, message=message))

    checked = 0
    first_seq: int | None = None
    expected_seq, expected_prev = 1, GENESIS_HASH
    last_seq: int | None = None
    last_hash = GENESIS_HASH
    while True:
        # Plain rows, not ORM objects: the caller's session keeps no identity map of a long chain.
        query = (
            select(*_EVENT_COLUMNS)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq > (last_seq or 0))
            .order_by(AuditEvent.seq)
            .limit(VERIFY_BATCH)
        )
        batch = list(await db.execute(query))
        for event in batch:
            checked += 1
            first_seq = event.seq if first_seq is None else first_seq
            if event.seq != expected_seq:
                missing = f"{expected_seq}" if event.seq == expected_seq + 1 else f"{expected_seq}–{event.seq - 1}"
                report("missing", expected_seq, f"event(s) {missing} deleted (seq jumps to {event.seq})")
            elif event.prev_hash != expected_prev:
                report("broken_link", event.seq, f"event {event.seq} does not link to event {event.seq - 1}")
            if _stored_hash(event) != event.hash:
                report("altered", event.seq, f"event {event.seq} ({event.action}) was altered after it was written")
            expected_seq, expected_prev = event.seq + 1, event.hash
            last_seq, last_hash = event.seq, event.hash
        if len(batch) < VERIFY_BATCH:
            break

    head = (
        await db.execute(select(AuditHead.last_seq, AuditHead.last_hash).where(AuditHead.tenant_id == tenant_id))
    ).one_or_none()
    head_seq = int(head.last_seq) if head else None
    head_hash = str(head.last_hash) if head else None
    if head is None:
        if checked:
            report("head_mismatch", last_seq or 0, "the chain's head record is missing")
    elif head_seq is not None and head_seq > (last_seq or 0):
        gone = f"{(last_seq or 0) + 1}" if head_seq == (last_seq or 0) + 1 else f"{(last_seq or 0) + 1}–{head_seq}"
        report("missing", (last_seq or 0) + 1, f"event(s) {gone} deleted from the end of the chain")
    elif head_seq != (last_seq or 0) or head_hash != last_hash:
        report("head_mismatch", last_seq or 0, f"the head (seq {head_seq}) does not match the last event")

    problems.sort(key=lambda p: p.seq)
    return AuditVerification(
        tenant_id=tenant_id,
        intact=not problems,
        events_checked=checked,
        first_seq=first_seq,
        last_seq=last_seq,
        head_seq=head_seq,
        head_hash=head_hash,
        first_broken_seq=problems[0].seq if problems else None,
        problems=problems,
    )
