"""Tables of the automation service: automations, their executions, and each action's runs.

``automations.trigger_type`` copies the trigger's ``type`` (and, for record and run events, the
dispatcher's lookup is one indexed query by tenant and trigger type). An execution is unique per
automation and event (``event_id``), so a redelivered event never runs an automation twice. Every
attempt of every action is one ``automation_action_runs`` row: the history a tenant sees.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Automation(TenantScoped, Base):
    """One trigger, the conditions that must all hold, and an ordered list of actions."""

    __tablename__ = "automations"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "trigger_type", "enabled"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    description_zh: Mapped[str] = mapped_column(Text, default="")
    description_en: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    trigger_type: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    missed_fire: Mapped[str] = mapped_column(String(16), default="fire_once")
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AutomationExecution(TenantScoped, Base):
    """One run of an automation for one event; ``action_index`` is the next action to run."""

    __tablename__ = "automation_executions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_id"], ["automations.tenant_id", "automations.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("tenant_id", "automation_id", "event_id"),
        Index(None, "tenant_id", "automation_id", "id"),
        Index(None, "tenant_id", "status", "updated_at"),
        Index(None, "tenant_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    automation_id: Mapped[uuid.UUID]
    event_id: Mapped[str] = mapped_column(String(200))
    # queued | running | waiting | succeeded | failed | dead
    status: Mapped[str] = mapped_column(String(16))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    action_index: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)  # attempts of the current action
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    dead_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class AutomationActionRun(TenantScoped, Base):
    """One attempt of one action of an execution: its input, output or error, and duration."""

    __tablename__ = "automation_action_runs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "execution_id"],
            ["automation_executions.tenant_id", "automation_executions.id"],
            ondelete="CASCADE",
            name="fk_automation_action_runs_execution",  # the conventional name is over 63 characters
        ),
        # One row per attempt: a redelivered message cannot record (or do) the same attempt twice.
        UniqueConstraint(
            "tenant_id", "execution_id", "action_index", "attempt", name="uq_automation_action_runs_attempt"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    execution_id: Mapped[uuid.UUID]
    action_index: Mapped[int]
    attempt: Mapped[int]
    kind: Mapped[str] = mapped_column(String(64))
    # succeeded | waiting | retrying | failed | dead
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- inbound webhooks


class AutomationWebhook(TenantScoped, Base):
    """The secret URL of an automation with a webhook trigger.

    Only a hash of the URL's token is kept (the URL is shown once, when made or rotated). The token
    starts with the tenant's id, so an inbound call is looked up inside one tenant. The signing
    secret is derived from the platform's secret key and ``signing_nonce``: never stored, changed by
    a rotation.
    """

    __tablename__ = "automation_webhooks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_id"], ["automations.tenant_id", "automations.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("tenant_id", "token_hash"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    automation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    signing_nonce: Mapped[str] = mapped_column(String(64))
    rotated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(TenantScoped, Base):
    """One inbound call of an automation's webhook, accepted or refused (and why): visible history."""

    __tablename__ = "automation_webhook_deliveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_id"],
            ["automations.tenant_id", "automations.id"],
            ondelete="CASCADE",
            name="fk_automation_webhook_deliveries_automation",  # the conventional name is over 63 characters
        ),
        Index(None, "tenant_id", "automation_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    automation_id: Mapped[uuid.UUID]
    status: Mapped[str] = mapped_column(String(16))  # accepted | refused
    code: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    size_bytes: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # when it was received


class WebhookReplay(TenantScoped, Base):
    """A signed inbound delivery, remembered while its signature is accepted (keyed by the
    signature, which covers the timestamp and the body), with the answer it got: a copy sent again
    gets that answer and starts nothing. The key is unique, so two copies arriving at once race on
    it and one of them waits for the other's answer."""

    __tablename__ = "automation_webhook_replays"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_id"],
            ["automations.tenant_id", "automations.id"],
            ondelete="CASCADE",
            name="fk_automation_webhook_replays_automation",
        ),
        Index(None, "tenant_id", "expires_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    automation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)  # the v1 HMAC, hex
    # 0 while the first copy is being handled (never committed so); then the HTTP status it got.
    status_code: Mapped[int] = mapped_column(default=0)
    # 202: {"execution_id"}; a refusal: {"code", "title", "detail"}.
    answer: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DefaultEscalation(TenantScoped, Base):
    """A procedure step whose default SLA escalation automations were installed (once: a tenant that
    deletes or edits them keeps its choice when the procedure is published again)."""

    __tablename__ = "automation_default_escalations"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    procedure_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    step_key: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
