"""Fixtures of the fault tests: a private database and Redis, a webhook sink, and a workspace with
an automation whose actions write to our database and call a webhook."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.app import create_app
from services.automation import service as automation
from services.broker import build_broker, use_broker
from services.db import open_session, set_database_url
from tenants.base import utcnow
from tenants.context import tenant_scope
from tests.conftest import Api, Backend, World, make_settings
from tests.faults.harness import (  # noqa: F401  (private_redis: a fixture)
    GuijuProcess,
    private_database,
    private_redis,
    requeue_dead_workers,
)

WEBHOOK_HOST = "127.0.0.1"
SETTLE_SECONDS = 15.0  # nothing moved this long: what is left waits for the stalled-step recovery


@pytest.fixture(scope="module")
def fault_backend() -> Iterator[Backend]:
    """A Postgres database of this module's own: its processes relay every event in it."""
    with private_database() as backend:
        yield backend


# ---------------------------------------------------------------- a webhook receiver


@dataclass
class WebhookSink:
    """A local HTTP server that answers 200 and keeps every delivery's Idempotency-Key and body."""

    port: int = 0
    deliveries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{WEBHOOK_HOST}:{self.port}/hook"

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(key for key, _ in self.deliveries)

    def bodies(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.deliveries)


@pytest.fixture
def webhook_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    sink = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender was killed mid-request: nothing was delivered, and it will be sent again.
                self.close_connection = True
                return
            with sink.lock:
                sink.deliveries.append((self.headers.get("Idempotency-Key") or "", json.loads(body or b"{}")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((WEBHOOK_HOST, 0), Handler)
    sink.port = int(server.server_address[1])
    # Outbound webhooks go over https, except to hosts allowed plain http (here: this machine).
    monkeypatch.setenv("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", WEBHOOK_HOST)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- the workspace under test


async def wait_for_all_succeeded(
    site: Site, expected: int, redis_url: str, processes: list[GuijuProcess], *, seconds: float = 180
) -> int:
    """Wait until ``expected`` executions succeeded. Once nothing has moved for a while, run the
    stalled-step recovery (what the maintenance timer does minutes later) once, and keep waiting.
    Returns how many steps the recovery sent again."""
    deadline = time.monotonic() + seconds
    last: Counter[str] = Counter()
    last_change = time.monotonic()
    recovered: int | None = None
    while True:
        seen = await site.execution_statuses()
        if seen == Counter({"succeeded": expected}):
            return recovered or 0
        now = time.monotonic()
        if seen != last:
            last, last_change = seen, now
        elif recovered is None and now - last_change > SETTLE_SECONDS:
            recovered = await site.recover_stalled(redis_url)
            last_change = now
        if now > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail(3000)}" for p in processes)
            raise AssertionError(
                f"{expected} executions should have succeeded; after {seconds:.0f} s: {dict(seen)} "
                f"(stalled steps sent again: {recovered})\n{logs}"
            )
        await asyncio.to_thread(requeue_dead_workers, redis_url)
        await asyncio.sleep(0.5)


@dataclass
class Site:
    """A workspace on the private database, driven through the API in this process."""

    world: World
    api: Api
    tenant_id: uuid.UUID
    owner_id: str
    orders_id: str
    log_id: str
    automation_id: str
    admin: AsyncEngine

    async def create_order(self, n: int) -> str:
        response = await self.api.post(f"/api/v1/collections/{self.orders_id}/records", {"values": {"n": n}})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def scalar(self, sql: str, **params: Any) -> Any:
        # As the superuser: counts see every row, whatever the app's Row-Level Security says.
        async with self.admin.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.admin.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def recover_stalled(self, redis_url: str) -> int:
        """Run the automation maintenance's recovery of executions whose step message was lost,
        as if its staleness threshold had passed; returns how many were sent again.

        In production the maintenance timer does this minutes later; a test cannot wait that long.
        Sending a step again is harmless: the executor skips a step that already ran.
        """
        redis_broker = build_broker(redis_url)
        previous = use_broker(redis_broker)
        try:
            with tenant_scope(self.tenant_id):
                async with open_session(self.tenant_id) as db:
                    later = utcnow() + automation.STALLED_AFTER + automation.MAINTENANCE_INTERVAL
                    return await automation.recover_stalled(db, now=later)
        finally:
            use_broker(previous)
            redis_broker.close()

    async def execution_statuses(self) -> Counter[str]:
        rows = await self.rows(
            "select status, count(*) from automation_executions where automation_id = :a group by status",
            a=self.automation_id,
        )
        return Counter({status: count for status, count in rows})

    async def orders_without_execution(self) -> int:
        return int(
            await self.scalar(
                "select count(*) from records r where r.collection_id = :c and r.deleted_at is null and not exists "
                "(select 1 from automation_executions e where e.automation_id = :a "
                " and e.event->>'record_id' = r.id::text)",
                c=self.orders_id,
                a=self.automation_id,
            )
        )

    async def effects_per_execution(self) -> dict[str, tuple[int, int]]:
        """execution id -> (log records of its order, notifications it sent): one order, one execution."""
        rows = await self.rows(
            "select e.id::text, "
            " (select count(*) from records r where r.collection_id = :log"
            "  and r.\"values\"->>'order' = e.event->>'record_id'),"
            " (select count(*) from notifications n where n.dedupe_key like e.id::text || ':%') "
            "from automation_executions e where e.automation_id = :a",
            log=self.log_id,
            a=self.automation_id,
        )
        return {execution: (records, notes) for execution, records, notes in rows}


def automation_body(log_id: str, owner_id: str, webhook_url: str) -> dict[str, Any]:
    """Three actions: a record in our database, an in-app notification, an outbound webhook."""
    return {
        "name": "Log every order",
        "trigger": {"type": "record_event", "collection_id": None, "events": ["created"]},
        "actions": [
            {"kind": "create_record", "collection_id": log_id, "values": {"order": "=event.record_id"}},
            {"kind": "notify", "to": [owner_id], "title": "Order {{ record_id }}"},
            {"kind": "webhook", "url": webhook_url, "body": {"order": "=event.record_id"}},
        ],
    }


@pytest.fixture
async def site(fault_backend: Backend, tmp_path: Path, webhook_sink: WebhookSink) -> AsyncIterator[Site]:
    set_database_url(fault_backend.url)
    settings = make_settings(fault_backend, tmp_path)
    world = World(fault_backend, create_app(settings), settings, [])
    admin = create_async_engine(fault_backend.admin_url)
    try:
        api, signed_up = await world.signup()
        owner_id = signed_up["user"]["id"]
        collections = {}
        for key, fields in (
            ("orders", [{"key": "n", "label": "N", "type": "number"}]),
            (
                "order_log",
                [{"key": "order", "label": "Order", "type": "text"}],
            ),
        ):
            response = await api.post("/api/v1/collections", {"key": key, "name": key, "fields": fields})
            assert response.status_code == 201, response.text
            collections[key] = str(response.json()["id"])
        body = automation_body(collections["order_log"], owner_id, webhook_sink.url)
        body["trigger"]["collection_id"] = collections["orders"]
        response = await api.post("/api/v1/automations", body)
        assert response.status_code == 201, response.text
        yield Site(
            world,
            api,
            uuid.UUID(signed_up["tenant"]["id"]),
            owner_id,
            collections["orders"],
            collections["order_log"],
            str(response.json()["id"]),
            admin,
        )
    finally:
        for client in world._clients:
            await client.aclose()
        await admin.dispose()
        set_database_url(None)
