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


class ScopeDenied(PermissionError):
    """The plugin asked for something its installation does not grant: a collection the tenant
    did not grant, a host its manifest does not declare, a scope it did not request."""


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

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        """Create a record in a granted collection, or update ``record_id``; returns the record."""
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
