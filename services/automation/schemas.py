"""Request and response bodies of the automation service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from services.schema_docs import documented

RecordEvent = Literal["created", "updated", "deleted"]
RunEvent = Literal[
    "run.started",
    "run.completed",
    "step.ready",
    "step.completed",
    "step.overdue",
    "step.due_soon",
    "exception.raised",
    "exception.escalated",
]


class Description(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    zh_cn: str = msgspec.field(default="", name="zh-CN")
    en: str = ""


class RecordEventTrigger(msgspec.Struct, tag="record_event", tag_field="type", forbid_unknown_fields=True):
    """A record of ``collection_id`` was created, updated or deleted (optionally: one of ``fields`` changed)."""

    collection_id: uuid.UUID
    events: list[RecordEvent]
    fields: list[str] = msgspec.field(default_factory=list)


class RunEventTrigger(msgspec.Struct, tag="run_event", tag_field="type", forbid_unknown_fields=True):
    """A run or step event, optionally of one procedure (and one step key)."""

    events: list[RunEvent]
    procedure_id: uuid.UUID | None = None
    step_key: str | None = None


class ScheduleTrigger(msgspec.Struct, tag="schedule", tag_field="type", forbid_unknown_fields=True):
    """A cron schedule in the tenant's business-calendar timezone."""

    cron: str
    business_days_only: bool = False
    missed: Literal["fire_once", "skip"] = "fire_once"


class WebhookTrigger(msgspec.Struct, tag="webhook", tag_field="type", forbid_unknown_fields=True):
    """An inbound webhook; ``mapping`` names values computed from ``payload`` (and ``headers``)."""

    verify_signature: bool = False
    mapping: dict[str, str] = msgspec.field(default_factory=dict)


class PluginTrigger(msgspec.Struct, tag="plugin", tag_field="type", forbid_unknown_fields=True):
    """A trigger a plugin provides."""

    plugin: str
    trigger: str


Trigger = RecordEventTrigger | RunEventTrigger | ScheduleTrigger | WebhookTrigger | PluginTrigger


# Checked by the service, which lists every problem of an automation at once.
Name = Annotated[str, documented(min_length=1, max_length=200)]
Conditions = Annotated[list[str], documented(max_items=50, description="expressions that must all hold")]
Actions = Annotated[
    list[dict[str, Any]], documented(min_items=1, max_items=50, description="{kind, …settings}, run in order")
]


class AutomationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    trigger: Trigger
    actions: Actions
    description: Description = msgspec.field(default_factory=Description)
    owner_id: uuid.UUID | None = None  # default: whoever saves it
    enabled: bool = True
    conditions: Conditions = msgspec.field(default_factory=list)


class AutomationPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Only the given attributes change; the result is validated as a whole."""

    name: Name | None = None
    description: Description | None = None
    owner_id: uuid.UUID | None = None
    enabled: bool | None = None
    trigger: Trigger | None = None
    conditions: Conditions | None = None
    actions: Actions | None = None


class AutomationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    description: Description
    owner_id: uuid.UUID | None
    enabled: bool
    disabled_reason: str | None
    trigger: dict[str, Any]
    conditions: list[str]
    actions: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class ActionRunOut(msgspec.Struct, kw_only=True):
    action_index: int
    attempt: int
    kind: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    started_at: datetime
    duration_ms: int


class ExecutionOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    automation_id: uuid.UUID
    event_id: str
    status: str
    action_index: int
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    dead_reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ExecutionDetailOut(msgspec.Struct, kw_only=True):
    execution: ExecutionOut
    event: dict[str, Any]
    actions: list[ActionRunOut]


# ---------------------------------------------------------------- inbound webhooks


class WebhookSecretsOut(msgspec.Struct, kw_only=True):
    """Shown once: the URL to call and the secret to sign with (``X-Guiju-Signature``)."""

    url: str
    signing_secret: str


class WebhookDeliveryOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    status: str
    code: str | None
    detail: str | None
    size_bytes: int
    received_at: datetime


class WebhookAcceptedOut(msgspec.Struct, kw_only=True):
    execution_id: uuid.UUID
