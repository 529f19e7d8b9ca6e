"""The audit trail: every change to collections, records, procedures and runs, hash-chained per tenant."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


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
    """Append an audit event for the session's tenant, in the caller's transaction.

    ``action`` is e.g. ``record.updated``; ``before``/``after`` are JSON-able (msgspec encodes
    UUIDs, datetimes and structs).
    """
    raise NotImplementedError
