"""The records service: collections (tenant-defined tables), their versioned schemas, and records.

Functions take a session in the caller's transaction and never commit: a failure anywhere leaves
nothing half-written. Roles: managers and above shape collections (the schema is a business
decision); members create, read, update and delete records (filling in the business's data is
everyone's daily work, and procedures' form steps write records on their behalf); admins purge
hidden fields, the one destructive schema operation.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zipfile import BadZipFile

import msgspec
import openpyxl
from sqlalchemy import ColumnElement, String, and_, case, cast, delete, false, func, literal, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.audit import service as audit
from services.db.statements import one_or_raise
from services.files import service as files
from services.json_body import decode_json_body
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.records.fields import (
    KEY_RE,
    REFERENCE_TYPES,
    FieldDef,
    FieldType,
    FieldValueError,
    coerce_value,
    convert_value,
    default_for,
    problem_for,
    validate_field_defs,
    value_to_text,
)
from services.records.fields import validate_value as _validate_bare_value
from services.records.models import Collection, CollectionVersion, Record, RecordUniqueValue
from services.records.schemas import CollectionIn as CollectionIn
from services.records.schemas import CollectionPatch as CollectionPatch
from services.records.schemas import RecordIn, RecordPatch, RowProblem
from services.validation import struct_problems
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

# The field types other services may name (procedure form fields and run data).
FIELD_TYPES: frozenset[str] = frozenset(t.value for t in FieldType)

MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_IMPORT_ROWS = 10_000
MAX_LISTED_PROBLEMS = 1_000
FILTER_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "contains", "in", "is_null")
BUILTIN_SORTS = ("created_at", "updated_at")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Columns an export writes besides the fields; an import ignores them (it always makes new records),
# except entity_id, which places the record.
IGNORED_IMPORT_COLUMNS = frozenset({"id", "created_at", "updated_at"})
_FORMULA_START = ("=", "+", "-", "@")
_TEXTUAL = frozenset({FieldType.TEXT, FieldType.LONG_TEXT, FieldType.SELECT, FieldType.MULTI_SELECT, FieldType.EMAIL})


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as other services see it."""

    id: uuid.UUID
    key: str
    name: str
    entity_scoped: bool
    schema_version: int
    fields: list[FieldDef]  # current and visible, in order


# ---------------------------------------------------------------- field definitions


def parse_field_defs(raw: list[dict[str, Any]], prefix: str = "/fields") -> tuple[list[FieldDef], list[FieldProblem]]:
    """Decode definitions one by one so that every malformed one is reported, then check them all.

    A definition with a malformed attribute is still checked for everything else (without that
    attribute), so one answer lists all the problems of all the definitions.
    """
    defs: list[FieldDef] = []
    checked: list[FieldDef] = []
    problems: list[FieldProblem] = []
    for index, item in enumerate(raw):
        try:
            one = msgspec.convert(item, FieldDef)
        except msgspec.ValidationError as exc:
            at = f"{prefix}/{index}"
            found = struct_problems(FieldDef, item, at) if isinstance(item, dict) else []
            problems.extend(found or [FieldProblem(pointer=at, code="invalid", message=str(exc))])
            flagged = {p.pointer for p in found}
            cleaned = {k: v for k, v in item.items() if f"{at}/{k}" not in flagged} if isinstance(item, dict) else {}
            try:
                checked.append(msgspec.convert(cleaned, FieldDef))
            except msgspec.ValidationError:
                # Nothing more to say about it: a stand-in that passes every check keeps the indexes.
                checked.append(FieldDef(key=f"invalid_{index}", label="-", type="text"))
            continue
        defs.append(one)
        checked.append(one)
    flagged_all = {p.pointer for p in problems}
    problems.extend(p for p in validate_field_defs(checked, prefix=prefix) if p.pointer not in flagged_all)
    return defs, problems


def _stored_defs(collection: Collection) -> list[FieldDef]:
    return [msgspec.convert(d, FieldDef) for d in collection.fields]


def _visible(defs: list[FieldDef]) -> list[FieldDef]:
    return [d for d in defs if not d.removed]


def _dump_defs(defs: list[FieldDef]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(d) for d in defs]


def field_dicts(defs: list[FieldDef]) -> list[dict[str, Any]]:
    """Field definitions as stored and as the API shows them (defaults left out)."""
    return _dump_defs(defs)


def collection_info(collection: Collection) -> CollectionInfo:
    return CollectionInfo(
        id=collection.id,
        key=collection.key,
        name=collection.name,
        entity_scoped=collection.entity_scoped,
        schema_version=collection.schema_version,
        fields=_visible(_stored_defs(collection)),
    )


def all_fields(collection: Collection) -> list[FieldDef]:
    """Every field definition of the current version, hidden ones included (flagged ``removed``)."""
    return _stored_defs(collection)


# ---------------------------------------------------------------- collections


async def _collection(db: AsyncSession, collection_id: uuid.UUID, *, lock: bool = False) -> Collection:
    missing = NotFound("No such collection.", code="collection_not_found")
    return await one_or_raise(db, select(Collection).where(Collection.id == collection_id), missing, lock=lock)


async def get_collection(db: AsyncSession, collection_id: uuid.UUID) -> CollectionInfo:
    """The collection (404 ``collection_not_found`` if the tenant has none with this id)."""
    return collection_info(await _collection(db, collection_id))


async def get_collection_by_key(db: AsyncSession, key: str) -> CollectionInfo:
    found = await db.scalar(select(Collection).where(Collection.key == key))
    if found is None:
        raise NotFound(f"No collection '{key}'.", code="collection_not_found")
    return collection_info(found)


async def collection_fields(db: AsyncSession, collection_id: uuid.UUID) -> list[FieldDef]:
    """The current, visible fields of a collection, in order."""
    return collection_info(await _collection(db, collection_id)).fields


def validate_value(type_name: str, raw: Any, *, options: list[str] | None = None, required: bool = False) -> Any:
    """The canonical form of ``raw`` for a bare field type, or :class:`ValidationProblem` (pointer ``/value``)."""
    try:
        return _validate_bare_value(type_name, raw, options=options, required=required)
    except FieldValueError as exc:
        raise ValidationProblem(errors=[problem_for(exc, "/value")]) from None


async def list_collections(db: AsyncSession, principal: Principal) -> list[Collection]:
    principal.require_role(Role.MEMBER)
    return list(await db.scalars(select(Collection).order_by(Collection.name, Collection.id)))


async def read_collection(db: AsyncSession, principal: Principal, collection_id: uuid.UUID) -> Collection:
    principal.require_role(Role.MEMBER)
    return await _collection(db, collection_id)


async def _relation_problems(db: AsyncSession, defs: list[FieldDef], own_key: str) -> list[FieldProblem]:
    targets = {d.target_collection for d in defs if d.type == FieldType.RELATION and d.target_collection}
    if not targets:
        return []
    known = set(await db.scalars(select(Collection.key).where(Collection.key.in_(targets)))) | {own_key}
    return [
        FieldProblem(
            pointer=f"/fields/{i}/target_collection",
            code="unknown_collection",
            message=f"there is no collection '{d.target_collection}'",
        )
        for i, d in enumerate(defs)
        if d.type == FieldType.RELATION and d.target_collection and d.target_collection not in known
    ]


async def create_collection(db: AsyncSession, principal: Principal, data: CollectionIn) -> Collection:
    principal.require_role(Role.MANAGER)
    problems: list[FieldProblem] = []
    if not KEY_RE.fullmatch(data.key):
        problems.append(
            FieldProblem(pointer="/key", code="invalid_key", message="lower_snake_case, starting with a letter")
        )
    problems += name_problems(data.name, "/name")
    defs, field_problems = parse_field_defs(data.fields)
    problems += field_problems
    if not field_problems:
        problems += await _relation_problems(db, defs, data.key)
    if problems:
        raise ValidationProblem(errors=problems)
    if await db.scalar(select(Collection.id).where(Collection.key == data.key)) is not None:
        raise Conflict(f"A collection with the key '{data.key}' exists.", code="collection_key_taken")
    now = utcnow()
    collection = Collection(
        id=new_id(),
        key=data.key,
        name=clean_name(data.name),
        entity_scoped=data.entity_scoped,
        schema_version=1,
        fields=_dump_defs(defs),
        created_by=principal.user_id,
        created_at=now,
        updated_at=now,
    )
    db.add(collection)
    db.add(
        CollectionVersion(
            collection_id=collection.id,
            version=1,
            fields=collection.fields,
            summary=[f"created with {len(defs)} fields"],
            actor_id=principal.user_id,
            created_at=now,
        )
    )
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="collection.created",
        subject_type="collection",
        subject_id=collection.id,
        after=_collection_snapshot(collection),
    )
    return collection


def _collection_snapshot(collection: Collection) -> dict[str, Any]:
    return {
        "key": collection.key,
        "name": collection.name,
        "entity_scoped": collection.entity_scoped,
        "schema_version": collection.schema_version,
        "fields": collection.fields,
    }


_VALUE_SHAPING = ("type", "options", "min", "max", "pattern", "currency", "region", "fields", "target_collection")


def _shapes_values(old: FieldDef, new: FieldDef) -> bool:
    return any(getattr(old, attr) != getattr(new, attr) for attr in _VALUE_SHAPING)


async def alter_collection(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, patch: CollectionPatch
) -> Collection:
    """Apply a schema change as a new version; values are converted, never dropped.

    Refused (422, nothing changed) when a changed type or constraint would not fit an existing
    value: every such record is listed as ``/records/<record id>/<field key>``.
    """
    principal.require_role(Role.MANAGER)
    collection = await _collection(db, collection_id, lock=True)
    problems: list[FieldProblem] = []
    if patch.name is not None:
        problems += name_problems(patch.name, "/name")
    current = _stored_defs(collection)
    summary: list[str] = []
    new_defs = current
    if patch.fields is not None:
        listed, field_problems = parse_field_defs(patch.fields)
        problems += field_problems
        if not field_problems:
            problems += await _relation_problems(db, listed, collection.key)
        if problems:
            raise ValidationProblem(errors=problems)
        new_defs, summary = _merge_defs(current, listed)
    if problems:
        raise ValidationProblem(errors=problems)
    if patch.name is not None and clean_name(patch.name) != collection.name:
        summary.insert(0, f"renamed the collection to '{clean_name(patch.name)}'")
    if not summary:
        return collection
    before = _collection_snapshot(collection)
    await _migrate_records(db, collection, current, new_defs)
    if patch.name is not None:
        collection.name = clean_name(patch.name)
    await _new_version(db, collection, new_defs, summary, patch.summary, principal.user_id)
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="collection.updated",
        subject_type="collection",
        subject_id=collection.id,
        before=before,
        after=_collection_snapshot(collection),
    )
    return collection


def _merge_defs(current: list[FieldDef], listed: list[FieldDef]) -> tuple[list[FieldDef], list[str]]:
    """The new full definition list (listed fields in order, then the hidden ones) and what changed."""
    by_key = {d.key: d for d in current}
    summary: list[str] = []
    for fd in listed:
        old = by_key.get(fd.key)
        if old is None:
            summary.append(f"added {fd.key} ({fd.type})")
            continue
        if old.removed:
            summary.append(f"restored {fd.key}")
        if old.label != fd.label:
            summary.append(f"renamed {fd.key}: '{old.label}' → '{fd.label}'")
        if old.type != fd.type:
            summary.append(f"changed the type of {fd.key}: {old.type} → {fd.type}")
        changed = [
            attr
            for attr in ("required", "unique", "default", "help", *_VALUE_SHAPING)
            if attr != "type" and getattr(old, attr) != getattr(fd, attr)
        ]
        if changed:
            summary.append(f"changed {', '.join(changed)} of {fd.key}")
    listed_keys = {fd.key for fd in listed}
    hidden: list[FieldDef] = []
    for old in current:
        if old.key in listed_keys:
            continue
        if not old.removed:
            summary.append(f"removed {old.key} (hidden; its values are kept until purged)")
        hidden.append(msgspec.structs.replace(old, removed=True))
    return [*listed, *hidden], summary


async def _new_version(
    db: AsyncSession,
    collection: Collection,
    defs: list[FieldDef],
    summary: list[str],
    note: str | None,
    actor_id: uuid.UUID | None,
) -> None:
    now = utcnow()
    collection.schema_version += 1
    collection.fields = _dump_defs(defs)
    collection.updated_at = now
    db.add(
        CollectionVersion(
            collection_id=collection.id,
            version=collection.schema_version,
            fields=collection.fields,
            summary=[*summary, *([note] if note else [])],
            actor_id=actor_id,
            created_at=now,
        )
    )
    await db.flush()


async def _live_records(db: AsyncSession, collection_id: uuid.UUID) -> list[Record]:
    query = (
        select(Record)
        .where(Record.collection_id == collection_id, Record.deleted_at.is_(None))
        .order_by(Record.id)
        .with_for_update()
    )
    return list(await db.scalars(query))


async def _migrate_records(
    db: AsyncSession, collection: Collection, current: list[FieldDef], new_defs: list[FieldDef]
) -> None:
    old_by_key = {d.key: d for d in current}
    converting: list[tuple[FieldDef, FieldDef]] = []
    backfill: list[tuple[FieldDef, Any]] = []
    unique_rebuild: list[FieldDef] = []
    unique_drop: list[str] = []
    for fd in new_defs:
        old = old_by_key.get(fd.key)
        if fd.removed:
            if old is not None and not old.removed and old.unique:
                unique_drop.append(fd.key)
            continue
        if old is None:
            if fd.default is not None:
                backfill.append((fd, default_for(fd)))
            if fd.unique:
                unique_rebuild.append(fd)
            continue
        if _shapes_values(old, fd):
            converting.append((old, fd))
        if fd.unique and (not old.unique or old.removed or _shapes_values(old, fd)):
            unique_rebuild.append(fd)
        elif not fd.unique and old.unique and not old.removed:
            unique_drop.append(fd.key)
    if not (converting or backfill or unique_rebuild or unique_drop):
        return
    records = await _live_records(db, collection.id)
    problems: list[FieldProblem] = []
    new_values: dict[uuid.UUID, dict[str, Any]] = {}
    for record in records:
        values = dict(record.values)
        for old, fd in converting:
            try:
                values[fd.key] = convert_value(old, fd, values.get(fd.key))
            except FieldValueError as exc:
                problems.append(
                    FieldProblem(
                        pointer=f"/records/{record.id}/{fd.key}",
                        code="not_convertible",
                        message=f"{_short(values.get(fd.key))} does not convert to {fd.type}: {exc.message}",
                    )
                )
        for fd, default in backfill:
            if values.get(fd.key) is None:
                values[fd.key] = default
        new_values[record.id] = values
    if problems:
        raise ValidationProblem(
            f"{len({p.pointer.split('/')[2] for p in problems})} records would not convert; nothing was changed.",
            errors=problems[:MAX_LISTED_PROBLEMS],
        )
    duplicates: list[FieldProblem] = []
    for fd in unique_rebuild:
        seen: dict[str, uuid.UUID] = {}
        for record in records:
            value = new_values[record.id].get(fd.key)
            if value is None:
                continue
            digest = value_hash(value)
            if digest in seen:
                duplicates.append(
                    FieldProblem(
                        pointer=f"/records/{record.id}/{fd.key}",
                        code="duplicate_value",
                        message=f"{_short(value)} is also the value of record {seen[digest]}",
                    )
                )
            else:
                seen[digest] = record.id
    if duplicates:
        raise Conflict(
            "Existing records hold the same value in a field that would become unique; nothing was changed.",
            code="duplicate_values",
            errors=duplicates[:MAX_LISTED_PROBLEMS],
        )
    now = utcnow()
    for record in records:
        if new_values[record.id] != record.values:
            record.values = new_values[record.id]
            record.version += 1
            record.updated_at = now
    keys = [*unique_drop, *(fd.key for fd in unique_rebuild)]
    if keys:
        await db.execute(
            delete(RecordUniqueValue).where(
                RecordUniqueValue.collection_id == collection.id, RecordUniqueValue.field_key.in_(keys)
            )
        )
    for fd in unique_rebuild:
        for record in records:
            value = new_values[record.id].get(fd.key)
            if value is not None:
                db.add(
                    RecordUniqueValue(
                        collection_id=collection.id, field_key=fd.key, value_hash=value_hash(value), record_id=record.id
                    )
                )
    await db.flush()


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


async def list_versions(db: AsyncSession, principal: Principal, collection_id: uuid.UUID) -> list[CollectionVersion]:
    principal.require_role(Role.MEMBER)
    await _collection(db, collection_id)
    query = (
        select(CollectionVersion)
        .where(CollectionVersion.collection_id == collection_id)
        .order_by(CollectionVersion.version.desc())
    )
    return list(await db.scalars(query))


async def purge_fields(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, field_keys: list[str]
) -> Collection:
    """Delete hidden fields and their values from every record (admins; it cannot be undone)."""
    principal.require_role(Role.ADMIN)
    collection = await _collection(db, collection_id, lock=True)
    defs = _stored_defs(collection)
    by_key = {d.key: d for d in defs}
    problems = [
        FieldProblem(
            pointer=f"/field_keys/{i}",
            code="not_hidden" if key in by_key else "unknown_field",
            message="only a removed (hidden) field can be purged" if key in by_key else f"no field '{key}'",
        )
        for i, key in enumerate(field_keys)
        if key not in by_key or not by_key[key].removed
    ]
    if not field_keys:
        problems.append(FieldProblem(pointer="/field_keys", code="required", message="name at least one field"))
    if problems:
        raise ValidationProblem(errors=problems)
    purged = set(field_keys)
    before = _collection_snapshot(collection)
    # Deleted records too: a purge leaves no copy of the values anywhere in the collection.
    for record in await db.scalars(select(Record).where(Record.collection_id == collection.id).with_for_update()):
        if purged & record.values.keys():
            record.values = {k: v for k, v in record.values.items() if k not in purged}
    await _new_version(
        db,
        collection,
        [d for d in defs if d.key not in purged],
        [f"purged {key} and its values" for key in field_keys],
        None,
        principal.user_id,
    )
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="collection.fields_purged",
        subject_type="collection",
        subject_id=collection.id,
        before=before,
        after=_collection_snapshot(collection),
    )
    return collection


# ---------------------------------------------------------------- values of a record


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
                FieldProblem(pointer=f"{prefix}/{key}", code=code, message=f"the collection has no field '{key}'")
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
                    FieldProblem(pointer=f"{prefix}/{key}", code=f"unknown_{noun}", message=f"no such {noun}{where}")
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
                FieldProblem(
                    pointer=f"{prefix}/{row.field_key}",
                    code="duplicate_value",
                    message=f"record {holder} already has this {row.field_key}",
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
    event: str,
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
    await outbox.emit(db, event, payload)
    await audit.record_change(
        db,
        actor_id=actor_id,
        action=event,
        subject_type="record",
        subject_id=record.id,
        before=None if before is None else {"entity_id": payload["entity_id"], "values": before},
        after=None if after is None else {"entity_id": payload["entity_id"], "values": after},
    )


# ---------------------------------------------------------------- records


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
    db: AsyncSession, collection_id: uuid.UUID, rows: list[Mapping[str, Any]], actor_id: uuid.UUID | None
) -> list[Record]:
    """:func:`create_record_values` for several records of one collection (a template's samples):
    the collection is read once; each record is checked, stored, announced and audited as one."""
    collection = await _collection(db, collection_id)
    created: list[Record] = []
    for index, values in enumerate(rows):
        try:
            created.append(await _create(db, collection, values, None, actor_id))
        except ProblemError as exc:
            exc.errors = [FieldProblem(f"/{index}{p.pointer}", p.code, p.message) for p in exc.errors or []]
            raise
    return created


async def _create(
    db: AsyncSession,
    collection: Collection,
    raw: Mapping[str, Any],
    entity_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
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
        created_by=actor_id,
        updated_by=actor_id,
        created_at=now,
        updated_at=now,
    )
    db.add(record)
    await db.flush()
    db.add_all(rows := _unique_rows(collection.id, defs, record.id, values))
    await _flush_unique(db, [r.field_key for r in rows])
    await _emit(db, "record.created", collection, record, defs, None, visible_values(defs, values), actor_id)
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
            f"The record changed since version {expected_version} (it is at {record.version}); reload it.",
            code="version_conflict",
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
    await _emit(db, "record.updated", collection, record, defs, before, after, actor_id)
    return record


async def delete_record(db: AsyncSession, principal: Principal, collection_id: uuid.UUID, record_id: uuid.UUID) -> None:
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    record = await _record(db, collection_id, record_id, lock=True)
    defs = _stored_defs(collection)
    record.deleted_at = utcnow()
    record.updated_by = principal.user_id
    await db.execute(delete(RecordUniqueValue).where(RecordUniqueValue.record_id == record.id))
    await db.flush()
    await _emit(
        db, "record.deleted", collection, record, defs, visible_values(defs, record.values), None, principal.user_id
    )


async def count_records(db: AsyncSession, collection_id: uuid.UUID) -> int:
    """How many live (not deleted) records the collection holds."""
    found = await db.scalar(
        select(func.count()).where(Record.collection_id == collection_id, Record.deleted_at.is_(None))
    )
    return int(found or 0)


async def delete_collection(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, *, with_records: bool = False
) -> int:
    """Delete a collection, its schema versions and (only when ``with_records``) its records; 409
    ``collection_has_records`` when it holds records and they are to be kept. The number of records deleted."""
    principal.require_role(Role.ADMIN)
    collection = await _collection(db, collection_id, lock=True)
    held = await count_records(db, collection_id)
    if held and not with_records:
        raise Conflict(f"The collection '{collection.key}' holds {held} record(s).", code="collection_has_records")
    record_ids = select(Record.id).where(Record.collection_id == collection_id)
    await db.execute(delete(RecordUniqueValue).where(RecordUniqueValue.record_id.in_(record_ids)))
    await db.execute(delete(Record).where(Record.collection_id == collection_id))
    await db.execute(delete(CollectionVersion).where(CollectionVersion.collection_id == collection_id))
    before = _collection_snapshot(collection)
    await db.delete(collection)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="collection.deleted",
        subject_type="collection",
        subject_id=collection_id,
        before={**before, "records_deleted": held},
    )
    return held


# ---------------------------------------------------------------- listing: filters, sorting, keyset pages


@dataclass(frozen=True)
class Filter:
    field: str
    operator: str
    value: str


_FILTER_PARAM = re.compile(r"filter\[([a-z][a-z0-9_]*)\](?:\[([a-z_]+)\])?")


def parse_filters(params: Mapping[str, list[str]]) -> tuple[list[Filter], list[FieldProblem]]:
    """``filter[amount][gte]=100`` (and ``filter[status]=open``, meaning eq) from query parameters."""
    filters: list[Filter] = []
    problems: list[FieldProblem] = []
    for name, raw_values in params.items():
        if not name.startswith("filter"):
            continue
        match = _FILTER_PARAM.fullmatch(name)
        if match is None:
            problems.append(
                FieldProblem(
                    pointer=f"/query/{name}", code="invalid_filter", message="write filter[<field>][<operator>]=<value>"
                )
            )
            continue
        operator = match.group(2) or "eq"
        if operator not in FILTER_OPERATORS:
            problems.append(
                FieldProblem(
                    pointer=f"/query/{name}",
                    code="unknown_operator",
                    message=f"use one of {', '.join(FILTER_OPERATORS)}",
                )
            )
            continue
        filters.extend(Filter(match.group(1), operator, value) for value in raw_values)
    return filters, problems


def _sql_value(fd: FieldDef) -> ColumnElement[Any]:
    expr: ColumnElement[Any]
    """The SQL expression of a field's value, typed for comparison on SQLite and Postgres alike."""
    ftype = fd.field_type
    column = Record.values
    if ftype == FieldType.NUMBER:
        expr = column[fd.key].as_float()
    elif ftype == FieldType.MONEY:
        expr = column[(fd.key, "amount")].as_float()
    elif ftype == FieldType.BOOLEAN:
        expr = column[fd.key].as_boolean()
    else:
        expr = column[fd.key].as_string()
    return expr


def _filter_operand(fd: FieldDef, text: str) -> Any:
    """A filter's value in the form :func:`_sql_value` compares with."""
    value = coerce_value(
        msgspec.structs.replace(fd, required=False, min=None, max=None, pattern=None), text, from_text=True
    )
    if fd.field_type == FieldType.MONEY:
        return float(value["amount"])
    if fd.field_type == FieldType.NUMBER:
        return float(value)
    return value


def _compare(expr: ColumnElement[Any], operator: str, operand: object) -> ColumnElement[bool]:
    if operator == "eq":
        return expr == operand
    if operator == "ne":
        return or_(expr != operand, expr.is_(None))
    if operator == "lt":
        return expr < operand
    if operator == "lte":
        return expr <= operand
    if operator == "gt":
        return expr > operand
    return expr >= operand


_ORDERED = frozenset({FieldType.NUMBER, FieldType.MONEY, FieldType.DATE, FieldType.DATETIME, FieldType.TEXT})
_NOT_FILTERABLE = frozenset({FieldType.LINE_ITEMS, FieldType.LONG_TEXT})


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def filter_clause(fd: FieldDef, flt: Filter, pointer: str) -> ColumnElement[bool]:
    """The WHERE clause of one filter; :class:`FieldValueError` when the value or operator does not fit."""
    ftype = fd.field_type
    if flt.operator == "is_null":
        wanted = coerce_value(FieldDef(key="v", label="v", type="boolean"), flt.value, from_text=True)
        path = Record.values[(fd.key, "amount")] if ftype == FieldType.MONEY else Record.values[fd.key]
        # Absent and JSON null both read as SQL NULL through ->> (Postgres) and json_extract (SQLite).
        null: ColumnElement[bool] = path.as_string().is_(None)
        return null if wanted else ~null
    if ftype == FieldType.MULTI_SELECT:
        if flt.operator != "contains":
            raise FieldValueError("unsupported_operator", "a multiple choice field filters with contains or is_null")
        option = _select_option(fd, flt.value)
        # A JSON list of options contains the option's JSON text, quotes included, exactly once.
        pattern = "%" + _like_escape(json.dumps(option)) + "%"
        return cast(Record.values[fd.key], String).like(pattern, escape="!")
    if ftype in _NOT_FILTERABLE and flt.operator != "contains":
        raise FieldValueError("unsupported_operator", f"a {ftype} field filters with contains or is_null")
    if flt.operator == "contains":
        if ftype not in {FieldType.TEXT, FieldType.LONG_TEXT, FieldType.EMAIL, FieldType.PHONE}:
            raise FieldValueError("unsupported_operator", "contains applies to text, email and phone fields")
        text: ColumnElement[str] = Record.values[fd.key].as_string()
        return text.ilike("%" + _like_escape(flt.value) + "%", escape="!")
    expr = _sql_value(fd)
    if flt.operator == "in":
        parts = [p for p in flt.value.split(",") if p.strip()]
        if not parts:
            raise FieldValueError("required", "list the values, separated by commas")
        return expr.in_([_filter_operand(fd, p) for p in parts])
    if flt.operator in {"lt", "lte", "gt", "gte"} and ftype not in _ORDERED:
        raise FieldValueError("unsupported_operator", f"a {ftype} field cannot be compared with {flt.operator}")
    operand = _filter_operand(fd, flt.value)
    clause = _compare(expr, flt.operator, operand)
    if ftype == FieldType.MONEY and flt.operator != "ne":
        currency = coerce_value(fd, flt.value, from_text=True)["currency"]
        clause = and_(clause, Record.values[(fd.key, "currency")].as_string() == currency)
    return clause


def _select_option(fd: FieldDef, text: str) -> str:
    option = text.strip()
    if option not in (fd.options or []):
        raise FieldValueError("not_an_option", f"'{option}' is not one of {fd.options}")
    return option


@dataclass(frozen=True)
class Sort:
    key: str  # a field key, created_at or updated_at
    descending: bool

    @property
    def spec(self) -> str:
        return ("-" if self.descending else "") + self.key


def _sort_expression(defs: dict[str, FieldDef], sort: Sort) -> ColumnElement[Any]:
    if sort.key in BUILTIN_SORTS:
        column: ColumnElement[Any] = getattr(Record, sort.key).expression
        return column
    return _sql_value(defs[sort.key])


def _python_sort_value(defs: dict[str, FieldDef], sort: Sort, record: Record) -> Any:
    if sort.key in BUILTIN_SORTS:
        moment: datetime = getattr(record, sort.key)
        return moment.isoformat()
    fd = defs[sort.key]
    value = record.values.get(sort.key)
    if value is None:
        return None
    if fd.field_type == FieldType.MONEY:
        return float(value["amount"])
    if fd.field_type == FieldType.NUMBER:
        return float(value)
    if fd.field_type in {FieldType.MULTI_SELECT, FieldType.LINE_ITEMS}:
        return None
    return value


def encode_cursor(sort: Sort, value: Any, record_id: uuid.UUID) -> str:
    raw = json.dumps([sort.spec, value, str(record_id)], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort, defs: Mapping[str, FieldDef]) -> tuple[Any, uuid.UUID]:
    """The sort value and record id a cursor of this list continues after; a cursor that is not one
    (forged, from another sort, or holding a value of the wrong kind for the sort) is 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        spec, value, record_id = decode_json_body(raw)
        if spec != sort.spec:
            raise ValueError("the cursor belongs to another sort")
        return _cursor_sort_value(defs, sort, value), uuid.UUID(record_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, ProblemError) as exc:
        raise ValidationProblem(
            errors=[
                FieldProblem(
                    pointer="/query/cursor", code="invalid_cursor", message=f"not a cursor of this list: {exc}"
                )
            ]
        ) from None


def _cursor_sort_value(defs: Mapping[str, FieldDef], sort: Sort, value: Any) -> Any:
    """A cursor's sort value, of the kind :func:`_python_sort_value` writes for this sort, so that
    the database compares like with like (a forged number for a date, or a number past a double,
    would otherwise fail in the query)."""
    if value is None or not sort.key:
        return None
    if sort.key in BUILTIN_SORTS:
        if not isinstance(value, str):
            raise TypeError("the position is not a time")
        if datetime.fromisoformat(value).tzinfo is None:
            raise ValueError("the position's time has no offset")
        return value
    field_type = defs[sort.key].field_type
    if field_type in {FieldType.NUMBER, FieldType.MONEY}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("the position is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("the position is not a finite number")
        return number
    if field_type == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError("the position is not true or false")
        return value
    if not isinstance(value, str):
        raise TypeError("the position is not a text")
    return value


def _after_cursor(expr: Any, sort: Sort, value: Any, record_id: uuid.UUID) -> ColumnElement[bool]:
    """Rows after the cursor in the order (nulls last ascending, first descending; ties by id)."""
    if sort.key in BUILTIN_SORTS and value is not None:
        value = datetime.fromisoformat(value)
    elif isinstance(value, bool):
        value = literal(value)  # SQLAlchemy compares a column with a bare True/False only by equality
    if not sort.descending:
        if value is None:
            return and_(expr.is_(None), Record.id > record_id)
        return or_(expr.is_(None), expr > value, and_(expr == value, Record.id > record_id))
    if value is None:
        return or_(expr.is_not(None), and_(expr.is_(None), Record.id < record_id))
    return and_(expr.is_not(None), or_(expr < value, and_(expr == value, Record.id < record_id)))


def parse_sort(defs: dict[str, FieldDef], spec: str | None) -> Sort:
    if not spec:
        return Sort("", False)
    descending = spec.startswith("-")
    key = spec.lstrip("-+")
    fd = defs.get(key)
    if key not in BUILTIN_SORTS and (
        fd is None or fd.removed or fd.field_type in {FieldType.MULTI_SELECT, FieldType.LINE_ITEMS}
    ):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/sort", code="invalid_sort", message=f"cannot sort by '{key}'")]
        )
    return Sort(key, descending)


async def find_records(
    db: AsyncSession, collection_key: str, where: Mapping[str, Any], *, limit: int = DEFAULT_PAGE
) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """Live records of the collection ``collection_key`` whose values equal ``where``'s, newest first,
    as (id, visible values); an unknown collection is 404, an unknown field or unfit value 422."""
    found = await db.scalar(select(Collection).where(Collection.key == collection_key))
    if found is None:
        raise NotFound(f"No collection '{collection_key}'.", code="collection_not_found")
    defs = _stored_defs(found)
    live = {d.key: d for d in defs if not d.removed}
    clauses: list[ColumnElement[bool]] = [Record.collection_id == found.id, Record.deleted_at.is_(None)]
    problems: list[FieldProblem] = []
    for key, value in where.items():
        pointer = f"/where/{key}"
        fd = live.get(key)
        if fd is None:
            problems.append(FieldProblem(pointer=pointer, code="unknown_field", message=f"no field '{key}'"))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            clauses.append(filter_clause(fd, Filter(key, "eq", text), pointer))
        except FieldValueError as exc:
            problems.append(FieldProblem(pointer=pointer, code=exc.code, message=str(exc)))
    if problems:
        raise ValidationProblem("The record query is not valid.", code="invalid_query", errors=problems)
    rows = await db.scalars(
        select(Record).where(*clauses).order_by(Record.created_at.desc(), Record.id.desc()).limit(max(1, limit))
    )
    return [(row.id, visible_values(defs, row.values)) for row in rows]


async def list_records(
    db: AsyncSession,
    principal: Principal,
    collection_id: uuid.UUID,
    query_params: Mapping[str, list[str]],
    *,
    sort_spec: str | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> tuple[Collection, list[Record], str | None]:
    """A page of live records, filtered and sorted; the opaque cursor continues after the last one."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    defs = {d.key: d for d in _stored_defs(collection) if not d.removed}
    filters, problems = parse_filters(query_params)
    clauses: list[ColumnElement[bool]] = [Record.collection_id == collection.id, Record.deleted_at.is_(None)]
    for flt in filters:
        pointer = f"/query/filter[{flt.field}][{flt.operator}]"
        if flt.field == "entity_id":
            clauses.append(_entity_filter(flt, pointer, problems))
            continue
        fd = defs.get(flt.field)
        if fd is None:
            problems.append(FieldProblem(pointer=pointer, code="unknown_field", message=f"no field '{flt.field}'"))
            continue
        try:
            clauses.append(filter_clause(fd, flt, pointer))
        except FieldValueError as exc:
            problems.append(problem_for(exc, pointer))
    if not 1 <= limit <= MAX_PAGE:
        problems.append(FieldProblem(pointer="/query/limit", code="out_of_range", message=f"1 to {MAX_PAGE}"))
    if problems:
        raise ValidationProblem(errors=problems)
    sort = parse_sort(defs, sort_spec)
    query = select(Record).where(*clauses)
    if sort.key:
        expr = _sort_expression(defs, sort)
        nulls = case((expr.is_(None), 1), else_=0)
        if cursor:
            value, after_id = decode_cursor(cursor, sort, defs)
            query = query.where(_after_cursor(expr, sort, value, after_id))
        if sort.descending:
            query = query.order_by(nulls.desc(), expr.desc(), Record.id.desc())
        else:
            query = query.order_by(nulls, expr, Record.id)
    else:
        if cursor:
            _value, after_id = decode_cursor(cursor, sort, defs)
            query = query.where(Record.id > after_id)
        query = query.order_by(Record.id)
    rows = list(await db.scalars(query.limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(sort, _python_sort_value(defs, sort, last) if sort.key else None, last.id)
    return collection, rows, next_cursor


def _entity_filter(flt: Filter, pointer: str, problems: list[FieldProblem]) -> ColumnElement[bool]:
    try:
        if flt.operator == "is_null":
            return (
                Record.entity_id.is_(None)
                if flt.value.lower() in {"true", "1", "yes"}
                else Record.entity_id.is_not(None)
            )
        if flt.operator == "eq":
            return Record.entity_id == uuid.UUID(flt.value)
        if flt.operator == "in":
            return Record.entity_id.in_([uuid.UUID(v) for v in flt.value.split(",") if v.strip()])
    except ValueError:
        problems.append(FieldProblem(pointer=pointer, code="invalid_id", message="not an entity id"))
        return true()
    problems.append(
        FieldProblem(pointer=pointer, code="unsupported_operator", message="entity_id filters with eq, in or is_null")
    )
    return false()


# ---------------------------------------------------------------- export


def _export_columns(collection: Collection) -> tuple[list[str], list[FieldDef]]:
    defs = _visible(_stored_defs(collection))
    extra = ["id", *(["entity_id"] if collection.entity_scoped else [])]
    return [*extra, *(d.key for d in defs)], defs


def _guard_formula(fd: FieldDef, text: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula; a quote makes it text again
    # (the import removes it).
    return "'" + text if fd.field_type in _TEXTUAL and text.startswith(_FORMULA_START) else text


async def export_records(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, file_format: str
) -> tuple[bytes, str, str]:
    """(content, media type, file name) of every live record, as CSV or XLSX."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    if file_format not in {"csv", "xlsx"}:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/format", code="not_allowed", message="csv or xlsx")]
        )
    header, defs = _export_columns(collection)
    records = list(
        await db.scalars(
            select(Record).where(Record.collection_id == collection.id, Record.deleted_at.is_(None)).order_by(Record.id)
        )
    )
    stamp = utcnow().strftime("%Y%m%d")
    name = f"{collection.key}-{stamp}.{file_format}"
    if file_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for record in records:
            row = [str(record.id), *([str(record.entity_id or "")] if collection.entity_scoped else [])]
            row += [_guard_formula(fd, value_to_text(fd, record.values.get(fd.key))) for fd in defs]
            writer.writerow(row)
        # A byte-order mark makes Excel read the file as UTF-8 (Chinese text stays readable).
        return ("\ufeff" + buffer.getvalue()).encode("utf-8"), CSV_MEDIA_TYPE, name
    return _xlsx(collection, header, defs, records), XLSX_MEDIA_TYPE, name


def _xlsx(collection: Collection, header: list[str], defs: list[FieldDef], records: list[Record]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = collection.key[:31]
    sheet.append(header)
    for row_index, record in enumerate(records, start=2):
        cells: list[Any] = [str(record.id), *([str(record.entity_id or "")] if collection.entity_scoped else [])]
        for fd in defs:
            value = record.values.get(fd.key)
            if fd.field_type in {FieldType.NUMBER, FieldType.BOOLEAN} and value is not None:
                cells.append(value)
            else:
                cells.append(value_to_text(fd, value) if value is not None else None)
        for column_index, value in enumerate(cells, start=1):
            cell = sheet.cell(row=row_index, column=column_index, value=value)
            if isinstance(value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- import


def read_table(content: bytes, filename: str) -> list[list[Any]]:
    """The rows (header first) of an uploaded CSV or XLSX file."""
    if filename.lower().endswith(".xlsx") or content[:2] == b"PK":
        return _read_xlsx(content)
    text = _decode_csv(content)
    return [row for row in csv.reader(io.StringIO(text))]


def _decode_csv(content: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationProblem(
        errors=[FieldProblem(pointer="/file", code="unreadable_file", message="save the CSV as UTF-8")]
    )


def _read_xlsx(content: bytes) -> list[list[Any]]:

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/file", code="unreadable_file", message=f"not an XLSX workbook: {exc}")]
        ) from None
    sheet = workbook.worksheets[0]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    workbook.close()
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("'") and text[1:2] in _FORMULA_START:
            return text[1:]
        return text
    return value


async def import_records(
    db: AsyncSession,
    principal: Principal,
    collection_id: uuid.UUID,
    content: bytes,
    filename: str,
    *,
    skip_invalid: bool,
) -> tuple[int, list[RowProblem]]:
    """Create one record per data row. Every row is checked first; with any bad row nothing is
    imported (422 listing each problem as ``/rows/<row number>/<field>``), unless ``skip_invalid``:
    then the good rows are imported and the bad ones reported."""
    principal.require_role(Role.MEMBER)
    collection = await _collection(db, collection_id)
    rows = read_table(content, filename)
    rows = [r for r in rows if any(c not in (None, "") for c in r)]
    if not rows:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/file", code="empty_file", message="the file has no header row")]
        )
    if len(rows) - 1 > MAX_IMPORT_ROWS:
        raise ValidationProblem(
            errors=[
                FieldProblem(
                    pointer="/file", code="too_many_rows", message=f"at most {MAX_IMPORT_ROWS} rows per import"
                )
            ]
        )
    defs = _stored_defs(collection)
    columns = _map_header(collection, defs, rows[0])
    parsed: list[tuple[int, dict[str, Any], uuid.UUID | None]] = []
    problems: dict[int, list[RowProblem]] = {}
    for number, row in enumerate(rows[1:], start=2):
        raw: dict[str, Any] = {}
        entity_text: Any = None
        for index, key in columns.items():
            cell = _cell(row[index]) if index < len(row) else None
            if key == "entity_id":
                entity_text = cell
            elif key is not None:
                raw[key] = cell
        values, found = coerce_values(defs, raw, partial=False, from_text=True, prefix="")
        row_problems = [_row_problem(number, p) for p in found]
        entity_id = None
        if entity_text not in (None, ""):
            try:
                entity_id = uuid.UUID(str(entity_text))
            except ValueError:
                row_problems.append(
                    RowProblem(row=number, field="entity_id", code="invalid_id", message="not an entity id")
                )
        if collection.entity_scoped or entity_id is not None:
            entity_problem = await _entity_problem(db, collection, entity_id, required=True, pointer="/entity_id")
            if entity_problem:
                row_problems.append(_row_problem(number, entity_problem))
        if row_problems:
            problems[number] = row_problems
        parsed.append((number, values, entity_id))
    for p in await _reference_problems(db, defs, [(f"/{n}", v) for n, v, _ in parsed if n not in problems]):
        number = int(p.pointer.split("/")[1])
        problems.setdefault(number, []).append(
            RowProblem(row=number, field=p.pointer.split("/")[2], code=p.code, message=p.message)
        )
    await _import_unique_problems(db, collection, defs, parsed, problems)
    listed = [p for number in sorted(problems) for p in problems[number]]
    if listed and not skip_invalid:
        raise ValidationProblem(
            f"{len(problems)} of {len(parsed)} rows have problems; nothing was imported.",
            errors=[
                FieldProblem(
                    pointer=f"/rows/{p.row}" + (f"/{p.field}" if p.field else ""), code=p.code, message=p.message
                )
                for p in listed[:MAX_LISTED_PROBLEMS]
            ],
        )
    imported = 0
    for number, values, entity_id in parsed:
        if number in problems:
            continue
        await _create(db, collection, values, entity_id, principal.user_id)
        imported += 1
    return imported, listed


def _row_problem(number: int, problem: FieldProblem) -> RowProblem:
    field = problem.pointer.lstrip("/").split("/")[0] or None
    return RowProblem(row=number, field=field, code=problem.code, message=problem.message)


def _map_header(collection: Collection, defs: list[FieldDef], header: list[Any]) -> dict[int, str | None]:
    """Column index → field key (matched by key, else by label, ignoring case); None for ignored columns."""
    by_name: dict[str, str] = {}
    for fd in defs:
        if not fd.removed:
            by_name.setdefault(fd.label.strip().casefold(), fd.key)
    for fd in defs:
        if not fd.removed:
            by_name[fd.key.casefold()] = fd.key
    columns: dict[int, str | None] = {}
    problems: list[FieldProblem] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = str(cell).strip() if cell is not None else ""
        if not name:
            continue
        folded = name.casefold()
        key: str | None
        if folded in IGNORED_IMPORT_COLUMNS:
            key = None
        elif folded == "entity_id":
            key = "entity_id"
        elif folded in by_name:
            key = by_name[folded]
        else:
            problems.append(
                FieldProblem(
                    pointer=f"/rows/1/{name}", code="unknown_column", message=f"no field has the key or label '{name}'"
                )
            )
            continue
        if key is not None:
            if key in seen:
                problems.append(
                    FieldProblem(
                        pointer=f"/rows/1/{name}",
                        code="duplicate_column",
                        message=f"'{key}' is also column {seen[key] + 1}",
                    )
                )
            seen[key] = index
        columns[index] = key
    if problems:
        raise ValidationProblem("The header row does not match the collection's fields.", errors=problems)
    return columns


async def _import_unique_problems(
    db: AsyncSession,
    collection: Collection,
    defs: list[FieldDef],
    parsed: list[tuple[int, dict[str, Any], uuid.UUID | None]],
    problems: dict[int, list[RowProblem]],
) -> None:
    unique_defs = [fd for fd in defs if fd.unique and not fd.removed]
    for fd in unique_defs:
        hashes = {n: value_hash(v[fd.key]) for n, v, _ in parsed if n not in problems and v.get(fd.key) is not None}
        if not hashes:
            continue
        taken = set(
            await db.scalars(
                select(RecordUniqueValue.value_hash).where(
                    RecordUniqueValue.collection_id == collection.id,
                    RecordUniqueValue.field_key == fd.key,
                    RecordUniqueValue.value_hash.in_(set(hashes.values())),
                )
            )
        )
        first_row: dict[str, int] = {}
        for number, digest in hashes.items():
            message = None
            if digest in taken:
                message = "an existing record already has this value"
            elif digest in first_row:
                message = f"row {first_row[digest]} has the same value"
            else:
                first_row[digest] = number
            if message:
                problems.setdefault(number, []).append(
                    RowProblem(row=number, field=fd.key, code="duplicate_value", message=message)
                )
