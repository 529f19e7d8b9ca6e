"""Readiness checks: can this process reach its database and its broker?"""

from __future__ import annotations

import asyncio

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from services.db import database


async def check_database() -> str | None:
    """None when the database answers, else the reason."""
    try:
        async with database().engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def check_broker() -> str | None:
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return None  # the in-process broker is always there
    try:
        await asyncio.to_thread(broker.client.ping)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def readiness() -> dict[str, str]:
    db_problem, broker_problem = await asyncio.gather(check_database(), check_broker())
    return {"database": db_problem or "ok", "broker": broker_problem or "ok"}
