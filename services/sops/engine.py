"""The run engine: a pure state machine over a procedure version. No I/O, no clock, no database.

``start(definition, env, ...)`` and ``apply(definition, state, action, env)`` return a
``Transition``: the new run state and the events that happened. The caller (services.sops.runs)
stores the state, turns the events into rows, outbox events and timers, and resolves owners that
need the database (round-robin, least-loaded, a user field) by applying ``Assign``.

``Env`` brings what the engine may not fetch itself: the time now, how to compute a due time on the
tenant's business calendar, and how to evaluate a condition of the expression language.

Invariants (tested with Hypothesis in tests/unit/test_engine_properties.py):
- a join fires once per activation of its parallel split;
- a finished run (completed or aborted) has no open step;
- a mandatory step is never skipped or expired;
- an optional step never blocks the run (it can be skipped, and expires when it says so).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from msgspec import Struct, field

from services.sops.definition import Definition, Due


class EngineError(Exception):
    """An action the run's state does not allow; ``code`` is stable for problem+json."""

    def __init__(self, message: str, *, code: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in (StepStatus.PENDING, StepStatus.READY, StepStatus.IN_PROGRESS)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"


class StepState(Struct, kw_only=True):
    """One instance of a step in a run. A step reached again (a rejection loop) gets a new id."""

    id: int
    key: str
    status: StepStatus
    assignee: uuid.UUID | None = None
    ready_at: datetime | None = None
    due_at: datetime | None = None
    expires_at: datetime | None = None
    finished_at: datetime | None = None
    finished_by: uuid.UUID | None = None
    # approve/reject per approver (user id as str) for approval steps
    votes: dict[str, Literal["approve", "reject"]] = field(default_factory=dict)
    outcome: str | None = None  # "approved", "rejected", a decision's taken branch, an error, …
    # The parallel activation this instance belongs to (id of the parallel step instance), if any.
    split_id: int | None = None
    # The exception whose fallback this instance is running, if any.
    exception_id: int | None = None


class ExceptionState(Struct, kw_only=True):
    id: int
    kind: str
    step_id: int | None
    raised_by: uuid.UUID | None
    raised_at: datetime
    note: str = ""
    status: Literal["open", "resolved"] = "open"
    outcome: Literal["resume", "abort"] | None = None
    resolved_by: uuid.UUID | None = None
    resolved_at: datetime | None = None
    # Fallback steps still to run before the outcome applies.
    pending_fallback: list[str] = field(default_factory=list)


class RunState(Struct, kw_only=True):
    status: RunStatus = RunStatus.RUNNING
    data: dict[str, Any] = field(default_factory=dict)
    steps: list[StepState] = field(default_factory=list)
    exceptions: list[ExceptionState] = field(default_factory=list)
    # join key + "@" + split instance id -> branch indexes arrived
    arrivals: dict[str, list[int]] = field(default_factory=dict)
    next_id: int = 1
    started_by: uuid.UUID | None = None

    def open_steps(self) -> list[StepState]:
        return [s for s in self.steps if s.status.is_open]

    def get(self, step_id: int) -> StepState:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise EngineError(f"The run has no step {step_id}.", code="step_not_found", status=404)


# ---------------------------------------------------------------- actions


class Actor(Struct, frozen=True):
    user_id: uuid.UUID
    role: str  # tenants.models.Role value


class EvidenceIn(Struct, kw_only=True):
    note: str = ""
    files: list[str] = field(default_factory=list)  # stored file ids
    value: float | None = None


class Claim(Struct, tag="claim", tag_field="action", kw_only=True):
    step_id: int
    actor: Actor


class Assign(Struct, tag="assign", tag_field="action", kw_only=True):
    step_id: int
    user_id: uuid.UUID
    actor: Actor | None = None  # None: the platform assigning by the owner rule


class Start(Struct, tag="start_work", tag_field="action", kw_only=True):
    """The assignee starts working (ready → in progress)."""

    step_id: int
    actor: Actor


class Complete(Struct, tag="complete", tag_field="action", kw_only=True):
    step_id: int
    actor: Actor
    values: dict[str, Any] = field(default_factory=dict)  # form values by field key
    checked: list[str] = field(default_factory=list)  # checklist item keys done
    evidence: EvidenceIn = field(default_factory=EvidenceIn)
    acknowledged: bool = True  # the service says whether the actor acknowledged the current version


class Approve(Struct, tag="approve", tag_field="action", kw_only=True):
    step_id: int
    actor: Actor
    note: str = ""


class Reject(Struct, tag="reject", tag_field="action", kw_only=True):
    step_id: int
    actor: Actor
    note: str = ""


class Skip(Struct, tag="skip", tag_field="action", kw_only=True):
    step_id: int
    actor: Actor


class Expire(Struct, tag="expire", tag_field="action", kw_only=True):
    """The timer of an optional step's ``expires_after`` fired."""

    step_id: int


class WaitElapsed(Struct, tag="wait_elapsed", tag_field="action", kw_only=True):
    step_id: int


class ActionSucceeded(Struct, tag="action_succeeded", tag_field="action", kw_only=True):
    step_id: int
    output: dict[str, Any] = field(default_factory=dict)


class ActionFailed(Struct, tag="action_failed", tag_field="action", kw_only=True):
    step_id: int
    error: str


class SubprocedureFinished(Struct, tag="subprocedure_finished", tag_field="action", kw_only=True):
    step_id: int
    completed: bool  # False: the sub-run was aborted


class RaiseException(Struct, tag="raise_exception", tag_field="action", kw_only=True):
    kind: str
    actor: Actor
    step_id: int | None = None
    note: str = ""


class ResolveException(Struct, tag="resolve_exception", tag_field="action", kw_only=True):
    exception_id: int
    actor: Actor
    outcome: Literal["resume", "abort"] | None = None  # None: what the exception kind says


class Abort(Struct, tag="abort", tag_field="action", kw_only=True):
    actor: Actor
    reason: str = ""


Action = (
    Claim
    | Assign
    | Start
    | Complete
    | Approve
    | Reject
    | Skip
    | Expire
    | WaitElapsed
    | ActionSucceeded
    | ActionFailed
    | SubprocedureFinished
    | RaiseException
    | ResolveException
    | Abort
)


# ---------------------------------------------------------------- what comes out


class Event(Struct, kw_only=True):
    """Something that happened. ``type`` is one of EVENT_TYPES."""

    type: str
    step_id: int | None = None
    step_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES = frozenset(
    {
        "run.started",
        "run.completed",
        "run.aborted",
        "step.ready",  # data: owner (the owner rule as dict), due_at, expires_at
        "step.assigned",  # data: user_id
        "step.started",
        "step.completed",  # data: values, outcome
        "step.skipped",
        "step.expired",
        "step.failed",
        "step.rejected",
        "action.requested",  # data: plugin, action, input (evaluated)
        "wait.scheduled",  # data: until
        "subprocedure.requested",  # data: procedure_id
        "record.update_requested",  # data: values for the linked record (form fields with target=record)
        "exception.raised",
        "exception.resolved",
    }
)


class Transition(Struct):
    state: RunState
    events: list[Event]


class Env(Struct, frozen=True):
    """What the engine needs from outside, passed in so that it stays pure."""

    now: datetime
    # Due time for a step that becomes ready now: (due rule, ready time, {"data": ..., "record": ...}).
    due_at: Callable[[Due, datetime, Mapping[str, Any]], datetime | None]
    # Evaluates a condition/expression of the safe expression language against {"data", "record"}.
    evaluate: Callable[[str, Mapping[str, Any]], Any]
    # The linked record's values, if the procedure is linked to a collection.
    record: Mapping[str, Any] | None = None


def start(definition: Definition, env: Env, *, started_by: uuid.UUID | None, data: dict[str, Any]) -> Transition:
    """A new run: the start step becomes ready (system steps run through at once)."""
    raise NotImplementedError


def apply(definition: Definition, state: RunState, action: Action, env: Env) -> Transition:
    """The next state after ``action``; raises EngineError when the state does not allow it."""
    raise NotImplementedError


def migration_problems(old: Definition, new: Definition, state: RunState) -> list[str]:
    """Why ``state`` cannot move to ``new`` (every open step must map to a step of the same key and
    kind in the new version); empty when it can."""
    raise NotImplementedError
