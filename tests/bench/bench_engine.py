"""Runs per second of the pure run engine against SpiffWorkflow executing the same process as BPMN,
in the same run. Target: the engine is at least 5x faster.

The process is an e-commerce order of 12 steps: receive (a form with the amount), check payment, a
decision (amount > 5000: a manager reviews), picking and invoicing in parallel, their join, pack,
double-check, ship, confirm delivery. Half the orders are large. Each run goes from start to
completion: our engine through ``start`` and one ``apply`` per human step (the conditions in the
procedures' own expression language); SpiffWorkflow (the same process in order_process.bpmn, with an
exclusive gateway whose condition its own script engine evaluates, and parallel gateways) by
completing its ready user tasks and running its engine steps. Parsing is done once for both.
Rounds alternate and the medians are reported, because a small shared machine is noisy.
"""

from __future__ import annotations

import importlib
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.sops.definition import (
    ApprovalStep,
    Branch,
    ChecklistItem,
    ChecklistStep,
    DecisionStep,
    Definition,
    FormField,
    FormStep,
    JoinStep,
    ParallelStep,
    RoleOwner,
    TaskStep,
)
from services.sops.engine import Action, Actor, Approve, Complete, RunStatus, apply, start
from tenants.models import Role
from tests.bench.harness import round_order
from tests.engine_support import evaluator, make_env

BPMN = Path(__file__).with_name("order_process.bpmn")
ROUND_SECONDS = 2.0
ROUNDS = 3
TARGET_RATIO = 5.0
LARGE, SMALL = 9000, 120

ACTOR = Actor(user_id=uuid.uuid4(), role=Role.MANAGER.value)
MEMBERS = RoleOwner(role=Role.MEMBER)

DEFINITION = Definition(
    start="receive",
    steps=[
        FormStep(
            key="receive",
            title="Receive the order",
            owner=MEMBERS,
            fields=[FormField(key="amount", label="Amount", type="number", required=True)],
            next="check_payment",
        ),
        TaskStep(key="check_payment", title="Check the payment", owner=MEMBERS, next="amount"),
        DecisionStep(
            key="amount",
            title="Amount?",
            branches=[Branch(when="data.amount > 5000", next="manager_review")],
            default="split",
        ),
        ApprovalStep(key="manager_review", title="Manager review", owner=RoleOwner(role=Role.MANAGER), next="split"),
        ParallelStep(key="split", title="Pick and invoice", branches=["pick", "invoice"], join="join"),
        TaskStep(key="pick", title="Pick the items", owner=MEMBERS, next="join"),
        TaskStep(key="invoice", title="Prepare the invoice", owner=MEMBERS, next="join"),
        JoinStep(key="join", title="Picked and invoiced", next="pack"),
        TaskStep(key="pack", title="Pack", owner=MEMBERS, next="double_check"),
        ChecklistStep(
            key="double_check",
            title="Double-check",
            owner=MEMBERS,
            items=[ChecklistItem(key="items", label="Items match"), ChecklistItem(key="label", label="Label")],
            next="ship",
        ),
        TaskStep(key="ship", title="Ship", owner=MEMBERS, next="confirm"),
        TaskStep(key="confirm", title="Confirm delivery", owner=MEMBERS),
    ],
)
assert len(DEFINITION.steps) == 12

ENV = make_env()


def _action(key: str, step_id: int, amount: int) -> Action:
    if key == "receive":
        return Complete(step_id=step_id, actor=ACTOR, values={"amount": amount})
    if key == "manager_review":
        return Approve(step_id=step_id, actor=ACTOR)
    if key == "double_check":
        return Complete(step_id=step_id, actor=ACTOR, checked=["items", "label"])
    return Complete(step_id=step_id, actor=ACTOR)


def run_engine(amount: int) -> list[str]:
    """One run to completion; the human steps in the order they were done."""
    state = start(DEFINITION, ENV, started_by=ACTOR.user_id, data={}).state
    done: list[str] = []
    while state.status == RunStatus.RUNNING:
        for step in state.open_steps():
            state = apply(DEFINITION, state, _action(step.key, step.id, amount), ENV).state
            done.append(step.key)
    if state.status != RunStatus.COMPLETED:
        raise RuntimeError(f"the engine's run ended {state.status}")
    return done


class Spiff:
    """The same process in SpiffWorkflow 3 (imported here only: it lives in the bench environment)."""

    def __init__(self) -> None:
        parser_module = importlib.import_module("SpiffWorkflow.bpmn.parser")
        self._workflow_class = importlib.import_module("SpiffWorkflow.bpmn.workflow").BpmnWorkflow
        self._ready = importlib.import_module("SpiffWorkflow.util.task").TaskState.READY
        parser = parser_module.BpmnParser()
        parser.add_bpmn_file(str(BPMN))
        self._spec = parser.get_spec("order")

    def run(self, amount: int) -> list[str]:
        workflow = self._workflow_class(self._spec)
        workflow.do_engine_steps()
        done: list[str] = []
        while not workflow.is_completed():
            tasks = workflow.get_tasks(state=self._ready, manual=True)
            if not tasks:
                raise RuntimeError("the SpiffWorkflow run has no ready task")
            for task in tasks:
                name: str = task.task_spec.name
                if name == "receive":
                    task.set_data(amount=amount)
                task.run()
                done.append(name)
            workflow.do_engine_steps()
        return done


def _rate(run_one: Callable[[int], Any]) -> float:
    """Runs to completion per second over one round, half of them large orders."""
    runs = 0
    started = time.perf_counter()
    deadline = started + ROUND_SECONDS
    while True:
        for amount in (LARGE, SMALL) * 10:
            run_one(amount)
        runs += 20
        now = time.perf_counter()
        if now >= deadline:
            return runs / (now - started)


def run() -> None:
    spiff = Spiff()
    # The comparison only means something if both do the same work.
    for amount in (LARGE, SMALL):
        engine_steps, spiff_steps = run_engine(amount), spiff.run(amount)
        if sorted(engine_steps) != sorted(spiff_steps):
            raise RuntimeError(f"amount {amount}: the engine did {engine_steps}, SpiffWorkflow did {spiff_steps}")
    evaluate = evaluator()
    print(
        f"12-step order procedure (decision + parallel group), {len(run_engine(LARGE))} or "
        f"{len(run_engine(SMALL))} human steps per run; conditions by {evaluate.__module__}.{evaluate.__name__}"
    )
    print(f"{'round':<8}{'engine runs/s':>16}{'spiff runs/s':>16}{'ratio':>8}", flush=True)
    rates: dict[str, list[float]] = {"spiff": [], "engine": []}
    ours, theirs = rates["engine"], rates["spiff"]
    for number in range(1, ROUNDS + 1):
        for name, run_one in round_order(number, [("spiff", spiff.run), ("engine", run_engine)]):
            rates[name].append(_rate(run_one))
        print(f"{number:<8}{ours[-1]:>16.0f}{theirs[-1]:>16.0f}{ours[-1] / theirs[-1]:>8.1f}", flush=True)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"{'median':<8}{statistics.median(ours):>16.0f}{statistics.median(theirs):>16.0f}{ratio:>8.1f}")
    print(f"engine throughput ratio (engine/SpiffWorkflow): {ratio:.1f} (target >= {TARGET_RATIO:.1f})")
    print("target met" if ratio >= TARGET_RATIO else "target MISSED", flush=True)
