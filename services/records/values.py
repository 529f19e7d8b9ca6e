"""The values of a record: coercion to canonical form, references that must exist, the unique
index rows, the visible values, and the event and audit entry of every change."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.audit import service as audit
from services.files import service as files
from services.outbox import service as outbox
from services.records.fields import (
    REFERENCE_TYPES,
    FieldDef,
    FieldType,
    FieldValueError,
    coerce_value,
    default_for,
    problem_for,
)
from services.records.fields import validate_value as _validate_bare_value
from services.records.models import Collection, Record, RecordUniqueValue
from tenants.errors import Conflict, FieldProblem, ValidationProblem


def validate_value(type_name: str, raw: Any, *, options: list[str] | None = None, required: bool = False) -> Any:
    """The canonical form of ``raw`` for a bare field type, or :class:`ValidationProblem` (pointer ``/value``)."""
    try:
        return _validate_bare_value(type_name, raw, options=options, required=required)
    except FieldValueError as exc:
        raise ValidationProblem(errors=[problem_for(exc, "/value")]) from None


def value_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def coerce_values(
    defs: list[FieldDef], raw: Mapping[str, Any], *, partial: bool, from_text: bool = False, prefix: str = "/values"
) -> tuple[dict[str, Any], list[FieldProblem]]:
    """Canonical values for the given raw ones, and every problem; a full (not partial) set gets
    defaults and required checks for the fields it does not mention."""
    by_key = {d.key: d for d in defs}
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for key, raw_value in raw.items():
        fd = by_key.get(key)
        if fd is None or fd.removed:
            code = "removed_field" if fd is not None else "unknown_field"
            problems.append(
                FieldProblem.of(
                    pointer=f"{prefix}/{key}", code=code, message="the collection has no field '{key}'", key=key
                )
            )
            continue
        try:
            values[key] = coerce_value(fd, raw_value, from_text=from_text)
        except FieldValueError as exc:
            problems.append(problem_for(exc, f"{prefix}/{key}"))
    if not partial:
        for fd in defs:
            if fd.removed or fd.key in raw:
                continue
            value = default_for(fd)
            if value is None and fd.required:
                problems.append(
                    FieldProblem(pointer=f"{prefix}/{fd.key}", code="required", message="a value is required")
                )
            values[fd.key] = value
    return values, problems


async def _reference_problems(
    db: AsyncSession, defs: list[FieldDef], rows: list[tuple[str, dict[str, Any]]]
) -> list[FieldProblem]:
    """Users, entities, files and related records that do not exist in the tenant, for many rows at once.

    ``rows`` are (pointer prefix, values) pairs.
    """
    wanted: dict[tuple[str, str | None], set[uuid.UUID]] = {}
    by_key = {d.key: d for d in defs}
    for _prefix, values in rows:
        for key, value in values.items():
            fd = by_key.get(key)
            if fd is None or value is None or fd.type not in REFERENCE_TYPES:
                continue
            wanted.setdefault((fd.type, fd.target_collection), set()).add(uuid.UUID(value))
    found: dict[tuple[str, str | None], set[uuid.UUID]] = {}
    for (ftype, target), ids in wanted.items():
        if ftype == FieldType.USER:
            found[(ftype, target)] = await accounts.existing_member_ids(db, ids)
        elif ftype == FieldType.ENTITY:
            found[(ftype, target)] = await accounts.existing_entity_ids(db, ids)
        elif ftype == FieldType.FILE:
            found[(ftype, target)] = ids - set(await files.files_exist(db, list(ids)))
        else:
            query = (
                select(Record.id)
                .join(Collection, and_(Collection.tenant_id == Record.tenant_id, Collection.id == Record.collection_id))
                .where(Collection.key == target, Record.id.in_(ids), Record.deleted_at.is_(None))
            )
            found[(ftype, target)] = set(await db.scalars(query))
    problems: list[FieldProblem] = []
    what = {FieldType.USER: "member", FieldType.ENTITY: "entity", FieldType.FILE: "file", FieldType.RELATION: "record"}
    for prefix, values in rows:
        for key, value in values.items():
            fd = by_key.get(key)
            if fd is None or value is None or (fd.type, fd.target_collection) not in found:
                continue
            if uuid.UUID(value) not in found[(fd.type, fd.target_collection)]:
                noun = what[FieldType(fd.type)]
                where = f" in {fd.target_collection}" if fd.type == FieldType.RELATION else ""
                problems.append(
                    FieldProblem.of(
                        pointer=f"{prefix}/{key}",
                        code=f"unknown_{noun}",
                        message="no such {noun}{where}",
                        noun=noun,
                        where=where,
                    )
                )
    return problems


async def _entity_problem(
    db: AsyncSession,
    collection: Collection,
    entity_id: uuid.UUID | None,
    *,
    required: bool,
    pointer: str = "/entity_id",
) -> FieldProblem | None:
    if not collection.entity_scoped:
        if entity_id is not None:
            return FieldProblem(
                pointer=pointer, code="not_entity_scoped", message="this collection's records have no entity"
            )
        return None
    if entity_id is None:
        return (
            FieldProblem(pointer=pointer, code="required", message="this collection's records belong to an entity")
            if required
            else None
        )
    if not await accounts.existing_entity_ids(db, {entity_id}):
        return FieldProblem(pointer=pointer, code="unknown_entity", message="no such entity")
    return None


def _unique_rows(
    collection_id: uuid.UUID, defs: list[FieldDef], record_id: uuid.UUID, values: dict[str, Any]
) -> list[RecordUniqueValue]:
    return [
        RecordUniqueValue(
            collection_id=collection_id, field_key=fd.key, value_hash=value_hash(values[fd.key]), record_id=record_id
        )
        for fd in defs
        if fd.unique and not fd.removed and values.get(fd.key) is not None
    ]


async def _unique_problems(
    db: AsyncSession,
    collection_id: uuid.UUID,
    defs: list[FieldDef],
    values: dict[str, Any],
    record_id: uuid.UUID | None,
    prefix: str = "/values",
) -> list[FieldProblem]:
    problems = []
    for row in _unique_rows(collection_id, defs, record_id or uuid.UUID(int=0), values):
        holder = await db.scalar(
            select(RecordUniqueValue.record_id).where(
                RecordUniqueValue.collection_id == collection_id,
                RecordUniqueValue.field_key == row.field_key,
                RecordUniqueValue.value_hash == row.value_hash,
            )
        )
        if holder is not None and holder != record_id:
            problems.append(
                FieldProblem.of(
                    pointer=f"{prefix}/{row.field_key}",
                    code="duplicate_value",
                    message="record {holder} already has this {field_key}",
                    holder=holder,
                    field_key=row.field_key,
                )
            )
    return problems


def _duplicate(problems: list[FieldProblem]) -> Conflict:
    return Conflict("Another record already holds a value of a unique field.", code="duplicate_value", errors=problems)


async def _flush_unique(db: AsyncSession, fields: list[str]) -> None:
    """Flush; a concurrent writer that took the same unique value first makes this a clean 409."""
    try:
        await db.flush()
    except IntegrityError:
        raise _duplicate(
            [
                FieldProblem(pointer=f"/values/{k}", code="duplicate_value", message="another record holds this value")
                for k in fields
            ]
        ) from None


async def _replace_unique_rows(db: AsyncSession, record: Record, defs: list[FieldDef]) -> None:
    await db.execute(delete(RecordUniqueValue).where(RecordUniqueValue.record_id == record.id))
    rows = _unique_rows(record.collection_id, defs, record.id, record.values)
    db.add_all(rows)
    await _flush_unique(db, [r.field_key for r in rows])


def visible_values(defs: list[FieldDef], stored: Mapping[str, Any]) -> dict[str, Any]:
    """A record's values as people see them: every visible field, missing ones as null."""
    return {fd.key: stored.get(fd.key) for fd in defs if not fd.removed}


async def _emit(
    db: AsyncSession,
    event: events.EventType[Any],
    collection: Collection,
    record: Record,
    defs: list[FieldDef],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    actor_id: uuid.UUID | None,
) -> None:
    keys = [fd.key for fd in defs if not fd.removed]
    changed = [k for k in keys if (before or {}).get(k) != (after or {}).get(k)]
    payload = {
        "collection_id": str(collection.id),
        "collection_key": collection.key,
        "record_id": str(record.id),
        "entity_id": str(record.entity_id) if record.entity_id else None,
        "changed_fields": changed,
        "values": after,
        "before": before,
    }
    await outbox.emit(db, event.name, payload)
    await audit.record_change(
        db,
        actor_id=actor_id,
        action=event.name,
        subject_type="record",
        subject_id=record.id,
        before=None if before is None else {"entity_id": payload["entity_id"], "values": before},
        after=None if after is None else {"entity_id": payload["entity_id"], "values": after},
    )
