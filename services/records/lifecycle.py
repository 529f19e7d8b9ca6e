"""A collection's life beyond its fields: archived (hidden from the lists, every record kept) and
restored, its key renamed (the relation fields of other collections that name it follow), and the
sample records a template added removed in one go.

Procedures and automations name a collection by its id, so a new key leaves them untouched; only
relation fields name their target by key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import service as audit
from services.records.collections import _collection, _stored_defs
from services.records.crud import _delete
from services.records.fields import KEY_RE, FieldType
from services.records.models import Collection, Record
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


async def archive_collection(db: AsyncSession, principal: Principal, collection_id: uuid.UUID) -> Collection:
    """Hide a collection from the lists; its records and schema stay (admin). Idempotent."""
    principal.require_role(Role.ADMIN)
    collection = await _collection(db, collection_id, lock=True)
    if collection.archived_at is None:
        collection.archived_at = collection.updated_at = utcnow()
        await db.flush()
        await audit.record_change(
            db,
            actor_id=principal.user_id,
            action="collection.archived",
            subject_type="collection",
            subject_id=collection.id,
            after={"key": collection.key},
        )
    return collection


async def restore_collection(db: AsyncSession, principal: Principal, collection_id: uuid.UUID) -> Collection:
    """Bring an archived collection back to the lists (admin). Idempotent."""
    principal.require_role(Role.ADMIN)
    collection = await _collection(db, collection_id, lock=True)
    if collection.archived_at is not None:
        collection.archived_at = None
        collection.updated_at = utcnow()
        await db.flush()
        await audit.record_change(
            db,
            actor_id=principal.user_id,
            action="collection.restored",
            subject_type="collection",
            subject_id=collection.id,
            after={"key": collection.key},
        )
    return collection


async def key_taken(db: AsyncSession, key: str) -> bool:
    """Whether the workspace has a collection (archived ones too) with this key."""
    return await db.scalar(select(Collection.id).where(Collection.key == key)) is not None


async def free_key(db: AsyncSession, key: str, also_taken: Iterable[str] = ()) -> str:
    """The first of ``key_2``, ``key_3``… that no collection holds (nor ``also_taken``)."""
    taken = set(also_taken)
    stem = key[:58]
    for n in range(2, 1000):
        candidate = f"{stem}_{n}"
        if candidate not in taken and not await key_taken(db, candidate):
            return candidate
    raise Conflict("No free key is left after '{key}'.", code="collection_key_exhausted", key=key)  # pragma: no cover


async def rename_collection_key(
    db: AsyncSession, principal: Principal, collection_id: uuid.UUID, new_key: str
) -> Collection:
    """Give a collection a new key (admin); every relation field naming the old key follows.

    422 ``invalid_key`` when the key is not lower_snake_case; 409 ``collection_key_taken`` (with the
    suggested free key in the message) when another collection holds it.
    """
    principal.require_role(Role.ADMIN)
    if not KEY_RE.fullmatch(new_key):
        problem = FieldProblem(pointer="/key", code="invalid_key", message="lower_snake_case, starting with a letter")
        raise ValidationProblem(errors=[problem])
    collection = await _collection(db, collection_id, lock=True)
    old_key = collection.key
    if new_key == old_key:
        return collection
    if await key_taken(db, new_key):
        suggested = await free_key(db, new_key)
        raise Conflict(
            "A collection with the key '{new_key}' exists; '{suggested}' is free.",
            code="collection_key_taken",
            errors=[FieldProblem(pointer="/key", code="collection_key_taken", message=suggested)],
            new_key=new_key,
            suggested=suggested,
        )
    now = utcnow()
    collection.key = new_key
    collection.updated_at = now
    followed: list[str] = []
    for other in await db.scalars(select(Collection)):
        defs = _stored_defs(other)
        if not any(d.type == FieldType.RELATION and d.target_collection == old_key for d in defs):
            continue
        fields = [
            {**raw, "target_collection": new_key}
            if raw.get("type") == FieldType.RELATION and raw.get("target_collection") == old_key
            else raw
            for raw in other.fields
        ]
        other.fields = fields
        other.updated_at = now
        followed.append(other.key)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="collection.key_renamed",
        subject_type="collection",
        subject_id=collection.id,
        before={"key": old_key},
        after={"key": new_key, "relations_updated": sorted(followed)},
    )
    return collection


async def count_samples(db: AsyncSession, collection_ids: Iterable[uuid.UUID] | None = None) -> int:
    """How many live sample records the workspace holds (in ``collection_ids`` when given)."""
    # select_from names the entity, so that the tenant criterion reaches this count.
    query = select(func.count()).select_from(Record).where(Record.sample.is_(True), Record.deleted_at.is_(None))
    ids = list(collection_ids) if collection_ids is not None else None
    if ids is not None:
        query = query.where(Record.collection_id.in_(ids))
    return int(await db.scalar(query) or 0)


async def delete_samples(
    db: AsyncSession, principal: Principal, collection_ids: Iterable[uuid.UUID] | None = None
) -> int:
    """Delete every live sample record (of ``collection_ids`` when given) as a member deleting each
    would (events, freed unique values), in one call (admin); the number deleted."""
    principal.require_role(Role.ADMIN)
    query = select(Record).where(Record.sample.is_(True), Record.deleted_at.is_(None)).order_by(Record.id)
    ids = list(collection_ids) if collection_ids is not None else None
    if ids is not None:
        query = query.where(Record.collection_id.in_(ids))
    rows = list(await db.scalars(query))
    collections: dict[uuid.UUID, Collection] = {}
    for record in rows:
        if record.collection_id not in collections:
            collections[record.collection_id] = await _collection(db, record.collection_id)
        await _delete(db, collections[record.collection_id], record, principal.user_id)
    if rows:
        await audit.record_change(
            db,
            actor_id=principal.user_id,
            action="records.samples_deleted",
            subject_type="workspace",
            subject_id=principal.require_tenant(),
            after={"records_deleted": len(rows)},
        )
    return len(rows)
