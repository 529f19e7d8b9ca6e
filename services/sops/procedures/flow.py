"""A procedure version as people read it: its steps numbered in reading order, and its flowchart's graph.

The numbering is the one every page shows (the step list, the flowchart, the QR sheet, "第 3 步"):
from the start, depth first along the normal flow (the first way on first), then the steps only an
exception's fallback reaches, then anything else. Split and join are bars, not numbered steps.
The graph is the web layer's neutral :class:`~services.web.flowchart.FlowGraph`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.sops.definition import (
    HUMAN_STEPS,
    ActionStep,
    ApprovalStep,
    DecisionStep,
    Definition,
    FieldOwner,
    JoinStep,
    MemberOwner,
    Owner,
    ParallelStep,
    StarterOwner,
    Step,
    SubprocedureStep,
    VacantOwner,
    WaitStep,
    successors,
)
from services.sops.procedures.conditions import FieldWords, condition_label, field_words
from services.web.flowchart import FlowEdge, FlowGraph, FlowNode
from services.web.i18n import N_, translate

ROLE_LABELS = {"owner": N_("Owner"), "admin": N_("Admin"), "manager": N_("Manager"), "member": N_("Member")}
BARS = (ParallelStep, JoinStep)


@dataclass(frozen=True)
class NumberedStep:
    number: int | None  # None for a split or join bar
    step: Step
    owner: str  # who does it, in the reader's words
    fallback_only: bool  # reached only when a problem is handled


def owner_label(owner: Owner, locale: str) -> str:
    if isinstance(owner, StarterOwner):
        return translate("Whoever started the run", locale)
    if isinstance(owner, MemberOwner):
        return translate("A named member", locale)
    if isinstance(owner, FieldOwner):
        return translate("The person named in the run", locale)
    if isinstance(owner, VacantOwner):
        return translate("Nobody yet ({role})", locale, role=owner.role)
    return translate(ROLE_LABELS.get(owner.role.value, owner.role.value), locale)


def step_owner(step: Step, locale: str) -> str:
    if isinstance(step, HUMAN_STEPS):
        return owner_label(step.owner, locale)
    if isinstance(step, DecisionStep):
        return translate("Decided automatically", locale)
    if isinstance(step, WaitStep):
        return translate("Waits", locale)
    if isinstance(step, ActionStep):
        return translate("Done automatically", locale)
    if isinstance(step, SubprocedureStep):
        return translate("Another procedure", locale)
    return ""


def numbered_steps(definition: Definition, locale: str) -> list[NumberedStep]:
    """Every step in reading order, numbered (bars not)."""
    steps = definition.by_key()
    # Depth first from the start: the preorder, and the edges that close a loop.
    preorder: dict[str, int] = {}
    back: set[tuple[str, str]] = set()
    on_path: set[str] = set()

    if definition.start in steps:
        preorder[definition.start] = 0
        on_path.add(definition.start)
        stack = [(definition.start, iter(successors(steps[definition.start], fallbacks=False)))]
        while stack:
            key, ways = stack[-1]
            target = next(ways, None)
            if target is None:
                on_path.discard(key)
                stack.pop()
            elif target in on_path:
                back.add((key, target))
            elif target not in preorder and target in steps:
                preorder[target] = len(preorder)
                on_path.add(target)
                stack.append((target, iter(successors(steps[target], fallbacks=False))))
    # Then topologically, ties by that preorder: a step comes after every step that leads to it.
    waiting = dict.fromkeys(preorder, 0)
    for key in preorder:
        for target in dict.fromkeys(successors(steps[key], fallbacks=False)):
            if target in waiting and (key, target) not in back:
                waiting[target] += 1
    ready = [(0, definition.start)] if definition.start in steps else []
    order: list[str] = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(key)
        for target in dict.fromkeys(successors(steps[key], fallbacks=False)):
            if target in waiting and (key, target) not in back:
                waiting[target] -= 1
                if waiting[target] == 0:
                    heapq.heappush(ready, (preorder[target], target))
    main = set(order)
    for step in definition.steps:
        if isinstance(step, HUMAN_STEPS):
            order += [k for e in step.exceptions for k in e.fallback if k not in order and k in steps]
    order += [s.key for s in definition.steps if s.key not in order]
    result = []
    number = 0
    for key in order:
        step = steps[key]
        if isinstance(step, BARS):
            result.append(NumberedStep(None, step, "", key not in main))
            continue
        number += 1
        result.append(NumberedStep(number, step, step_owner(step, locale), key not in main))
    return result


def flow_graph(
    definition: Definition,
    locale: str,
    *,
    href: Callable[[str], str | None] | None = None,
    states: Mapping[str, str] | None = None,
    fields: Mapping[str, FieldWords] | None = None,
) -> FlowGraph:
    """The flowchart of ``definition``: nodes link to ``href(step_key)``; ``states`` (step key →
    done/current/waiting/skipped/overdue) shows where a run stands. A decision's ways say their
    branch's label, else their condition in words, naming fields by ``fields`` (see
    :func:`~services.sops.procedures.conditions.field_words`; the definition's own by default)."""
    if fields is None:
        fields = field_words(definition)
    numbered = numbered_steps(definition, locale)
    number_of = {n.step.key: n.number for n in numbered}
    nodes: list[FlowNode] = []
    edges: list[FlowEdge] = []
    states = states or {}

    def say(message: str, **params: object) -> str:
        return translate(message, locale, **params)

    def kind_of(step: Step) -> str:
        if isinstance(step, ParallelStep):
            return "split"
        if isinstance(step, JoinStep):
            return "join"
        if isinstance(step, DecisionStep):
            return "decision"
        if isinstance(step, ApprovalStep):
            return "approval"
        if isinstance(step, WaitStep):
            return "wait"
        if isinstance(step, ActionStep):
            return "action"
        return "step"

    for entry in numbered:
        step = entry.step
        name = step.title
        if isinstance(step, ParallelStep):
            name = say(N_("At the same time"))
        elif isinstance(step, JoinStep):
            name = say(N_("When all are done"))
        nodes.append(
            FlowNode(
                key=step.key,
                name=name,
                number=entry.number,
                role=entry.owner,
                kind=kind_of(step),
                href=href(step.key) if href and entry.number is not None else None,
                state=states.get(step.key),
                lane="exception" if entry.fallback_only else "main",
            )
        )

    def back_to(target: str) -> str:
        return say(N_("Back to step {number}"), number=number_of.get(target) or "")

    for entry in numbered:
        step = entry.step
        if isinstance(step, DecisionStep):
            for branch in step.branches:
                if branch.next:
                    label = branch.label.strip() or condition_label(branch.when, locale, fields)
                    edges.append(FlowEdge(step.key, branch.next, label, "condition"))
            if step.default:
                edges.append(FlowEdge(step.key, step.default, say(N_("Otherwise")), "condition"))
        elif isinstance(step, ParallelStep):
            edges += [FlowEdge(step.key, b) for b in step.branches]
        elif isinstance(step, ApprovalStep):
            if step.next:
                edges.append(
                    FlowEdge(step.key, step.next, say(N_("Approved")) if step.on_reject.goto else "", "normal")
                )
            if step.on_reject.goto:
                edges.append(
                    FlowEdge(
                        step.key,
                        step.on_reject.goto,
                        say(N_("Rejected: {back}"), back=back_to(step.on_reject.goto)),
                        "condition",
                    )
                )
        elif isinstance(step, ActionStep):
            if step.next:
                edges.append(FlowEdge(step.key, step.next))
            if step.on_failure.goto:
                edges.append(FlowEdge(step.key, step.on_failure.goto, say(N_("If it fails")), "condition"))
        else:
            nxt = getattr(step, "next", None)
            if nxt:
                edges.append(FlowEdge(step.key, nxt))
        if isinstance(step, HUMAN_STEPS):
            for kind in step.exceptions:
                key = f"{step.key}!{kind.key}"
                after = back_to(step.key) if kind.then == "resume" else say(N_("Then the run stops"))
                nodes.append(
                    FlowNode(
                        key,
                        say(N_("⚠ Problem: {type}"), type=kind.label),
                        role=after,
                        kind="exception",
                        lane="exception",
                    )
                )
                edges.append(FlowEdge(step.key, key, kind="exception"))
                previous = key
                for fallback in kind.fallback:
                    edges.append(FlowEdge(previous, fallback, kind="exception"))
                    previous = fallback
                if kind.then == "resume":
                    edges.append(FlowEdge(previous, step.key, kind="return"))
    return FlowGraph(tuple(nodes), _merged(edges))


def _merged(edges: list[FlowEdge]) -> tuple[FlowEdge, ...]:
    """One edge per pair of steps: two ways of a decision to the same step share a line and their labels."""
    merged: dict[tuple[str, str, str], FlowEdge] = {}
    for edge in edges:
        key = (edge.source, edge.target, edge.kind)
        before = merged.get(key)
        if before is None:
            merged[key] = edge
        else:
            label = " / ".join(part for part in (before.label, edge.label) if part)
            merged[key] = FlowEdge(edge.source, edge.target, label, edge.kind)
    return tuple(merged.values())
