"""Work deferred to a commit (services.db.commit_hooks), and messages sent after commit by actor name.

Messages are collected on the session: sent when the outermost transaction commits, dropped when
it rolls back; a rolled-back savepoint drops only what was collected inside it, a released one
keeps it. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from services import broker
from services.db import open_session, set_database_url
from services.db.commit_hooks import AfterCommit, BeforeCommit
from tests.conftest import Backend

QUEUE = "commit-hooks-test"


@pytest.fixture
def sent(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The messages sent by actor name (held here instead of reaching the broker)."""
    set_database_url(backend.url)
    messages: list[dict[str, Any]] = []

    def hold(actor_name: str, **message: Any) -> None:
        messages.append({"actor_name": actor_name, **message})

    monkeypatch.setattr(broker, "send", hold)
    try:
        yield messages
    finally:
        set_database_url(None)


def _send(session: Any, n: int) -> None:
    broker.send_after_commit(session, "probe", queue_name=QUEUE, kwargs={"n": n})


def _numbers(sent: list[dict[str, Any]]) -> list[int]:
    return [m["kwargs"]["n"] for m in sent]


async def test_a_commit_sends_the_messages_in_order_and_only_then(sent: list[dict[str, Any]]) -> None:
    async with open_session(system=True) as db:
        _send(db, 1)
        await db.execute(text("select 1"))
        _send(db, 2)
        assert [m.kwargs["n"] for m in broker.pending_messages(db)] == [1, 2]
        assert sent == []
    assert sent == [
        {"actor_name": "probe", "queue_name": QUEUE, "kwargs": {"n": 1}, "delay_ms": None},
        {"actor_name": "probe", "queue_name": QUEUE, "kwargs": {"n": 2}, "delay_ms": None},
    ]


async def test_a_rollback_drops_the_messages(sent: list[dict[str, Any]]) -> None:
    with pytest.raises(RuntimeError):
        async with open_session(system=True) as db:
            _send(db, 1)
            raise RuntimeError("the change failed")
    async with open_session(system=True) as db:
        _send(db, 2)
    assert _numbers(sent) == [2]


async def test_a_rolled_back_savepoint_drops_only_its_messages_and_a_released_one_keeps_them(
    sent: list[dict[str, Any]],
) -> None:
    async with open_session(system=True) as db:
        _send(db, 1)
        with pytest.raises(RuntimeError):
            async with db.begin_nested():
                _send(db, 2)
                raise RuntimeError("the step failed")
        async with db.begin_nested():
            _send(db, 3)
        # A released savepoint is no commit: nothing leaves before the transaction commits.
        assert sent == []
        _send(db, 4)
    assert _numbers(sent) == [1, 3, 4]


async def test_a_savepoint_released_inside_one_that_rolls_back_goes_with_it(sent: list[dict[str, Any]]) -> None:
    async with open_session(system=True) as db:
        with pytest.raises(RuntimeError):
            async with db.begin_nested():
                _send(db, 1)
                async with db.begin_nested():
                    _send(db, 2)
                raise RuntimeError("the outer step failed")
        _send(db, 3)
    assert _numbers(sent) == [3]


async def test_the_messages_of_a_released_savepoint_go_if_the_transaction_rolls_back(
    sent: list[dict[str, Any]],
) -> None:
    with pytest.raises(RuntimeError):
        async with open_session(system=True) as db:
            async with db.begin_nested():
                _send(db, 1)
            raise RuntimeError("the change failed")
    assert sent == []


async def test_a_session_closed_without_commit_carries_nothing_into_its_next_transaction(
    sent: list[dict[str, Any]],
) -> None:
    from services.db import database

    session = database().session(system=True)
    try:
        await session.execute(text("select 1"))
        _send(session, 1)
        await session.close()  # no commit: the connection's transaction is rolled back
        async with session.begin():
            _send(session, 2)
    finally:
        await session.close()
    assert _numbers(sent) == [2]


async def test_before_commit_work_runs_inside_the_transaction_and_after_commit_work_after_it(
    sent: list[dict[str, Any]],
) -> None:
    seen: list[tuple[str, list[int], bool]] = []

    def before(session: Session, items: list[int]) -> None:
        session.execute(text("select 1"))  # it may still use the transaction
        seen.append(("before", items, session.in_transaction()))

    def after(items: list[int]) -> None:
        seen.append(("after", items, False))

    before_work = BeforeCommit[int]("test.before", before)
    after_work = AfterCommit[int]("test.after", after)
    async with open_session(system=True) as db:
        before_work.add(db, 1)
        after_work.add(db, 1)
        with pytest.raises(RuntimeError):
            async with db.begin_nested():
                before_work.add(db, 2)
                after_work.add(db, 2)
                raise RuntimeError("dropped")
        before_work.add(db, 3)
        after_work.add(db, 3)
        assert before_work.pending(db) == [1, 3] and after_work.pending(db) == [1, 3]
    assert seen == [("before", [1, 3], True), ("after", [1, 3], False)]


async def test_after_commit_work_that_fails_is_logged_and_the_rest_still_runs(
    sent: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def fail(items: list[int]) -> None:
        raise RuntimeError("the broker is down")

    failing = AfterCommit[int]("test.failing", fail)
    async with open_session(system=True) as db:
        failing.add(db, 1)
        _send(db, 2)
    assert _numbers(sent) == [2]
    assert any(r.getMessage() == "after-commit work failed" for r in caplog.records)
