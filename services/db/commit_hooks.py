"""Work deferred to a transaction's commit: the one place that hooks the session's commit and rollback.

While a transaction runs, services collect work on its session (``session.info``): messages for
actors, audit events to chain, a wake-up for the outbox relays. Two kinds of work exist:

- :class:`BeforeCommit`: handled inside the transaction, just before it commits (a released
  savepoint counts: the work then runs inside it). Its handler may still write; what it writes
  commits with the rest or not at all.
- :class:`AfterCommit`: handled once the outermost transaction has committed, never before (a
  released savepoint is not a commit: its work waits for the outer transaction). Its handler must
  not fail the caller, whose transaction is already committed, so a failure is logged.

A rollback drops what was collected in what it undid: a rolled-back savepoint drops the work
collected inside it and keeps the rest; a released savepoint's work stays with its parent and
goes with it if the parent rolls back.

Every kind is declared once, at import, by the module that owns the work::

    _STEPS = AfterCommit[Step]("automation.steps", send_steps)
    ...
    _STEPS.add(db, step)  # in the caller's transaction
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("guiju.db")

T = TypeVar("T")

_INFO_KEY = "commit_work"


@dataclass(frozen=True, slots=True)
class _Entry:
    transaction: SessionTransaction  # the innermost transaction open when the work was collected
    kind: _Kind
    item: Any


class _Kind:
    """What both kinds of work share: a name, and collecting items on a session."""

    before_commit: bool

    def __init__(self, name: str) -> None:
        self.name = name

    def _collect(self, session: Session | AsyncSession, item: Any) -> None:
        sync = session.sync_session if isinstance(session, AsyncSession) else session
        transaction = sync.get_nested_transaction() or sync.get_transaction() or sync.begin()
        sync.info.setdefault(_INFO_KEY, []).append(_Entry(transaction, self, item))

    def _pending(self, session: Session | AsyncSession) -> list[Any]:
        sync = session.sync_session if isinstance(session, AsyncSession) else session
        return [entry.item for entry in sync.info.get(_INFO_KEY, ()) if entry.kind is self]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class BeforeCommit(_Kind, Generic[T]):
    """Items handled by ``handle(session, items)`` inside the transaction, just before it commits.

    ``items`` are those collected since the last commit (savepoint releases included) and not
    rolled back, in the order they were collected. ``handle`` runs in the session's synchronous
    context: it uses ``session.execute`` and ``session.connection()``, not ``await``.
    """

    before_commit = True

    def __init__(self, name: str, handle: Callable[[Session, list[T]], None]) -> None:
        super().__init__(name)
        self.handle = handle

    def add(self, session: Session | AsyncSession, item: T) -> None:
        """Collect ``item`` in the session's current transaction (or savepoint)."""
        self._collect(session, item)

    def pending(self, session: Session | AsyncSession) -> list[T]:
        """The items collected and not yet handled (for tests and diagnostics)."""
        return self._pending(session)


class AfterCommit(_Kind, Generic[T]):
    """Items handled by ``handle(items)`` once the outermost transaction has committed.

    ``handle`` receives the items collected and not rolled back, in the order they were collected;
    it should not raise (an exception is logged, and the other kinds' work still runs).
    """

    before_commit = False

    def __init__(self, name: str, handle: Callable[[list[T]], None]) -> None:
        super().__init__(name)
        self.handle = handle

    def add(self, session: Session | AsyncSession, item: T) -> None:
        """Collect ``item`` in the session's current transaction (or savepoint)."""
        self._collect(session, item)

    def pending(self, session: Session | AsyncSession) -> list[T]:
        """The items collected and not yet handled (for tests and diagnostics)."""
        return self._pending(session)


def _by_kind(entries: Sequence[_Entry]) -> dict[_Kind, list[Any]]:
    grouped: dict[_Kind, list[Any]] = {}
    for entry in entries:
        grouped.setdefault(entry.kind, []).append(entry.item)
    return grouped


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "before_commit")
def _run_before_commit(session: Session) -> None:
    # Fired for the outermost commit and for every savepoint release.
    entries: list[_Entry] | None = session.info.get(_INFO_KEY)
    if not entries:
        return
    due = [entry for entry in entries if entry.kind.before_commit]
    if not due:
        return
    entries[:] = [entry for entry in entries if not entry.kind.before_commit]
    for kind, items in _by_kind(due).items():
        assert isinstance(kind, BeforeCommit)
        kind.handle(session, items)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    # Fired for savepoint releases too, while the savepoint is still the session's transaction:
    # only the outermost commit is a commit.
    if session.in_nested_transaction() or not session.info.get(_INFO_KEY):
        return
    entries: list[_Entry] = session.info.pop(_INFO_KEY)
    for kind, items in _by_kind(entries).items():
        if not isinstance(kind, AfterCommit):
            continue  # collected after the last before-commit pass: nothing can write any more
        try:
            kind.handle(items)
        except Exception:
            log.exception("after-commit work failed", extra={"work": kind.name})


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    entries: list[_Entry] | None = session.info.get(_INFO_KEY)
    if entries:
        entries[:] = [entry for entry in entries if not _within(entry.transaction, previous_transaction)]


@event.listens_for(Session, "after_transaction_end")
def _forget_at_the_end(session: Session, transaction: SessionTransaction) -> None:
    # A session closed without a commit or a rollback (its connection rolls back) must not carry
    # its work into the next transaction.
    if transaction.parent is None:
        session.info.pop(_INFO_KEY, None)
