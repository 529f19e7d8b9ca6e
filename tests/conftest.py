"""Shared fixtures: database backends (SQLite always, Postgres when reachable), the app, API clients.

Tests that need Postgres or Redis skip with a clear line when those are unreachable; with
GUIJU_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
from litestar import Litestar

from services.app import create_app
from services.db import set_database_url
from services.db.migrate import upgrade
from services.mail.service import sent_mail
from services.outbox.actors import EVENTS_QUEUE, publish
from services.outbox.service import relay_once
from services.settings import Settings

REQUIRE_SERVICES = os.environ.get("GUIJU_REQUIRE_SERVICES") == "1"
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
PASSWORD = "Tea-leaf-2026"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, under GUIJU_REQUIRE_SERVICES=1, fail) when a service is not reachable."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and GUIJU_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}: skipping (set GUIJU_REQUIRE_SERVICES=1 to make this a failure)")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Fail the run, naming them, when non-daemon threads outlive it.

    Python waits for every non-daemon thread before it exits: one left running (a worker's event
    loop nobody stopped) would hold the run open, after its summary, until CI's time ran out.
    """
    leftover = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in leftover:
        thread.join(timeout=5)
    leftover = [t for t in leftover if t.is_alive()]
    if leftover:
        names = ", ".join(f"{t.name} ({type(t).__module__}.{type(t).__qualname__})" for t in leftover)
        sys.stderr.write(f"\nthreads still running after the tests, which would keep this run from exiting: {names}\n")
        sys.stderr.flush()
        os._exit(3)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # what the app connects with (on Postgres: the runtime role, subject to RLS)
    admin_url: str  # the migration role's URL


def _psql_admin(sql: str) -> None:
    import asyncpg

    async def _run() -> None:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(_run())


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    path: Path = tmp_path_factory.mktemp("db") / "guiju.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return Backend("sqlite", url, url)


@pytest.fixture(scope="session")
def postgres_backend() -> Iterator[Backend]:
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"guiju_test_{uuid.uuid4().hex[:10]}"
    _psql_admin(f'CREATE DATABASE "{name}"')
    admin_url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    upgrade(admin_url, "guiju_app")
    yield Backend("postgres", f"postgresql+asyncpg://guiju_app@{PG_HOST}:{PG_PORT}/{name}", admin_url)
    _psql_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")  # type: ignore[no-any-return]


def make_settings(backend: Backend, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "var_dir": tmp,
        "database_url": backend.url,
        "migration_database_url": backend.admin_url,
        "secret_key": "t" * 48,
        "base_url": "http://guiju.test",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def stub_worker() -> Iterator[dramatiq.Worker]:
    """One in-process worker over the stub broker for the whole run."""
    worker = dramatiq.Worker(dramatiq.get_broker(), worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


async def deliver_events(stub_worker: dramatiq.Worker | None = None) -> int:
    """Relay every pending outbox event and wait until the worker has handled them."""
    published = 0
    while count := await relay_once(publish):
        published += count
    broker = dramatiq.get_broker()
    await asyncio.to_thread(broker.join, EVENTS_QUEUE, timeout=30_000)  # milliseconds
    return published


# Error answers are worded in the caller's language, and a request that names none (no signed-in
# user, no Accept-Language) gets the platform's default, Chinese. The suite's clients ask for
# English, as their users sign up in English, so its assertions on details read one language; a
# test of another language sends its own header.
ENGLISH = {"Accept-Language": "en"}


class Api:
    """An HTTP client with its own cookie jar that sends the CSRF token on writes."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf: str | None = None

    async def request(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.csrf and method not in ("GET", "HEAD") and "x-csrf-token" not in {h.lower() for h in headers}:
            headers["X-CSRF-Token"] = self.csrf
        response = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            if isinstance(body, dict) and "csrf_token" in body:
                self.csrf = body["csrf_token"]
        return response

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.request("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return await self.request("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def signup_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "email": unique_email("owner"),
        "password": PASSWORD,
        "display_name": "Li Wei",
        "company_name": "Hangzhou Tea Co",
        "industry": "foreign_trade",
        "locale": "en",
    }
    body.update(overrides)
    return body


def mail_to(address: str, template: str | None = None) -> list[Any]:
    return [m for m in sent_mail if m.to == address and (template is None or m.template == template)]


def token_from(mail: Any) -> str:
    return str(mail.link.split("token=", 1)[1])


@dataclass
class World:
    """An app on one backend, and a way to make signed-in clients for it."""

    backend: Backend
    app: Litestar
    settings: Settings
    _clients: list[httpx.AsyncClient]

    async def client(self) -> Api:
        # The app runs on the test's own event loop (no lifespan: nothing embedded to start).
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://guiju.test", headers=ENGLISH)
        self._clients.append(client)
        return Api(client)

    async def signup(self, **overrides: Any) -> tuple[Api, dict[str, Any]]:
        api = await self.client()
        response = await api.post("/api/v1/auth/signup", signup_body(**overrides))
        assert response.status_code == 201, response.text
        return api, response.json()

    async def invite_and_join(self, admin: Api, role: str = "member", email: str | None = None) -> tuple[Api, str]:
        """Invite a new person and have them accept with a new account; returns their client and user id."""
        email = email or unique_email(role)
        response = await admin.post("/api/v1/invitations", {"email": email, "role": role})
        assert response.status_code == 201, response.text
        await deliver_events()
        token = token_from(mail_to(email, "invitation")[-1])
        joiner = await self.client()
        accepted = await joiner.post(
            "/api/v1/auth/accept-invitation", {"token": token, "display_name": "Wang Fang", "password": PASSWORD}
        )
        assert accepted.status_code == 200, accepted.text
        return joiner, accepted.json()["user"]["id"]


def variant(world: World, **overrides: Any) -> World:
    """The same backend with other settings (a new app); its clients close with the world's."""
    settings = dataclasses.replace(world.settings, **overrides)
    return World(world.backend, create_app(settings), settings, world._clients)


async def client_at(world: World, ip: str) -> Api:
    """A client whose connection comes from ``ip``."""
    transport = httpx.ASGITransport(app=world.app, raise_app_exceptions=False, client=(ip, 40000))
    client = httpx.AsyncClient(transport=transport, base_url="http://guiju.test", headers=ENGLISH)
    world._clients.append(client)
    return Api(client)


def random_ip(prefix: str = "198.18") -> str:
    """A client address of this test alone (the Redis limiter outlives a test run)."""
    return f"{prefix}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(params=["memory", "redis"])
def limiter_url(request: pytest.FixtureRequest) -> str | None:
    """The rate limiter's storage: memory (None), then Redis (skipped, or failed under
    GUIJU_REQUIRE_SERVICES=1, when Redis is unreachable)."""
    if request.param == "redis":
        need_service("Redis", REDIS_HOST, REDIS_PORT)
        return REDIS_URL
    return None


@asynccontextmanager
async def open_world(backend: Backend, tmp: Path) -> AsyncIterator[World]:
    """An app on ``backend`` (the database of the app and of the services called directly)."""
    set_database_url(backend.url)
    settings = make_settings(backend, tmp)
    app = create_app(settings)
    w = World(backend, app, settings, [])
    try:
        yield w
    finally:
        for client in w._clients:
            await client.aclose()
        set_database_url(None)


@pytest.fixture
async def world(backend: Backend, tmp_path: Path, stub_worker: dramatiq.Worker) -> AsyncIterator[World]:
    async with open_world(backend, tmp_path) as w:
        yield w
