"""What the run engine's tests and benchmark pass in as its environment: a fixed clock, a plain
due-time rule, and the expression language (a small stand-in until services.expressions evaluates)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.sops.definition import Due
from services.sops.engine import Env

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

Evaluate = Callable[[str, Mapping[str, Any]], Any]

_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_COMPARISON = re.compile(r"^(.+?)\s*(>=|<=|==|!=|>|<)\s*(.+)$")


def due_at(due: Due, ready: datetime, context: Mapping[str, Any]) -> datetime:
    """Calendar time, counted from the step's start: enough for the engine, which only passes it on."""
    return ready + timedelta(minutes=due.within.total_minutes)


def _operand(text: str, context: Mapping[str, Any]) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if text[:1] in "'\"":
        return text[1:-1]
    try:
        return float(text) if "." in text and text.replace(".", "", 1).lstrip("-").isdigit() else int(text)
    except ValueError:
        pass
    value: Any = context
    for part in text.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(text)
        value = value[part]
    return value


def simple_evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """``a OP b`` comparisons joined by ``and``/``or`` (``or`` binds loosest); names are dotted paths."""
    if " or " in source:
        return any(simple_evaluate(part, context) for part in source.split(" or "))
    if " and " in source:
        return all(simple_evaluate(part, context) for part in source.split(" and "))
    match = _COMPARISON.match(source.strip())
    if match is None:
        return _operand(source, context)
    left, op, right = match.groups()
    return _COMPARISONS[op](_operand(left, context), _operand(right, context))


def evaluator() -> Evaluate:
    """The real expression language once it works, else the stand-in."""
    try:
        from services.expressions import evaluate

        if evaluate("data.x > 1 and data.y == 'a'", {"data": {"x": 2, "y": "a"}}) is True:
            return evaluate
    except Exception:
        pass
    return simple_evaluate


def make_env(now: datetime = NOW, record: Mapping[str, Any] | None = None, evaluate: Evaluate | None = None) -> Env:
    return Env(now=now, due_at=due_at, evaluate=evaluate or evaluator(), record=record)
