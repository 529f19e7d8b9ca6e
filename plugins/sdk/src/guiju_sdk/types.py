"""Types shared between the host and plugins."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from guiju_sdk.context import PluginContext


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
    #: The tenant's context for this call (API 1.2); ``None`` from hosts older than 1.2.
    context: PluginContext | None = None


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


#: A trigger's poll: called by the host every ``poll_seconds`` for each tenant that installed the
#: plugin; returns the events that happened since the last poll (each a JSON object, its payload).
TriggerPoll = Callable[["PluginContext"], Any]


class RegisterTrigger(Protocol):
    """The ``register`` callback of :meth:`GuijuSpec.guiju_triggers`."""

    def __call__(
        self,
        name: str,
        *,
        labels: dict[str, str],
        payload_schema: dict[str, Any] | None = None,
        poll: TriggerPoll | None = None,
        poll_seconds: int = 300,
    ) -> None: ...


@dataclass(frozen=True)
class Document:
    """A generated file: what a document kind returns."""

    filename: str
    content_type: str
    content: bytes


#: A document kind's generator: called with the context and the record (its values and id);
#: returns one :class:`Document` per format asked for.
DocumentGenerator = Callable[["PluginContext", Mapping[str, Any], str], Any]


class RegisterDocumentKind(Protocol):
    """The ``register`` callback of :meth:`GuijuSpec.guiju_document_kinds`."""

    def __call__(
        self,
        name: str,
        generate: DocumentGenerator,
        *,
        labels: dict[str, str],
        formats: tuple[str, ...] = ("pdf",),
        record_schema: dict[str, Any] | None = None,
    ) -> None: ...


#: The ``register`` callback of :meth:`GuijuSpec.guiju_templates`: the directory of a template pack.
RegisterTemplatePack = Callable[[Path], None]

#: The ``register`` callback of :meth:`GuijuSpec.guiju_settings_schema`: a JSON Schema (an object
#: schema) of the per-tenant configuration; properties marked ``"writeOnly": true`` are secrets.
RegisterSettingsSchema = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Health:
    """What a health check reports: ``ok``, and a message a tenant's admin can act on."""

    ok: bool
    message: str = ""


#: The ``register`` callback of :meth:`GuijuSpec.guiju_health_check`.
RegisterHealth = Callable[[Health], None]
