"""Actors of the marketplace: a submitted version's automated checks, and each plugin's hooks.

Submission checks run on their own queue: a submission's tests may take minutes, and must never
hold up the events or the automations' actions. A plugin's lifecycle hooks, health checks and
trigger polls run on that plugin's own queue (``plugin.<name>``, where its actions run too), under
a time limit: a plugin that hangs holds up only itself, never the dispatcher of every tenant's
events.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import dramatiq
from guiju_sdk import registry
from sqlalchemy.ext.asyncio import AsyncSession

from services.broker import tenant_actor  # importing the broker sets it before actors are declared
from services.marketplace import host, publishing, service
from services.outbox import service as outbox

CHECKS_QUEUE = publishing.CHECKS_QUEUE
CHECKS_TIME_LIMIT_MS = 15 * 60 * 1000
# The hook's own limit, and room to open and commit its transaction.
HOOKS_TIME_LIMIT_MS = int(registry.LIFECYCLE_TIME_LIMIT_SECONDS * 1000) + 30_000


@dramatiq.actor(
    actor_name=publishing.CHECK_SUBMISSION_ACTOR,
    queue_name=CHECKS_QUEUE,
    time_limit=CHECKS_TIME_LIMIT_MS,
    max_retries=3,
)
async def check_submission(plugin: str, version: str) -> None:
    await publishing.run_submission_checks(plugin, version)


_declared: dict[str, dramatiq.Actor[Any, Any]] = {}
_lock = threading.Lock()


def hooks_actor_for(plugin: str) -> dramatiq.Actor[Any, Any]:
    """The actor that runs ``plugin``'s hooks on its queue, declared on first use."""
    actor = _declared.get(plugin)
    if actor is not None and actor.broker is dramatiq.get_broker():
        return actor
    with _lock:
        broker = dramatiq.get_broker()
        name = "run_plugin_hooks__" + re.sub(r"[^A-Za-z0-9_]", "_", plugin)
        if name in broker.actors:
            actor = broker.get_actor(name)
        else:

            async def run_plugin_hooks(db: AsyncSession, message: dict[str, Any]) -> None:
                await host.handle_marketplace_event(db, message)

            run_plugin_hooks.__name__ = run_plugin_hooks.__qualname__ = name
            # Sent (tenant_id, message); the hook's failures are recorded on the installation, and a
            # raise here is the platform's (the database down): Dramatiq retries the message.
            actor = tenant_actor(
                run_plugin_hooks,
                actor_name=name,
                queue_name=f"plugin.{plugin}",
                time_limit=HOOKS_TIME_LIMIT_MS,
                max_retries=5,
            )
        _declared[plugin] = actor
        return actor


def declare_plugin_hooks(plugin_names: list[str]) -> None:
    """Declare the hook actors of these plugins (a worker calls it at start so it consumes them)."""
    for name in plugin_names:
        hooks_actor_for(name)


async def _on_marketplace_events(messages: list[dict[str, Any]]) -> None:
    """From the outbox: hand each event to its plugin's queue."""
    for message in messages:
        plugin = str((message.get("payload") or {}).get("plugin") or "")
        if message.get("tenant_id") and plugin:
            hooks_actor_for(plugin).send(str(message["tenant_id"]), message)


for _event_type in (*host.HOOK_EVENTS, service.HEALTH_REQUESTED, service.POLL_DUE, service.NOTIFICATION_FORWARDED):
    outbox.subscribe(_event_type, _on_marketplace_events)
