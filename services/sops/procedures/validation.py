"""Checking a procedure definition before it is published. Pure: no I/O.

Everything the checks need from the database (the linked collection's fields, the tenant's members,
its procedures) arrives in a :class:`ValidationContext`; the service gathers it. Every problem is
listed, each with a JSON pointer into the definition (``/steps/3/next``) and a stable code.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.expressions import ExpressionError, compile_expression
from services.names import name_problems
from services.records.service import FIELD_TYPES
from services.sops.definition import (
    RECORD_ID_KEY,
    ActionStep,
    ApprovalStep,
    ChecklistStep,
    DecisionStep,
    Definition,
    FieldOwner,
    FormStep,
    JoinStep,
    MemberOwner,
    Owner,
    ParallelStep,
    Step,
    SubprocedureStep,
    TaskStep,
    WaitStep,
    successors,
)
from tenants.errors import FieldProblem

HumanStep = TaskStep | ChecklistStep | FormStep | ApprovalStep

DATE_TYPES = frozenset({"date", "datetime"})
# Names an expression may read besides ``data.*`` and ``record.*``.
BUILTIN_NAMES = frozenset({"now", "today"})


def expression_names(source: str) -> frozenset[str]:
    """The dotted names an expression reads; raises ExpressionError when it does not compile."""
    return compile_expression(source).names


@dataclass(frozen=True)
class ValidationContext:
    """What validation needs to know beyond the definition itself."""

    procedure_id: uuid.UUID | None = None
    # Field key -> type of the linked collection; None when the procedure has no linked collection.
    record_fields: Mapping[str, str] | None = None
    field_types: frozenset[str] = FIELD_TYPES
    member_ids: frozenset[uuid.UUID] = frozenset()
    procedure_ids: frozenset[uuid.UUID] = frozenset()
    names_of: Callable[[str], frozenset[str]] = field(default=expression_names)
    # Plugin -> its action names, for every plugin deployed on the platform; None: not checked.
    plugin_actions: Mapping[str, frozenset[str]] | None = None


# ---------------------------------------------------------------- decoding, every step on its own

_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.+)`")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[(['\"])(.*?)\3\]")


def _pointer_of(message: str, prefix: str) -> tuple[str, str]:
    """Split msgspec's ``... - at `$.steps[3].next``` into a JSON pointer and the message."""
    text, _, where = message.partition(" - at `")
    where = where.rstrip("`")
    parts = [m.group(1) or m.group(2) or m.group(4) or "" for m in _PATH_PART.finditer(where.removeprefix("$"))]
    unknown = _UNKNOWN_FIELD.match(text)
    if unknown:  # point at the unknown field itself, not at the object holding it
        parts.append(unknown.group(1))
    return prefix + "".join(f"/{p}" for p in parts), text


_DEFINITION_FIELD_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Definition)}


class _Shell(msgspec.Struct, forbid_unknown_fields=True):
    """A definition with its steps left undecoded, so each step's problems can be found separately."""

    start: Any
    steps: list[Any]
    data: Any = msgspec.field(default_factory=list)
    roles: Any = msgspec.field(default_factory=list)


def decode_definition(raw: Any) -> tuple[Definition | None, list[FieldProblem]]:
    """Decode JSON builtins into a Definition, listing every decoding problem (one per step at most)."""
    try:
        return msgspec.convert(raw, type=Definition), []
    except msgspec.ValidationError:
        pass
    problems: list[FieldProblem] = []
    try:
        shell = msgspec.convert(raw, type=_Shell)
    except msgspec.ValidationError as exc:
        pointer, message = _pointer_of(str(exc), "")
        return None, [FieldProblem.of(pointer, "invalid_definition", message)]
    if not shell.steps:
        problems.append(FieldProblem.of("/steps", "no_steps", "a procedure needs at least one step"))
    for index, raw_step in enumerate(shell.steps):
        try:
            msgspec.convert(raw_step, type=Step)
        except msgspec.ValidationError as exc:
            pointer, message = _pointer_of(str(exc), f"/steps/{index}")
            problems.append(FieldProblem.of(pointer, "invalid_step", message))
    for name, value in (("start", shell.start), ("data", shell.data), ("roles", shell.roles)):
        try:
            msgspec.convert(value, type=_DEFINITION_FIELD_TYPES[name])
        except msgspec.ValidationError as exc:
            pointer, message = _pointer_of(str(exc), f"/{name}")
            problems.append(FieldProblem.of(pointer, "invalid_definition", message))
    if not problems:  # pragma: no cover - defensive: the whole failed where no part did
        problems.append(FieldProblem.of("", "invalid_definition", "the definition does not match the format"))
    return None, problems


# ---------------------------------------------------------------- the graph


def can_end(step: Step) -> bool:
    """Whether the normal flow may end the run at this step (a ``next`` of None)."""
    if isinstance(step, DecisionStep):
        return step.default is None or any(b.next is None for b in step.branches)
    if isinstance(step, ParallelStep):
        return False
    return getattr(step, "next", None) is None


def _references(index: int, step: Step) -> Iterator[tuple[str, str]]:
    """Every step key a step names, with the pointer where it names it."""
    base = f"/steps/{index}"
    if isinstance(step, DecisionStep):
        for j, branch in enumerate(step.branches):
            if branch.next is not None:
                yield f"{base}/branches/{j}/next", branch.next
        if step.default is not None:
            yield f"{base}/default", step.default
    elif isinstance(step, ParallelStep):
        for j, key in enumerate(step.branches):
            yield f"{base}/branches/{j}", key
        yield f"{base}/join", step.join
    else:
        next_key = getattr(step, "next", None)
        if next_key is not None:
            yield f"{base}/next", next_key
    if isinstance(step, ApprovalStep) and step.on_reject.goto is not None:
        yield f"{base}/on_reject/goto", step.on_reject.goto
    if isinstance(step, ActionStep) and step.on_failure.goto is not None:
        yield f"{base}/on_failure/goto", step.on_failure.goto
    if isinstance(step, HumanStep):
        for j, kind in enumerate(step.exceptions):
            for k, key in enumerate(kind.fallback):
                yield f"{base}/exceptions/{j}/fallback/{k}", key


def _reach(start: str, edges: Callable[[str], list[str]], stop: frozenset[str] = frozenset()) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        key = todo.pop()
        if key in stop:
            continue
        for nxt in edges(key):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _strongly_connected(keys: list[str], edges: Callable[[str], list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (definitions may be long chains)."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in keys:
        if root in index_of:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges(root)))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index_of:
                    index_of[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


# ---------------------------------------------------------------- the checks


class _Checker:
    def __init__(self, definition: Definition, context: ValidationContext) -> None:
        self.d = definition
        self.ctx = context
        self.problems: list[FieldProblem] = []
        self.index: dict[str, int] = {}
        for i, step in enumerate(definition.steps):
            self.index.setdefault(step.key, i)
        self.steps: dict[str, Step] = {s.key: s for s in reversed(definition.steps)}
        self.data_types = self._data_types()

    def add(self, pointer: str, code: str, message: str) -> None:
        self.problems.append(FieldProblem.of(pointer, code, message))

    def edges(self, key: str) -> list[str]:
        step = self.steps.get(key)
        return [k for k in successors(step) if k in self.steps] if step else []

    def flow(self, key: str) -> list[str]:
        step = self.steps.get(key)
        return [k for k in successors(step, fallbacks=False) if k in self.steps] if step else []

    # -------------------------------------------------------- data the definition knows

    def _data_types(self) -> dict[str, str | None]:
        """``data.<key>`` names and their types (None: unknown type, e.g. an action's output)."""
        known: dict[str, str | None] = {f.key: f.type for f in self.d.data}
        for step in self.d.steps:
            if isinstance(step, ActionStep):
                known.setdefault(step.key, None)
            fields = getattr(step, "fields", None)
            if isinstance(fields, list):
                for form_field in fields:
                    if form_field.target == "data":
                        known.setdefault(form_field.key, form_field.type)
        return known

    def field_type(self, pointer: str, path: str) -> tuple[bool, str | None]:
        """Whether ``data.x``/``record.x`` is known (adding a problem if not), and its type."""
        root, _, name = path.partition(".")
        name = name.split(".")[0]
        if root == "data":
            if name in self.data_types:
                return True, self.data_types[name]
            self.add(pointer, "unknown_data", f"`{path}` is not declared in data, a form field or an action step")
            return False, None
        if root == "record":
            if self.ctx.record_fields is None:
                self.add(pointer, "no_linked_collection", f"`{path}` needs the procedure to be linked to a collection")
                return False, None
            if name in self.ctx.record_fields:
                return True, self.ctx.record_fields[name]
            if name == RECORD_ID_KEY:
                return True, "text"
            self.add(pointer, "unknown_record_field", f"the linked collection has no field `{name}`")
            return False, None
        if path in BUILTIN_NAMES:
            return True, None
        self.add(pointer, "unknown_name", f"`{path}` is neither data.<key>, record.<field> nor now")
        return False, None

    def expression(self, pointer: str, source: str) -> None:
        try:
            names = self.ctx.names_of(source)
        except ExpressionError as exc:
            self.add(pointer, "invalid_condition", str(exc))
            return
        for name in sorted(names):
            self.field_type(pointer, name)

    # -------------------------------------------------------- keys and references

    def keys_and_references(self) -> None:
        seen: set[str] = set()
        for i, step in enumerate(self.d.steps):
            if step.key in seen:
                self.add(f"/steps/{i}/key", "duplicate_step_key", f"another step already has the key `{step.key}`")
            seen.add(step.key)
        if self.d.start not in self.steps:
            self.add("/start", "unknown_step", f"no step has the key `{self.d.start}`")
        for i, step in enumerate(self.d.steps):
            for pointer, key in _references(i, step):
                if key not in self.steps:
                    self.add(pointer, "unknown_step", f"no step has the key `{key}`")

    def reachability(self) -> None:
        if self.d.start not in self.steps:
            return
        reached = _reach(self.d.start, self.edges)
        for i, step in enumerate(self.d.steps):
            if step.key not in reached and self.index[step.key] == i:
                self.add(f"/steps/{i}", "unreachable_step", f"no path from `{self.d.start}` leads to `{step.key}`")

    def loops(self) -> None:
        keys = list(self.steps)
        # Steps from which the normal flow can end the run.
        reverse: dict[str, list[str]] = {k: [] for k in keys}
        for key in keys:
            for nxt in self.flow(key):
                reverse[nxt].append(key)
        ending: set[str] = set()
        for key in keys:
            if can_end(self.steps[key]) and key not in ending:
                ending |= _reach(key, lambda k: reverse[k])
        for component in _strongly_connected(keys, self.flow):
            looped = len(component) > 1 or component[0] in self.flow(component[0])
            if not looped:
                continue
            if not any(k in ending for k in component):
                first = min(component, key=lambda k: self.index[k])
                names = ", ".join(sorted(component, key=lambda k: self.index[k]))
                self.add(
                    f"/steps/{self.index[first]}",
                    "loop_without_exit",
                    f"the steps {names} form a loop from which no path ends the run",
                )

    def parallels(self) -> None:
        split_of: dict[str, str] = {}
        for i, step in enumerate(self.d.steps):
            if not isinstance(step, ParallelStep):
                continue
            join = self.steps.get(step.join)
            if join is None:
                continue  # reported as unknown_step
            if not isinstance(join, JoinStep):
                self.add(
                    f"/steps/{i}/join", "join_not_a_join_step", f"`{step.join}` is a {_kind(join)} step, not a join"
                )
                continue
            if step.join in split_of:
                self.add(
                    f"/steps/{i}/join",
                    "join_shared",
                    f"`{step.join}` already joins the split `{split_of[step.join]}`; each split needs its own join",
                )
                continue
            split_of[step.join] = step.key
            region: set[str] = set()
            for j, branch in enumerate(step.branches):
                if branch not in self.steps:
                    continue
                reached, ends = self._walk_branch(branch, step.join)
                region |= reached
                if ends:
                    self.add(
                        f"/steps/{i}/branches/{j}",
                        "branch_ends_before_join",
                        f"the branch from `{branch}` can end the run at `{ends}` before reaching `{step.join}`",
                    )
                elif step.join not in reached:
                    self.add(
                        f"/steps/{i}/branches/{j}",
                        "branch_misses_join",
                        f"the branch from `{branch}` never reaches the join `{step.join}`",
                    )
            for k, other in enumerate(self.d.steps):
                if other.key not in region and step.join in successors(other, fallbacks=False):
                    self.add(
                        f"/steps/{k}",
                        "join_entered_outside_split",
                        f"`{other.key}` leads into the join `{step.join}` but is not on a branch of `{step.key}`",
                    )
        for i, step in enumerate(self.d.steps):
            if isinstance(step, JoinStep) and step.key not in split_of and self.index[step.key] == i:
                self.add(f"/steps/{i}", "join_without_split", f"no parallel step names `{step.key}` as its join")

    def _walk_branch(self, branch: str, join: str) -> tuple[set[str], str | None]:
        """The steps a branch covers before its join, and a step where it may end the run, if any."""
        reached = {branch}
        todo = [branch]
        ends: str | None = None
        while todo:
            key = todo.pop()
            if key == join:
                continue
            step = self.steps[key]
            if isinstance(step, ParallelStep) and isinstance(self.steps.get(step.join), JoinStep):
                nexts = [step.join]  # a nested split is checked on its own: go on from its join
            else:
                nexts = self.flow(key)
                if can_end(step) and ends is None:
                    ends = key
            for nxt in nexts:
                if nxt not in reached:
                    reached.add(nxt)
                    todo.append(nxt)
        return reached, ends

    # -------------------------------------------------------- per step

    def owner(self, pointer: str, owner: Owner) -> None:
        if isinstance(owner, FieldOwner):
            known, field_type = self.field_type(f"{pointer}/field", owner.field)
            if known and field_type is not None and field_type != "user":
                self.add(f"{pointer}/field", "not_a_user_field", f"`{owner.field}` is a {field_type} field, not a user")
        elif isinstance(owner, MemberOwner) and owner.user_id not in self.ctx.member_ids:
            self.add(f"{pointer}/user_id", "unknown_member", "this user is not a member of the workspace")

    def date_field(self, pointer: str, path: str) -> None:
        known, field_type = self.field_type(pointer, path)
        if known and field_type is not None and field_type not in DATE_TYPES:
            self.add(pointer, "not_a_date_field", f"`{path}` is a {field_type} field, not a date")

    def step_details(self) -> None:
        for i, step in enumerate(self.d.steps):
            base = f"/steps/{i}"
            self.problems += name_problems(step.title, f"{base}/title")
            if isinstance(step, HumanStep):
                self.human(base, step)
            if isinstance(step, DecisionStep):
                for j, branch in enumerate(step.branches):
                    self.expression(f"{base}/branches/{j}/when", branch.when)
            elif isinstance(step, WaitStep):
                if step.until is not None:
                    self.date_field(f"{base}/until", step.until)
                elif step.duration is None:
                    self.add(base, "wait_without_end", "a wait needs a duration or an `until` date field")
            elif isinstance(step, ActionStep):
                self.plugin_action(base, step)
                for name, source in step.input.items():
                    self.expression(f"{base}/input/{name}", source)
                if step.on_failure.raise_exception is not None:
                    kinds = {e.key for s in self.d.steps if isinstance(s, HumanStep) for e in s.exceptions}
                    if step.on_failure.raise_exception not in kinds:
                        self.add(
                            f"{base}/on_failure/raise_exception",
                            "unknown_exception_kind",
                            f"no step declares the exception kind `{step.on_failure.raise_exception}`",
                        )
            elif isinstance(step, SubprocedureStep):
                if self.ctx.procedure_id is not None and step.procedure_id == self.ctx.procedure_id:
                    self.add(f"{base}/procedure_id", "subprocedure_is_self", "a procedure cannot run itself as a step")
                elif step.procedure_id not in self.ctx.procedure_ids:
                    self.add(f"{base}/procedure_id", "unknown_procedure", "no such procedure in this workspace")
        for i, data_field in enumerate(self.d.data):
            if data_field.type not in self.ctx.field_types:
                self.add(f"/data/{i}/type", "unknown_field_type", f"`{data_field.type}` is not a field type")

    def plugin_action(self, base: str, step: ActionStep) -> None:
        # A plugin deployed but not installed in the workspace yet is fine (a run fails the step
        # until it is installed); one the platform does not have at all is a mistake.
        offered = self.ctx.plugin_actions
        if offered is None:
            return
        if step.plugin not in offered:
            self.add(f"{base}/plugin", "unknown_plugin", f"no plugin `{step.plugin}` is deployed on this platform")
        elif step.action not in offered[step.plugin]:
            self.add(
                f"{base}/action", "unknown_plugin_action", f"the plugin `{step.plugin}` has no action `{step.action}`"
            )

    def value_evidence(self, base: str, step: HumanStep) -> None:
        value = step.evidence.value
        if value is None:
            return
        at = f"{base}/evidence/value"
        if value.min is not None and value.max is not None and value.min > value.max:
            self.add(f"{at}/min", "min_above_max", f"min {value.min:g} is greater than max {value.max:g}")
        elif value.target is not None and (
            (value.min is not None and value.target < value.min) or (value.max is not None and value.target > value.max)
        ):
            self.add(f"{at}/target", "target_out_of_range", f"the target {value.target:g} lies outside min and max")

    def human(self, base: str, step: HumanStep) -> None:
        self.value_evidence(base, step)
        self.owner(f"{base}/owner", step.owner)
        if step.due is not None and step.due.relative_to != "step_start":
            self.date_field(f"{base}/due/relative_to", step.due.relative_to)
        for j, kind in enumerate(step.exceptions):
            for k, who in enumerate(kind.notify):
                self.owner(f"{base}/exceptions/{j}/notify/{k}", who)
            for k, who in enumerate(kind.escalate_to):
                self.owner(f"{base}/exceptions/{j}/escalate_to/{k}", who)
        if isinstance(step, ApprovalStep):
            for j, who in enumerate(step.approvers):
                self.owner(f"{base}/approvers/{j}", who)
            reject = step.on_reject
            if reject.goto is None and reject.raise_exception is None:
                self.add(
                    f"{base}/on_reject",
                    "approval_without_on_reject",
                    "say where a rejection goes: `goto` a step or `raise_exception` of this step",
                )
            elif reject.goto is not None and reject.raise_exception is not None:
                self.add(f"{base}/on_reject", "on_reject_ambiguous", "set either `goto` or `raise_exception`, not both")
            if reject.raise_exception is not None and reject.raise_exception not in {e.key for e in step.exceptions}:
                self.add(
                    f"{base}/on_reject/raise_exception",
                    "unknown_exception_kind",
                    f"this step declares no exception kind `{reject.raise_exception}`",
                )
        fields = getattr(step, "fields", None)
        if isinstance(fields, list):
            for j, form_field in enumerate(fields):
                pointer = f"{base}/fields/{j}"
                if form_field.type not in self.ctx.field_types:
                    self.add(f"{pointer}/type", "unknown_field_type", f"`{form_field.type}` is not a field type")
                if form_field.target == "record":
                    if self.ctx.record_fields is None:
                        self.add(
                            f"{pointer}/target",
                            "no_linked_collection",
                            "a field can write into the record only when the procedure is linked to a collection",
                        )
                    elif form_field.key not in self.ctx.record_fields:
                        self.add(
                            f"{pointer}/key",
                            "unknown_record_field",
                            f"the linked collection has no field `{form_field.key}`",
                        )


def _kind(step: Step) -> str:
    return str(type(step).__struct_config__.tag)


def definition_problems(definition: Definition, context: ValidationContext) -> list[FieldProblem]:
    """Every problem of a decoded definition, in a stable order (structure first, then each step)."""
    checker = _Checker(definition, context)
    checker.keys_and_references()
    checker.reachability()
    checker.loops()
    checker.parallels()
    checker.step_details()
    return checker.problems


def validate(raw: Any, context: ValidationContext) -> tuple[Definition | None, list[FieldProblem]]:
    """Decode and check a definition given as JSON builtins: the definition (if it decodes) and its problems."""
    definition, problems = decode_definition(raw)
    if definition is None:
        return None, problems
    return definition, definition_problems(definition, context)
