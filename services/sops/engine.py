"""The run engine: a pure state machine over a procedure version. No I/O, no clock, no database.

``start(definition, env, ...)`` and ``apply(definition, state, action, env)`` return a
``Transition``: the new run state and the events that happened. The caller (services.sops.runs)
stores the state, turns the events into rows, outbox events and timers, and resolves owners that
need the database (round-robin, least-loaded, a user field) by applying ``Assign``.

``Env`` brings what the engine may not fetch itself: the time now, how to compute a due time on the
tenant's business calendar, and how to evaluate a condition of the expression language.

Rules worth knowing (the rest is in each action's handler):
- event ``data`` is JSON-ready (ids and times as strings); the datetimes the caller schedules timers
  from are on the step instance too (``due_at``, ``expires_at``, ``wake_at``);
- approvals: mode "one" is decided by the assignee; "any" by the first approver (the assignee or
  anyone matching an approver rule); "all" needs every approver rule satisfied, a named member (or
  the starter) in person and a role rule by one more distinct member of that role, and one rejection
  rejects. A rejection goes back to ``on_reject.goto`` (a new instance), or raises the exception kind
  and keeps the approval open to be decided afresh, or else aborts the run;
- an exception with fallback steps runs them one after the other (a fallback instance does not
  follow its own ``next``), then resumes or aborts as its kind says; without fallback steps it waits
  for a person to resolve it. An open exception blocks completing its step, never skipping it;
- a condition or action input that cannot be evaluated does not hold / makes the action fail;
- timers the caller schedules are computed here, on the tenant's calendar through ``Env.due_at``:
  a step's reminder (``remind_at``: its due time less ``remind_before``) and an exception's
  escalation (``escalate_at``: ``escalate_after`` past the moment it was raised). ``Escalate``
  escalates an open exception once; its ``escalate_to`` owners may then resolve it too.

Invariants (tested with Hypothesis in tests/unit/test_engine_properties.py):
- a join fires once per activation of its parallel split;
- a finished run (completed or aborted) has no open step;
- a mandatory step is never skipped or expired;
- an optional step never blocks the run (it can be skipped, and expires when it says so).
"""

from __future__ import annotations

import enum
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypeAlias

import msgspec
from msgspec import Struct, field

from services import events
from services.sops.definition import (
    ActionStep,
    ApprovalStep,
    ChecklistStep,
    DecisionStep,
    Definition,
    Due,
    Duration,
    ExceptionKind,
    FieldOwner,
    FormStep,
    JoinStep,
    LeastLoadedOwner,
    MemberOwner,
    Owner,
    ParallelStep,
    RoleOwner,
    RoundRobinOwner,
    StarterOwner,
    Step,
    SubprocedureStep,
    TaskStep,
    WaitStep,
)
from tenants.errors import FieldProblem
from tenants.models import Role


class EngineError(Exception):
    """An action the run's state does not allow; ``code`` is stable for problem+json.

    Completing without what the step requires lists every problem: ``problems`` (messages) and
    ``details`` (each with a JSON pointer into the action's input and a stable code).
    """

    def __init__(
        self, message: str, *, code: str, status: int = 409, details: list[FieldProblem] | None = None, **params: Any
    ) -> None:
        super().__init__(message.format(**params) if params else message)
        self.message_id = message  # a message id of the catalogs, its placeholders filled from ``params``
        self.params = params
        self.code = code
        self.status = status
        self.details: list[FieldProblem] = details or []
        self.problems: list[str] = [d.message for d in self.details]


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
        return self in _OPEN_STATUSES


_OPEN_STATUSES = frozenset({StepStatus.PENDING, StepStatus.READY, StepStatus.IN_PROGRESS})


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
    # The parallel activations this instance is inside, outermost first: (split instance id, branch
    # index). ``split_id`` is the innermost one's id.
    branch_path: tuple[tuple[int, int], ...] = ()
    # A fired join instance: the split activation it closed.
    joined_split: int | None = None
    # A wait instance: when it is over.
    wake_at: datetime | None = None
    # An approval in mode "all": indexes of its approver rules already satisfied.
    approved_rules: list[int] = field(default_factory=list)
    # When to remind the owner that the step is due soon (its due time less ``remind_before``).
    remind_at: datetime | None = None


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
    # What the kind says happens after the fallback: resume or abort.
    then: Literal["resume", "abort"] = "resume"
    # Unresolved by this moment, the exception escalates (its kind's ``escalate_after``).
    escalate_at: datetime | None = None
    escalated_at: datetime | None = None
    # What the person who resolved it wrote (what was done about it).
    resolution_note: str = ""


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
        raise EngineError("The run has no step {step_id}.", code="step_not_found", status=404, step_id=step_id)


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
    note: str = ""


class Abort(Struct, tag="abort", tag_field="action", kw_only=True):
    actor: Actor
    reason: str = ""


class Escalate(Struct, tag="escalate", tag_field="action", kw_only=True):
    """An open exception stayed unresolved past its ``escalate_at`` (the platform's timer)."""

    exception_id: int


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
    | Escalate
)


# ---------------------------------------------------------------- what comes out


class Event(Struct, kw_only=True):
    """Something that happened. ``type`` is one of EVENT_TYPES."""

    type: str
    step_id: int | None = None
    step_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# The events the engine emits; their names and data are the catalog's (services.events).
EVENT_TYPES = frozenset(
    event.name
    for event in (
        events.RUN_STARTED,
        events.RUN_COMPLETED,
        events.RUN_ABORTED,
        events.STEP_READY,
        events.STEP_ASSIGNED,
        events.STEP_STARTED,
        events.STEP_COMPLETED,
        events.STEP_SKIPPED,
        events.STEP_EXPIRED,
        events.STEP_FAILED,
        events.STEP_REJECTED,
        events.STEP_VOTED,
        events.ACTION_REQUESTED,
        events.WAIT_SCHEDULED,
        events.SUBPROCEDURE_REQUESTED,
        events.RECORD_UPDATE_REQUESTED,
        events.EXCEPTION_RAISED,
        events.EXCEPTION_RESOLVED,
        events.EXCEPTION_ESCALATED,
    )
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
    # The date now in the tenant's timezone, for ``today()``; None: the UTC date of ``now``.
    today: date | None = None


# ---------------------------------------------------------------- per-definition lookups

HumanStep: TypeAlias = TaskStep | ChecklistStep | FormStep | ApprovalStep
_HUMAN = (TaskStep, ChecklistStep, FormStep, ApprovalStep)
_ROLE_OWNERS = (RoleOwner, RoundRobinOwner, LeastLoadedOwner)
_OPEN_WORK = (StepStatus.READY, StepStatus.IN_PROGRESS)
# System steps run through within one transition; a definition that loops through system steps
# alone (publish validation rejects it) must not hang the caller.
_ACTIVATION_LIMIT = 10_000
# Looking back for a reminder's start doubles the window at most this often (about 2**20 times
# the span: far beyond any calendar with working time in it).
_BACKWARD_DOUBLINGS = 20


class _Index:
    """What the engine looks up in a definition, computed once per definition object."""

    __slots__ = ("definition", "kinds", "step_kinds", "steps")

    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        self.steps: dict[str, Step] = {s.key: s for s in definition.steps}
        self.step_kinds: dict[str, dict[str, ExceptionKind]] = {}
        # Any step's kind by key (the first one wins), for exceptions not raised at a given step.
        self.kinds: dict[str, ExceptionKind] = {}
        for step in definition.steps:
            if isinstance(step, _HUMAN):
                own = {k.key: k for k in step.exceptions}
                self.step_kinds[step.key] = own
                for key, kind in own.items():
                    self.kinds.setdefault(key, kind)


# Keyed by id(); each entry holds its definition, so an id cannot be reused while its entry lives.
_INDEX_CACHE: dict[int, _Index] = {}
_INDEX_CACHE_SIZE = 256


def _index(definition: Definition) -> _Index:
    index = _INDEX_CACHE.get(id(definition))
    if index is not None and index.definition is definition:
        return index
    index = _Index(definition)
    if len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
        _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)), None)
    _INDEX_CACHE[id(definition)] = index
    return index


def _role(actor: Actor) -> Role:
    try:
        return Role(actor.role)
    except ValueError:
        return Role.MEMBER


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


Path: TypeAlias = tuple[tuple[int, int], ...]


# ---------------------------------------------------------------- one transition


class _Run:
    """The state being changed by one transition. The input state is never mutated: lists are
    copied shallowly and a step or exception is copied the first time it changes."""

    def __init__(self, index: _Index, state: RunState, env: Env) -> None:
        self.ix = index
        self.env = env
        self.status = state.status
        self.data = state.data
        self._data_owned = False
        self.steps = list(state.steps)
        self._positions: dict[int, int] | None = None
        self._owned_steps: set[int] = set()
        self.exceptions = list(state.exceptions)
        self._owned_exceptions: set[int] = set()
        self.arrivals = state.arrivals
        self._arrivals_owned = False
        self.next_id = state.next_id
        self.started_by = state.started_by
        # The member whose command this transition carries out (None: the platform's own), so an
        # assignment it causes can say so and its notice can spare the one who caused it.
        self.acting: uuid.UUID | None = None
        self.events: list[Event] = []
        self.work: deque[tuple[str, Path, int | None]] = deque()

    # ------------------------------------------------ reading and writing

    def result(self) -> RunState:
        return RunState(
            status=self.status,
            data=self.data,
            steps=self.steps,
            exceptions=self.exceptions,
            arrivals=self.arrivals,
            next_id=self.next_id,
            started_by=self.started_by,
        )

    def context(self) -> dict[str, Any]:
        return {"data": self.data, "record": self.env.record or {}, "now": self.env.now, "today": self.env.today}

    def set_data(self, key: str, value: Any) -> None:
        if not self._data_owned:
            self.data = dict(self.data)
            self._data_owned = True
        self.data[key] = value

    def new_id(self) -> int:
        new = self.next_id
        self.next_id += 1
        return new

    def _position(self, step_id: int) -> int:
        if self._positions is None:
            self._positions = {s.id: i for i, s in enumerate(self.steps)}
        position = self._positions.get(step_id)
        if position is None:
            raise EngineError("The run has no step {step_id}.", code="step_not_found", status=404, step_id=step_id)
        return position

    def find(self, step_id: int) -> StepState:
        return self.steps[self._position(step_id)]

    def edit(self, step_id: int) -> StepState:
        """The step, copied for this transition so it can be changed in place."""
        position = self._position(step_id)
        step = self.steps[position]
        if step_id not in self._owned_steps:
            step = msgspec.structs.replace(step)
            self.steps[position] = step
            self._owned_steps.add(step_id)
        return step

    def add_step(self, step: StepState) -> StepState:
        if self._positions is not None:
            self._positions[step.id] = len(self.steps)
        self.steps.append(step)
        self._owned_steps.add(step.id)
        return step

    def find_exception(self, exception_id: int) -> ExceptionState:
        for exc in self.exceptions:
            if exc.id == exception_id:
                return exc
        raise EngineError(
            "The run has no exception {exception_id}.",
            code="exception_not_found",
            status=404,
            exception_id=exception_id,
        )

    def edit_exception(self, exception_id: int) -> ExceptionState:
        for i, exc in enumerate(self.exceptions):
            if exc.id == exception_id:
                if exception_id not in self._owned_exceptions:
                    exc = msgspec.structs.replace(exc, pending_fallback=list(exc.pending_fallback))
                    self.exceptions[i] = exc
                    self._owned_exceptions.add(exception_id)
                return exc
        raise EngineError(
            "The run has no exception {exception_id}.",
            code="exception_not_found",
            status=404,
            exception_id=exception_id,
        )

    def blocked(self, step_id: int) -> bool:
        return any(e.status == "open" and e.step_id == step_id for e in self.exceptions)

    def emit(self, event: events.EventType[Any], step: StepState | None = None, **data: Any) -> None:
        if step is None:
            self.events.append(Event(type=event.name, data=data))
        else:
            self.events.append(Event(type=event.name, step_id=step.id, step_key=step.key, data=data))

    # ------------------------------------------------ the flow

    def follow(self, next_key: str | None, path: Path, exception_id: int | None) -> None:
        """A step instance has finished: go on along its path (or to the next fallback step)."""
        if exception_id is not None:
            self.advance_exception(exception_id)
        elif next_key is not None:
            self.work.append((next_key, path, exception_id))

    def drain(self) -> None:
        count = 0
        while self.work and self.status == RunStatus.RUNNING:
            count += 1
            if count > _ACTIVATION_LIMIT:
                raise EngineError(
                    "The procedure loops through automatic steps without ever reaching a person.",
                    code="runaway_loop",
                    status=422,
                )
            key, path, exception_id = self.work.popleft()
            self.activate(key, path, exception_id)

    def instance(
        self, step: Step, path: Path, exception_id: int | None, status: StepStatus, **values: Any
    ) -> StepState:
        return self.add_step(
            StepState(
                id=self.new_id(),
                key=step.key,
                status=status,
                ready_at=self.env.now,
                split_id=path[-1][0] if path else None,
                exception_id=exception_id,
                branch_path=path,
                **values,
            )
        )

    def finish(
        self, step: StepState, status: StepStatus, by: uuid.UUID | None = None, outcome: str | None = None
    ) -> None:
        step.status = status
        step.finished_at = self.env.now
        step.finished_by = by
        if outcome is not None:
            step.outcome = outcome

    def activate(self, key: str, path: Path, exception_id: int | None) -> None:
        step = self.ix.steps.get(key)
        if step is None:
            raise EngineError("The procedure has no step '{key}'.", code="unknown_step", status=422, key=key)
        if isinstance(step, _HUMAN):
            self.activate_human(step, path, exception_id)
        elif isinstance(step, DecisionStep):
            self.decide(step, path, exception_id)
        elif isinstance(step, ParallelStep):
            split = self.instance(step, path, exception_id, StepStatus.DONE, finished_at=self.env.now)
            self.emit(events.STEP_COMPLETED, split, outcome=None, values={})
            if exception_id is not None:
                # A fallback runs as a plain sequence: a split there does not fan out.
                self.advance_exception(exception_id)
                return
            for index, branch in enumerate(step.branches):
                self.work.append((branch, (*path, (split.id, index)), None))
        elif isinstance(step, JoinStep):
            self.arrive(step, path, exception_id)
        elif isinstance(step, WaitStep):
            self.start_wait(step, path, exception_id)
        elif isinstance(step, ActionStep):
            action = self.instance(step, path, exception_id, StepStatus.IN_PROGRESS)
            self.request_action(step, action)
        else:
            sub = self.instance(step, path, exception_id, StepStatus.IN_PROGRESS)
            self.emit(events.SUBPROCEDURE_REQUESTED, sub, procedure_id=str(step.procedure_id))

    def activate_human(self, step: HumanStep, path: Path, exception_id: int | None) -> None:
        now = self.env.now
        due_at = self.env.due_at(step.due, now, self.context()) if step.due is not None else None
        expires_at = remind_at = None
        if step.optional and step.expires_after is not None:
            expires_at = self.after(step.expires_after)
        if due_at is not None and step.due is not None and step.due.remind_before is not None:
            remind_at = self.before(due_at, step.due.remind_before)
            remind_at = max(remind_at, now) if remind_at is not None else None
        instance = self.instance(
            step, path, exception_id, StepStatus.READY, due_at=due_at, expires_at=expires_at, remind_at=remind_at
        )
        ready: dict[str, Any] = {
            "owner": msgspec.to_builtins(step.owner),
            "due_at": _iso(due_at),
            "expires_at": _iso(expires_at),
        }
        if isinstance(step, ApprovalStep):
            ready["approvers"] = msgspec.to_builtins(step.approvers)
            ready["mode"] = step.mode
        self.emit(events.STEP_READY, instance, **ready)
        owner = step.owner
        if isinstance(owner, MemberOwner):
            self.assign(instance, owner.user_id, None)
        elif isinstance(owner, StarterOwner) and self.started_by is not None:
            self.assign(instance, self.started_by, None)

    def after(self, span: Duration) -> datetime | None:
        if span.business:
            return self.env.due_at(Due(within=span), self.env.now, self.context())
        return self.env.now + timedelta(minutes=span.total_minutes)

    def before(self, moment: datetime, span: Duration) -> datetime | None:
        """The latest start from which ``span`` ends no later than ``moment`` (business time
        counted backwards by searching the calendar's forward arithmetic); None if none is found."""
        if not span.business:
            return moment - timedelta(minutes=span.total_minutes)
        within = Due(within=span)
        context = self.context()

        def fits(offset: int) -> bool:
            end = self.env.due_at(within, moment - timedelta(microseconds=offset), context)
            return end is not None and end <= moment

        # A span of business time lasts at least as long on the wall clock: start the search there.
        good = max(span.total_minutes, 1) * 60_000_000
        for _ in range(_BACKWARD_DOUBLINGS):
            if fits(good):
                break
            good *= 2
        else:
            return None
        bad = 0  # the span from ``moment`` itself ends after it (a zero span: it fits at once)
        if fits(bad):
            return moment
        while good - bad > 1:
            middle = (good + bad) // 2
            if fits(middle):
                good = middle
            else:
                bad = middle
        return moment - timedelta(microseconds=good)

    def decide(self, step: DecisionStep, path: Path, exception_id: int | None) -> None:
        context = self.context()
        taken: str | None = None
        target: str | None = None
        for index, branch in enumerate(step.branches):
            try:
                holds = bool(self.env.evaluate(branch.when, context))
            except Exception:
                # A condition that cannot be evaluated (missing data, wrong type) does not hold.
                holds = False
            if holds:
                taken, target = str(index), branch.next
                break
        if taken is None and step.default is not None:
            taken, target = "default", step.default
        if taken is None:
            failed = self.instance(step, path, exception_id, StepStatus.FAILED, finished_at=self.env.now)
            failed.outcome = "no_branch"
            self.emit(events.STEP_FAILED, failed, error="no branch condition holds and there is no default")
            self.abort(f"Decision {step.key!r}: no branch condition holds and there is no default.", None)
            return
        decided = self.instance(step, path, exception_id, StepStatus.DONE, finished_at=self.env.now, outcome=taken)
        self.emit(events.STEP_COMPLETED, decided, outcome=taken, values={})
        self.follow(target, path, exception_id)

    def arrive(self, step: JoinStep, path: Path, exception_id: int | None) -> None:
        split_step = None
        if path and exception_id is None:
            split_id, branch = path[-1]
            split_step = self.ix.steps.get(self.find(split_id).key)
        if not isinstance(split_step, ParallelStep) or split_step.join != step.key:
            # Not the join of the split this path is in (a malformed definition, or a fallback):
            # it is a plain pass-through step.
            passed = self.instance(step, path, exception_id, StepStatus.DONE, finished_at=self.env.now)
            self.emit(events.STEP_COMPLETED, passed, outcome=None, values={})
            self.follow(step.next, path, exception_id)
            return
        arrival_key = f"{step.key}@{split_id}"
        arrived = self.arrivals.get(arrival_key, [])
        needed = len(split_step.branches)
        if len(arrived) >= needed or branch in arrived:
            return  # already fired, or this branch already arrived (it looped): the path ends here
        if not self._arrivals_owned:
            self.arrivals = dict(self.arrivals)
            self._arrivals_owned = True
        arrived = [*arrived, branch]
        self.arrivals[arrival_key] = arrived
        if len(arrived) < needed:
            return
        outer = path[:-1]
        joined = self.instance(step, outer, None, StepStatus.DONE, finished_at=self.env.now, joined_split=split_id)
        self.emit(events.STEP_COMPLETED, joined, outcome=None, values={})
        self.follow(step.next, outer, None)

    def start_wait(self, step: WaitStep, path: Path, exception_id: int | None) -> None:
        until: datetime | None = None
        if step.duration is not None:
            until = self.after(step.duration)
        elif step.until is not None:
            until = self.date_of(step.until)
        wait = self.instance(step, path, exception_id, StepStatus.IN_PROGRESS, wake_at=until)
        if until is None:
            # No date to wait for: the wait is over at once.
            self.finish(wait, StepStatus.DONE, outcome="no_date")
            self.emit(events.STEP_COMPLETED, wait, outcome="no_date", values={})
            self.follow(step.next, path, exception_id)
            return
        self.emit(events.WAIT_SCHEDULED, wait, until=until.isoformat())

    def date_of(self, field_path: str) -> datetime | None:
        source, _, name = field_path.partition(".")
        values = self.data if source == "data" else (self.env.record or {})
        value = values.get(name)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return None
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=self.env.now.tzinfo)
        if isinstance(value, date):
            return datetime.combine(value, time(), tzinfo=self.env.now.tzinfo)
        return None

    def request_action(self, step: ActionStep, action: StepState) -> None:
        context = self.context()
        try:
            values = {name: self.env.evaluate(expr, context) for name, expr in step.input.items()}
        except Exception as exc:
            self.action_failed(step, action, f"input could not be evaluated: {exc}")
            return
        self.emit(events.ACTION_REQUESTED, action, plugin=step.plugin, action=step.action, input=values)

    def action_failed(self, step: ActionStep, action: StepState, error: str) -> None:
        action = self.edit(action.id)
        if step.on_failure.goto is not None:
            self.finish(action, StepStatus.FAILED, outcome=error[:200])
            self.emit(events.STEP_FAILED, action, error=error)
            self.work.append((step.on_failure.goto, action.branch_path, action.exception_id))
            return
        kind = self.ix.kinds.get(step.on_failure.raise_exception or "")
        if kind is not None:
            # The action stays open; when the exception resumes, it is requested again.
            self.raise_exception(kind, action, None, error)
            return
        self.finish(action, StepStatus.FAILED, outcome=error[:200])
        self.emit(events.STEP_FAILED, action, error=error)
        self.abort(f"Action {step.key!r} failed: {error}", None)

    # ------------------------------------------------ people

    def assign(self, step: StepState, user_id: uuid.UUID, by: Actor | None) -> None:
        step = self.edit(step.id)
        step.assignee = user_id
        caused_by = str(self.acting) if by is None and self.acting is not None else None
        self.emit(
            events.STEP_ASSIGNED, step, user_id=str(user_id), by=str(by.user_id) if by else None, caused_by=caused_by
        )

    def rule_matches(self, rule: Owner, actor: Actor, step: StepState) -> bool:
        if isinstance(rule, _ROLE_OWNERS):
            return _role(actor).at_least(rule.role)
        if isinstance(rule, MemberOwner):
            return rule.user_id == actor.user_id
        if isinstance(rule, StarterOwner):
            return self.started_by is not None and self.started_by == actor.user_id
        # A user field is resolved by the caller, who assigns that user.
        return step.assignee == actor.user_id

    def may_claim(self, definition: HumanStep, actor: Actor, step: StepState) -> bool:
        rules: list[Owner] = [definition.owner]
        if isinstance(definition, ApprovalStep):
            rules += definition.approvers
        return any(not isinstance(r, FieldOwner) and self.rule_matches(r, actor, step) for r in rules)

    def ensure_assignee(self, definition: HumanStep, step: StepState, actor: Actor) -> StepState:
        """The actor works the step: they are its assignee, or claim it now if they may."""
        if step.assignee == actor.user_id:
            return step
        if step.assignee is None and self.may_claim(definition, actor, step):
            self.assign(step, actor.user_id, actor)
            return self.find(step.id)
        raise EngineError("This step is not yours to work on.", code="not_step_owner", status=403)

    # ------------------------------------------------ exceptions and the end

    def raise_exception(self, kind: ExceptionKind, step: StepState | None, actor: Actor | None, note: str) -> None:
        exc = ExceptionState(
            id=self.new_id(),
            kind=kind.key,
            step_id=step.id if step is not None else None,
            raised_by=actor.user_id if actor is not None else None,
            raised_at=self.env.now,
            note=note,
            pending_fallback=list(kind.fallback),
            then=kind.then,
            escalate_at=self.after(kind.escalate_after) if kind.escalate_after is not None else None,
        )
        self.exceptions.append(exc)
        self._owned_exceptions.add(exc.id)
        self.events.append(
            Event(
                type=events.EXCEPTION_RAISED.name,
                step_id=exc.step_id,
                step_key=step.key if step is not None else None,
                data={
                    "exception_id": exc.id,
                    "kind": kind.key,
                    "label": kind.label,
                    "note": note,
                    "raised_by": str(exc.raised_by) if exc.raised_by else None,
                    "notify": msgspec.to_builtins(kind.notify),
                    "fallback": list(kind.fallback),
                    "then": kind.then,
                    "escalate_after": msgspec.to_builtins(kind.escalate_after),
                    "escalate_to": msgspec.to_builtins(kind.escalate_to),
                    "escalate_at": _iso(exc.escalate_at),
                },
            )
        )
        if exc.pending_fallback:
            self.advance_exception(exc.id)
        # Without fallback steps, the exception waits for a person to resolve it.

    def advance_exception(self, exception_id: int) -> None:
        exc = self.find_exception(exception_id)
        if exc.status != "open":
            return  # resolved by hand while its fallback was running
        if exc.pending_fallback:
            exc = self.edit_exception(exception_id)
            key = exc.pending_fallback.pop(0)
            self.work.append((key, (), exception_id))
        else:
            self.resolve(exc, exc.then, None)

    def resolve(
        self, exc: ExceptionState, outcome: Literal["resume", "abort"], actor: Actor | None, note: str = ""
    ) -> None:
        exc = self.edit_exception(exc.id)
        exc.status = "resolved"
        exc.resolution_note = note
        exc.outcome = outcome
        exc.resolved_by = actor.user_id if actor is not None else None
        exc.resolved_at = self.env.now
        exc.pending_fallback = []
        for step in list(self.steps):
            if step.exception_id == exc.id and step.status.is_open:
                cancelled = self.edit(step.id)
                self.finish(cancelled, StepStatus.FAILED, outcome="cancelled")
                self.emit(events.STEP_FAILED, cancelled, error="the exception was resolved")
        self.events.append(
            Event(
                type=events.EXCEPTION_RESOLVED.name,
                step_id=exc.step_id,
                data={"exception_id": exc.id, "kind": exc.kind, "outcome": outcome},
            )
        )
        if outcome == "abort":
            self.abort(f"Exception {exc.kind!r} aborts the run.", actor)
            return
        if exc.step_id is None or self.blocked(exc.step_id):
            return
        target = self.find(exc.step_id)
        if not target.status.is_open:
            return
        definition = self.ix.steps.get(target.key)
        if isinstance(definition, ActionStep):
            self.request_action(definition, target)

    def abort(self, reason: str, actor: Actor | None) -> None:
        for step in self.steps:
            if step.status.is_open:
                self.finish(self.edit(step.id), StepStatus.FAILED, outcome="aborted")
        for exc in self.exceptions:
            if exc.status == "open":
                closed = self.edit_exception(exc.id)
                closed.status = "resolved"
                closed.outcome = "abort"
                closed.resolved_at = self.env.now
                closed.pending_fallback = []
        self.status = RunStatus.ABORTED
        self.work.clear()
        self.emit(events.RUN_ABORTED, reason=reason, by=str(actor.user_id) if actor else None)

    def settle(self) -> None:
        """A running run with nothing open left has completed."""
        if self.status != RunStatus.RUNNING:
            return
        open_statuses = _OPEN_STATUSES
        for step in self.steps:
            if step.status in open_statuses:
                return
        for exc in self.exceptions:
            if exc.status == "open":
                return
        self.status = RunStatus.COMPLETED
        self.emit(events.RUN_COMPLETED)


# ---------------------------------------------------------------- the actions


def _open_step(run: _Run, step_id: int) -> tuple[StepState, Step]:
    step = run.find(step_id)
    if step.status not in _OPEN_WORK:
        raise EngineError(
            "Step '{key}' is {state}, not open.", code="step_not_open", key=step.key, state=step.status.value
        )
    return step, run.ix.steps[step.key]


def _open_human(run: _Run, step_id: int) -> tuple[StepState, HumanStep]:
    step, definition = _open_step(run, step_id)
    if not isinstance(definition, _HUMAN):
        raise EngineError("Step '{key}' is done by the system.", code="wrong_step_kind", key=step.key)
    return step, definition


def _not_blocked(run: _Run, step: StepState) -> None:
    if run.blocked(step.id):
        raise EngineError(
            "Step '{key}' waits for an open exception to be resolved.", code="step_blocked_by_exception", key=step.key
        )


def _require_manager(actor: Actor | None) -> None:
    if actor is not None and not _role(actor).at_least(Role.MANAGER):
        raise EngineError("Only a manager or above may do this.", code="role_required", status=403)


def _claim(run: _Run, action: Claim) -> None:
    step, definition = _open_human(run, action.step_id)
    if step.assignee == action.actor.user_id:
        return
    if step.assignee is not None:
        raise EngineError("Step '{key}' is already assigned.", code="step_already_assigned", key=step.key)
    if not run.may_claim(definition, action.actor, step):
        raise EngineError("This step is not yours to claim.", code="not_step_owner", status=403)
    run.assign(step, action.actor.user_id, action.actor)


def _assign(run: _Run, action: Assign) -> None:
    _require_manager(action.actor)
    step, _ = _open_human(run, action.step_id)
    if step.assignee != action.user_id:
        run.assign(step, action.user_id, action.actor)


def _start_work(run: _Run, action: Start) -> None:
    step, definition = _open_human(run, action.step_id)
    if step.status != StepStatus.READY:
        raise EngineError("Step '{key}' is already in progress.", code="step_not_ready", key=step.key)
    step = run.edit(run.ensure_assignee(definition, step, action.actor).id)
    step.status = StepStatus.IN_PROGRESS
    run.emit(events.STEP_STARTED, step, by=str(action.actor.user_id))


def _requirements(definition: HumanStep, action: Complete) -> list[tuple[str, FieldProblem]]:
    """Everything the completion lacks, each with its category (the error code)."""
    problems: list[tuple[str, FieldProblem]] = []
    if isinstance(definition, ChecklistStep):
        keys = {item.key for item in definition.items}
        for item in definition.items:
            if item.required and item.key not in action.checked:
                problems.append(
                    (
                        "checklist_incomplete",
                        FieldProblem.of(f"/checked/{item.key}", "required", "{label}: not done", label=item.label),
                    )
                )
        for key in action.checked:
            if key not in keys:
                problems.append(
                    ("checklist_incomplete", FieldProblem.of("/checked", "unknown", "no item '{key}'", key=key))
                )
    if isinstance(definition, FormStep):
        keys = {f.key for f in definition.fields}
        for form_field in definition.fields:
            if form_field.required and _blank(action.values.get(form_field.key)):
                problems.append(
                    (
                        "form_invalid",
                        FieldProblem.of(
                            f"/values/{form_field.key}", "required", "{label}: required", label=form_field.label
                        ),
                    )
                )
        for key in action.values:
            if key not in keys:
                problems.append(
                    ("form_invalid", FieldProblem.of(f"/values/{key}", "unknown", "no field '{key}'", key=key))
                )
    required = definition.evidence
    given = action.evidence
    if required.note and not given.note.strip():
        problems.append(("evidence_missing", FieldProblem("/evidence/note", "required", "a note is required")))
    if required.file and not given.files:
        problems.append(("evidence_missing", FieldProblem("/evidence/files", "required", "a file is required")))
    measure = required.value
    if measure is not None:
        value = given.value
        if value is None:
            problems.append(
                (
                    "evidence_missing",
                    FieldProblem.of("/evidence/value", "required", "{label}: required", label=measure.label),
                )
            )
        elif (
            (measure.target is not None and abs(value - measure.target) > measure.tolerance)
            or (measure.min is not None and value < measure.min)
            or (measure.max is not None and value > measure.max)
        ):
            problems.append(
                (
                    "evidence_missing",
                    FieldProblem.of(
                        "/evidence/value",
                        "out_of_range",
                        "{label}: {value} is out of range",
                        label=measure.label,
                        value=value,
                    ),
                )
            )
    return problems


def _complete(run: _Run, action: Complete) -> None:
    step, definition = _open_human(run, action.step_id)
    if isinstance(definition, ApprovalStep):
        raise EngineError("An approval is approved or rejected, not completed.", code="wrong_step_kind")
    _not_blocked(run, step)
    step = run.ensure_assignee(definition, step, action.actor)
    if definition.requires_acknowledgement and not action.acknowledged:
        raise EngineError(
            "Acknowledge the current version of the procedure before completing this step.",
            code="acknowledgement_required",
            details=[FieldProblem("/acknowledged", "required", "acknowledge the current version first")],
        )
    problems = _requirements(definition, action)
    if problems:
        raise EngineError(
            "Step '{key}' cannot be completed yet.",
            code=problems[0][0],
            status=422,
            details=[p for _, p in problems],
            key=step.key,
        )
    values = msgspec.to_builtins(action.values)
    if isinstance(definition, FormStep):
        to_record = {}
        for form_field in definition.fields:
            if form_field.key in values:
                if form_field.target == "data":
                    run.set_data(form_field.key, values[form_field.key])
                else:
                    to_record[form_field.key] = values[form_field.key]
        if to_record:
            run.emit(events.RECORD_UPDATE_REQUESTED, step, values=to_record)
    step = run.edit(step.id)
    run.finish(step, StepStatus.DONE, action.actor.user_id, "done")
    run.emit(
        events.STEP_COMPLETED,
        step,
        by=str(action.actor.user_id),
        outcome="done",
        values=values,
        checked=list(action.checked),
        evidence=msgspec.to_builtins(action.evidence),
    )
    run.follow(definition.next, step.branch_path, step.exception_id)


def _open_approval(run: _Run, step_id: int) -> tuple[StepState, ApprovalStep]:
    step, definition = _open_human(run, step_id)
    if not isinstance(definition, ApprovalStep):
        raise EngineError("Step '{key}' is not an approval.", code="wrong_step_kind", key=step.key)
    _not_blocked(run, step)
    return step, definition


def _approver(run: _Run, definition: ApprovalStep, step: StepState, actor: Actor) -> StepState:
    """May ``actor`` vote on this approval? In mode "one" only the assignee decides (claiming it if
    they may); otherwise the assignee or anyone matching an approver rule."""
    if definition.mode == "one" or not definition.approvers:
        return run.ensure_assignee(definition, step, actor)
    if step.assignee == actor.user_id or any(run.rule_matches(r, actor, step) for r in definition.approvers):
        return step
    raise EngineError("You are not an approver of this step.", code="not_step_owner", status=403)


def _approve(run: _Run, action: Approve) -> None:
    step, definition = _open_approval(run, action.step_id)
    step = _approver(run, definition, step, action.actor)
    voter = str(action.actor.user_id)
    if voter in step.votes:
        raise EngineError("You have already voted on this approval.", code="already_voted")
    step = run.edit(step.id)
    step.votes = {**step.votes, voter: "approve"}
    if definition.mode == "all" and definition.approvers:
        # Every approver rule needs its own approval: a named member (or the starter) in person,
        # a role rule by one more distinct member of that role. Named rules are matched first.
        rules = definition.approvers
        order = sorted(range(len(rules)), key=lambda i: isinstance(rules[i], _ROLE_OWNERS))
        for i in order:
            if i not in step.approved_rules and run.rule_matches(rules[i], action.actor, step):
                step.approved_rules = [*step.approved_rules, i]
                break
        if len(step.approved_rules) < len(rules):
            run.emit(events.STEP_VOTED, step, by=voter, vote="approve", note=action.note)
            return
    run.finish(step, StepStatus.DONE, action.actor.user_id, "approved")
    run.emit(events.STEP_COMPLETED, step, by=voter, outcome="approved", note=action.note, values={})
    run.follow(definition.next, step.branch_path, step.exception_id)


def _reject(run: _Run, action: Reject) -> None:
    step, definition = _open_approval(run, action.step_id)
    step = _approver(run, definition, step, action.actor)
    voter = str(action.actor.user_id)
    if voter in step.votes:
        raise EngineError("You have already voted on this approval.", code="already_voted")
    step = run.edit(step.id)
    run.emit(events.STEP_REJECTED, step, by=voter, note=action.note)
    on_reject = definition.on_reject
    if on_reject.goto is not None:
        step.votes = {**step.votes, voter: "reject"}
        run.finish(step, StepStatus.DONE, action.actor.user_id, "rejected")
        run.work.append((on_reject.goto, step.branch_path, step.exception_id))
        return
    kind = None
    if on_reject.raise_exception is not None:
        kind = run.ix.step_kinds.get(step.key, {}).get(on_reject.raise_exception) or run.ix.kinds.get(
            on_reject.raise_exception
        )
    if kind is not None:
        # The approval stays open and is decided afresh once the exception resumes.
        step.votes = {}
        step.approved_rules = []
        run.raise_exception(kind, step, action.actor, action.note)
        return
    step.votes = {**step.votes, voter: "reject"}
    run.finish(step, StepStatus.DONE, action.actor.user_id, "rejected")
    run.abort(f"Approval {step.key!r} was rejected.", action.actor)


def _may_skip(run: _Run, definition: HumanStep, step: StepState, actor: Actor) -> bool:
    return (
        step.assignee == actor.user_id
        or (step.assignee is None and run.may_claim(definition, actor, step))
        or _role(actor).at_least(Role.MANAGER)
    )


def _optional(run: _Run, step_id: int) -> tuple[StepState, HumanStep]:
    step, definition = _open_step(run, step_id)
    if not isinstance(definition, _HUMAN) or not definition.optional:
        raise EngineError("Step '{key}' is mandatory.", code="step_mandatory", key=step.key)
    return step, definition


def _skip(run: _Run, action: Skip) -> None:
    step, definition = _optional(run, action.step_id)
    if not _may_skip(run, definition, step, action.actor):
        raise EngineError("This step is not yours to skip.", code="not_step_owner", status=403)
    step = run.edit(step.id)
    run.finish(step, StepStatus.SKIPPED, action.actor.user_id, "skipped")
    run.emit(events.STEP_SKIPPED, step, by=str(action.actor.user_id))
    run.follow(definition.next, step.branch_path, step.exception_id)


def _expire(run: _Run, action: Expire) -> None:
    step, definition = _optional(run, action.step_id)
    step = run.edit(step.id)
    run.finish(step, StepStatus.EXPIRED, None, "expired")
    run.emit(events.STEP_EXPIRED, step)
    run.follow(definition.next, step.branch_path, step.exception_id)


def _system_step(run: _Run, step_id: int, kind: type[WaitStep | ActionStep | SubprocedureStep]) -> StepState:
    step, definition = _open_step(run, step_id)
    if not isinstance(definition, kind):
        raise EngineError(
            "Step '{key}' is not a {tag} step.", code="wrong_step_kind", key=step.key, tag=kind.__struct_config__.tag
        )
    _not_blocked(run, step)
    return run.edit(step.id)


def _wait_elapsed(run: _Run, action: WaitElapsed) -> None:
    step = _system_step(run, action.step_id, WaitStep)
    definition = run.ix.steps[step.key]
    assert isinstance(definition, WaitStep)
    run.finish(step, StepStatus.DONE, outcome="elapsed")
    run.emit(events.STEP_COMPLETED, step, outcome="elapsed", values={})
    run.follow(definition.next, step.branch_path, step.exception_id)


def _action_succeeded(run: _Run, action: ActionSucceeded) -> None:
    step = _system_step(run, action.step_id, ActionStep)
    definition = run.ix.steps[step.key]
    assert isinstance(definition, ActionStep)
    output = msgspec.to_builtins(action.output)
    run.set_data(definition.key, output)
    run.finish(step, StepStatus.DONE, outcome="succeeded")
    run.emit(events.STEP_COMPLETED, step, outcome="succeeded", values=output)
    run.follow(definition.next, step.branch_path, step.exception_id)


def _action_failed(run: _Run, action: ActionFailed) -> None:
    step = _system_step(run, action.step_id, ActionStep)
    definition = run.ix.steps[step.key]
    assert isinstance(definition, ActionStep)
    run.action_failed(definition, step, action.error)


def _subprocedure_finished(run: _Run, action: SubprocedureFinished) -> None:
    step = _system_step(run, action.step_id, SubprocedureStep)
    definition = run.ix.steps[step.key]
    assert isinstance(definition, SubprocedureStep)
    if action.completed:
        run.finish(step, StepStatus.DONE, outcome="completed")
        run.emit(events.STEP_COMPLETED, step, outcome="completed", values={})
        run.follow(definition.next, step.branch_path, step.exception_id)
        return
    run.finish(step, StepStatus.FAILED, outcome="sub-run aborted")
    run.emit(events.STEP_FAILED, step, error="the sub-run was aborted")
    run.abort(f"The sub-procedure of step {step.key!r} was aborted.", None)


def _raise(run: _Run, action: RaiseException) -> None:
    step: StepState | None = None
    if action.step_id is not None:
        step, _ = _open_step(run, action.step_id)
        kind = run.ix.step_kinds.get(step.key, {}).get(action.kind)
    else:
        kind = run.ix.kinds.get(action.kind)
    if kind is None:
        where = f"step {step.key!r}" if step is not None else "this procedure"
        raise EngineError(
            "{where} has no exception kind '{kind}'.",
            code="unknown_exception_kind",
            status=422,
            where=where,
            kind=action.kind,
        )
    run.raise_exception(kind, step, action.actor, action.note)


def _resolve(run: _Run, action: ResolveException) -> None:
    exc = run.find_exception(action.exception_id)
    if exc.status != "open":
        raise EngineError("This exception is already resolved.", code="exception_resolved")
    outcome = action.outcome or exc.then
    if outcome == "abort":
        _require_manager(action.actor)
    run.resolve(exc, outcome, action.actor, action.note)


def _abort(run: _Run, action: Abort) -> None:
    _require_manager(action.actor)
    run.abort(action.reason or "Aborted by hand.", action.actor)


def _escalate(run: _Run, action: Escalate) -> None:
    exc = run.find_exception(action.exception_id)
    if exc.status != "open":
        raise EngineError("This exception is already resolved.", code="exception_resolved")
    if exc.escalated_at is not None:
        raise EngineError("This exception has already escalated.", code="exception_escalated")
    at = run.find(exc.step_id) if exc.step_id is not None else None
    kind = (run.ix.step_kinds.get(at.key, {}) if at is not None else {}).get(exc.kind) or run.ix.kinds.get(exc.kind)
    exc = run.edit_exception(exc.id)
    exc.escalated_at = run.env.now
    run.events.append(
        Event(
            type=events.EXCEPTION_ESCALATED.name,
            step_id=exc.step_id,
            step_key=at.key if at is not None else None,
            data={
                "exception_id": exc.id,
                "kind": exc.kind,
                "label": kind.label if kind is not None else exc.kind,
                "escalate_to": msgspec.to_builtins(kind.escalate_to) if kind is not None else [],
                "escalate_at": _iso(exc.escalate_at),
            },
        )
    )


_HANDLERS: dict[type[Any], Callable[[_Run, Any], None]] = {
    Claim: _claim,
    Assign: _assign,
    Start: _start_work,
    Complete: _complete,
    Approve: _approve,
    Reject: _reject,
    Skip: _skip,
    Expire: _expire,
    WaitElapsed: _wait_elapsed,
    ActionSucceeded: _action_succeeded,
    ActionFailed: _action_failed,
    SubprocedureFinished: _subprocedure_finished,
    RaiseException: _raise,
    ResolveException: _resolve,
    Abort: _abort,
    Escalate: _escalate,
}


# ---------------------------------------------------------------- invariants


class InvariantBroken(AssertionError):
    """The engine reached a state it must never reach: a bug, never a user's mistake. Raised
    explicitly (not by ``assert``) so that it holds under ``python -O`` too."""


def check_invariants(definition: Definition, state: RunState) -> None:
    """Raise InvariantBroken when ``state`` breaks an invariant of the engine (run after every
    transition; the property tests rely on it too)."""
    steps = _index(definition).steps
    ids: set[int] = set()
    joins: set[tuple[str, int]] = set()
    next_id = state.next_id
    open_statuses = _OPEN_STATUSES
    any_open = False
    for step in state.steps:
        status = step.status
        if not (step.id not in ids and step.id < next_id):
            raise InvariantBroken(f"step id {step.id} used twice or not below next_id")
        ids.add(step.id)
        if status in open_statuses:
            any_open = True
            if step.key not in steps:
                raise InvariantBroken(f"open step {step.key!r} is not in the definition")
            if not (status != StepStatus.PENDING):
                raise InvariantBroken(f"step {step.key!r} left pending")
        elif status == StepStatus.SKIPPED or status == StepStatus.EXPIRED:
            definition_step = steps.get(step.key)
            if not (isinstance(definition_step, _HUMAN)):
                raise InvariantBroken(f"system step {step.key!r} was {status.value}")
            if not (definition_step.optional):
                raise InvariantBroken(f"mandatory step {step.key!r} was {status.value}")
        if step.joined_split is not None:
            fired = (step.key, step.joined_split)
            if not (fired not in joins):
                raise InvariantBroken(f"join {step.key!r} fired twice for split {step.joined_split}")
            joins.add(fired)
        path = step.branch_path
        if not (step.split_id == (path[-1][0] if path else None)):
            raise InvariantBroken(f"step {step.id}: split_id is not its branch's")
    for arrival_key, arrived in state.arrivals.items():
        if not (len(set(arrived)) == len(arrived)):
            raise InvariantBroken(f"a branch arrived twice at {arrival_key}")
    open_exceptions = False
    for exc in state.exceptions:
        if not (exc.id not in ids):
            raise InvariantBroken(f"exception id {exc.id} also names a step")
        if not (exc.id < state.next_id):
            raise InvariantBroken(f"exception id {exc.id} not below next_id")
        ids.add(exc.id)
        if exc.status == "open":
            open_exceptions = True
    if state.status == RunStatus.RUNNING:
        if not (any_open or open_exceptions):
            raise InvariantBroken("a running run has nothing open")
    else:
        if any_open:
            raise InvariantBroken(f"a {state.status.value} run has open steps")
        if open_exceptions:
            raise InvariantBroken(f"a {state.status.value} run has open exceptions")


# ---------------------------------------------------------------- entry points


def start(definition: Definition, env: Env, *, started_by: uuid.UUID | None, data: dict[str, Any]) -> Transition:
    """A new run: the start step becomes ready (system steps run through at once)."""
    index = _index(definition)
    run = _Run(index, RunState(data=dict(data), started_by=started_by), env)
    run._data_owned = True
    run.acting = started_by
    run.emit(events.RUN_STARTED, started_by=str(started_by) if started_by else None)
    run.work.append((definition.start, (), None))
    run.drain()
    run.settle()
    state = run.result()
    check_invariants(definition, state)
    return Transition(state, run.events)


def apply(definition: Definition, state: RunState, action: Action, env: Env) -> Transition:
    """The next state after ``action``; raises EngineError when the state does not allow it."""
    if state.status != RunStatus.RUNNING:
        raise EngineError("The run has {state}.", code="run_finished", state=state.status.value)
    run = _Run(_index(definition), state, env)
    actor = getattr(action, "actor", None)
    run.acting = actor.user_id if isinstance(actor, Actor) else None
    _HANDLERS[type(action)](run, action)
    run.drain()
    run.settle()
    new = run.result()
    check_invariants(definition, new)
    return Transition(new, run.events)


def _kind_of(step: Step) -> str:
    return str(step.__struct_config__.tag)


def migration_problems(old: Definition, new: Definition, state: RunState) -> list[str]:
    """Why ``state`` cannot move to ``new`` (every open step must map to a step of the same key and
    kind in the new version); empty when it can."""
    if state.status != RunStatus.RUNNING:
        return [f"The run has {state.status.value}."]
    old_steps = _index(old).steps
    new_index = _index(new)
    problems: list[str] = []
    for step in state.steps:
        if not step.status.is_open:
            continue
        target = new_index.steps.get(step.key)
        was = old_steps.get(step.key)
        kind = _kind_of(was) if was is not None else "?"
        if target is None:
            problems.append(f"Open step {step.key!r} does not exist in the new version.")
        elif was is not None and _kind_of(target) != kind:
            problems.append(
                f"Open step {step.key!r} is of kind {kind!r} but of kind {_kind_of(target)!r} in the new version."
            )
        for split_id, _ in step.branch_path:
            split = next((s for s in state.steps if s.id == split_id), None)
            if split is None:
                continue
            old_split, new_split = old_steps.get(split.key), new_index.steps.get(split.key)
            if not isinstance(new_split, ParallelStep) or (
                isinstance(old_split, ParallelStep)
                and (new_split.join != old_split.join or len(new_split.branches) != len(old_split.branches))
            ):
                problems.append(
                    f"Open step {step.key!r} is inside parallel group {split.key!r}, which the new version changes."
                )
    for exc in state.exceptions:
        if exc.status != "open":
            continue
        if exc.step_id is not None:
            at = next((s for s in state.steps if s.id == exc.step_id), None)
            kinds = new_index.step_kinds.get(at.key, {}) if at is not None else {}
        else:
            kinds = new_index.kinds
        if exc.kind not in kinds:
            problems.append(f"Open exception {exc.kind!r} is not an exception kind of that step in the new version.")
        for key in exc.pending_fallback:
            if key not in new_index.steps:
                problems.append(
                    f"Fallback step {key!r} of open exception {exc.kind!r} does not exist in the new version."
                )
    return list(dict.fromkeys(problems))
