"""The Dramatiq broker: Redis when ``GUIJU_REDIS_URL`` is set, in-process otherwise.

Importing this module sets the global broker, so it must be imported before any actor is
declared (every ``actors.py`` imports it first). Tests and the CLI may swap the broker with
:func:`use_broker`, which moves the declared actors over.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Middleware

from services.db import open_session
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


def _add_middleware(broker: dramatiq.Broker) -> None:
    # First in the chain, the log context wraps every other middleware's work on a message: an age
    # limit's skip, a retry's notice and an unhandled error are logged with the message's ids.
    broker.add_middleware(TenantLogContext(), before=type(broker.middleware[0]))
    for middleware in (AsyncIO(), CurrentMessage()):
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


def tenant_actor(fn: Callable[..., Awaitable[Any]] | None = None, **options: Any) -> Any:
    """Declare an async actor that receives a session bound to its ``tenant_id`` argument.

    The decorated function is called as ``fn(session, **kwargs)`` inside one transaction,
    committed when it returns and rolled back if it raises (Dramatiq then retries it).
    """

    def decorate(func: Callable[..., Awaitable[Any]]) -> dramatiq.Actor[Any, Any]:
        async def run(*, tenant_id: str, **kwargs: Any) -> Any:
            tid = _parse_uuid(tenant_id)
            if tid is None:
                raise ValueError(f"{func.__name__} needs a tenant_id")
            with tenant_scope(tid):
                async with open_session(tid) as session:
                    return await func(session, **kwargs)

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
