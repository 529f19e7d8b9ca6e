"""The scheduler's pure parts: missed fires, the backoff curve, handler registration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.scheduler import service as scheduler

DUE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TIMER = scheduler.DueTimer(tenant_id=uuid.uuid4(), id=uuid.uuid4(), kind="k", key="cron:x", due_at=DUE, payload={})


def test_a_fire_is_missed_only_past_the_grace() -> None:
    assert not scheduler.missed(TIMER, DUE)
    assert not scheduler.missed(TIMER, DUE + scheduler.MISSED_GRACE)
    assert scheduler.missed(TIMER, DUE + scheduler.MISSED_GRACE + timedelta(seconds=1))
    assert scheduler.missed(TIMER, DUE + timedelta(minutes=10), grace=timedelta(minutes=5))
    assert not scheduler.missed(TIMER, DUE + timedelta(minutes=10), grace=timedelta(minutes=15))


def test_backoff_doubles_up_to_the_cap() -> None:
    base, cap = scheduler.BACKOFF_BASE_SECONDS, scheduler.MAX_BACKOFF_SECONDS
    for attempts, expected in ((1, base), (2, 2 * base), (3, 4 * base), (50, cap)):
        delay = scheduler.backoff(attempts).total_seconds()
        assert expected <= delay <= expected * 1.1


def test_a_kind_has_one_handler() -> None:
    async def first(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
        return None

    async def second(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
        return None

    kind = f"test.unit.{uuid.uuid4().hex[:8]}"
    scheduler.register_timer_handler(kind, first)
    scheduler.register_timer_handler(kind, first)  # importing twice is harmless
    with pytest.raises(ValueError, match="already has a handler"):
        scheduler.register_timer_handler(kind, second)
    with pytest.raises(ValueError, match="kind"):
        scheduler.register_timer_handler("", first)
    assert kind in scheduler.timer_kinds()
    assert scheduler.EMIT_EVENT in scheduler.timer_kinds()
