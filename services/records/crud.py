"""Records: create, read, update and delete, with the same checks, event and audit whoever asks
(a member, an automation, a procedure's form step, a template's samples)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.db.statements import one_or_raise
from services.records.collections import _collection, _stored_defs
from services.records.models import Collection, Record, RecordUniqueValue
from services.records.schemas import RecordIn, RecordPatch
from services.records.values import (
    _duplicate,
    _emit,
    _entity_problem,
    _flush_unique,
    _reference_problems,
    _replace_unique_rows,
    _unique_problems,
    _unique_rows,
    coerce_values,
    visible_values,
)
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, NotFound, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


async def _record(db: AsyncSession, collection_id: uuid.UUID, record_id: uuid.UUID, *, lock: bool = False) -> Record:
    query = select(Record).where(
        Record.id == record_id, Record.collection_id == collection_id, Record.deleted_at.is_(None)
    )
    return await one_or_raise(db, query, NotFound("No such record.", code="record_not_found"), lock=lock)


async def create_record(db: AsyncSession, principal: Principal, collection_id: uuid.UUID, data: RecordIn) -> Record:
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    return await _create(db, collection, data.values, data.entity_id, principal.user_id)


async def create_record_values(
    db: AsyncSession,
    collection_id: uuid.UUID,
    values: Mapping[str, Any],
    actor_id: uuid.UUID | None,
    entity_id: uuid.UUID | None = None,
) -> Record:
    """Create a record on the platform's behalf (an automation): same checks, event and audit."""
    collection = await _collection(db, collection_id)
    return await _create(db, collection, values, entity_id, actor_id)


async def create_records_values(
    db: AsyncSession,
    collection_id: uuid.UUID,
    rows: list[Mapping[str, Any]],
    actor_id: uuid.UUID | None,
    *,
    sample: bool = False,
) -> list[Record]:
    """:func:`create_record_values` for several records of one collection (a template's samples,
    marked ``sample``): the collection is read once; each record is checked, stored, announced and
    audited as one."""
    collection = await _collection(db, collection_id)
    created: list[Record] = []
    for index, values in enumerate(rows):
        try:
            created.append(await _create(db, collection, values, None, actor_id, sample=sample))
        except ProblemError as exc:
            exc.errors = [p.moved(f"/{index}{p.pointer}") for p in exc.errors or []]
            raise
    return created


async def _create(
    db: AsyncSession,
    collection: Collection,
    raw: Mapping[str, Any],
    entity_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
    *,
    sample: bool = False,
) -> Record:
    defs = _stored_defs(collection)
    values, problems = coerce_values(defs, raw, partial=False)
    entity_problem = await _entity_problem(db, collection, entity_id, required=True)
    problems += [entity_problem] if entity_problem else []
    problems += await _reference_problems(db, defs, [("/values", values)])
    if problems:
        raise ValidationProblem(errors=problems)
    duplicates = await _unique_problems(db, collection.id, defs, values, None)
    if duplicates:
        raise _duplicate(duplicates)
    now = utcnow()
    record = Record(
        id=new_id(),
        collection_id=collection.id,
        entity_id=entity_id,
        values=values,
        version=1,
        sample=sample,
        created_by=actor_id,
        updated_by=actor_id,
        created_at=now,
        updated_at=now,
    )
    db.add(record)
    await db.flush()
    db.add_all(rows := _unique_rows(collection.id, defs, record.id, values))
    await _flush_unique(db, [r.field_key for r in rows])
    await _emit(db, events.RECORD_CREATED, collection, record, defs, None, visible_values(defs, values), actor_id)
    return record


async def read_record(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, record_id: uuid.UUID
) -> tuple[Collection, Record]:
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    return collection, await _record(db, collection_id, record_id)


async def get_record_values(db: AsyncSession, collection_id: uuid.UUID, record_id: uuid.UUID) -> dict[str, Any]:
    """The visible values of a record (every visible field; missing ones null)."""
    collection = await _collection(db, collection_id)
    record = await _record(db, collection_id, record_id)
    return visible_values(_stored_defs(collection), record.values)


async def update_record(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, record_id: uuid.UUID, data: RecordPatch
) -> Record:
    principal.require_role(Role.MEMBER)
    return await _update(db, collection_id, record_id, data.values, principal.user_id, data.entity_id, data.version)


async def update_record_values(
    db: AsyncSession,
    collection_id: uuid.UUID,
    record_id: uuid.UUID,
    values: Mapping[str, Any],
    actor_id: uuid.UUID | None,
) -> None:
    """Change some values of a record (e.g. from a procedure's form step): same checks, event and audit."""
    await _update(db, collection_id, record_id, values, actor_id, None, None)


async def _update(
    db: AsyncSession,
    collection_id: uuid.UUID,
    record_id: uuid.UUID,
    raw: Mapping[str, Any],
    actor_id: uuid.UUID | None,
    entity_id: uuid.UUID | None,
    expected_version: int | None,
) -> Record:
    collection = await _collection(db, collection_id)
    record = await _record(db, collection_id, record_id, lock=True)
    if expected_version is not None and expected_version != record.version:
        raise Conflict(
            "The record changed since version {expected_version} (it is at {version}); reload it.",
            code="version_conflict",
            expected_version=expected_version,
            version=record.version,
        )
    defs = _stored_defs(collection)
    changes, problems = coerce_values(defs, raw, partial=True)
    if entity_id is not None:
        entity_problem = await _entity_problem(db, collection, entity_id, required=False)
        problems += [entity_problem] if entity_problem else []
    problems += await _reference_problems(db, defs, [("/values", changes)])
    if problems:
        raise ValidationProblem(errors=problems)
    merged = {**record.values, **changes}
    before = visible_values(defs, record.values)
    after = visible_values(defs, merged)
    if after == before and (entity_id is None or entity_id == record.entity_id):
        return record
    duplicates = await _unique_problems(db, collection.id, defs, merged, record.id)
    if duplicates:
        raise _duplicate(duplicates)
    record.values = merged
    if entity_id is not None:
        record.entity_id = entity_id
    record.version += 1
    record.updated_by = actor_id
    record.updated_at = utcnow()
    await db.flush()
    await _replace_unique_rows(db, record, defs)
    await _emit(db, events.RECORD_UPDATED, collection, record, defs, before, after, actor_id)
    return record


async def delete_record(db: AsyncSession, principal: Principal, collection_id: uuid.UUID, record_id: uuid.UUID) -> None:
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    record = await _record(db, collection_id, record_id, lock=True)
    await _delete(db, collection, record, principal.user_id)


async def _delete(db: AsyncSession, collection: Collection, record: Record, actor_id: uuid.UUID | None) -> None:
    """Soft-delete ``record``: it leaves the lists, frees its unique values, is announced."""
    defs = _stored_defs(collection)
    record.deleted_at = utcnow()
    record.updated_by = actor_id
    await db.execute(delete(RecordUniqueValue).where(RecordUniqueValue.record_id == record.id))
    await db.flush()
    await _emit(
        db,
        events.RECORD_DELETED,
        collection,
        record,
        defs,
        visible_values(defs, record.values),
        None,
        actor_id,
    )
