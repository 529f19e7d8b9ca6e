"""Collections: tenant-defined tables, their field definitions and versioned schemas.

A schema change is a new version: values are converted, never dropped, and a change that would not
fit an existing value is refused with nothing changed. Managers and above shape collections (the
schema is a business decision); admins purge hidden fields and delete collections, the destructive
operations.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import service as audit
from services.db.statements import one_or_raise
from services.names import clean_name, name_problems
from services.records.fields import (
    KEY_RE,
    FieldDef,
    FieldType,
    FieldValueError,
    convert_value,
    default_for,
    validate_field_defs,
)
from services.records.models import Collection, CollectionVersion, Record, RecordUniqueValue
from services.records.schemas import CollectionIn, CollectionPatch
from services.records.values import value_hash
from services.validation import struct_problems
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MAX_LISTED_PROBLEMS = 1_000


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
        raise NotFound("No collection '{key}'.", code="collection_not_found", key=key)
    return collection_info(found)


async def collection_fields(db: AsyncSession, collection_id: uuid.UUID) -> list[FieldDef]:
    """The current, visible fields of a collection, in order."""
    return collection_info(await _collection(db, collection_id)).fields


async def list_collections(
    db: AsyncSession, principal: Principal, *, archived: bool | None = False
) -> list[Collection]:
    """The workspace's collections: live ones (``archived=False``, the default), archived ones
    (``True``) or all (``None``)."""
    principal.require_role(Role.MEMBER)
    query = select(Collection).order_by(Collection.name, Collection.id)
    if archived is not None:
        query = query.where(Collection.archived_at.is_not(None) if archived else Collection.archived_at.is_(None))
    return list(await db.scalars(query))


async def read_collection(db: AsyncSession, principal: Principal, collection_id: uuid.UUID) -> Collection:
    principal.require_role(Role.MEMBER)
    return await _collection(db, collection_id)


async def _relation_problems(db: AsyncSession, defs: list[FieldDef], own_key: str) -> list[FieldProblem]:
    targets = {d.target_collection for d in defs if d.type == FieldType.RELATION and d.target_collection}
    if not targets:
        return []
    known = set(await db.scalars(select(Collection.key).where(Collection.key.in_(targets)))) | {own_key}
    return [
        FieldProblem.of(
            pointer=f"/fields/{i}/target_collection",
            code="unknown_collection",
            message="there is no collection '{target_collection}'",
            target_collection=d.target_collection,
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
        raise Conflict("A collection with the key '{key}' exists.", code="collection_key_taken", key=data.key)
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
                    FieldProblem.of(
                        pointer=f"/records/{record.id}/{fd.key}",
                        code="not_convertible",
                        message="{value} does not convert to {type}: {reason}",
                        value=_short(values.get(fd.key)),
                        type=fd.type,
                        reason=exc.message,
                    )
                )
        for fd, default in backfill:
            if values.get(fd.key) is None:
                values[fd.key] = default
        new_values[record.id] = values
    if problems:
        raise ValidationProblem(
            "{count} records would not convert; nothing was changed.",
            errors=problems[:MAX_LISTED_PROBLEMS],
            count=len({p.pointer.split("/")[2] for p in problems}),
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
                    FieldProblem.of(
                        pointer=f"/records/{record.id}/{fd.key}",
                        code="duplicate_value",
                        message="{value} is also the value of record {record}",
                        value=_short(value),
                        record=seen[digest],
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
        FieldProblem(f"/field_keys/{i}", "not_hidden", "only a removed (hidden) field can be purged")
        if key in by_key
        else FieldProblem.of(f"/field_keys/{i}", "unknown_field", "no field '{key}'", key=key)
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


async def count_records(db: AsyncSession, collection_id: uuid.UUID) -> int:
    """How many live (not deleted) records the collection holds."""
    found = await db.scalar(
        select(func.count())
        .select_from(Record)
        .where(Record.collection_id == collection_id, Record.deleted_at.is_(None))
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
        raise Conflict(
            "The collection '{key}' holds {held} record(s).",
            code="collection_has_records",
            key=collection.key,
            held=held,
        )
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
