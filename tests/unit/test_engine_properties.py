"""Random valid procedures and random action sequences never reach an invalid run state.

Procedures are built from nested blocks (tasks, optional tasks that may expire, tasks with exception
kinds and fallback steps, approvals that send back to an earlier step or raise an exception,
decisions on data, parallel groups with their join, waits, automated actions); actions are drawn
from what the current state offers, rejections and failures included. After every transition:
- a join fires at most once per activation of its split, and only when every branch arrived;
- a finished run has no open step and no open exception;
- a mandatory step is never skipped or expired;
- an open optional step can always be skipped and expired, and skipping every optional step never
  leaves a running run without something to do;
- a running run always has an action that succeeds, and always-progressing actions finish it.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sops.definition import (
    ActionStep,
    ApprovalStep,
    Branch,
    DecisionStep,
    Definition,
    Duration,
    ExceptionKind,
    JoinStep,
    OnReject,
    ParallelStep,
    RoleOwner,
    Step,
    TaskStep,
    WaitStep,
)
from services.sops.engine import (
    Abort,
    Action,
    ActionFailed,
    ActionSucceeded,
    Actor,
    Approve,
    Complete,
    EngineError,
    Expire,
    RaiseException,
    Reject,
    ResolveException,
    RunState,
    RunStatus,
    Skip,
    StepStatus,
    WaitElapsed,
    apply,
    check_invariants,
    start,
)
from tenants.models import Role
from tests.engine_support import make_env

ACTOR = Actor(user_id=uuid.uuid4(), role=Role.MANAGER.value)
ANYONE = RoleOwner(role=Role.MEMBER)
ENV = make_env()
HOUR = Duration(hours=1, business=False)


# ---------------------------------------------------------------- random valid procedures


@dataclass
class Block:
    kind: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    children: list[list[Block]] = field(default_factory=list)


class Builder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.numbers = itertools.count(1)
        self.steps: list[Step] = []

    def key(self, prefix: str) -> str:
        return f"{prefix}{next(self.numbers)}"

    def back_to(self, earlier: list[str]) -> str | None:
        """Maybe an earlier step of the same sequence (where a rejection or a failure goes back to)."""
        if not earlier or not self.draw(st.booleans()):
            return None
        return self.draw(st.sampled_from(earlier))

    def exception(self) -> ExceptionKind:
        fallback = []
        for _ in range(self.draw(st.integers(0, 2))):
            key = self.key("fb")
            self.steps.append(TaskStep(key=key, title=key, owner=ANYONE, optional=self.draw(st.booleans())))
            fallback.append(key)
        then: Literal["resume", "abort"] = self.draw(st.sampled_from(["resume", "resume", "abort"]))
        return ExceptionKind(key="problem", label="Problem", fallback=fallback, then=then)

    def sequence(self, depth: int, min_size: int, max_size: int) -> list[Block]:
        blocks: list[Block] = []
        for _ in range(self.draw(st.integers(min_size, max_size))):
            kinds = ["task", "task", "approval", "wait", "action"]
            if depth < 2:
                kinds += ["decision", "parallel"]
            kind = self.draw(st.sampled_from(kinds))
            earlier: list[str] = [b.key for b in blocks]
            if kind == "task":
                optional = self.draw(st.booleans())
                blocks.append(
                    Block(
                        "task",
                        self.key("t"),
                        {
                            "optional": optional,
                            "expires": optional and self.draw(st.booleans()),
                            "exception": self.draw(st.booleans()),
                        },
                    )
                )
            elif kind == "approval":
                goto = self.back_to(earlier)
                mode = self.draw(st.sampled_from(["one", "any", "all"]))
                blocks.append(Block("approval", self.key("ap"), {"goto": goto, "mode": mode}))
            elif kind == "action":
                goto = self.back_to(earlier)
                blocks.append(Block("action", self.key("ac"), {"goto": goto}))
            elif kind == "wait":
                blocks.append(Block("wait", self.key("w")))
            elif kind == "decision":
                count = self.draw(st.integers(1, 3))
                children = [self.sequence(depth + 1, 0, 2) for _ in range(count + 1)]  # the last: default
                conditions = [
                    f"data.v{self.draw(st.integers(0, 2))} > {self.draw(st.integers(0, 10))}" for _ in range(count)
                ]
                blocks.append(Block("decision", self.key("d"), {"conditions": conditions}, children))
            else:
                children = [self.sequence(depth + 1, 0, 2) for _ in range(self.draw(st.integers(2, 3)))]
                blocks.append(Block("parallel", self.key("p"), {"join": self.key("j")}, children))
        return blocks

    def compile(self, blocks: list[Block], cont: str | None) -> str | None:
        """Steps for ``blocks`` that go on to ``cont`` at the end; returns the first key."""
        for block in reversed(blocks):
            cont = self.compile_block(block, cont)
        return cont

    def compile_block(self, block: Block, cont: str | None) -> str:
        p = block.params
        key = block.key
        if block.kind == "task":
            self.steps.append(
                TaskStep(
                    key=key,
                    title=key,
                    owner=ANYONE,
                    next=cont,
                    optional=p["optional"],
                    expires_after=HOUR if p["expires"] else None,
                    exceptions=[self.exception()] if p["exception"] else [],
                )
            )
        elif block.kind == "approval":
            on_reject = OnReject(goto=p["goto"]) if p["goto"] else OnReject(raise_exception="problem")
            self.steps.append(
                ApprovalStep(
                    key=key,
                    title=key,
                    owner=ANYONE,
                    next=cont,
                    mode=p["mode"],
                    approvers=[] if p["mode"] == "one" else [ANYONE],
                    on_reject=on_reject,
                    exceptions=[] if p["goto"] else [self.exception()],
                )
            )
        elif block.kind == "action":
            self.steps.append(
                ActionStep(
                    key=key,
                    title=key,
                    plugin="p",
                    action="a",
                    input={"v": "data.v0"},
                    next=cont,
                    on_failure=OnReject(goto=p["goto"]),
                )
            )
        elif block.kind == "wait":
            self.steps.append(WaitStep(key=key, title=key, duration=HOUR, next=cont))
        elif block.kind == "decision":
            *branches, default = block.children
            if cont is None and not default:
                default = [Block("task", self.key("t"), {"optional": False, "expires": False, "exception": False})]
            self.steps.append(
                DecisionStep(
                    key=key,
                    title=key,
                    branches=[
                        Branch(when=when, next=self.compile(child, cont))
                        for when, child in zip(p["conditions"], branches, strict=True)
                    ],
                    default=self.compile(default, cont),
                )
            )
        else:
            join = p["join"]
            self.steps.append(JoinStep(key=join, title=join, next=cont))
            entries = [self.compile(child, join) or join for child in block.children]
            self.steps.append(ParallelStep(key=key, title=key, branches=entries, join=join))
        return key


@st.composite
def procedures(draw: st.DrawFn) -> tuple[Definition, dict[str, int]]:
    builder = Builder(draw)
    top = builder.sequence(0, 1, 5)
    first = builder.compile(top, None)
    assert first is not None
    data = {f"v{i}": draw(st.integers(0, 10)) for i in range(3)}
    return Definition(start=first, steps=builder.steps), data


# ---------------------------------------------------------------- what can be done


def candidates(definition: Definition, state: RunState) -> list[Action]:
    """Every action the state seems to offer (some are refused, e.g. on a blocked step)."""
    steps = definition.by_key()
    out: list[Action] = []
    for s in state.open_steps():
        d = steps[s.key]
        if isinstance(d, ApprovalStep):
            out += [Approve(step_id=s.id, actor=ACTOR), Reject(step_id=s.id, actor=ACTOR)]
        elif isinstance(d, TaskStep):
            out.append(Complete(step_id=s.id, actor=ACTOR))
        elif isinstance(d, WaitStep):
            out.append(WaitElapsed(step_id=s.id))
        elif isinstance(d, ActionStep):
            out += [ActionSucceeded(step_id=s.id, output={"ok": True}), ActionFailed(step_id=s.id, error="down")]
        if isinstance(d, TaskStep | ApprovalStep):
            if d.optional:
                out += [Skip(step_id=s.id, actor=ACTOR), Expire(step_id=s.id)]
            if d.exceptions:
                out.append(RaiseException(kind=d.exceptions[0].key, step_id=s.id, actor=ACTOR))
    for exc in state.exceptions:
        if exc.status == "open":
            out.append(ResolveException(exception_id=exc.id, actor=ACTOR))
    out.append(Abort(actor=ACTOR))
    return out


PROGRESS = (Complete, Approve, WaitElapsed, ActionSucceeded, ResolveException, Skip)


def try_apply(definition: Definition, state: RunState, action: Action) -> RunState | None:
    try:
        return apply(definition, state, action, ENV).state
    except EngineError:
        return None


def check(definition: Definition, state: RunState) -> None:
    check_invariants(definition, state)
    steps = definition.by_key()
    fired = Counter((s.key, s.joined_split) for s in state.steps if s.joined_split is not None)
    assert all(n == 1 for n in fired.values()), fired
    for (join, split_id), _ in fired.items():
        split = next(s for s in state.steps if s.id == split_id)
        parallel = steps[split.key]
        assert isinstance(parallel, ParallelStep) and parallel.join == join
        assert sorted(state.arrivals[f"{join}@{split_id}"]) == list(range(len(parallel.branches)))
    for s in state.steps:
        if s.status in (StepStatus.SKIPPED, StepStatus.EXPIRED):
            d = steps[s.key]
            assert isinstance(d, TaskStep | ApprovalStep) and d.optional, f"{s.key} {s.status}"
    if state.status != RunStatus.RUNNING:
        assert state.open_steps() == []
        assert all(e.status == "resolved" for e in state.exceptions)
        return
    options = candidates(definition, state)
    assert any(not isinstance(a, Abort) and try_apply(definition, state, a) for a in options), "a stuck run"
    # Optional steps never block: each can be skipped or expire, and skipping them all leaves work.
    skipped = state
    for _ in range(50):
        optional = [
            s for s in skipped.open_steps() if isinstance(d := steps[s.key], TaskStep | ApprovalStep) and d.optional
        ]
        if not optional or skipped.status != RunStatus.RUNNING:
            break
        assert try_apply(definition, skipped, Expire(step_id=optional[0].id)) is not None
        after = try_apply(definition, skipped, Skip(step_id=optional[0].id, actor=ACTOR))
        assert after is not None, f"optional step {optional[0].key} cannot be skipped"
        skipped = after
    if skipped.status == RunStatus.RUNNING:
        assert any(
            not isinstance(a, Abort) and try_apply(definition, skipped, a) for a in candidates(definition, skipped)
        )


def finish(definition: Definition, state: RunState) -> RunState:
    """Only ever progress (complete, approve, let waits and actions end, resume): the run finishes."""
    for _ in range(500):
        if state.status != RunStatus.RUNNING:
            return state
        for action in candidates(definition, state):
            if isinstance(action, PROGRESS) and (after := try_apply(definition, state, action)) is not None:
                state = after
                break
        else:
            raise AssertionError("no progressing action")
    raise AssertionError("the run did not finish")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(procedure=procedures(), choices=st.lists(st.integers(0, 10_000), min_size=10, max_size=60))
def test_random_runs_keep_the_invariants(procedure: tuple[Definition, dict[str, int]], choices: list[int]) -> None:
    definition, data = procedure
    state = start(definition, ENV, started_by=ACTOR.user_id, data=data).state
    check(definition, state)
    for choice in choices:
        if state.status != RunStatus.RUNNING:
            break
        options = [a for a in candidates(definition, state) if not isinstance(a, Abort) or choice % 50 == 0]
        action = options[choice % len(options)]
        before = msgspec.json.encode(state)
        after = try_apply(definition, state, action)
        assert msgspec.json.encode(state) == before, "apply mutated its input"
        if after is None:
            continue
        assert msgspec.json.decode(msgspec.json.encode(after), type=RunState) == after
        state = after
        check(definition, state)
    final = finish(definition, state)
    check(definition, final)
    assert final.status != RunStatus.RUNNING
