"""A no-op actor on the app's own broker (same Redis, same middleware): the raw Dramatiq round trip
the automation benchmark compares against. Run as ``dramatiq tests.bench.noop_actor``."""

from __future__ import annotations

import dramatiq

from services.broker import broker

NOOP_QUEUE = "bench.noop"


@dramatiq.actor(queue_name=NOOP_QUEUE, max_retries=0)
def noop() -> None:
    """Nothing: what is measured is the broker and the worker around it."""


__all__ = ["NOOP_QUEUE", "broker", "noop"]
