"""Plugins for tests: in-process ones loaded as the host loads entry points, and catalog rows of
remote ones, as the marketplace lists them once approved."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import EntryPoint
from typing import Any

import dramatiq
from guiju_sdk import PluginInfo, hookimpl, remote
from sqlalchemy import select

from services.db import open_session
from services.marketplace import actors
from services.marketplace import service as marketplace
from services.marketplace.models import PluginListing, PluginVersion
from services.settings import Settings
from tenants.base import utcnow
from tenants.context import system_scope

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "base_url": {"type": "string", "format": "uri", "minLength": 8},
        "company": {"type": "string"},
        "api_key": {"type": "string", "writeOnly": True, "minLength": 8},
    },
    "required": ["base_url", "api_key"],
    "additionalProperties": False,
}


def plugin_module(
    name: str,
    version: str = "1.0.0",
    *,
    actions: Mapping[str, Callable[..., Any]] | None = None,
    scopes: tuple[str, ...] = (),
    settings_schema: dict[str, Any] | None = None,
    hooks: Mapping[str, Callable[..., Any]] | None = None,
    triggers: tuple[str, ...] = (),
    polls: Mapping[str, Callable[..., Any]] | None = None,
) -> types.ModuleType:
    """A plugin module registering ``actions`` (name → handler), ``triggers`` (fired by its events),
    ``polls`` (trigger name → poll function, polled every 60 s) and the given hooks."""
    module = types.ModuleType(f"guiju_test_plugin_{name.replace('-', '_')}_{version.replace('.', '_')}")

    @hookimpl
    def guiju_plugin_info(register: Any) -> None:
        register(
            PluginInfo(
                name=name,
                version=version,
                publisher="Acme",
                summary_en=f"{name} for tests",
                summary_zh=f"测试用 {name}",
                api_range=">=1.2,<2.0",
                category="erp",
                scopes=scopes,
            )
        )

    @hookimpl
    def guiju_actions(register: Any) -> None:
        for action, handler in (actions or {}).items():
            register(action, handler, labels={"zh-CN": action, "en": action}, time_limit_ms=2_000)

    @hookimpl
    def guiju_triggers(register: Any) -> None:
        for trigger in triggers:
            register(trigger, labels={"zh-CN": trigger, "en": trigger})
        for trigger, poll in (polls or {}).items():
            register(trigger, labels={"zh-CN": trigger, "en": trigger}, poll=poll, poll_seconds=60)

    module.guiju_plugin_info = guiju_plugin_info  # type: ignore[attr-defined]
    module.guiju_actions = guiju_actions  # type: ignore[attr-defined]
    module.guiju_triggers = guiju_triggers  # type: ignore[attr-defined]
    if settings_schema is not None:

        @hookimpl
        def guiju_settings_schema(register: Any) -> None:
            register(settings_schema)

        module.guiju_settings_schema = guiju_settings_schema  # type: ignore[attr-defined]
    for hook, function in (hooks or {}).items():
        setattr(module, hook, hookimpl(function))
    return module


@contextmanager
def deployed(*modules: types.ModuleType) -> Iterator[None]:
    """Load ``modules`` as this deployment's plugins (as if installed in the environment)."""
    entry_points = []
    for module in modules:
        sys.modules[module.__name__] = module
        info: list[PluginInfo] = []
        module.guiju_plugin_info(register=info.append)
        entry_points.append(EntryPoint(name=info[0].name, value=module.__name__, group="guiju"))
    manager, report = marketplace.load_plugins(Settings(), eps=entry_points)
    assert all(r.loaded for r in report), report
    marketplace.activate(manager, report)
    try:
        yield
    finally:
        marketplace.activate(marketplace.new_plugin_manager(), [])
        for module in modules:
            sys.modules.pop(module.__name__, None)


async def list_remote_version(
    name: str,
    version: str,
    *,
    endpoint: str,
    secret: str,
    actions: list[dict[str, Any]],
    scopes: list[str] | None = None,
    settings_schema: dict[str, Any] | None = None,
    status: str = "approved",
) -> None:
    """Put an approved (by default) remote plugin version in the catalog."""
    manifest = {
        "name": name,
        "version": version,
        "publisher": "Remote Partner",
        "summary": {"zh-CN": f"远程 {name}", "en": f"Remote {name}"},
        "category": "erp",
        "api_range": ">=1.0,<2.0",
        "pricing": "free",
        "scopes": scopes or [],
        "settings_schema": settings_schema,
        "kind": "remote",
        "endpoint": endpoint,
        "actions": actions,
        "triggers": [],
    }
    with system_scope():
        async with open_session(system=True) as db:
            if await db.scalar(select(PluginListing).where(PluginListing.name == name)) is None:
                db.add(PluginListing(name=name, publisher="Remote Partner", category="erp"))
                await db.flush()
            db.add(
                PluginVersion(
                    plugin=name,
                    version=version,
                    kind="remote",
                    manifest=manifest,
                    endpoint=endpoint,
                    signing_secret=marketplace.keyring().encrypt(
                        secret, marketplace.platform_secret_context(name, version)
                    ),
                    status=status,
                    reviewed_at=utcnow(),
                )
            )


async def run_plugin_hooks(*plugins: str) -> None:
    """Relay the outbox and let the worker run these plugins' hooks (on their own queues)."""
    from tests.conftest import deliver_events

    await deliver_events()
    broker = dramatiq.get_broker()
    for plugin in plugins:
        actors.hooks_actor_for(plugin)
        await asyncio.to_thread(broker.join, f"plugin.{plugin}", timeout=60_000)


def remote_action(name: str, **schemas: Any) -> dict[str, Any]:
    """A remote manifest's action entry."""
    return {"name": name, "labels": {"zh-CN": name, "en": name}, "time_limit_ms": 2_000, **schemas}


# ---------------------------------------------------------------- a remote plugin's service

Answer = tuple[int, bytes, dict[str, str]]


class RemotePluginServer:
    """A remote plugin's HTTP service in a thread: it verifies every request's signature as a
    partner's service must (SDK ``remote.verify`` with a nonce cache) and answers each action with
    ``actions[name](input) -> (status, body, headers)``."""

    def __init__(self, secret: str, actions: Mapping[str, Callable[[dict[str, Any]], Answer]]) -> None:
        self.secret = secret.encode()
        self.actions = dict(actions)
        self.nonces = remote.NonceCache()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []
        self.health: Answer = answer(200, {"ok": True, "message": ""})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                server.received.append((headers, body))
                try:
                    remote.verify(server.secret, headers, body, nonces=server.nonces)
                except remote.SignatureInvalid as exc:
                    server.refused.append(exc.reason)
                    self._answer(401, json.dumps({"error": {"message": exc.reason}}).encode(), {})
                    return
                name = self.path.rsplit("/", 1)[-1]
                handler = server.actions.get(name)
                if handler is None:
                    self._answer(404, b"{}", {})
                    return
                self._answer(*handler(json.loads(body)))

            def do_GET(self) -> None:
                headers = dict(self.headers.items())
                try:
                    remote.verify(server.secret, headers, b"", nonces=server.nonces)
                except remote.SignatureInvalid as exc:
                    server.refused.append(exc.reason)
                    self._answer(401, b"{}", {})
                    return
                self._answer(*server.health)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the host gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/guiju"

    def __enter__(self) -> RemotePluginServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(status: int, document: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, json.dumps(document).encode() if not isinstance(document, bytes) else document, headers or {}
