"""Event lineage: which executions led to an event, so that automations cannot loop.

An action's events carry the cause :func:`cause_for_actions` gives (``services.outbox.service.caused_by``);
the dispatcher asks :func:`loop_refusal` before an event starts an execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from services.automation import config
from services.automation.models import AutomationExecution

# An automation may trigger itself again once through its own effects (normalising a value it
# watches, say); a second time is a loop.
MAX_SELF_REPEATS = 1
LOOP_CODE = "automation_loop"


def _chain(cause: Mapping[str, Any] | None) -> list[str]:
    raw = cause.get("chain") if cause is not None else None
    return [str(a) for a in raw] if isinstance(raw, list) else []


def _depth(cause: Mapping[str, Any] | None) -> int:
    """How many executions led to the event (0: a person, a timer, the outside world)."""
    if cause is None:
        return 0
    try:
        return max(0, int(cause.get("depth", 0)))
    except (TypeError, ValueError):
        return len(_chain(cause))


def loop_refusal(automation_id: uuid.UUID, cause: Mapping[str, Any] | None) -> str | None:
    """Why an execution of ``automation_id`` for an event with ``cause`` must not start (None: it may).

    ``cause`` is what the event carries (:func:`services.outbox.service.cause_of`): the execution
    whose action emitted it, its depth and the chain of automations that led to it.
    """
    if cause is None:
        return None
    depth = _depth(cause) + 1
    if depth > config.max_chain():
        return (
            f"{LOOP_CODE}: this event was caused by a chain of {depth - 1} automation executions; "
            f"at most {config.max_chain()} may follow one another (GUIJU_AUTOMATION_MAX_CHAIN)"
        )
    repeats = _chain(cause).count(str(automation_id))
    if repeats > MAX_SELF_REPEATS:
        return (
            f"{LOOP_CODE}: this automation caused the event itself ({repeats} times in the chain of "
            f"executions that led to it, execution {cause.get('execution_id')}); stopped to avoid a loop"
        )
    return None


def cause_for_actions(execution: AutomationExecution) -> dict[str, Any]:
    """The cause the events emitted by ``execution``'s actions carry: the chain that led to it, plus it."""
    parent = execution.event.get("_cause") if isinstance(execution.event, Mapping) else None
    parent = parent if isinstance(parent, Mapping) else None
    return {
        "execution_id": str(execution.id),
        "automation_id": str(execution.automation_id),
        "depth": _depth(parent) + 1,
        "chain": [*_chain(parent), str(execution.automation_id)][-(config.max_chain() + 2) :],
    }
