"""Tables of the sops runs service.

``runs`` holds each run's engine state (the msgspec-encoded ``RunState``) and a ``lock_version``
for optimistic concurrency. ``step_instances`` and ``run_exceptions`` mirror the engine's step and
exception states, kept in sync after every transition, so that "my tasks", SLA scans and listings
are indexed queries instead of state decoding.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Run(TenantScoped, Base):
    """One run of a procedure version (a sub-run names its parent run and step)."""

    __tablename__ = "runs"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "status", "id"),
        Index(None, "tenant_id", "procedure_id", "status", "id"),
        Index(None, "tenant_id", "parent_run_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    procedure_id: Mapped[uuid.UUID]
    version_id: Mapped[uuid.UUID]
    version_number: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    collection_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    record_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    parent_step_id: Mapped[int | None] = mapped_column(default=None)
    started_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    lock_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepInstance(TenantScoped, Base):
    """One engine step instance of a run (``step_id`` is the engine's int id within the run).

    The step's SLA moments (due-soon reminder, overdue notice, expiry, end of a wait) are armed as
    one scheduler timer per step (``step:{run_id}:{step_id}``); ``reminded_at`` and
    ``overdue_notified_at`` make each notice fire once.
    """

    __tablename__ = "step_instances"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "run_id"], ["runs.tenant_id", "runs.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "assignee_id", "status", "due_at"),
        Index(None, "tenant_id", "status", "due_at"),
        Index(None, "tenant_id", "role", "status", "due_at"),
        Index(None, "tenant_id", "procedure_id", "key", "ready_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    procedure_id: Mapped[uuid.UUID]
    # Copied from the run (it never changes) so that "my tasks" reads one table.
    run_title: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(63))
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    optional: Mapped[bool] = mapped_column(default=False)
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    # The role that may claim the step while nobody is assigned (role-owned steps).
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    due_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    wait_until: Mapped[datetime | None] = mapped_column(default=None)
    # The due time less the due rule's ``remind_before``, computed when the step became ready.
    remind_at: Mapped[datetime | None] = mapped_column(default=None)
    reminded_at: Mapped[datetime | None] = mapped_column(default=None)
    overdue_notified_at: Mapped[datetime | None] = mapped_column(default=None)
    action_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    outcome: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunComment(TenantScoped, Base):
    """A comment on a run, or on one of its steps, with attached files (ids from the files service)."""

    __tablename__ = "run_comments"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "run_id"], ["runs.tenant_id", "runs.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "run_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    run_id: Mapped[uuid.UUID]
    step_id: Mapped[int | None] = mapped_column(default=None)
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    body: Mapped[str] = mapped_column(Text)
    file_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunException(TenantScoped, Base):
    """Mirror of an engine exception of a run (``exception_id`` is the engine's int id), for listing.

    ``escalate_at`` is set only while the exception is open and has not escalated yet; it is armed
    as a scheduler timer (``escalate:{run_id}:{exception_id}``). ``escalated_at`` records when it
    escalated.
    """

    __tablename__ = "run_exceptions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "run_id"], ["runs.tenant_id", "runs.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "status", "raised_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    exception_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(63))
    step_id: Mapped[int | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    file_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    raised_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    resolved_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    escalate_at: Mapped[datetime | None] = mapped_column(default=None)
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
