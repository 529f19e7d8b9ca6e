"""A harness for a plugin's own test suite: a fake context and helpers to run what it registers.

::

    from guiju_sdk.testing import FakeContext, PluginHarness

    async def test_push_order():
        harness = PluginHarness(my_plugin)
        context = FakeContext(config={"base_url": "https://erp.example"}, hosts={"erp.example"})
        assert await harness.run_action("push_order", {"code": "A1"}, context) == {"erp_id": "7"}

The harness registers the plugin with the same hook specifications and checks as the host
(:func:`guiju_sdk.registry.collect`), so what passes here loads there.
"""

from __future__ import annotations

import itertools
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from guiju_sdk.context import HttpResponse, RecordRejected, ScopeDenied, StoredFile, check_sequence_name
from guiju_sdk.registry import (
    LIFECYCLE_TIME_LIMIT_SECONDS,
    Registrations,
    call_hook,
    call_plugin,
    collect,
    deprecations,
    new_manager,
)
from guiju_sdk.types import ActionCall, ActionFailed, Document, Health, PluginInfo
from guiju_sdk.version import API_VERSION, api_version_supported


@dataclass(frozen=True)
class HttpRequest:
    """A request a plugin made through :meth:`FakeContext.http`."""

    method: str
    url: str
    json: Any
    content: bytes | None
    headers: Mapping[str, str]
    timeout_seconds: float


@dataclass
class FakeContext:
    """An in-memory :class:`guiju_sdk.PluginContext` that records what the plugin did.

    ``collections`` holds the granted collections (key → records); anything else is refused with
    :class:`ScopeDenied`, as the host refuses it. ``hosts`` are the hosts the manifest declares;
    ``http_handler`` answers their requests (default: 404); ``resolve_address`` lets the plugin
    connect to those hosts only. ``files`` holds stored files, which ``read_file`` reads.
    ``unique_fields`` makes a collection refuse repeated values as a unique field does in the host,
    ``required_fields`` refuses a record without a value for them.

    To hold the plugin to its grant as the host does, give ``scopes`` (the scopes its installation
    grants, e.g. ``{"records:read", "events:emit"}``; ``None`` grants every capability) and
    ``members`` (the user ids of the workspace; ``None`` lets messages go to any id).
    """

    tenant_id: str = "00000000-0000-0000-0000-000000000001"
    plugin: str = "plugin"
    idempotency_key: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    collections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)
    http_handler: Callable[[HttpRequest], HttpResponse] | None = None
    max_timeout: float = 30.0
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[StoredFile, bytes]] = field(default_factory=list)
    requests: list[HttpRequest] = field(default_factory=list)
    #: Fields of a collection that are unique (collection key → field keys), refused when repeated.
    unique_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Fields of a collection that need a value (collection key → field keys).
    required_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The scopes granted, checked as the host checks them; ``None`` grants every capability.
    scopes: frozenset[str] | None = None
    #: The workspace's members (user ids) ``send_message`` may reach; ``None``: any id.
    members: set[str] | None = None
    #: ``next_number``'s sequences (name → last number) and numbers given to keys.
    sequences: dict[str, int] = field(default_factory=dict)
    numbered: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger(f"guiju.plugin.{self.plugin}"), {"tenant_id": self.tenant_id})

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def _require(self, scope: str) -> None:
        if self.scopes is not None and scope not in self.scopes:
            raise ScopeDenied(f"{self.plugin} was not granted the scope {scope!r}")

    def _granted(self, collection: str, scope: str) -> list[dict[str, Any]]:
        self._require(scope)
        if collection not in self.collections:
            raise ScopeDenied(f"the collection {collection!r} is not granted to {self.plugin}")
        return self.collections[collection]

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        records = self._granted(collection, "records:read")
        conditions = dict(where or {})
        wanted = [r for r in reversed(records) if all(r["values"].get(k) == v for k, v in conditions.items())]
        return [dict(r) for r in wanted[: max(0, limit)]]

    async def read_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        found = [r for r in self._granted(collection, "records:read") if r["id"] == record_id]
        return dict(found[0]) if found else None

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        records = self._granted(collection, "records:write")
        current: dict[str, Any] = next((r["values"] for r in records if r["id"] == record_id), {}) if record_id else {}
        missing = [
            name for name in self.required_fields.get(collection, ()) if {**current, **values}.get(name) in (None, "")
        ]
        if missing:
            raise RecordRejected(
                f"{collection}: a required value is missing",
                [{"pointer": f"/values/{name}", "code": "required", "message": "is required"} for name in missing],
            )
        for field_name in self.unique_fields.get(collection, ()):
            value = values.get(field_name)
            if value is not None and any(
                r["values"].get(field_name) == value and r["id"] != record_id for r in records
            ):
                raise RecordRejected(
                    f"{collection}: {field_name} must be unique",
                    [{"pointer": f"/values/{field_name}", "message": f"{value!r} is already used"}],
                )
        if record_id is None:
            record: dict[str, Any] = {"id": str(uuid.uuid4()), "values": dict(values)}
            records.append(record)
            return dict(record)
        for record in records:
            if record["id"] == record_id:
                record["values"] = {**record["values"], **values}
                return dict(record)
        raise LookupError(f"no record {record_id} in {collection!r}")

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        check_sequence_name("sequence", sequence)
        check_sequence_name("key", key)
        if key is not None and (sequence, key) in self.numbered:
            return self.numbered[(sequence, key)]
        number = self.sequences.get(sequence, 0) + 1
        self.sequences[sequence] = number
        if key is not None:
            self.numbered[(sequence, key)] = number
        return number

    async def send_message(self, to: Sequence[str], title: str, body: str = "") -> None:
        self._require("messages:send")
        strangers = set(to) - self.members if self.members is not None else set()
        if strangers:
            raise ScopeDenied(f"{len(strangers)} recipient(s) are not members of this workspace")
        self.messages.append({"to": list(to), "title": title, "body": body})

    async def emit_event(self, type: str, payload: Mapping[str, Any]) -> None:
        self._require("events:emit")
        self.events.append({"type": f"plugin.{self.plugin}.{type}", "payload": dict(payload)})

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
        host = urlsplit(url).hostname or ""
        if host not in self.hosts:
            raise ScopeDenied(f"{self.plugin} did not declare the host {host!r}")
        if self.scopes is not None and not {f"http:{host}", "http:*"} & self.scopes:
            raise ScopeDenied(f"{self.plugin} was not granted the scope 'http:{host}'")
        request = HttpRequest(
            method.upper(), url, json, content, dict(headers or {}), min(timeout_seconds, self.max_timeout)
        )
        self.requests.append(request)
        return self.http_handler(request) if self.http_handler else HttpResponse(404)

    async def store_file(self, name: str, content: bytes, content_type: str) -> StoredFile:
        self._require("files:write")
        stored = StoredFile(str(uuid.uuid4()), name, content_type, len(content))
        self.files.append((stored, content))
        return stored

    async def read_file(self, file_id: str) -> tuple[StoredFile, bytes]:
        self._require("files:read")
        for stored, content in self.files:
            if stored.id == file_id:
                return stored, content
        raise LookupError(f"no file {file_id}")

    async def resolve_address(self, host: str, port: int) -> str:
        self._require("mail:send")
        if host not in self.hosts:
            raise ScopeDenied(f"{self.plugin} may not connect to {host!r}")
        return host


def send_for_real(request: HttpRequest) -> HttpResponse:
    """An ``http_handler`` for :class:`FakeContext` that sends the plugin's request for real: to a
    local server speaking the partner system's protocol, in the plugin's own tests. As from the
    host, any status is an answer, and a timeout or a failed connection raises a retryable
    :class:`ActionFailed`."""
    if not request.url.startswith(("http://", "https://")):
        raise ScopeDenied(f"not an HTTP URL: {request.url!r}")
    body = request.content
    headers = dict(request.headers)
    if request.json is not None:
        body = json.dumps(request.json).encode()
        headers.setdefault("Content-Type", "application/json")
    sent = urllib.request.Request(request.url, data=body, headers=headers, method=request.method)  # noqa: S310
    host = urlsplit(request.url).hostname
    try:
        with urllib.request.urlopen(sent, timeout=request.timeout_seconds) as response:  # noqa: S310  (checked above)
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as answer:
        return HttpResponse(answer.code, dict(answer.headers.items()), answer.read())
    except TimeoutError as exc:
        raise ActionFailed(
            f"{request.method} {host} took longer than {request.timeout_seconds:g} s", retryable=True
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ActionFailed(f"{request.method} {host} failed: {type(exc).__name__}", retryable=True) from exc


_execution_ids = itertools.count(1)


class PluginHarness:
    """A plugin registered as the host registers it, with helpers to run what it offers."""

    def __init__(self, plugin: object, *, name: str = "plugin") -> None:
        self.name = name
        self.manager = new_manager()
        self.manager.register(plugin, name=name)
        self.manager.check_pending()  # an implementation of an unknown hook is an error, as in the host
        self.deprecations = deprecations(self.manager, plugin)  # warned, as the host warns
        self.plugin = plugin
        self.registrations: Registrations = collect(self.manager, plugin)

    def info(self) -> PluginInfo:
        """The plugin's manifest; fails as the host would refuse it."""
        collected: list[object] = []
        self.manager.hook.guiju_plugin_info(register=collected.append)
        infos = [c for c in collected if isinstance(c, PluginInfo)]
        if len(infos) != 1:
            raise AssertionError("guiju_plugin_info must register exactly one PluginInfo")
        if not api_version_supported(infos[0].api_range, API_VERSION):
            raise AssertionError(f"api_range {infos[0].api_range} excludes the SDK's API {API_VERSION}")
        return infos[0]

    async def run_action(self, name: str, input: dict[str, Any], context: FakeContext | None = None) -> Any:
        """Run action ``name`` once with ``input``, as an automation would (a new idempotency key)."""
        action = self.registrations.actions[name]
        context = context or FakeContext()
        execution_id = f"test-execution-{next(_execution_ids)}"
        context.idempotency_key = f"{execution_id}:0"
        call = ActionCall(dict(input), context.idempotency_key, context.tenant_id, execution_id, context)
        return await call_plugin(action.handler, call, time_limit_seconds=action.time_limit_ms / 1000)

    async def poll_trigger(self, name: str, context: FakeContext | None = None) -> list[dict[str, Any]]:
        """Poll trigger ``name`` once; the events it returns."""
        trigger = self.registrations.triggers[name]
        if trigger.poll is None:
            raise AssertionError(f"trigger {name!r} is not polled (it fires through context.emit_event)")
        return list(await call_plugin(trigger.poll, context or FakeContext()) or [])

    async def generate_document(
        self, name: str, values: Mapping[str, Any], format: str = "pdf", context: FakeContext | None = None
    ) -> Document:
        """Generate document kind ``name`` from a record's ``values``."""
        kind = self.registrations.document_kinds[name]
        document = await call_plugin(kind.generate, context or FakeContext(), dict(values), format)
        if not isinstance(document, Document):
            raise AssertionError(f"document kind {name!r} returned {type(document).__name__}, not a Document")
        return document

    async def health(self, context: FakeContext | None = None) -> Health:
        """Run the health check (healthy when the plugin implements none)."""
        reported: list[Health] = []
        await self._hook("guiju_health_check", context=context or FakeContext(), register=reported.append)
        return reported[-1] if reported else Health(True)

    async def installed(self, context: FakeContext | None = None) -> None:
        """Call the ``guiju_installed`` hook."""
        await self._hook("guiju_installed", context=context or FakeContext())

    async def configuration_changed(self, previous: Mapping[str, Any], context: FakeContext | None = None) -> None:
        """Call the ``guiju_configuration_changed`` hook (``context.config`` is the new configuration)."""
        await self._hook("guiju_configuration_changed", context=context or FakeContext(), previous=dict(previous))

    async def uninstalled(self, delete_data: bool = False, context: FakeContext | None = None) -> None:
        """Call the ``guiju_uninstalled`` hook."""
        await self._hook("guiju_uninstalled", context=context or FakeContext(), delete_data=delete_data)

    async def _hook(self, hook: str, **kwargs: Any) -> None:
        # The host's way (a worker thread, async implementations awaited), so a hook that passes here runs there.
        await call_hook(self.manager, self.name, hook, time_limit_seconds=LIFECYCLE_TIME_LIMIT_SECONDS, **kwargs)
