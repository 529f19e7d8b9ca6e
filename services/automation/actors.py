"""The executor actors: one per action queue (Dramatiq binds an actor to its queue when declared).

Built-in actions run on ``automation.actions``; each plugin's actions on ``plugin.<name>``, so a slow
or failing plugin only fills its own queue. Plugin executors are declared when first needed (and
by a worker at start for the plugins it knows, see :func:`declare_plugin_queues`).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import dramatiq

from services import broker  # sets the broker before actors are declared
from services.automation import service

_declared: dict[str, dramatiq.Actor[Any, Any]] = {}
_lock = threading.Lock()


def _declare(queue: str) -> dramatiq.Actor[Any, Any]:
    async def run_execution_step(tenant_id: str, execution_id: str, action_index: int | None = None) -> None:
        await service.run_step(uuid.UUID(tenant_id), uuid.UUID(execution_id), action_index)

    name = service.actor_name_for(queue)
    run_execution_step.__name__ = name
    run_execution_step.__qualname__ = name
    # Failures are the executor's business (recorded, retried with backoff, dead-lettered); a
    # raise here is an infrastructure error (database down): Dramatiq retries the message.
    actor: dramatiq.Actor[Any, Any] = dramatiq.actor(
        actor_name=name, queue_name=queue, max_retries=20, min_backoff=500, max_backoff=60_000
    )(run_execution_step)
    return actor


def executor_for(queue: str) -> dramatiq.Actor[Any, Any]:
    """The executor actor of ``queue``, declared on first use."""
    actor = _declared.get(queue)
    if actor is not None and actor.broker is dramatiq.get_broker():
        return actor
    with _lock:
        broker = dramatiq.get_broker()
        name = service.actor_name_for(queue)
        actor = broker.get_actor(name) if name in broker.actors else _declare(queue)
        _declared[queue] = actor
        return actor


def declare_plugin_queues(plugin_names: list[str]) -> None:
    """Declare the executors of these plugins' queues (a worker calls it at start so it consumes them)."""
    for name in plugin_names:
        executor_for(f"plugin.{name}")


run_execution_step = executor_for(service.ACTIONS_QUEUE)
# The service sends steps by actor name; a plugin queue's executor is declared when first sent to.
broker.declare_on_demand(service.EXECUTOR_ACTOR, executor_for)
