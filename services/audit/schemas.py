"""Response bodies of the audit API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class AuditEventOut(msgspec.Struct):
    seq: int
    id: uuid.UUID
    occurred_at: datetime
    actor_id: uuid.UUID | None
    action: str
    subject_type: str
    subject_id: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


class AuditPageOut(msgspec.Struct):
    """Newest first; ask for the next page with ``before_seq=next_before_seq``."""

    items: list[AuditEventOut]
    next_before_seq: int | None
