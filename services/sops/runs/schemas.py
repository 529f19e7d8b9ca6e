"""Request and response bodies of the runs API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from services.validation import INT32_MAX

Note = Annotated[str, Meta(max_length=10_000)]
StepId = Annotated[int, Meta(ge=1, le=INT32_MAX, description="a step's id within its run")]
FileIds = Annotated[list[uuid.UUID], Meta(max_length=50, description="ids of files uploaded with POST /api/v1/files")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class StartRunIn(Input):
    procedure_id: uuid.UUID
    record_id: uuid.UUID | None = None
    title: Annotated[str, Meta(min_length=1, max_length=300)] | None = None
    data: dict[str, Any] = {}


class AssignIn(Input):
    user_id: uuid.UUID


class EvidenceIn(Input):
    note: Note = ""
    files: FileIds = []
    value: float | None = None


class CompleteIn(Input):
    values: dict[str, Any] = {}
    checked: Annotated[list[Annotated[str, Meta(max_length=63)]], Meta(max_length=200)] = []
    evidence: EvidenceIn = msgspec.field(default_factory=EvidenceIn)


class DecisionNoteIn(Input):
    note: Note = ""


class CommentIn(Input):
    body: Annotated[str, Meta(min_length=1, max_length=10_000)]
    step_id: StepId | None = None
    file_ids: FileIds = []
    mentions: Annotated[list[uuid.UUID], Meta(max_length=50, description="members the comment calls on")] = []


class RaiseExceptionIn(Input):
    kind: Annotated[str, Meta(min_length=1, max_length=63)]
    step_id: StepId | None = None
    note: Note = ""
    file_ids: FileIds = []


class ResolveExceptionIn(Input):
    outcome: Literal["resume", "abort"] | None = None
    note: Note = ""


class AbortIn(Input):
    reason: Note = ""


class MigrateIn(Input):
    version_id: uuid.UUID


class BulkMigrateIn(Input):
    procedure_id: uuid.UUID
    version_id: uuid.UUID


# ---------------------------------------------------------------- answers


class StepOut(msgspec.Struct, kw_only=True):
    id: int
    key: str
    title: str
    kind: str
    status: str
    optional: bool
    assignee_id: uuid.UUID | None
    role: str | None
    ready_at: datetime | None
    due_at: datetime | None
    remind_at: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None
    finished_by: uuid.UUID | None
    outcome: str | None
    overdue: bool


class ExceptionOut(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    step_id: int | None
    status: str
    note: str
    file_ids: list[str]
    raised_by: uuid.UUID | None
    raised_at: datetime
    outcome: str | None
    resolved_by: uuid.UUID | None
    resolved_at: datetime | None
    escalate_at: datetime | None  # set while open and not yet escalated
    escalated_at: datetime | None
    resolution_note: str = ""  # what the person who resolved it wrote


class CommentOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    step_id: int | None
    author_id: uuid.UUID | None
    body: str
    file_ids: list[str]
    created_at: datetime


class RunOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    procedure_id: uuid.UUID
    version_id: uuid.UUID
    version_number: int
    status: str
    title: str
    collection_id: uuid.UUID | None
    record_id: uuid.UUID | None
    parent_run_id: uuid.UUID | None
    parent_step_id: int | None
    started_by: uuid.UUID | None
    started_at: datetime
    finished_at: datetime | None


class RunDetailOut(RunOut, kw_only=True):
    data: dict[str, Any]
    steps: list[StepOut]
    exceptions: list[ExceptionOut]


class RunPage(msgspec.Struct, kw_only=True):
    items: list[RunOut]
    next_cursor: str | None


class TaskOut(msgspec.Struct, kw_only=True):
    run_id: uuid.UUID
    run_title: str
    procedure_id: uuid.UUID
    step_id: int
    key: str
    title: str
    kind: str
    status: str
    assignee_id: uuid.UUID | None
    role: str | None
    ready_at: datetime | None
    due_at: datetime | None
    overdue: bool


class TaskPage(msgspec.Struct, kw_only=True):
    items: list[TaskOut]
    next_cursor: str | None


class MigrationResult(msgspec.Struct, kw_only=True):
    run_id: uuid.UUID
    migrated: bool
    problems: list[str]


class BulkMigrationOut(msgspec.Struct, kw_only=True):
    results: list[MigrationResult]
