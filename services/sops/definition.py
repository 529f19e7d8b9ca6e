"""What a procedure version says: its steps and how they connect. Pure data, no I/O.

This is the contract between the procedure editor (which validates it on publish), the run engine
(which executes it) and the template packs (which ship it as YAML). A published version's
definition is immutable; runs keep the version they started on.

The flow is a graph of steps keyed by ``key``. A step names where the run goes next (``next``;
``None`` ends the run). A decision picks one branch by conditions written in the safe expression
language; a parallel step starts every branch and names the join where they meet; an approval's
rejection goes back to a named step or raises an exception kind.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from tenants.models import Role

StepKey = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="lower_snake key, unique in the version")]
FieldPath = Annotated[
    str,
    Meta(pattern=r"^(data|record)\.[a-z][a-z0-9_]{0,62}$", description="`data.x` (the run's data) or `record.x`"),
]
Expression = Annotated[str, Meta(min_length=1, max_length=2000, description="safe expression language")]
# ``record.id`` reads the linked record's own id (collections reserve the field key ``id``).
RECORD_ID_KEY = "id"
Title = Annotated[str, Meta(min_length=1, max_length=200)]


class Instructions(Struct, forbid_unknown_fields=True):
    """The three parts of a step's instructions, in Markdown."""

    what: str = ""  # what to do
    how: str = ""  # how to do it
    standard: str = ""  # the standard the result must meet


# ---------------------------------------------------------------- who owns a step


class RoleOwner(Struct, tag="role", tag_field="kind", forbid_unknown_fields=True):
    """Anyone with this role (or higher) may claim the step."""

    role: Role


class MemberOwner(Struct, tag="member", tag_field="kind", forbid_unknown_fields=True):
    user_id: uuid.UUID


class FieldOwner(Struct, tag="field", tag_field="kind", forbid_unknown_fields=True):
    """The user named by a user field of the run's data or record, e.g. ``record.sales_rep``."""

    field: FieldPath


class RoundRobinOwner(Struct, tag="round_robin", tag_field="kind", forbid_unknown_fields=True):
    role: Role


class LeastLoadedOwner(Struct, tag="least_loaded", tag_field="kind", forbid_unknown_fields=True):
    """The member of the role with the fewest open steps."""

    role: Role


class StarterOwner(Struct, tag="starter", tag_field="kind", forbid_unknown_fields=True):
    """Whoever started the run."""


class VacantOwner(Struct, tag="vacant", tag_field="kind", forbid_unknown_fields=True):
    """Nobody yet: a template's role (``role``, its name in the pack) that no member was given.
    Its steps are assigned to nobody and nobody can claim them; an admin reassigns them."""

    role: Annotated[str, Meta(min_length=1, max_length=63)]


Owner = RoleOwner | MemberOwner | FieldOwner | RoundRobinOwner | LeastLoadedOwner | StarterOwner | VacantOwner


# ---------------------------------------------------------------- durations and SLAs


class Duration(Struct, forbid_unknown_fields=True):
    """A span of time. With ``business=True`` it counts only the tenant's working hours and days."""

    days: Annotated[int, Meta(ge=0, le=3650)] = 0
    hours: Annotated[int, Meta(ge=0, le=10000)] = 0
    minutes: Annotated[int, Meta(ge=0, le=100000)] = 0
    business: bool = True

    @property
    def total_minutes(self) -> int:
        return self.days * 24 * 60 + self.hours * 60 + self.minutes


class Due(Struct, forbid_unknown_fields=True):
    """When a step is due: ``within`` after the step became ready, or after a date field."""

    within: Duration
    # One pattern for both forms: msgspec merges a str literal and a constrained str into the latter.
    relative_to: Annotated[
        str,
        Meta(
            pattern=r"^(step_start|(data|record)\.[a-z][a-z0-9_]{0,62})$",
            description="`step_start`, or a date field: `data.x` or `record.x`",
        ),
    ] = "step_start"
    remind_before: Duration | None = None


# ---------------------------------------------------------------- evidence and exceptions


class ValueEvidence(Struct, forbid_unknown_fields=True):
    """A measured value that must land within tolerance of a target (or within min/max)."""

    label: Title
    target: float | None = None
    tolerance: Annotated[float, Meta(ge=0)] = 0
    min: float | None = None
    max: float | None = None
    unit: str = ""


class Evidence(Struct, forbid_unknown_fields=True):
    note: bool = False
    file: bool = False
    value: ValueEvidence | None = None


class ExceptionKind(Struct, forbid_unknown_fields=True):
    """Something that can go wrong at a step, and what the procedure does about it."""

    key: StepKey
    label: Title
    notify: list[Owner] = []
    # Steps (keys of this version) that run before the run resumes or aborts, e.g. "call the customer".
    fallback: list[StepKey] = []
    then: Literal["resume", "abort"] = "resume"
    # Unanswered for this long, the exception escalates to ``escalate_to``.
    escalate_after: Duration | None = None
    escalate_to: list[Owner] = []


# ---------------------------------------------------------------- step kinds


class ChecklistItem(Struct, forbid_unknown_fields=True):
    key: StepKey
    label: Title
    required: bool = True


class FormField(Struct, forbid_unknown_fields=True):
    """A field the step's owner fills in; it writes into the run's data or the linked record."""

    key: StepKey
    label: Title
    type: str  # one of the record field types (services.records), e.g. "text", "number", "date"
    required: bool = False
    target: Literal["data", "record"] = "data"
    options: list[str] = []


class Branch(Struct, forbid_unknown_fields=True, omit_defaults=True):
    when: Expression
    next: StepKey | None
    # What the flowchart says on the way (e.g. "大额订单"); without one, the condition is worded.
    label: Annotated[str, Meta(max_length=200)] = ""


class _StepBase(Struct, forbid_unknown_fields=True, kw_only=True):
    key: StepKey
    title: Title
    instructions: Instructions = msgspec.field(default_factory=Instructions)


class _HumanStep(_StepBase, kw_only=True):
    """A step a person does: it has an owner, maybe a due time, evidence and exception kinds."""

    owner: Owner
    next: StepKey | None = None
    due: Due | None = None
    optional: bool = False
    # An optional step left undone this long after it became ready expires instead of blocking.
    expires_after: Duration | None = None
    evidence: Evidence = msgspec.field(default_factory=Evidence)
    exceptions: list[ExceptionKind] = []
    requires_acknowledgement: bool = False


class TaskStep(_HumanStep, tag="task", tag_field="kind", kw_only=True):
    pass


class ChecklistStep(_HumanStep, tag="checklist", tag_field="kind", kw_only=True):
    items: Annotated[list[ChecklistItem], Meta(min_length=1)]


class FormStep(_HumanStep, tag="form", tag_field="kind", kw_only=True):
    fields: Annotated[list[FormField], Meta(min_length=1)]


class OnReject(Struct, forbid_unknown_fields=True):
    """Where a rejection sends the run: back to a step, or into an exception kind of this step."""

    goto: StepKey | None = None
    raise_exception: StepKey | None = None


class ApprovalStep(_HumanStep, tag="approval", tag_field="kind", kw_only=True):
    # ``one``: the single owner decides; ``any``: the first approver decides; ``all``: every approver
    # must approve and one rejection rejects.
    mode: Literal["one", "any", "all"] = "one"
    approvers: list[Owner] = []
    on_reject: OnReject = msgspec.field(default_factory=OnReject)


class DecisionStep(_StepBase, tag="decision", tag_field="kind", kw_only=True):
    """Takes the first branch whose condition holds, else ``default``."""

    branches: Annotated[list[Branch], Meta(min_length=1)]
    default: StepKey | None = None


class ParallelStep(_StepBase, tag="parallel", tag_field="kind", kw_only=True):
    """Starts every branch at once; they meet at ``join``, which fires once all have arrived."""

    branches: Annotated[list[StepKey], Meta(min_length=2)]
    join: StepKey


class JoinStep(_StepBase, tag="join", tag_field="kind", kw_only=True):
    next: StepKey | None = None


class WaitStep(_StepBase, tag="wait", tag_field="kind", kw_only=True):
    """Waits for a duration, or until the date in a field."""

    duration: Duration | None = None
    until: FieldPath | None = None
    next: StepKey | None = None


class ActionStep(_StepBase, tag="action", tag_field="kind", kw_only=True):
    """Runs a plugin action through the worker; its output lands in ``data.<key>``."""

    plugin: str
    action: str
    # Input values are expressions over the run's data and record.
    input: dict[str, Expression] = {}
    next: StepKey | None = None
    on_failure: OnReject = msgspec.field(default_factory=OnReject)


class SubprocedureStep(_StepBase, tag="subprocedure", tag_field="kind", kw_only=True):
    """Starts a run of another procedure and waits for it to finish."""

    procedure_id: uuid.UUID
    next: StepKey | None = None


Step = (
    TaskStep
    | ChecklistStep
    | FormStep
    | ApprovalStep
    | DecisionStep
    | ParallelStep
    | JoinStep
    | WaitStep
    | ActionStep
    | SubprocedureStep
)
HUMAN_STEPS = (TaskStep, ChecklistStep, FormStep, ApprovalStep)


class DataField(Struct, forbid_unknown_fields=True):
    """A named value of the run's own data (besides the linked record's fields)."""

    key: StepKey
    type: str
    label: str = ""


class Definition(Struct, forbid_unknown_fields=True):
    """The content of one procedure version."""

    start: StepKey
    steps: Annotated[list[Step], Meta(min_length=1)]
    data: list[DataField] = []
    roles: list[Role] = []

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)

    def by_key(self) -> dict[str, Step]:
        return {step.key: step for step in self.steps}


def successors(step: Step, *, fallbacks: bool = True) -> list[str]:
    """Every step key this step can lead to (for reachability and loop checks); ``fallbacks=False``
    keeps to the normal flow, without the fallback steps of exception kinds."""
    keys: list[str | None] = []
    if isinstance(step, DecisionStep):
        keys = [b.next for b in step.branches] + [step.default]
    elif isinstance(step, ParallelStep):
        keys = list(step.branches)
    elif isinstance(step, ApprovalStep):
        keys = [step.next, step.on_reject.goto]
    elif isinstance(step, ActionStep):
        keys = [step.next, step.on_failure.goto]
    else:
        keys = [step.next]
    if fallbacks and isinstance(step, HUMAN_STEPS):
        keys += [k for e in step.exceptions for k in e.fallback]
    return [k for k in keys if k is not None]


def decode_definition(raw: bytes | str) -> Definition:
    return msgspec.json.decode(raw, type=Definition)
