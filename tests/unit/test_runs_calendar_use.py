"""Which definitions make the runs service read the tenant's calendar before an action."""

from __future__ import annotations

from typing import Any

import pytest

from services.sops.procedures.service import definition_from_json
from services.sops.runs.state import _uses_calendar


def _task(key: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "task", "key": key, "title": key.title(), "owner": {"kind": "starter"}, **extra}


def _uses(*steps: dict[str, Any]) -> bool:
    return _uses_calendar(definition_from_json({"start": steps[0]["key"], "steps": list(steps)}))


def test_plain_tasks_need_no_calendar() -> None:
    assert not _uses(_task("first", next="second"), _task("second"))


@pytest.mark.parametrize(
    "extra",
    [
        {"due": {"within": {"hours": 4}}},
        {"optional": True, "expires_after": {"days": 1, "business": False}},
        {"exceptions": [{"key": "late", "label": "Late", "escalate_after": {"hours": 2}}]},
    ],
    ids=["due", "expiry", "escalation"],
)
def test_a_human_step_with_a_time_rule_needs_it(extra: dict[str, Any]) -> None:
    assert _uses(_task("first", next="second"), _task("second", **extra))


def test_decisions_and_waits_need_it() -> None:
    decision = {"kind": "decision", "key": "pick", "title": "Pick", "branches": [{"when": "today() > 0", "next": None}]}
    wait = {"kind": "wait", "key": "pause", "title": "Pause", "duration": {"hours": 1}}
    assert _uses(_task("first", next="pick"), decision)
    assert _uses(_task("first", next="pause"), wait)
