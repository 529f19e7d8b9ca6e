"""In-app notifications: written by automations (and later other services), read by members.

``notify`` inserts in the caller's transaction and never commits; with a ``dedupe_key`` a second
call for the same cause and person is a no-op, so a redelivered action never notifies twice.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.statements import insert_ignoring_conflicts
from services.json_body import decode_json_body
from services.notifications.models import Notification
from tenants.base import new_id, utcnow
from tenants.errors import FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.isolation import session_tenant_id

MAX_PAGE = 200
MAX_TITLE = 300
MAX_BODY = 10_000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def notify(
    db: AsyncSession,
    user_ids: Iterable[uuid.UUID],
    title: str | dict[uuid.UUID, str],
    body: str | dict[uuid.UUID, str] = "",
    link: str | None = None,
    *,
    dedupe_key: str | None = None,
) -> list[uuid.UUID]:
    """Notify each of ``user_ids`` (title and body the same for all, or per user); returns the users
    notified now (those already notified for ``dedupe_key`` are left out)."""
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise RuntimeError("notify needs a tenant-scoped session")
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return []
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "id": new_id(),
            "user_id": user_id,
            "title": _clip(title if isinstance(title, str) else title.get(user_id, ""), MAX_TITLE),
            "body": _clip(body if isinstance(body, str) else body.get(user_id, ""), MAX_BODY),
            "link": link,
            "dedupe_key": dedupe_key,
            "read_at": None,
            "created_at": now,
        }
        for user_id in wanted
    ]
    inserted = await insert_ignoring_conflicts(
        db, Notification, rows, conflict=("tenant_id", "user_id", "dedupe_key"), returning=("user_id",)
    )
    notified = {row[0] for row in inserted}
    return [u for u in wanted if u in notified]


def _encode_cursor(notification_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([str(notification_id)])).decode()


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        values = decode_json_body(base64.urlsafe_b64decode(cursor.encode()))
        return uuid.UUID(values[0])
    except (ValueError, TypeError, IndexError, KeyError, ProblemError) as exc:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        ) from exc


async def list_notifications(
    db: AsyncSession, user_id: uuid.UUID, *, unread: bool = False, cursor: str | None = None, limit: int = 50
) -> tuple[list[Notification], str | None]:
    """A member's notifications, newest first (ids are time-ordered), with keyset pagination."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Notification).where(Notification.user_id == user_id).order_by(Notification.id.desc())
    if unread:
        query = query.where(Notification.read_at.is_(None))
    if cursor:
        query = query.where(Notification.id < _decode_cursor(cursor))
    rows = list((await db.scalars(query.limit(limit + 1))).all())
    next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def mark_read(db: AsyncSession, user_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    """Mark one of the member's notifications read (idempotent); another member's is a 404."""
    row = await db.scalar(
        select(Notification).where(Notification.id == notification_id, Notification.user_id == user_id)
    )
    if row is None:
        raise NotFound("No such notification.", code="notification_not_found")
    if row.read_at is None:
        row.read_at = utcnow()
        await db.flush()
    return row
