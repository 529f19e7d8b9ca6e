"""Types shared between the host and plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin says about itself: its manifest.

    ``api_range`` is the range of plugin API versions the plugin supports, for example
    ``">=1.0,<2.0"``; the host refuses to load a plugin whose range excludes its own API version.
    """

    name: str
    version: str
    publisher: str
    summary_en: str
    summary_zh: str
    api_range: str
    category: str = "other"
    scopes: tuple[str, ...] = field(default_factory=tuple)


#: The callback a hook receives to register what it provides. The host decides what it accepts.
Register = Callable[[Any], None]


@dataclass(frozen=True)
class ActionCall:
    """What a plugin action's handler receives when an automation calls it.

    ``idempotency_key`` is the same on every retry of the same action of the same execution: pass it
    on to the system you call (or remember it) so that a retried call has its effect once.
    """

    input: dict[str, Any]
    idempotency_key: str
    tenant_id: str
    execution_id: str


class ActionFailed(Exception):
    """Raise from a plugin action to fail it: ``retryable=True`` when trying again later may succeed
    (the host retries with backoff, after ``retry_after`` seconds when given); otherwise the
    automation's execution fails at once. Any other exception fails it at once too."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


#: A plugin action: called with an :class:`ActionCall`, returns a JSON object (or None). It may be a
#: plain function (run in a thread) or a coroutine function.
ActionHandler = Callable[[ActionCall], Any]


class RegisterAction(Protocol):
    """The ``register`` callback of :meth:`GuijuSpec.guiju_actions`."""

    def __call__(
        self,
        name: str,
        handler: ActionHandler,
        *,
        labels: dict[str, str],
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        time_limit_ms: int = 30_000,
    ) -> None: ...
