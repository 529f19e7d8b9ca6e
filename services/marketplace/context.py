"""The ``PluginContext`` the host gives a plugin: one tenant, one plugin, what its admin granted.

A plugin reaches the platform only through this context: it cannot read another tenant's data or a
collection it was not granted, call a host it was not granted or a private address, whatever it
asks for. The context also holds the host's HTTP client, shared with the calls of remote plugins.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from guiju_sdk import ActionFailed, HttpResponse, RecordRejected, ScopeDenied, StoredFile
from sqlalchemy.ext.asyncio import AsyncSession

from services import events, netguard
from services.accounts import service as accounts
from services.files import service as files
from services.marketplace import service
from services.marketplace.models import PluginInstallation
from services.marketplace.secrets import secret_context
from services.notifications import service as notifications
from services.outbox import service as outbox
from services.records import service as records
from tenants.errors import NotFound, ProblemError


@dataclass
class HostContext:
    """The host's :class:`guiju_sdk.PluginContext`: one tenant, one plugin, its grant."""

    db: AsyncSession
    installation: PluginInstallation
    declared_scopes: frozenset[str]
    idempotency_key: str | None = None

    @property
    def tenant_id(self) -> str:
        return str(self.installation.tenant_id)

    @property
    def plugin(self) -> str:
        return self.installation.plugin

    @property
    def config(self) -> Mapping[str, Any]:
        return dict(self.installation.config)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            logging.getLogger(f"guiju.plugin.{self.plugin}"), {"plugin": self.plugin, "tenant_id": self.tenant_id}
        )

    def _require(self, scope: str) -> None:
        # Both: the version asks for it, and this tenant's admin consented to it.
        if scope not in self.declared_scopes or scope not in self.installation.granted_scopes:
            raise ScopeDenied(f"{self.plugin} was not granted the scope {scope!r}")

    def _collection(self, collection: str, scope: str) -> str:
        self._require(scope)
        if collection not in self.installation.granted_collections:
            raise ScopeDenied(f"the collection {collection!r} is not granted to {self.plugin}")
        return collection

    def secret(self, name: str) -> str | None:
        token = self.installation.secrets.get(name)
        if token is None:
            return None
        return service.keyring().decrypt(token, secret_context(self.installation.tenant_id, self.plugin, name))

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        key = self._collection(collection, "records:read")
        found = await records.find_records(self.db, key, dict(where or {}), limit=min(max(1, limit), 500))
        return [{"id": str(record_id), "values": values} for record_id, values in found]

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        key = self._collection(collection, "records:read")
        info = await records.get_collection_by_key(self.db, key)
        try:
            values = await records.get_record_values(self.db, info.id, uuid.UUID(record_id))
        except (ValueError, NotFound):
            return None
        return {"id": record_id, "values": values}

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        key = self._collection(collection, "records:write")
        info = await records.get_collection_by_key(self.db, key)
        try:
            # A savepoint: a refused write (a duplicate unique value, say) leaves the action's
            # transaction usable, so the plugin can read what is there and go on.
            async with self.db.begin_nested():
                if record_id is None:
                    record = await records.create_record_values(self.db, info.id, values, actor_id=None)
                    written = record.id
                else:
                    written = uuid.UUID(record_id)
                    await records.update_record_values(self.db, info.id, written, values, actor_id=None)
        except ProblemError as exc:
            if exc.status >= 500:
                raise
            problems = [{"pointer": e.pointer, "code": e.code, "message": e.message} for e in exc.errors]
            raise RecordRejected(f"{collection}: {exc.detail or exc.title}", problems) from None
        return {"id": str(written), "values": await records.get_record_values(self.db, info.id, written)}

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        return await service.next_number(self.db, self.plugin, sequence, key=key)

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        self._require("messages:send")
        wanted = {uuid.UUID(str(user_id)) for user_id in to}
        members = await accounts.existing_member_ids(self.db, wanted)
        if wanted - members:
            raise ScopeDenied(f"{len(wanted - members)} recipient(s) are not members of this workspace")
        await notifications.notify(self.db, sorted(members), title[:300], body)

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        self._require("events:emit")
        await outbox.emit(self.db, events.plugin_event_name(self.plugin, type), dict(payload))

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
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        declared = f"http:{host}" in self.declared_scopes and f"http:{host}" in self.installation.granted_scopes
        if not declared:
            self._require("http:*")
        allowed_plain = host in service.settings().plugin_allow_http_hosts
        if parts.scheme != "https" and not (parts.scheme == "http" and allowed_plain):
            raise ScopeDenied(f"{self.plugin} may only call https URLs, not {parts.scheme}://{host}")
        extra_headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        target = url
        if not allowed_plain:
            address = await self._public_address(host, parts.port or 443, "call")
            target, extra_headers, extensions = netguard.pinned_target(url, address)
        timeout = min(max(0.1, timeout_seconds), service.settings().plugin_http_max_timeout_seconds)
        try:
            response = await _client().request(
                method,
                target,
                json=json,
                content=content,
                headers={**dict(headers or {}), **extra_headers},
                timeout=timeout,
                extensions=extensions,
            )
        except httpx.TimeoutException as exc:
            raise ActionFailed(f"{method} {host} took longer than {timeout:g} s", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ActionFailed(f"{method} {host} failed: {type(exc).__name__}", retryable=True) from exc
        return HttpResponse(status=response.status_code, headers=dict(response.headers), body=response.content)

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        self._require("files:write")
        stored = await files.save_file(
            self.db,
            tenant_id=self.installation.tenant_id,
            name=name,
            content_type=content_type,
            data=content,
            uploaded_by=None,
        )
        return StoredFile(id=str(stored.id), name=stored.name, content_type=stored.content_type, size=stored.size)

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        self._require("files:read")
        try:
            found, data = await files.open_file_bytes(self.db, uuid.UUID(file_id))
        except (ValueError, NotFound):
            raise LookupError(f"this workspace has no file {file_id!r}") from None
        return StoredFile(id=str(found.id), name=found.name, content_type=found.content_type, size=found.size), data

    async def resolve_address(self, host: str, port: int) -> str:
        self._require("mail:send")
        name = host.strip().lower()
        if name in service.settings().plugin_allow_http_hosts:
            return name  # a host the operator allows (a local mail relay, a test server)
        return str(await self._public_address(name, port, "connect to"))

    async def _public_address(self, host: str, port: int, verb: str) -> netguard.IPAddress:
        """The checked address to reach ``host`` at: refused when not public, retryable when it
        does not resolve (DNS may answer later)."""
        try:
            return await netguard.resolve_public(host, port)
        except netguard.HostRefused as exc:
            raise ScopeDenied(f"{self.plugin} may only {verb} public addresses: {exc}") from exc
        except netguard.HostUnresolved as exc:
            raise ActionFailed(str(exc), retryable=True) from exc


_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    """One connection pool per event loop (keep-alive to plugins and the hosts they call)."""
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None or client.is_closed:
        client = _clients[loop_id] = httpx.AsyncClient(follow_redirects=False)
    return client
