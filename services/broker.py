"""The Dramatiq broker: Redis when ``GUIJU_REDIS_URL`` is set, in-process otherwise.

Importing this module sets the global broker, so it must be imported before any actor is
declared (every ``actors.py`` imports it first). Tests and the CLI may swap the broker with
:func:`use_broker`, which moves the declared actors over.

Services send to actors by name (:func:`send`, and :func:`send_after_commit` inside a
transaction), so a service never imports its actors module, which imports it. A tenant's work
outside a request opens :func:`tenant_session` (or is a :func:`tenant_actor`): the one way such
work carries its tenant.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Middleware
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.db import open_session
from services.db.commit_hooks import AfterCommit
from services.logs import actor_var, message_id_var, request_id_var
from services.settings import load_settings
from tenants.context import enter_tenant, leave_tenant, tenant_scope

log = logging.getLogger("guiju.worker")


# The message option that carries the id of the request (or message) whose work enqueued it.
REQUEST_ID_OPTION = "request_id"


class TenantLogContext(Middleware):
    """Binds a message's ``tenant_id``, actor, message id and request id to the log context.

    The request id is the one of the request that enqueued the message (stamped on the message
    when it is enqueued, so it follows chains of messages too); work with no request behind it
    (relayed events, timers) uses its own message id. The ids are bound in the worker thread for
    the whole of the message's processing; async actors run on the AsyncIO middleware's loop and
    the context travels there with the coroutine, and :func:`tenant_actor` opens the
    tenant-scoped session.
    """

    def __init__(self) -> None:
        # One message at a time per worker thread: its hooks run on that thread, before and after.
        self._bound = threading.local()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        request_id = request_id_var.get()
        if request_id and REQUEST_ID_OPTION not in message.options:
            message.options[REQUEST_ID_OPTION] = request_id

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        tenant_id = message.kwargs.get("tenant_id")
        self._bound.tokens = (
            enter_tenant(_parse_uuid(tenant_id)),
            actor_var.set(f"actor:{message.actor_name}"),
            message_id_var.set(message.message_id),
            request_id_var.set(str(message.options.get(REQUEST_ID_OPTION) or message.message_id)),
        )

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        tokens = getattr(self._bound, "tokens", None)
        if tokens is None:
            return
        self._bound.tokens = None
        tenant_token, actor_token, message_token, request_token = tokens
        request_id_var.reset(request_token)
        message_id_var.reset(message_token)
        actor_var.reset(actor_token)
        leave_tenant(tenant_token)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)


def _parse_uuid(value: Any) -> uuid.UUID | None:
    if value in (None, ""):
        return None
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


class SharedAsyncIO(AsyncIO):
    """The AsyncIO middleware, with one event-loop thread per process however many workers run.

    Dramatiq keeps the loop thread in a process-wide slot: a second worker booted while the first
    runs (the in-process worker of the embedded default, a test's private worker) would replace
    it and orphan the first thread, a non-daemon thread nobody stops, which keeps the process
    from exiting. Workers here share the thread; the last one to shut down stops it.
    """

    _lock = threading.Lock()
    _workers = 0

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        with SharedAsyncIO._lock:
            if SharedAsyncIO._workers == 0 or get_event_loop_thread() is None:
                super().before_worker_boot(broker, worker)  # type: ignore[no-untyped-call]
            SharedAsyncIO._workers += 1

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        with SharedAsyncIO._lock:
            SharedAsyncIO._workers = max(SharedAsyncIO._workers - 1, 0)
            if SharedAsyncIO._workers == 0 and get_event_loop_thread() is not None:
                super().after_worker_shutdown(broker, worker)  # type: ignore[no-untyped-call]


def _add_middleware(broker: dramatiq.Broker) -> None:
    # First in the chain, the log context wraps every other middleware's work on a message: an age
    # limit's skip, a retry's notice and an unhandled error are logged with the message's ids.
    broker.add_middleware(TenantLogContext(), before=type(broker.middleware[0]))
    for middleware in (SharedAsyncIO(), CurrentMessage()):
        broker.add_middleware(middleware)


def build_broker(redis_url: str | None, *, heartbeat_timeout_ms: int | None = None) -> dramatiq.Broker:
    """The broker for ``redis_url`` (in-process when None).

    ``heartbeat_timeout_ms`` is how long a worker may stay silent before Redis hands the messages
    it had taken to other workers (``GUIJU_BROKER_HEARTBEAT_TIMEOUT_MS``); a crashed worker's
    messages wait at least that long.
    """
    if redis_url:
        broker: dramatiq.Broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=redis_url,
            heartbeat_timeout=heartbeat_timeout_ms or load_settings().broker_heartbeat_timeout_ms,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    _add_middleware(broker)
    return broker


def use_broker(new: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``new`` the global broker and move every declared actor onto it; returns the old one."""
    old = dramatiq.get_broker()
    for name in old.get_declared_actors():
        actor = old.get_actor(name)
        actor.broker = new
        new.declare_actor(actor)
    dramatiq.set_broker(new)
    return old


# ---------------------------------------------------------------- sending by name

# Actors declared at run time, one per queue (``plugin.<name>``): their module registers how to
# declare one, so a sender names the actor without importing that module.
_declare_on_demand: dict[str, Callable[[str], object]] = {}


def declare_on_demand(name_prefix: str, declare: Callable[[str], object]) -> None:
    """Have an actor whose name starts with ``name_prefix`` declared by ``declare(queue_name)`` when a
    message is first sent to it in this process (an actor per queue, for queues known only at run time)."""
    _declare_on_demand[name_prefix] = declare


def send(
    actor_name: str,
    *,
    queue_name: str,
    kwargs: Mapping[str, Any] | None = None,
    args: tuple[Any, ...] = (),
    delay_ms: int | None = None,
) -> dramatiq.Message[Any]:
    """Enqueue a message for the actor named ``actor_name`` on ``queue_name``, now.

    The sender names the actor instead of importing it: an actors module imports its service, so
    the service cannot import the actors. Inside a transaction, use :func:`send_after_commit`.
    """
    current = dramatiq.get_broker()
    if actor_name not in current.actors:
        for prefix, declare in _declare_on_demand.items():
            if actor_name.startswith(prefix):
                declare(queue_name)
                break
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name, actor_name=actor_name, args=args, kwargs=dict(kwargs or {}), options={}
    )
    return current.enqueue(message, delay=delay_ms)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message collected in a transaction, sent when it commits."""

    actor_name: str
    queue_name: str
    kwargs: dict[str, Any]
    delay_ms: int | None = None


def _send_committed(messages: list[OutgoingMessage]) -> None:
    for message in messages:
        try:
            send(message.actor_name, queue_name=message.queue_name, kwargs=message.kwargs, delay_ms=message.delay_ms)
        except Exception:
            # The work is committed: its owner's recovery sends it again (the automations'
            # maintenance timer re-sends stalled executions).
            log.exception(
                "could not send a message after commit",
                extra={"actor_name": message.actor_name, "queue_name": message.queue_name, "kwargs": message.kwargs},
            )


_OUTGOING = AfterCommit[OutgoingMessage]("broker.messages", _send_committed)


def send_after_commit(
    session: Session | AsyncSession,
    actor_name: str,
    *,
    queue_name: str,
    kwargs: Mapping[str, Any],
    delay_ms: int | None = None,
) -> None:
    """Send a message to the actor named ``actor_name`` once ``session``'s transaction commits.

    Nothing is sent if the transaction rolls back, nor for a message collected in a savepoint that
    rolls back (see :mod:`services.db.commit_hooks`).
    """
    _OUTGOING.add(session, OutgoingMessage(actor_name, queue_name, dict(kwargs), delay_ms))


def pending_messages(session: Session | AsyncSession) -> list[OutgoingMessage]:
    """The messages ``session``'s transaction will send when it commits (tests and diagnostics)."""
    return _OUTGOING.pending(session)


# ---------------------------------------------------------------- a tenant's work outside a request


@asynccontextmanager
async def tenant_session(tenant_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
    """One transaction of ``tenant_id``'s work outside a request (an actor, an outbox subscriber, a
    timer, a command): the tenant in context (logs, and whatever asks for the current tenant) and a
    session bound to it (ORM criteria, row-level security), committed when the block ends and
    rolled back if it raises.

    This is the one way such work carries its tenant: the tenant comes as an explicit argument
    (a message's ``tenant_id``, a timer's row), never from whatever context the caller was in.
    """
    with tenant_scope(tenant_id):
        async with open_session(tenant_id) as session:
            yield session


def tenant_actor(fn: Callable[..., Awaitable[Any]] | None = None, **options: Any) -> Any:
    """Declare an async actor that runs in one transaction of the tenant its message names.

    The actor is sent ``tenant_id`` first (positionally or by name), then its own arguments; the
    decorated function is called as ``fn(session, *args, **kwargs)`` in :func:`tenant_session`,
    committed when it returns and rolled back if it raises (Dramatiq then retries it).
    ``options`` are Dramatiq's (``actor_name`` defaults to the function's name).
    """

    def decorate(func: Callable[..., Awaitable[Any]]) -> dramatiq.Actor[Any, Any]:
        async def run(tenant_id: str, *args: Any, **kwargs: Any) -> Any:
            tid = _parse_uuid(tenant_id)
            if tid is None:
                raise ValueError(f"{func.__name__} needs a tenant_id")
            async with tenant_session(tid) as session:
                return await func(session, *args, **kwargs)

        run.__name__ = func.__name__
        run.__qualname__ = func.__qualname__
        run.__module__ = func.__module__
        declared: dramatiq.Actor[Any, Any] = dramatiq.actor(
            actor_name=options.pop("actor_name", func.__name__), **options
        )(run)
        return declared

    return decorate(fn) if fn is not None else decorate


broker = build_broker(load_settings().redis_url)
dramatiq.set_broker(broker)
