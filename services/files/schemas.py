"""Response bodies of the files API."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class StoredFileOut(msgspec.Struct):
    """A stored file's description (its bytes are at ``/api/v1/files/{id}/content``)."""

    id: uuid.UUID
    name: str
    content_type: str
    size: int
    sha256: str
    uploaded_by: uuid.UUID | None
    created_at: datetime
