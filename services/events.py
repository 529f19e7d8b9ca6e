"""The catalog of every event the platform emits: its name, its payload, what it means, and which
automation trigger can fire on it.

An emitter names an event through its entry here (``outbox.emit(db, events.RECORD_CREATED.name,
payload)``; the run engine takes the entry itself), never through a string of its own: a misspelt
entry fails the type check, and ``tests/unit/test_event_catalog.py`` walks the services' source
so that an emit, a delayed emit or a subscription with a name the catalog does not list fails
there, long before a tenant's transaction would. The automation triggers (``record_event``,
``run_event``) offer exactly the events whose entry names them.

Payloads stay plain JSON objects on the hot path (nothing is converted when an event is emitted);
each entry's msgspec Struct documents the keys an emitter sends and their types, and tests
validate real payloads against it (:func:`payload_problem`). Keys starting with ``_`` are the
platform's own (the cause of an event, see ``services.outbox``) and belong to no payload.

Events that plugins emit form one family, ``plugin.<plugin>.<trigger>`` (:data:`PLUGIN_EVENTS`):
their payload is whatever the plugin declared for its trigger.

``python -m services.events`` prints the reference page ``docs/events.md``.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

TriggerKind = Literal["record_event", "run_event", "plugin"]
RunStatusName = Literal["running", "completed", "aborted"]
P = TypeVar("P", bound=Struct)


class Payload(Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every payload struct: keyword-only, and strict about keys (a key an emitter adds
    must be documented here, or the payload tests fail)."""


# ---------------------------------------------------------------- records


class RecordChanged(Payload):
    """A record of a collection changed."""

    collection_id: uuid.UUID
    collection_key: str
    record_id: uuid.UUID
    entity_id: uuid.UUID | None
    changed_fields: Annotated[list[str], Meta(description="keys of the visible fields whose value changed")]
    values: Annotated[dict[str, Any] | None, Meta(description="every visible field after the change; null: deleted")]
    before: Annotated[dict[str, Any] | None, Meta(description="every visible field before the change; null: created")]


# ---------------------------------------------------------------- runs and steps (from the run engine)


class RunPayload(Payload):
    """What every event of a run carries about the run."""

    run_id: uuid.UUID
    procedure_id: uuid.UUID
    version_id: uuid.UUID
    run_title: str
    run_status: RunStatusName
    record_id: Annotated[uuid.UUID | None, Meta(description="the record the run is about, if any")]
    collection_id: Annotated[uuid.UUID | None, Meta(description="the collection of that record")]


class StepPayload(RunPayload):
    """What every event of a step carries about the step (and its run)."""

    step_id: Annotated[int, Meta(description="the step instance's number within the run")]
    step_key: str | None
    assignee_id: uuid.UUID | None
    due_at: datetime | None


class ExceptionPayload(RunPayload):
    """What every event of an exception carries; the ``step_*`` keys when it was raised at a step."""

    exception_id: Annotated[int, Meta(description="the exception's number within the run")]
    step_id: int | UnsetType = UNSET
    step_key: str | UnsetType | None = UNSET
    assignee_id: uuid.UUID | UnsetType | None = UNSET
    due_at: datetime | UnsetType | None = UNSET


class Nothing(Payload):
    """No data."""


class RunStartedData(Payload):
    started_by: uuid.UUID | None


class RunStarted(RunPayload):
    data: RunStartedData


class RunCompleted(RunPayload):
    data: Nothing


class RunAbortedData(Payload):
    reason: str
    by: Annotated[uuid.UUID | None, Meta(description="who aborted it; null: the procedure itself")]


class RunAborted(RunPayload):
    data: RunAbortedData


class StepReadyData(Payload):
    owner: Annotated[dict[str, Any] | None, Meta(description="the step's owner rule")]
    due_at: datetime | None
    expires_at: datetime | None
    approvers: Annotated[list[dict[str, Any]] | UnsetType, Meta(description="approval steps: the approver rules")] = (
        UNSET
    )
    mode: Annotated[Literal["one", "any", "all"] | UnsetType, Meta(description="approval steps: who must approve")] = (
        UNSET
    )


class StepReady(StepPayload):
    data: StepReadyData


class StepAssignedData(Payload):
    user_id: uuid.UUID
    by: Annotated[uuid.UUID | None, Meta(description="who assigned it; null: the owner rule")]
    caused_by: Annotated[
        uuid.UUID | None,
        Meta(description="for the owner rule: the member whose action made the step ready (null: the platform)"),
    ] = None


class StepAssigned(StepPayload):
    data: StepAssignedData


class ByData(Payload):
    by: uuid.UUID


class StepStarted(StepPayload):
    data: ByData


class StepCompletedData(Payload):
    outcome: Annotated[
        str | None,
        Meta(description="done, approved, succeeded (an action), elapsed (a wait), completed (a sub-run), a branch…"),
    ]
    values: Annotated[Any, Meta(description="a form's values, an action's output; empty otherwise")]
    by: uuid.UUID | UnsetType = UNSET
    note: str | UnsetType = UNSET
    checked: Annotated[list[str] | UnsetType, Meta(description="checklist items done")] = UNSET
    evidence: Annotated[dict[str, Any] | UnsetType, Meta(description="note, files, value")] = UNSET


class StepCompleted(StepPayload):
    data: StepCompletedData


class StepSkipped(StepPayload):
    data: ByData


class StepExpired(StepPayload):
    data: Nothing


class StepFailedData(Payload):
    error: str


class StepFailed(StepPayload):
    data: StepFailedData


class StepRejectedData(Payload):
    by: uuid.UUID
    note: str


class StepRejected(StepPayload):
    data: StepRejectedData


class StepVotedData(Payload):
    by: uuid.UUID
    vote: Literal["approve"]
    note: str


class StepVoted(StepPayload):
    data: StepVotedData


class ActionRequestedData(Payload):
    plugin: str
    action: str
    input: Annotated[dict[str, Any], Meta(description="the step's inputs, evaluated")]


class ActionRequested(StepPayload):
    data: ActionRequestedData


class WaitScheduledData(Payload):
    until: datetime


class WaitScheduled(StepPayload):
    data: WaitScheduledData


class SubprocedureRequestedData(Payload):
    procedure_id: uuid.UUID


class SubprocedureRequested(StepPayload):
    data: SubprocedureRequestedData


class RecordUpdateRequestedData(Payload):
    values: Annotated[dict[str, Any], Meta(description="form values for the linked record's fields")]


class RecordUpdateRequested(StepPayload):
    data: RecordUpdateRequestedData


class ExceptionRaisedData(Payload):
    exception_id: int
    kind: str
    label: str
    note: str | None
    raised_by: uuid.UUID | None
    notify: Annotated[list[dict[str, Any]], Meta(description="owner rules told at once")]
    fallback: Annotated[list[str], Meta(description="keys of the steps run before the run goes on")]
    then: Literal["resume", "abort"]
    escalate_after: Annotated[dict[str, Any] | None, Meta(description="a duration")]
    escalate_to: Annotated[list[dict[str, Any]], Meta(description="owner rules")]
    escalate_at: datetime | None


class ExceptionRaised(ExceptionPayload, kw_only=True):
    data: ExceptionRaisedData


class ExceptionResolvedData(Payload):
    exception_id: int
    kind: str
    outcome: Literal["resume", "abort"]


class ExceptionResolved(ExceptionPayload, kw_only=True):
    data: ExceptionResolvedData


class ExceptionEscalatedData(Payload):
    exception_id: int
    kind: str
    label: str
    escalate_to: Annotated[list[dict[str, Any]], Meta(description="owner rules")]
    escalate_at: datetime | None
    user_ids: Annotated[list[uuid.UUID], Meta(description="the members those rules name now")]


class ExceptionEscalated(ExceptionPayload, kw_only=True):
    data: ExceptionEscalatedData


# ---------------------------------------------------------------- runs (from the runs service)


class StepTimerPayload(Payload):
    """A step's SLA moment came (sent once per step instance)."""

    run_id: uuid.UUID
    procedure_id: uuid.UUID
    run_title: str
    record_id: Annotated[uuid.UUID | None, Meta(description="the record the run is about, if any")]
    collection_id: Annotated[uuid.UUID | None, Meta(description="the collection of that record")]
    step_id: int
    step_key: str
    title: Annotated[str, Meta(description="the step's title")]
    assignee_id: uuid.UUID | None
    role: Annotated[str | None, Meta(description="the role that may claim the step, if any")]
    due_at: datetime | None


class StepDueSoon(StepTimerPayload):
    remind_at: datetime


class RunCommented(Payload):
    run_id: uuid.UUID
    procedure_id: uuid.UUID
    comment_id: uuid.UUID
    step_id: int | None
    author_id: uuid.UUID
    # The members the comment calls on (@mentions), to be told.
    mentioned_ids: list[uuid.UUID] = []


class RunMigrated(Payload):
    run_id: uuid.UUID
    procedure_id: uuid.UUID
    from_version_id: uuid.UUID
    to_version_id: uuid.UUID


class ProcedurePublished(Payload):
    procedure_id: uuid.UUID
    version_id: uuid.UUID
    number: int


# ---------------------------------------------------------------- workspace and members


class TenantCreated(Payload):
    tenant_id: uuid.UUID
    slug: str
    name: str
    industry: str | None
    owner_id: uuid.UUID


class MemberRole(Payload):
    user_id: uuid.UUID
    role: str


class MemberRemoved(Payload):
    user_id: uuid.UUID


class MemberInvited(Payload):
    invitation_id: uuid.UUID
    role: str


# ---------------------------------------------------------------- templates, automations


class TemplateInstalled(Payload):
    pack_id: str
    version: str
    installation_id: uuid.UUID


class TemplateUpgraded(Payload):
    pack_id: str
    from_version: str
    to_version: str


class TemplateUninstalled(Payload):
    pack_id: str
    version: str


class AutomationCreated(Payload):
    automation_id: uuid.UUID
    name: str


# ---------------------------------------------------------------- plugins (marketplace)


class PluginChanged(Payload):
    """What every event of a workspace's plugin installation carries."""

    plugin: str
    version: str


class PluginConfigured(PluginChanged):
    previous: Annotated[dict[str, Any], Meta(description="the settings before the change (secrets excepted)")]
    secrets_changed: Annotated[list[str], Meta(description="names of the secrets set or removed")]


class PluginMoved(PluginChanged):
    from_version: str


class PluginUninstalled(PluginChanged):
    delete_data: bool
    config: dict[str, Any]
    secrets: Annotated[dict[str, Any], Meta(description="still encrypted, for the plugin's uninstall hook")]
    granted_scopes: list[str]
    granted_collections: list[str]


class PluginPollDue(Payload):
    plugin: str
    trigger: str


class NotificationForwarded(Payload):
    plugin: str
    key: Annotated[str, Meta(description="makes the plugin's sending idempotent")]
    input: Annotated[dict[str, Any], Meta(description="recipients, title, body?, link?")]


class MailRequested(Payload):
    to: str
    template: str
    locale: str
    variables: dict[str, Any]
    link: str | None


class PluginEventPayload(Payload, forbid_unknown_fields=False):
    """Whatever the plugin declared for its trigger (``payload_schema``)."""


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True, slots=True)
class EventType(Generic[P]):
    """One event: its name, its payload's struct, a one-line meaning, the trigger that fires on it."""

    name: str
    payload: type[P]
    description: str
    group: str
    # The automation trigger type that may name this event; None: no automation listens to it.
    trigger: TriggerKind | None = None


@dataclass(frozen=True, slots=True)
class EventFamily:
    """Events whose names follow a pattern (``prefix`` then the parts the pattern names)."""

    pattern: str
    prefix: str
    parts: int  # dot-separated parts after the prefix
    payload: type[Struct]
    description: str
    group: str
    trigger: TriggerKind | None = None

    def matches(self, name: str) -> bool:
        """Whether ``name`` belongs to the family."""
        if not name.startswith(self.prefix):
            return False
        rest = name[len(self.prefix) :].split(".", self.parts - 1)
        return len(rest) == self.parts and all(rest)


class UnknownEvent(LookupError):
    """A name that is neither in the catalog nor in one of its families."""


RECORDS, RUNS, PROCEDURES, WORKSPACE, TEMPLATES, AUTOMATIONS, PLUGINS, PLATFORM = (
    "Records",
    "Runs and steps",
    "Procedures",
    "Workspace and members",
    "Templates",
    "Automations",
    "Plugins",
    "Platform work",
)

RECORD_CREATED = EventType("record.created", RecordChanged, "A record was created.", RECORDS, "record_event")
RECORD_UPDATED = EventType("record.updated", RecordChanged, "A record's values changed.", RECORDS, "record_event")
RECORD_DELETED = EventType("record.deleted", RecordChanged, "A record was deleted.", RECORDS, "record_event")

RUN_STARTED = EventType("run.started", RunStarted, "A run of a procedure started.", RUNS, "run_event")
RUN_COMPLETED = EventType("run.completed", RunCompleted, "A run finished: nothing is left open.", RUNS, "run_event")
RUN_ABORTED = EventType("run.aborted", RunAborted, "A run was aborted (by hand, or by its procedure).", RUNS)
RUN_COMMENTED = EventType("run.commented", RunCommented, "Someone commented on a run or one of its steps.", RUNS)
RUN_MIGRATED = EventType("run.migrated", RunMigrated, "A running run moved to another version.", RUNS)
STEP_READY = EventType("step.ready", StepReady, "A step became ready for its owner.", RUNS, "run_event")
STEP_ASSIGNED = EventType("step.assigned", StepAssigned, "A step was assigned to a member.", RUNS)
STEP_STARTED = EventType("step.started", StepStarted, "Its assignee started work on a step.", RUNS)
STEP_COMPLETED = EventType("step.completed", StepCompleted, "A step was done.", RUNS, "run_event")
STEP_SKIPPED = EventType("step.skipped", StepSkipped, "An optional step was skipped.", RUNS)
STEP_EXPIRED = EventType("step.expired", StepExpired, "An optional step expired unanswered.", RUNS)
STEP_FAILED = EventType("step.failed", StepFailed, "A step failed (an action, a sub-run, a decision).", RUNS)
STEP_REJECTED = EventType("step.rejected", StepRejected, "An approver rejected an approval step.", RUNS)
STEP_VOTED = EventType("step.voted", StepVoted, "An approval that needs every approver got one more.", RUNS)
STEP_DUE_SOON = EventType("step.due_soon", StepDueSoon, "A step's due-soon reminder time came.", RUNS, "run_event")
STEP_OVERDUE = EventType("step.overdue", StepTimerPayload, "A step passed its due time.", RUNS, "run_event")
ACTION_REQUESTED = EventType("action.requested", ActionRequested, "An action step asks its plugin to act.", RUNS)
STEP_ACTION_REQUESTED = EventType(
    "step.action_requested", ActionRequested, "The same request, for subscribers to step events.", RUNS
)
WAIT_SCHEDULED = EventType("wait.scheduled", WaitScheduled, "A wait step will end at a set time.", RUNS)
SUBPROCEDURE_REQUESTED = EventType(
    "subprocedure.requested", SubprocedureRequested, "A sub-procedure step starts its sub-run.", RUNS
)
RECORD_UPDATE_REQUESTED = EventType(
    "record.update_requested", RecordUpdateRequested, "A form step's values go into the linked record.", RUNS
)
EXCEPTION_RAISED = EventType(
    "exception.raised", ExceptionRaised, "An exception was raised on a run.", RUNS, "run_event"
)
EXCEPTION_RESOLVED = EventType("exception.resolved", ExceptionResolved, "An exception was resolved.", RUNS)
EXCEPTION_ESCALATED = EventType(
    "exception.escalated", ExceptionEscalated, "An exception stayed open past its time.", RUNS, "run_event"
)

PROCEDURE_PUBLISHED = EventType(
    "procedure.published", ProcedurePublished, "A version of a procedure was published.", PROCEDURES
)

TENANT_CREATED = EventType("tenant.created", TenantCreated, "A workspace was created at sign-up.", WORKSPACE)
MEMBER_INVITED = EventType("member.invited", MemberInvited, "Someone was invited to the workspace.", WORKSPACE)
MEMBER_JOINED = EventType("member.joined", MemberRole, "Someone accepted an invitation.", WORKSPACE)
MEMBER_ROLE_CHANGED = EventType("member.role_changed", MemberRole, "A member's role changed.", WORKSPACE)
MEMBER_REMOVED = EventType("member.removed", MemberRemoved, "A member left or was removed.", WORKSPACE)

TEMPLATE_INSTALLED = EventType("template.installed", TemplateInstalled, "A template pack was installed.", TEMPLATES)
TEMPLATE_UPGRADED = EventType("template.upgraded", TemplateUpgraded, "A template pack was upgraded.", TEMPLATES)
TEMPLATE_UNINSTALLED = EventType(
    "template.uninstalled", TemplateUninstalled, "A template pack was uninstalled.", TEMPLATES
)

AUTOMATION_CREATED = EventType("automation.created", AutomationCreated, "An automation was saved.", AUTOMATIONS)

PLUGIN_INSTALLED = EventType("marketplace.installed", PluginChanged, "A plugin was installed.", PLUGINS)
PLUGIN_CONFIGURED = EventType("marketplace.configured", PluginConfigured, "A plugin's settings changed.", PLUGINS)
PLUGIN_ENABLED = EventType("marketplace.enabled", PluginChanged, "A plugin was enabled.", PLUGINS)
PLUGIN_DISABLED = EventType("marketplace.disabled", PluginChanged, "A plugin was disabled.", PLUGINS)
PLUGIN_PINNED = EventType("marketplace.pinned", PluginChanged, "A plugin was pinned to its version.", PLUGINS)
PLUGIN_UNPINNED = EventType("marketplace.unpinned", PluginChanged, "A plugin was unpinned.", PLUGINS)
PLUGIN_UPGRADED = EventType("marketplace.upgraded", PluginMoved, "A plugin was upgraded.", PLUGINS)
PLUGIN_ROLLED_BACK = EventType(
    "marketplace.rolled_back", PluginMoved, "A plugin went back to its previous version.", PLUGINS
)
PLUGIN_UNINSTALLED = EventType("marketplace.uninstalled", PluginUninstalled, "A plugin was uninstalled.", PLUGINS)
PLUGIN_HEALTH_REQUESTED = EventType(
    "marketplace.health_requested", PluginChanged, "An admin asked for a plugin's health check.", PLUGINS
)
PLUGIN_POLL_DUE = EventType("marketplace.poll_due", PluginPollDue, "A polled plugin trigger's turn came.", PLUGINS)
PLUGIN_VERSION_SUBMITTED = EventType(
    "marketplace.version_submitted", PluginChanged, "A publisher submitted a plugin version for checks.", PLUGINS
)
NOTIFICATION_FORWARDED = EventType(
    "marketplace.notification_forwarded",
    NotificationForwarded,
    "A notification goes to the messaging plugin to send on.",
    PLUGINS,
)

MAIL_REQUESTED = EventType("mail.requested", MailRequested, "A platform mail is to be sent.", PLATFORM)

PLUGIN_EVENTS = EventFamily(
    pattern="plugin.<plugin>.<trigger>",
    prefix="plugin.",
    parts=2,
    payload=PluginEventPayload,
    description="A plugin's trigger fired (its code emitted the event, or its poll found it).",
    group=PLUGINS,
    trigger="plugin",
)

FAMILIES: tuple[EventFamily, ...] = (PLUGIN_EVENTS,)
_NAME = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


def _collect() -> dict[str, EventType[Any]]:
    """Every EventType of this module by name; a malformed, repeated or shadowed name fails the import."""
    found: dict[str, EventType[Any]] = {}
    for value in list(globals().values()):
        if not isinstance(value, EventType):
            continue
        if not _NAME.match(value.name) or any(f.matches(value.name) for f in FAMILIES):
            raise ValueError(f"event name {value.name!r} is malformed or lies in a family")
        if found.setdefault(value.name, value) is not value:
            raise ValueError(f"event {value.name!r} is listed twice")
    return found


CATALOG: Mapping[str, EventType[Any]] = _collect()


def get(name: str) -> EventType[Any]:
    """The catalog entry of ``name``; UnknownEvent for a name the catalog does not list."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownEvent(f"{name!r} is not an event of the catalog (services/events.py)") from None


def family_of(name: str) -> EventFamily | None:
    """The family ``name`` belongs to, if any."""
    return next((f for f in FAMILIES if f.matches(name)), None)


def is_known(name: str) -> bool:
    """Whether ``name`` is in the catalog or one of its families."""
    return name in CATALOG or family_of(name) is not None


def plugin_event_name(plugin: str, trigger: str) -> str:
    """The name of the event a plugin's trigger emits."""
    name = f"{PLUGIN_EVENTS.prefix}{plugin}.{trigger}"
    if "." in plugin or not PLUGIN_EVENTS.matches(name):
        raise UnknownEvent(f"{name!r} is not a plugin event ({PLUGIN_EVENTS.pattern})")
    return name


def trigger_events(kind: TriggerKind) -> tuple[str, ...]:
    """The names an automation trigger of ``kind`` may listen to, in catalog order."""
    return tuple(name for name, event in CATALOG.items() if event.trigger == kind)


def payload_struct(name: str) -> type[Struct]:
    """The struct that documents the payload of ``name`` (of its family for a family's name)."""
    family = family_of(name)
    return family.payload if family is not None else get(name).payload


def payload_problem(name: str, payload: Mapping[str, Any]) -> str | None:
    """Why ``payload`` is not what event ``name`` carries (None: it is). The platform's own keys
    (``_…``) are left out. For tests and tools: emitting never validates."""
    body = {k: v for k, v in payload.items() if not k.startswith("_")}
    try:
        msgspec.convert(body, payload_struct(name))
    except (msgspec.ValidationError, UnknownEvent) as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- the reference page


_SCALARS = {
    msgspec.inspect.StrType: "text",
    msgspec.inspect.IntType: "integer",
    msgspec.inspect.FloatType: "number",
    msgspec.inspect.BoolType: "boolean",
    msgspec.inspect.UUIDType: "uuid",
    msgspec.inspect.DateTimeType: "datetime",
    msgspec.inspect.NoneType: "null",
    msgspec.inspect.AnyType: "any",
    msgspec.inspect.DictType: "object",
}


def _type_text(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.Metadata):
        return _type_text(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return " or ".join(_type_text(t) for t in info.types)
    if isinstance(info, msgspec.inspect.LiteralType):
        return " or ".join(f"`{v}`" for v in info.values)
    if isinstance(info, msgspec.inspect.ListType):
        return f"list of {_type_text(info.item_type)}"
    if isinstance(info, msgspec.inspect.StructType):
        return "object"
    return _SCALARS.get(type(info), type(info).__name__)


def _description(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.Metadata):
        return str((info.extra_json_schema or {}).get("description", ""))
    return ""


def _struct_of(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    if isinstance(info, msgspec.inspect.Metadata):
        return _struct_of(info.type)
    return info if isinstance(info, msgspec.inspect.StructType) else None


def _rows(struct: type[Struct], prefix: str = "", skip: frozenset[str] = frozenset()) -> Iterator[str]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if field.name in skip:
            continue
        key = f"{prefix}{field.encode_name}"
        when = "" if field.required else "sometimes"
        yield f"| `{key}` | {_type_text(field.type)} | {when} | {_description(field.type)} |"
        nested = _struct_of(field.type)
        if nested is not None:
            yield from _rows(nested.cls, f"{key}.")


def _table(rows: list[str]) -> list[str]:
    return ["| key | type | present | meaning |", "|---|---|---|---|", *rows] if rows else []


# Keys many events share, described once on the page: an event's table lists only its own.
_SHARED: tuple[tuple[type[Struct], str], ...] = (
    (RunPayload, "run event"),
    (StepPayload, "step event"),
    (ExceptionPayload, "exception event"),
    (PluginChanged, "plugin event"),
)


def _shared_base(struct: type[Struct]) -> tuple[type[Struct], str] | None:
    """The most specific shared base of ``struct`` (None: it shares no keys)."""
    bases = [(base, label) for base, label in _SHARED if issubclass(struct, base) and struct is not base]
    return max(bases, key=lambda b: len(b[0].__mro__), default=None)


def _markdown(docstring: str | None) -> str:
    return (docstring or "").strip().replace("``", "`")


def _payload_lines(struct: type[Struct]) -> list[str]:
    shared = _shared_base(struct)
    if shared is None:
        return _table(list(_rows(struct)))
    base, label = shared
    own = list(_rows(struct, skip=frozenset(base.__struct_fields__)))
    intro = f"The keys of every [{label}](#{_anchor(label)})" + (", and:" if own else ".")
    return [intro, *(["", *_table(own)] if own else [])]


def reference_page() -> str:
    """The Markdown page that lists every event and its payload (``docs/events.md``)."""
    lines = [
        "# Events",
        "",
        "<!-- Generated from services/events.py by `python -m services.events > docs/events.md`; a unit",
        "     test keeps the two the same. -->",
        "",
        "Every event the platform emits, with the keys of its payload. Automations see them as `event`",
        "(see [automations.md](automations.md)); an outbound webhook sends `event.payload` as listed here.",
        "A key marked *sometimes* is left out when it does not apply; any other key is always present",
        "(possibly null). Keys starting with `_` are the platform's own (`_cause`: the automation that",
        "caused the event).",
        "",
        "The *trigger* column names the automation trigger that may listen to the event.",
        "",
        "## Keys shared by events",
    ]
    for base, label in _SHARED:
        lines += ["", f"### {label}", "", _markdown(base.__doc__)]
        lines += ["", *_payload_lines(base)]
    groups: dict[str, list[EventType[Any] | EventFamily]] = {}
    for event in CATALOG.values():
        groups.setdefault(event.group, []).append(event)
    for family in FAMILIES:
        groups.setdefault(family.group, []).append(family)
    for group, members in groups.items():
        lines += ["", f"## {group}", "", "| event | trigger | meaning |", "|---|---|---|"]
        for member in members:
            name = member.pattern if isinstance(member, EventFamily) else member.name
            trigger = f"`{member.trigger}`" if member.trigger else ""
            lines.append(f"| [`{name}`](#{_anchor(name)}) | {trigger} | {member.description} |")
        for member in members:
            name = member.pattern if isinstance(member, EventFamily) else member.name
            lines += ["", f"### `{name}`", "", member.description]
            if isinstance(member, EventFamily):
                lines += ["", _markdown(member.payload.__doc__)]
            payload = _payload_lines(member.payload)
            if payload:
                lines += ["", *payload]
    return "\n".join(lines) + "\n"


def _anchor(name: str) -> str:
    """The anchor GitHub-flavoured Markdown gives the heading ``name``."""
    return re.sub(r"[^a-z0-9_ -]", "", name.lower()).replace(" ", "-")


if __name__ == "__main__":
    sys.stdout.write(reference_page())
