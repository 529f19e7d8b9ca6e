"""The run engine, one behaviour at a time: every step kind and every error code."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest

from services.expressions import evaluate as evaluate_expression
from services.sops.calendar.hours import WorkingTime
from services.sops.calendar.hours import due_at as business_due_at
from services.sops.definition import (
    ActionStep,
    ApprovalStep,
    Branch,
    ChecklistItem,
    ChecklistStep,
    DecisionStep,
    Definition,
    Due,
    Duration,
    Evidence,
    ExceptionKind,
    FormField,
    FormStep,
    JoinStep,
    MemberOwner,
    OnReject,
    Owner,
    ParallelStep,
    RoleOwner,
    StarterOwner,
    Step,
    SubprocedureStep,
    TaskStep,
    ValueEvidence,
    WaitStep,
)
from services.sops.engine import (
    Abort,
    Action,
    ActionFailed,
    ActionSucceeded,
    Actor,
    Approve,
    Assign,
    Claim,
    Complete,
    EngineError,
    Env,
    Escalate,
    EvidenceIn,
    Expire,
    RaiseException,
    Reject,
    ResolveException,
    RunState,
    RunStatus,
    Skip,
    Start,
    StepState,
    StepStatus,
    SubprocedureFinished,
    Transition,
    WaitElapsed,
    apply,
    check_invariants,
    migration_problems,
    start,
)
from tenants.models import Role
from tests.engine_support import NOW, make_env

MEMBER = Actor(user_id=uuid.uuid4(), role=Role.MEMBER.value)
OTHER = Actor(user_id=uuid.uuid4(), role=Role.MEMBER.value)
MANAGER = Actor(user_id=uuid.uuid4(), role=Role.MANAGER.value)
STARTER = uuid.uuid4()
ENV = make_env()
ANYONE = RoleOwner(role=Role.MEMBER)


def task(key: str, next: str | None = None, **extra: Any) -> TaskStep:
    return TaskStep(key=key, title=key.title(), owner=extra.pop("owner", ANYONE), next=next, **extra)


def flow(*steps: Step, start_key: str | None = None) -> Definition:
    return Definition(start=start_key or steps[0].key, steps=list(steps))


class Runner:
    """A run under test: applies actions, keeps every event, checks the input is never mutated."""

    def __init__(self, definition: Definition, data: dict[str, Any] | None = None, env: Env = ENV) -> None:
        self.definition = definition
        self.env = env
        first = start(definition, env, started_by=STARTER, data=data or {})
        self.state = first.state
        self.events = list(first.events)

    def do(self, action: Action, env: Env | None = None) -> Transition:
        before = msgspec.json.encode(self.state)
        try:
            result = apply(self.definition, self.state, action, env or self.env)
        finally:
            assert msgspec.json.encode(self.state) == before, "apply mutated its input state"
        self.state = result.state
        self.events.extend(result.events)
        return result

    def fails(self, action: Action, code: str, status: int | None = None) -> EngineError:
        with pytest.raises(EngineError) as caught:
            self.do(action)
        assert caught.value.code == code
        if status is not None:
            assert caught.value.status == status
        return caught.value

    def open(self, key: str) -> StepState:
        found = [s for s in self.state.steps if s.key == key and s.status.is_open]
        assert len(found) == 1, f"{key}: {found}"
        return found[0]

    def statuses(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in self.state.steps:
            out.setdefault(s.key, []).append(s.status.value)
        return out

    def complete(self, key: str, actor: Actor = MEMBER, **extra: Any) -> Transition:
        return self.do(Complete(step_id=self.open(key).id, actor=actor, **extra))

    def types(self) -> list[str]:
        return [e.type for e in self.events]


# ---------------------------------------------------------------- tasks, owners, assignment


def test_a_sequence_of_tasks_runs_to_completion() -> None:
    run = Runner(flow(task("a", "b", due=Due(within=Duration(hours=4))), task("b")))
    a = run.open("a")
    assert a.status == StepStatus.READY and a.ready_at == NOW and a.due_at == NOW + timedelta(hours=4)
    ready = next(e for e in run.events if e.type == "step.ready")
    assert ready.data["owner"] == {"kind": "role", "role": "member"}
    assert ready.data["due_at"] == (NOW + timedelta(hours=4)).isoformat()
    run.complete("a")
    assert run.statuses() == {"a": ["done"], "b": ["ready"]}
    assert run.state.steps[0].finished_by == MEMBER.user_id
    assert run.state.steps[0].assignee == MEMBER.user_id  # claimed on completion
    run.complete("b")
    assert run.state.status == RunStatus.COMPLETED
    assert run.types()[0] == "run.started" and run.types()[-1] == "run.completed"


def test_member_and_starter_owners_are_assigned_at_once() -> None:
    run = Runner(flow(task("a", "b", owner=MemberOwner(user_id=OTHER.user_id)), task("b", owner=StarterOwner())))
    assert run.open("a").assignee == OTHER.user_id
    assert [e.data["user_id"] for e in run.events if e.type == "step.assigned"] == [str(OTHER.user_id)]
    run.fails(Complete(step_id=run.open("a").id, actor=MEMBER), "not_step_owner", 403)
    run.complete("a", actor=OTHER)
    assert run.open("b").assignee == STARTER


def test_claim_needs_the_owner_role_and_an_unassigned_step() -> None:
    run = Runner(flow(task("a", owner=RoleOwner(role=Role.MANAGER))))
    step_id = run.open("a").id
    run.fails(Claim(step_id=step_id, actor=MEMBER), "not_step_owner", 403)
    run.do(Claim(step_id=step_id, actor=MANAGER))
    assert run.open("a").assignee == MANAGER.user_id
    assert run.do(Claim(step_id=step_id, actor=MANAGER)).events == []  # claiming one's own step again
    other_manager = Actor(user_id=uuid.uuid4(), role=Role.ADMIN.value)
    run.fails(Claim(step_id=step_id, actor=other_manager), "step_already_assigned", 409)
    run.fails(Claim(step_id=999, actor=MANAGER), "step_not_found", 404)


def test_assign_is_for_managers_and_the_platform() -> None:
    run = Runner(flow(task("a")))
    step_id = run.open("a").id
    run.fails(Assign(step_id=step_id, user_id=OTHER.user_id, actor=MEMBER), "role_required", 403)
    run.do(Assign(step_id=step_id, user_id=OTHER.user_id))  # the owner rule, applied by the platform
    run.do(Assign(step_id=step_id, user_id=MEMBER.user_id, actor=MANAGER))  # reassigned
    assert run.open("a").assignee == MEMBER.user_id
    run.fails(Complete(step_id=step_id, actor=OTHER), "not_step_owner", 403)


def test_start_work_moves_ready_to_in_progress() -> None:
    run = Runner(flow(task("a")))
    step_id = run.open("a").id
    run.do(Assign(step_id=step_id, user_id=OTHER.user_id))
    run.fails(Start(step_id=step_id, actor=MEMBER), "not_step_owner", 403)
    run.do(Start(step_id=step_id, actor=OTHER))
    assert run.open("a").status == StepStatus.IN_PROGRESS
    run.fails(Start(step_id=step_id, actor=OTHER), "step_not_ready", 409)
    run.complete("a", actor=OTHER)
    assert run.state.status == RunStatus.COMPLETED


def test_acting_on_a_done_step_or_a_finished_run_is_a_conflict() -> None:
    run = Runner(flow(task("a", "b"), task("b")))
    a_id = run.open("a").id
    run.complete("a")
    run.fails(Complete(step_id=a_id, actor=MEMBER), "step_not_open", 409)
    run.complete("b")
    run.fails(Complete(step_id=a_id, actor=MEMBER), "run_finished", 409)


# ---------------------------------------------------------------- what completing requires


def test_evidence_is_checked_and_every_problem_listed() -> None:
    evidence = Evidence(note=True, file=True, value=ValueEvidence(label="Weight", target=10, tolerance=0.5, min=9.8))
    run = Runner(flow(task("a", evidence=evidence)))
    error = run.fails(Complete(step_id=run.open("a").id, actor=MEMBER), "evidence_missing", 422)
    assert [d.pointer for d in error.details] == ["/evidence/note", "/evidence/files", "/evidence/value"]
    assert len(error.problems) == 3
    error = run.fails(
        Complete(step_id=run.open("a").id, actor=MEMBER, evidence=EvidenceIn(note="ok", files=["f1"], value=9.6)),
        "evidence_missing",
    )
    assert [(d.pointer, d.code) for d in error.details] == [("/evidence/value", "out_of_range")]
    assert run.open("a").assignee is None  # nothing half-written: the claim did not stick either
    run.complete("a", evidence=EvidenceIn(note="ok", files=["f1"], value=10.2))
    assert run.state.status == RunStatus.COMPLETED
    completed = next(e for e in run.events if e.type == "step.completed")
    assert completed.data["evidence"] == {"note": "ok", "files": ["f1"], "value": 10.2}


def test_checklist_requires_every_required_item() -> None:
    items = [ChecklistItem(key="seal", label="Seal"), ChecklistItem(key="photo", label="Photo", required=False)]
    run = Runner(flow(ChecklistStep(key="c", title="Check", owner=ANYONE, items=items)))
    error = run.fails(
        Complete(step_id=run.open("c").id, actor=MEMBER, checked=["photo", "nope"]), "checklist_incomplete", 422
    )
    assert [(d.pointer, d.code) for d in error.details] == [("/checked/seal", "required"), ("/checked", "unknown")]
    run.complete("c", checked=["seal"])
    assert run.state.status == RunStatus.COMPLETED


def test_form_writes_data_and_requests_record_updates() -> None:
    fields = [
        FormField(key="amount", label="Amount", type="number", required=True),
        FormField(key="status", label="Status", type="text", target="record"),
    ]
    run = Runner(flow(FormStep(key="f", title="Form", owner=ANYONE, fields=fields)), data={"keep": 1})
    error = run.fails(
        Complete(step_id=run.open("f").id, actor=MEMBER, values={"amount": "", "x": 1}), "form_invalid", 422
    )
    assert [d.pointer for d in error.details] == ["/values/amount", "/values/x"]
    run.complete("f", values={"amount": 12, "status": "paid"})
    assert run.state.data == {"keep": 1, "amount": 12}
    update = next(e for e in run.events if e.type == "record.update_requested")
    assert update.data == {"values": {"status": "paid"}}


def test_acknowledgement_of_the_current_version() -> None:
    run = Runner(flow(task("a", requires_acknowledgement=True)))
    run.fails(Complete(step_id=run.open("a").id, actor=MEMBER, acknowledged=False), "acknowledgement_required", 409)
    run.complete("a", acknowledged=True)
    assert run.state.status == RunStatus.COMPLETED


# ---------------------------------------------------------------- optional steps


def test_optional_steps_skip_and_expire_mandatory_ones_never() -> None:
    run = Runner(
        flow(
            task("a", "b", optional=True, expires_after=Duration(hours=2, business=False)),
            task("b", "c", optional=True),
            task("c"),
        )
    )
    assert run.open("a").expires_at == NOW + timedelta(hours=2)
    run.do(Expire(step_id=run.open("a").id))
    run.do(Skip(step_id=run.open("b").id, actor=MEMBER))
    c_id = run.open("c").id
    run.fails(Skip(step_id=c_id, actor=MANAGER), "step_mandatory", 409)
    run.fails(Expire(step_id=c_id), "step_mandatory", 409)
    assert run.statuses() == {"a": ["expired"], "b": ["skipped"], "c": ["ready"]}


def test_skip_needs_the_owner_or_a_manager() -> None:
    run = Runner(flow(task("a", optional=True, owner=MemberOwner(user_id=OTHER.user_id))))
    run.fails(Skip(step_id=run.open("a").id, actor=MEMBER), "not_step_owner", 403)
    run.do(Skip(step_id=run.open("a").id, actor=MANAGER))
    assert run.state.status == RunStatus.COMPLETED


def test_business_expiry_uses_the_calendar() -> None:
    calls: list[Due] = []

    def due_at(due: Due, ready: Any, context: Any) -> Any:
        calls.append(due)
        return ready + timedelta(days=3)

    env = Env(now=NOW, due_at=due_at, evaluate=ENV.evaluate)
    run = Runner(flow(task("a", optional=True, expires_after=Duration(hours=8))), env=env)
    assert run.open("a").expires_at == NOW + timedelta(days=3)
    assert calls == [Due(within=Duration(hours=8))]


# ---------------------------------------------------------------- decisions


def decision_flow(default: str | None = "small") -> Definition:
    return flow(
        DecisionStep(
            key="d",
            title="Amount?",
            branches=[Branch(when="data.amount > 5000", next="big"), Branch(when="data.amount > 100", next="mid")],
            default=default,
        ),
        task("big"),
        task("mid"),
        task("small"),
    )


@pytest.mark.parametrize(
    ("amount", "taken", "outcome"), [(9000, "big", "0"), (500, "mid", "1"), (5, "small", "default")]
)
def test_decision_takes_the_first_branch_that_holds(amount: int, taken: str, outcome: str) -> None:
    run = Runner(decision_flow(), data={"amount": amount})
    decided = run.state.steps[0]
    assert (decided.key, decided.status, decided.outcome) == ("d", StepStatus.DONE, outcome)
    assert [s.key for s in run.state.open_steps()] == [taken]


def test_decision_condition_on_missing_data_does_not_hold() -> None:
    run = Runner(decision_flow(), data={})
    assert [s.key for s in run.state.open_steps()] == ["small"]


def test_decision_without_a_way_aborts_the_run() -> None:
    run = Runner(decision_flow(default=None), data={"amount": 1})
    assert run.state.status == RunStatus.ABORTED
    assert run.state.steps[0].status == StepStatus.FAILED
    assert "run.aborted" in run.types()


# ---------------------------------------------------------------- parallel groups


def parallel_flow() -> Definition:
    return flow(
        task("receive", "split"),
        ParallelStep(key="split", title="Split", branches=["pick", "invoice"], join="join"),
        task("pick", "pack"),
        task("pack", "join"),
        task("invoice", "join"),
        JoinStep(key="join", title="Join", next="ship"),
        task("ship", "review"),
        ApprovalStep(key="review", title="Review", owner=ANYONE, on_reject=OnReject(goto="split")),
    )


def test_parallel_branches_meet_at_the_join_once() -> None:
    run = Runner(parallel_flow())
    run.complete("receive")
    split = next(s for s in run.state.steps if s.key == "split")
    assert {s.key: s.split_id for s in run.state.open_steps()} == {"pick": split.id, "invoice": split.id}
    run.complete("pick")
    run.complete("invoice")
    assert [s.key for s in run.state.open_steps()] == ["pack"]
    assert run.state.arrivals == {f"join@{split.id}": [1]}
    run.complete("pack")
    assert run.state.arrivals == {f"join@{split.id}": [1, 0]}
    joins = [s for s in run.state.steps if s.key == "join"]
    assert [(j.joined_split, j.split_id) for j in joins] == [(split.id, None)]
    assert run.open("ship").split_id is None
    run.complete("ship")
    # A rejection goes back before the split: a new activation, whose join fires again, once.
    run.do(Reject(step_id=run.open("review").id, actor=MEMBER))
    assert sorted(s.key for s in run.state.open_steps()) == ["invoice", "pick"]
    for key in ("pick", "invoice", "pack", "ship"):
        run.complete(key)
    run.do(Approve(step_id=run.open("review").id, actor=MEMBER))
    assert run.state.status == RunStatus.COMPLETED
    assert len([s for s in run.state.steps if s.key == "join"]) == 2
    assert run.statuses()["review"] == ["done", "done"]
    assert [s.outcome for s in run.state.steps if s.key == "review"] == ["rejected", "approved"]


def test_nested_parallel_groups_restore_the_outer_branch() -> None:
    run = Runner(
        flow(
            ParallelStep(key="outer", title="Outer", branches=["inner", "c"], join="outer_join"),
            ParallelStep(key="inner", title="Inner", branches=["a", "b"], join="inner_join"),
            task("a", "inner_join"),
            task("b", "inner_join"),
            JoinStep(key="inner_join", title="Inner join", next="d"),
            task("d", "outer_join"),
            task("c", "outer_join"),
            JoinStep(key="outer_join", title="Outer join", next="e"),
            task("e"),
        )
    )
    outer = run.state.steps[0].id
    run.complete("a")
    run.complete("b")
    assert run.open("d").branch_path == ((outer, 0),)
    run.complete("d")
    run.complete("c")
    assert run.open("e").branch_path == ()
    run.complete("e")
    assert run.state.status == RunStatus.COMPLETED


def test_a_branch_straight_to_the_join() -> None:
    run = Runner(
        flow(
            ParallelStep(key="split", title="Split", branches=["a", "join"], join="join"),
            task("a", "join"),
            JoinStep(key="join", title="Join", next=None),
        )
    )
    assert [s.key for s in run.state.open_steps()] == ["a"]
    run.complete("a")
    assert run.state.status == RunStatus.COMPLETED


# ---------------------------------------------------------------- approvals


def test_approval_mode_one_is_decided_by_the_assignee() -> None:
    run = Runner(
        flow(
            ApprovalStep(key="ok", title="OK", owner=RoleOwner(role=Role.MANAGER), next="done"),
            task("done"),
        )
    )
    step_id = run.open("ok").id
    run.fails(Complete(step_id=step_id, actor=MANAGER), "wrong_step_kind", 409)
    run.fails(Approve(step_id=step_id, actor=MEMBER), "not_step_owner", 403)
    run.do(Approve(step_id=step_id, actor=MANAGER))
    assert run.state.steps[0].outcome == "approved" and run.state.steps[0].votes == {str(MANAGER.user_id): "approve"}
    run.fails(Approve(step_id=run.open("done").id, actor=MEMBER), "wrong_step_kind", 409)


def test_approval_mode_any_the_first_approver_decides() -> None:
    approvers: list[Owner] = [MemberOwner(user_id=OTHER.user_id), RoleOwner(role=Role.MANAGER)]
    run = Runner(
        flow(
            ApprovalStep(key="ok", title="OK", owner=ANYONE, mode="any", approvers=approvers),
        )
    )
    run.fails(Approve(step_id=run.open("ok").id, actor=MEMBER), "not_step_owner", 403)
    run.do(Approve(step_id=run.open("ok").id, actor=OTHER))
    assert run.state.status == RunStatus.COMPLETED


def test_approval_mode_all_needs_every_rule_and_one_rejection_rejects() -> None:
    approvers: list[Owner] = [
        MemberOwner(user_id=OTHER.user_id),
        RoleOwner(role=Role.MANAGER),
        RoleOwner(role=Role.MANAGER),
    ]
    definition = flow(
        task("prepare", "ok"),
        ApprovalStep(
            key="ok", title="OK", owner=ANYONE, mode="all", approvers=approvers, on_reject=OnReject(goto="prepare")
        ),
    )
    run = Runner(definition)
    run.complete("prepare")
    step_id = run.open("ok").id
    run.do(Approve(step_id=step_id, actor=MANAGER))
    run.fails(Approve(step_id=step_id, actor=MANAGER), "already_voted", 409)
    run.do(Approve(step_id=step_id, actor=OTHER))
    assert run.open("ok").approved_rules == [1, 0]
    assert [e.type for e in run.events].count("step.voted") == 2
    second_manager = Actor(user_id=uuid.uuid4(), role=Role.OWNER.value)
    run.do(Approve(step_id=step_id, actor=second_manager))
    assert run.state.status == RunStatus.COMPLETED

    run = Runner(definition)
    run.complete("prepare")
    run.do(Approve(step_id=run.open("ok").id, actor=OTHER))
    run.do(Reject(step_id=run.open("ok").id, actor=MANAGER, note="no"))
    assert run.statuses() == {"prepare": ["done", "ready"], "ok": ["done"]}
    assert "step.rejected" in run.types()


def test_rejection_raising_an_exception_keeps_the_approval_open() -> None:
    kind = ExceptionKind(key="fix_docs", label="Fix documents", fallback=["fix"])
    definition = flow(
        ApprovalStep(
            key="ok", title="OK", owner=ANYONE, exceptions=[kind], on_reject=OnReject(raise_exception="fix_docs")
        ),
        task("fix"),
    )
    run = Runner(definition)
    ok_id = run.open("ok").id
    run.do(Reject(step_id=ok_id, actor=MEMBER))
    raised = run.state.exceptions[0]
    assert (raised.kind, raised.status) == ("fix_docs", "open")
    assert run.open("fix").exception_id == run.state.exceptions[0].id
    run.fails(Approve(step_id=ok_id, actor=MEMBER), "step_blocked_by_exception", 409)
    run.complete("fix")
    resolved = run.state.exceptions[0]
    assert (resolved.status, resolved.outcome) == ("resolved", "resume")
    assert run.open("ok").votes == {}
    run.do(Approve(step_id=ok_id, actor=MEMBER))
    assert run.state.status == RunStatus.COMPLETED


def test_rejection_with_nowhere_to_go_aborts() -> None:
    run = Runner(flow(ApprovalStep(key="ok", title="OK", owner=ANYONE)))
    run.do(Reject(step_id=run.open("ok").id, actor=MEMBER))
    assert run.state.status == RunStatus.ABORTED
    assert run.state.steps[0].outcome == "rejected"


# ---------------------------------------------------------------- waits, actions, sub-procedures


def test_wait_for_a_duration_and_until_a_date_field() -> None:
    run = Runner(
        flow(
            WaitStep(key="w", title="Wait", duration=Duration(days=1, business=False), next="u"),
            WaitStep(key="u", title="Until", until="data.ship_date", next="x"),
            WaitStep(key="x", title="No date", until="record.missing", next="t"),
            task("t"),
        ),
        data={"ship_date": "2025-03-10T08:00:00+00:00"},
    )
    w = run.open("w")
    assert w.status == StepStatus.IN_PROGRESS and w.wake_at == NOW + timedelta(days=1)
    assert next(e for e in run.events if e.type == "wait.scheduled").data == {
        "until": (NOW + timedelta(days=1)).isoformat()
    }
    run.fails(Complete(step_id=w.id, actor=MEMBER), "wrong_step_kind", 409)
    run.fails(ActionSucceeded(step_id=w.id), "wrong_step_kind", 409)
    run.do(WaitElapsed(step_id=w.id))
    wake_at = run.open("u").wake_at
    assert wake_at is not None and wake_at.isoformat() == "2025-03-10T08:00:00+00:00"
    run.do(WaitElapsed(step_id=run.open("u").id))
    assert run.statuses()["x"] == ["done"]  # nothing to wait for
    assert run.open("t").status == StepStatus.READY


def action_flow(on_failure: OnReject) -> Definition:
    return flow(
        task("prepare", "send", exceptions=[ExceptionKind(key="carrier_down", label="Carrier down")]),
        ActionStep(
            key="send",
            title="Send",
            plugin="messaging",
            action="sms",
            input={"to": "data.phone"},
            next="after",
            on_failure=on_failure,
        ),
        task("after"),
    )


def test_action_success_stores_its_output() -> None:
    run = Runner(action_flow(OnReject()), data={"phone": "+86 138"})
    run.complete("prepare")
    send = run.open("send")
    requested = next(e for e in run.events if e.type == "action.requested")
    assert requested.data == {"plugin": "messaging", "action": "sms", "input": {"to": "+86 138"}}
    run.do(ActionSucceeded(step_id=send.id, output={"message_id": "m1"}))
    assert run.state.data["send"] == {"message_id": "m1"}
    assert run.open("after")


def test_action_failure_goes_back_raises_or_aborts() -> None:
    run = Runner(action_flow(OnReject(goto="prepare")), data={"phone": "1"})
    run.complete("prepare")
    run.do(ActionFailed(step_id=run.open("send").id, error="timeout"))
    assert run.statuses() == {"prepare": ["done", "ready"], "send": ["failed"]}

    run = Runner(action_flow(OnReject(raise_exception="carrier_down")), data={"phone": "1"})
    run.complete("prepare")
    send_id = run.open("send").id
    run.do(ActionFailed(step_id=send_id, error="timeout"))
    exc = run.state.exceptions[0]
    assert (exc.kind, exc.step_id, exc.status) == ("carrier_down", send_id, "open")
    run.fails(ActionSucceeded(step_id=send_id), "step_blocked_by_exception", 409)
    before = run.types().count("action.requested")
    run.do(ResolveException(exception_id=exc.id, actor=MEMBER))
    assert run.types().count("action.requested") == before + 1  # requested again on resume
    run.do(ActionSucceeded(step_id=send_id))
    assert run.open("after")

    run = Runner(action_flow(OnReject()), data={"phone": "1"})
    run.complete("prepare")
    run.do(ActionFailed(step_id=run.open("send").id, error="boom"))
    assert run.state.status == RunStatus.ABORTED


def test_action_input_that_cannot_be_evaluated_is_a_failure() -> None:
    def evaluate(source: str, context: Any) -> Any:
        raise ValueError(f"cannot evaluate {source}")

    run = Runner(action_flow(OnReject(goto="prepare")), env=Env(now=NOW, due_at=ENV.due_at, evaluate=evaluate))
    run.complete("prepare")
    assert run.statuses() == {"prepare": ["done", "ready"], "send": ["failed"]}


def test_subprocedure_continues_or_fails() -> None:
    definition = flow(SubprocedureStep(key="sub", title="Sub", procedure_id=uuid.uuid4(), next="t"), task("t"))
    run = Runner(definition)
    assert run.types()[-1] == "subprocedure.requested"
    run.do(SubprocedureFinished(step_id=run.open("sub").id, completed=True))
    assert run.open("t")
    run = Runner(definition)
    run.do(SubprocedureFinished(step_id=run.open("sub").id, completed=False))
    assert run.state.status == RunStatus.ABORTED


# ---------------------------------------------------------------- exceptions and abort


def exception_flow(then: str = "resume", fallback: list[str] | None = None) -> Definition:
    kind = ExceptionKind(
        key="damaged",
        label="Damaged",
        notify=[RoleOwner(role=Role.MANAGER)],
        fallback=fallback if fallback is not None else ["call", "photo"],
        then=then,  # type: ignore[arg-type]
        escalate_after=Duration(hours=1),
        escalate_to=[RoleOwner(role=Role.ADMIN)],
    )
    return flow(task("pack", "ship", exceptions=[kind]), task("ship"), task("call", "ship"), task("photo", "ship"))


def test_exception_runs_its_fallback_then_resumes() -> None:
    run = Runner(exception_flow())
    pack_id = run.open("pack").id
    run.do(RaiseException(kind="damaged", step_id=pack_id, actor=OTHER, note="box torn"))
    raised = next(e for e in run.events if e.type == "exception.raised")
    assert raised.step_id == pack_id and raised.data["notify"] == [{"kind": "role", "role": "manager"}]
    assert raised.data["escalate_after"]["hours"] == 1
    run.fails(Complete(step_id=pack_id, actor=MEMBER), "step_blocked_by_exception", 409)
    run.complete("call")  # a fallback step does not follow its own next ...
    assert sorted(s.key for s in run.state.open_steps()) == ["pack", "photo"]  # ... the next fallback runs
    run.complete("photo")
    assert run.state.exceptions[0].status == "resolved"
    run.complete("pack")
    run.complete("ship")
    assert run.state.status == RunStatus.COMPLETED


def test_exception_that_aborts() -> None:
    run = Runner(exception_flow(then="abort", fallback=["call"]))
    run.do(RaiseException(kind="damaged", step_id=run.open("pack").id, actor=MEMBER))
    run.complete("call")
    assert run.state.status == RunStatus.ABORTED
    assert [(s.key, s.status.value, s.outcome) for s in run.state.steps] == [
        ("pack", "failed", "aborted"),
        ("call", "done", "done"),
    ]


def test_exception_without_fallback_waits_for_a_person() -> None:
    run = Runner(exception_flow(fallback=[]))
    run.do(RaiseException(kind="damaged", actor=MEMBER))  # no step: any step's kind
    exc_id = run.state.exceptions[0].id
    run.fails(ResolveException(exception_id=exc_id, actor=MEMBER, outcome="abort"), "role_required", 403)
    run.do(ResolveException(exception_id=exc_id, actor=MEMBER))
    run.fails(ResolveException(exception_id=exc_id, actor=MEMBER), "exception_resolved", 409)
    run.fails(ResolveException(exception_id=12345, actor=MEMBER), "exception_not_found", 404)


def test_resolving_by_hand_cancels_the_running_fallback() -> None:
    run = Runner(exception_flow())
    run.do(RaiseException(kind="damaged", step_id=run.open("pack").id, actor=MEMBER))
    run.do(ResolveException(exception_id=run.state.exceptions[0].id, actor=MEMBER))
    assert run.statuses() == {"pack": ["ready"], "call": ["failed"]}
    run.complete("pack")


def test_unknown_exception_kind() -> None:
    run = Runner(exception_flow())
    run.fails(RaiseException(kind="fire", step_id=run.open("pack").id, actor=MEMBER), "unknown_exception_kind", 422)
    run.fails(RaiseException(kind="fire", actor=MEMBER), "unknown_exception_kind", 422)


def test_abort_is_for_managers_and_fails_open_steps() -> None:
    run = Runner(parallel_flow())
    run.complete("receive")
    run.fails(Abort(actor=MEMBER), "role_required", 403)
    run.do(Abort(actor=MANAGER, reason="customer cancelled"))
    assert run.state.status == RunStatus.ABORTED
    assert {s.key: (s.status.value, s.outcome) for s in run.state.steps if s.key in ("pick", "invoice")} == {
        "pick": ("failed", "aborted"),
        "invoice": ("failed", "aborted"),
    }
    assert run.events[-1].data["reason"] == "customer cancelled"
    run.fails(Abort(actor=MANAGER), "run_finished", 409)


def test_a_loop_of_system_steps_alone_is_refused() -> None:
    definition = flow(
        DecisionStep(key="a", title="A", branches=[Branch(when="1 > 0", next="b")]),
        DecisionStep(key="b", title="B", branches=[Branch(when="1 > 0", next="a")]),
    )
    with pytest.raises(EngineError) as caught:
        start(definition, ENV, started_by=None, data={})
    assert caught.value.code == "runaway_loop"


def test_unknown_step_in_a_definition() -> None:
    with pytest.raises(EngineError) as caught:
        start(flow(task("a"), start_key="nope"), ENV, started_by=None, data={})
    assert caught.value.code == "unknown_step"


# ---------------------------------------------------------------- invariants and migration


def test_invariant_check_catches_a_broken_state() -> None:
    definition = flow(task("a", optional=False))
    broken = RunState(steps=[StepState(id=1, key="a", status=StepStatus.SKIPPED)], next_id=2)
    with pytest.raises(AssertionError, match="mandatory"):
        check_invariants(definition, broken)
    finished = RunState(
        status=RunStatus.COMPLETED, steps=[StepState(id=1, key="a", status=StepStatus.READY)], next_id=2
    )
    with pytest.raises(AssertionError, match="open steps"):
        check_invariants(definition, finished)


def test_state_survives_json_round_trip() -> None:
    run = Runner(parallel_flow())
    run.complete("receive")
    decoded = msgspec.json.decode(msgspec.json.encode(run.state), type=RunState)
    assert decoded == run.state
    run.state = decoded
    run.complete("pick")
    run.complete("pack")
    run.complete("invoice")
    assert run.open("ship")


def test_migration_problems() -> None:
    old = exception_flow()
    run = Runner(old)
    run.do(RaiseException(kind="damaged", step_id=run.open("pack").id, actor=MEMBER))
    same = exception_flow()
    assert migration_problems(old, same, run.state) == []
    changed = flow(
        ApprovalStep(key="pack", title="Pack", owner=ANYONE, next="ship"),
        task("ship"),
        task("photo"),
    )
    problems = migration_problems(old, changed, run.state)
    assert problems == [
        "Open step 'pack' is of kind 'task' but of kind 'approval' in the new version.",
        "Open step 'call' does not exist in the new version.",
        "Open exception 'damaged' is not an exception kind of that step in the new version.",
    ]
    run.do(Abort(actor=MANAGER))
    assert migration_problems(old, same, run.state) == ["The run has aborted."]


# ---------------------------------------------------------------- escalation, reminders, today


def test_an_exception_escalates_once_at_the_time_set_when_raised() -> None:
    run = Runner(exception_flow(fallback=[]))
    run.do(RaiseException(kind="damaged", step_id=run.open("pack").id, actor=MEMBER))
    exc = run.state.exceptions[0]
    assert exc.escalate_at == NOW + timedelta(hours=1) and exc.escalated_at is None  # the env's due rule
    later = make_env(NOW + timedelta(hours=2))
    run.do(Escalate(exception_id=exc.id), later)
    escalated = run.events[-1]
    assert escalated.type == "exception.escalated" and escalated.step_key == "pack"
    assert escalated.data["escalate_to"] == [{"kind": "role", "role": "admin"}]
    assert run.state.exceptions[0].escalated_at == NOW + timedelta(hours=2)
    run.fails(Escalate(exception_id=exc.id), "exception_escalated", 409)
    run.do(ResolveException(exception_id=exc.id, actor=MEMBER))
    run.fails(Escalate(exception_id=exc.id), "exception_resolved", 409)


def test_an_exception_kind_without_escalation_has_no_escalation_time() -> None:
    kind = ExceptionKind(key="late", label="Late")
    run = Runner(flow(task("pack", exceptions=[kind])))
    run.do(RaiseException(kind="late", step_id=run.open("pack").id, actor=MEMBER))
    assert run.state.exceptions[0].escalate_at is None


def _shanghai_env(now: datetime) -> Env:
    cal = WorkingTime(timezone="Asia/Shanghai")  # Monday to Friday, 09:00-18:00

    def due_at(due: Due, ready_at: datetime, values: Any) -> datetime | None:
        return business_due_at(due, ready_at, values, cal)

    return Env(now=now, due_at=due_at, evaluate=ENV.evaluate)


def test_a_reminder_counts_back_on_the_business_calendar() -> None:
    env = _shanghai_env(NOW)  # Monday 09:00 UTC is 17:00 in Shanghai
    # Due in two working hours: 18:00 today and 10:00 tomorrow (Tuesday 02:00 UTC).
    due = Due(within=Duration(hours=2), remind_before=Duration(hours=1))
    run = Runner(flow(task("pack", due=due)), env=env)
    pack = run.open("pack")
    assert pack.due_at == datetime(2025, 3, 4, 2, 0, tzinfo=UTC)
    assert pack.remind_at == datetime(2025, 3, 4, 1, 0, tzinfo=UTC)  # one working hour before: 09:00 Tuesday
    # Remind half a working hour before 10:00: 17:30 on Monday, over the night.
    half = Due(within=Duration(hours=2), remind_before=Duration(minutes=90))
    assert Runner(flow(task("pack", due=half)), env=env).open("pack").remind_at == datetime(
        2025, 3, 3, 9, 30, tzinfo=UTC
    )
    # More than the time there is: remind at once. Wall-clock time counts back on the wall clock.
    early = Due(within=Duration(hours=2), remind_before=Duration(hours=5))
    assert Runner(flow(task("pack", due=early)), env=env).open("pack").remind_at == NOW
    wall = Due(within=Duration(hours=2), remind_before=Duration(hours=3, business=False))
    assert Runner(flow(task("pack", due=wall)), env=env).open("pack").remind_at == datetime(
        2025, 3, 3, 23, 0, tzinfo=UTC
    )
    assert Runner(flow(task("pack", due=Due(within=Duration(hours=2)))), env=env).open("pack").remind_at is None


def test_today_is_the_date_the_env_gives() -> None:
    definition = flow(
        DecisionStep(
            key="when", title="When", branches=[Branch(when="data.ship_date == today()", next="now")], default="later"
        ),
        task("now"),
        task("later"),
    )
    # 09:00 UTC on 3 March: the UTC date is the 3rd; an env in a timezone ahead says the 4th.
    utc_day = Runner(
        definition,
        data={"ship_date": "2025-03-04"},
        env=Env(now=NOW, due_at=ENV.due_at, evaluate=evaluate_expression),
    )
    assert [s.key for s in utc_day.state.open_steps()] == ["later"]
    ahead = Env(now=NOW, due_at=ENV.due_at, evaluate=evaluate_expression, today=date(2025, 3, 4))
    local_day = Runner(definition, data={"ship_date": "2025-03-04"}, env=ahead)
    assert [s.key for s in local_day.state.open_steps()] == ["now"]
