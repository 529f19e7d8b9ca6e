"""``PluginContext``: the only thing a plugin's code touches.

The host builds one for every call into a plugin (an action, a trigger poll, a document, a
lifecycle hook, a health check), bound to one tenant and to what that tenant granted the plugin
when installing it. Everything outside the grant raises :class:`ScopeDenied`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The longest name of a :meth:`PluginContext.next_number` sequence or key.
MAX_SEQUENCE_NAME = 200


def check_sequence_name(what: str, name: str | None) -> None:
    """Raise :class:`ValueError` unless ``name`` (a sequence's or a key's) has 1 to
    :data:`MAX_SEQUENCE_NAME` characters; ``None`` (no key) passes."""
    if name is not None and not 0 < len(name) <= MAX_SEQUENCE_NAME:
        raise ValueError(f"a {what} name has 1 to {MAX_SEQUENCE_NAME} characters")


class ScopeDenied(PermissionError):
    """The plugin asked for something its installation does not grant: a collection the tenant
    did not grant, a host its manifest does not declare, a scope it did not request."""


class RecordRejected(ValueError):
    """The collection refused the values written: ``problems`` lists each one (a JSON pointer and
    a message), as the records API would report them."""

    def __init__(self, message: str, problems: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = [dict(problem) for problem in problems]


@dataclass(frozen=True)
class HttpResponse:
    """The answer to :meth:`PluginContext.http`."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class StoredFile:
    """A file the plugin stored through :meth:`PluginContext.store_file`."""

    id: str
    name: str
    content_type: str
    size: int


@runtime_checkable
class PluginContext(Protocol):
    """What a plugin may do, for one tenant, within its grant.

    ``idempotency_key`` is set while an action runs (the same on every retry of that action of that
    execution) and ``None`` elsewhere.
    """

    @property
    def tenant_id(self) -> str:
        """The tenant this call serves."""
        ...

    @property
    def plugin(self) -> str:
        """The plugin's name."""
        ...

    @property
    def idempotency_key(self) -> str | None:
        """The key of the current action (``None`` outside an action)."""
        ...

    @property
    def config(self) -> Mapping[str, Any]:
        """The tenant's configuration of the plugin, secret fields left out."""
        ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry the plugin and the tenant."""
        ...

    def secret(self, name: str) -> str | None:
        """The decrypted value of the secret setting ``name`` (``None`` when unset)."""
        ...

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Records of a granted collection (by key) whose values equal ``where``'s, newest first."""
        ...

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """One record of a granted collection by id (API 1.3): ``{"id", "values"}``, or ``None``
        when there is no such live record."""
        ...

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        """Create a record in a granted collection, or update ``record_id``; returns the record.

        Values the collection refuses (a missing required field, a duplicate of a unique field, …)
        raise :class:`RecordRejected` with every problem listed."""
        ...

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        """The next number of the tenant's sequence ``sequence`` for this plugin (API 1.3): 1, 2, 3, …
        without gaps, atomically, so concurrent calls never get the same number.

        With ``key``, the number given to that key the first time is returned again, whoever asks
        and however often: a retried action numbers the same document with the same number.
        Sequences are per tenant and per plugin; name them after what they number
        (``"invoice:ACME-HK:2026"``). A sequence or key name has 1 to :data:`MAX_SEQUENCE_NAME`
        characters; any other raises :class:`ValueError`."""
        ...

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        """Notify members of the tenant (user ids), through the tenant's messaging channels."""
        ...

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        """Emit an event (``plugin.<plugin>.<type>``) that automations may trigger on."""
        ...

    async def http(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 10.0,
    ) -> HttpResponse:
        """An HTTP request to a host the manifest declares (``timeout_seconds`` is capped by the host)."""
        ...

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        """Store a file in the tenant's file store."""
        ...

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        """A file of the tenant's file store and its bytes (API 1.3; scope ``files:read``): an
        attachment a record or a run holds. ``LookupError`` when the tenant has no such file."""
        ...

    async def resolve_address(self, host: str, port: int) -> str:
        """The IP address to open a connection of the plugin's own to (API 1.3; scope
        ``mail:send``): an SMTP server the tenant configured, say. The host refuses addresses a
        tenant must not reach (its own network, loopback) with :class:`ScopeDenied`, as for
        :meth:`http`; connect to the address returned, not to the name again."""
        ...
