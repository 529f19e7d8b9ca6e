"""Request and response bodies of the procedures API.

A definition travels as a JSON object and is decoded by the service (not by the request parser), so
that a wrong one is answered with every problem and a pointer into the definition itself.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tenants.errors import FieldProblem

Key = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="lower_snake key, unique in the workspace")]
Title = Annotated[str, Meta(min_length=1, max_length=200)]
Purpose = Annotated[str, Meta(max_length=5000)]
Metric = Annotated[str, Meta(max_length=500)]
ChangeNote = Annotated[str, Meta(min_length=1, max_length=2000, description="why this version exists")]
DefinitionJSON = Annotated[dict[str, Any], Meta(description="a procedure definition (see docs/procedures.md)")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class ProcedureIn(Input, kw_only=True):
    key: Key
    title: Title
    purpose: Purpose = ""
    metric: Metric | None = None
    owner_id: uuid.UUID | None = None  # defaults to the caller
    collection_id: uuid.UUID | None = None
    definition: DefinitionJSON


class ProcedurePatch(Input):
    """Changes to a procedure's facts; absent fields are left alone (``null`` clears metric/collection)."""

    title: Title | None = None
    purpose: Purpose | None = None
    metric: Metric | msgspec.UnsetType | None = msgspec.UNSET
    owner_id: uuid.UUID | None = None
    collection_id: uuid.UUID | msgspec.UnsetType | None = msgspec.UNSET


class DraftIn(Input):
    definition: DefinitionJSON


class PublishIn(Input):
    change_note: ChangeNote


class ProcedureOut(msgspec.Struct):
    id: uuid.UUID
    key: str
    title: str
    purpose: str
    metric: str | None
    owner_id: uuid.UUID
    collection_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    latest_published_version: int | None
    draft_version_id: uuid.UUID | None


class VersionSummaryOut(msgspec.Struct):
    id: uuid.UUID
    procedure_id: uuid.UUID
    number: int
    status: str
    change_note: str | None
    published_by: uuid.UUID | None
    published_at: datetime | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    based_on_version_id: uuid.UUID | None


class VersionOut(VersionSummaryOut):
    definition: dict[str, Any]


class ValueChangeOut(msgspec.Struct):
    """One changed value: ``path`` is a JSON pointer inside the step (or the definition)."""

    path: str
    before: Any
    after: Any


class StepChangeOut(msgspec.Struct):
    key: str
    changes: list[ValueChangeOut]


class DiffOut(msgspec.Struct):
    """What changed from ``from_version`` to ``to_version``, steps matched by key."""

    from_version: int
    to_version: int
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[StepChangeOut]
    # Changes outside the steps: start, data, roles, and the steps' order.
    other_changes: list[ValueChangeOut]


class ProblemsOut(msgspec.Struct):
    """What publishing a version would refuse, without publishing it."""

    valid: bool
    errors: list[FieldProblem]


class AcknowledgementOut(msgspec.Struct):
    version_id: uuid.UUID
    user_id: uuid.UUID
    acknowledged_at: datetime
