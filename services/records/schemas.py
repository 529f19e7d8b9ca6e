"""Request and response bodies of the records API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from services.records.fields import MAX_FIELDS, FieldDef
from services.schema_docs import documented
from services.validation import PositiveInt32

Key = Annotated[
    str,
    Meta(max_length=63, description="lower_snake_case, stable for the collection's life"),
    documented(pattern=r"^[a-z][a-z0-9_]{0,62}$"),
]
Name = Annotated[str, Meta(max_length=200), documented(min_length=1)]
# Field definitions, decoded one by one by the service so that every definition's problems are listed.
FieldDefs = Annotated[
    list[dict[str, Any]],
    Meta(max_length=MAX_FIELDS, description="field definitions: {key, label, type, …} (see docs/records.md)"),
]
Values = Annotated[dict[str, Any], Meta(description="field key → value, as the field's type says")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class CollectionIn(Input):
    key: Key
    name: Name
    entity_scoped: bool = False
    fields: FieldDefs = []


class CollectionPatch(Input):
    """A schema change. ``fields`` is the complete list of visible fields, in order: a field left
    out is hidden (its values are kept until purged); a hidden field listed again is restored."""

    name: Name | None = None
    fields: FieldDefs | None = None
    summary: Annotated[str, Meta(max_length=500)] | None = None


class PurgeIn(Input):
    field_keys: Annotated[list[Key], Meta(max_length=MAX_FIELDS)]


class RecordIn(Input):
    values: Values = {}
    entity_id: uuid.UUID | None = None


class RecordPatch(Input):
    """Only the given values change; ``version``, when sent, must be the record's current version."""

    values: Values = {}
    entity_id: uuid.UUID | None = None
    version: PositiveInt32 | None = None


class CollectionOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    key: str
    name: str
    entity_scoped: bool
    schema_version: int
    fields: list[FieldDef]
    hidden_fields: list[FieldDef]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class CollectionVersionOut(msgspec.Struct, kw_only=True):
    version: int
    fields: list[FieldDef]
    summary: list[str]
    actor_id: uuid.UUID | None
    created_at: datetime


class RecordOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    collection_id: uuid.UUID
    entity_id: uuid.UUID | None
    values: dict[str, Any]
    version: int
    sample: bool = False  # example data (a template's samples), removable in one go
    created_by: uuid.UUID | None
    updated_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class RecordPage(msgspec.Struct, kw_only=True):
    items: list[RecordOut]
    # Pass as ``cursor`` to get the next page; null on the last page.
    next_cursor: str | None


class RowProblem(msgspec.Struct, kw_only=True):
    row: int
    field: str | None
    code: str
    message: str


class ImportReport(msgspec.Struct, kw_only=True):
    imported: int
    skipped: list[RowProblem]


class RenameIn(Input):
    """A collection's new key; relation fields naming the old one follow."""

    key: Key


class SamplesDeleted(msgspec.Struct, kw_only=True):
    deleted: int
