"""Authenticated ``GET /api/v1/members`` on Postgres under 50 concurrent clients, against a bare
Litestar endpoint running the same query on the same driver, in the same run.

Target: the app's throughput is at least 0.6 of the bare endpoint's. Each server is one uvicorn
worker in its own process, connected to the database as the runtime role (so Row-Level Security
applies to both); the load comes from this process over keep-alive connections. Rounds alternate
(bare, app, bare, app, ...) and the medians are reported, because a small machine is noisy.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvloop
from litestar import Litestar, get
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.db.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
POSTGRES = f"{HOST}:5432"
DB_NAME = "guiju_bench"
APP_ROLE = "guiju_app"
ADMIN_URL = f"postgresql+asyncpg://postgres@{POSTGRES}/postgres"
SUPERUSER_URL = f"postgresql+asyncpg://postgres@{POSTGRES}/{DB_NAME}"
RUNTIME_URL = f"postgresql+asyncpg://{APP_ROLE}@{POSTGRES}/{DB_NAME}"

PATH = "/api/v1/members"
SESSION_COOKIE = "guiju_session"
CLIENTS = 50
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 10.0
ROUNDS = 3
POOL_SIZE = 10  # the app's default GUIJU_DB_POOL_SIZE
MEMBERS = 20  # in the measured tenant, owner included
OTHER_TENANTS = 4  # as large as the measured one, so the query has rows to filter out
TARGET_RATIO = 0.6
STARTUP_SECONDS = 30.0
PASSWORD = "bench-Passw0rd-2024"

BARE_URL_ENV = "GUIJU_BENCH_DATABASE_URL"
BARE_TENANT_ENV = "GUIJU_BENCH_TENANT_ID"

T = TypeVar("T")


# ---------------------------------------------------------------- the bare endpoint

# The same statements the app sends: the transaction-local RLS settings, then the members query
# with the tenant criterion the ORM adds.
BARE_RLS_SQL = text(
    "select set_config('app.tenant_id', :tenant_id, true), set_config('app.system_scope', :system, true)"
)
BARE_MEMBERS_SQL = text(
    "select users.id as user_id, users.email, users.display_name, memberships.role, "
    "memberships.created_at as joined_at "
    "from memberships join users on users.id = memberships.user_id "
    "where memberships.tenant_id = :tenant_id order by memberships.created_at"
)


def create_bare_app() -> Litestar:
    """One route, no auth, no middleware: the floor the app is measured against (uvicorn factory)."""
    tenant_id = uuid.UUID(os.environ[BARE_TENANT_ENV])
    rls_params = {"tenant_id": str(tenant_id), "system": "off"}
    # Same driver and pool size as the app, but no pre-ping: that round trip is one of the app's own
    # costs. Connections open lazily, on the server's event loop.
    engine = create_async_engine(os.environ[BARE_URL_ENV], pool_size=POOL_SIZE, max_overflow=POOL_SIZE)

    @get(PATH)
    async def members() -> list[dict[str, Any]]:
        async with engine.begin() as conn:
            await conn.execute(BARE_RLS_SQL, rls_params)
            result = await conn.execute(BARE_MEMBERS_SQL, {"tenant_id": tenant_id})
            return [dict(row) for row in result.mappings()]

    return Litestar(route_handlers=[members], on_shutdown=[engine.dispose], openapi_config=None, logging_config=None)


# ---------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    # The caller's GUIJU_* settings (a Redis URL, a pool size) must not change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_")}
    env.update(extra)
    return env


class Server:
    """A one-worker uvicorn process on a free local port, stopped on exit."""

    def __init__(self, name: str, app_args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log_path = log_dir / f"{name}.log"
        self._argv = [
            sys.executable,
            "-m",
            "uvicorn",
            *app_args,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Server:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._argv, cwd=ROOT, env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        # uvicorn accepts connections only once the app's startup has finished.
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"the {self.name} server exited with status {code}:\n{self.log_tail()}")
            with suppress(OSError), socket.create_connection((HOST, self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} server did not start within {STARTUP_SECONDS:.0f} s")
            time.sleep(0.1)


# ---------------------------------------------------------------- a minimal HTTP/1.1 client

# A minimal keep-alive client keeps the load generator's own CPU use small, which matters when it
# shares two cores with both servers and Postgres.


def _request_bytes(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method not in {"GET", "HEAD"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> Reply:
        self._writer.write(request)
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head[:-4].split("\r\n")
        headers = []
        length: int | None = None
        for line in header_lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise RuntimeError(f"unexpected Transfer-Encoding: {value}")
        if length is None:
            raise RuntimeError(f"a response without Content-Length: {status_line}")
        body = await self._reader.readexactly(length)
        return Reply(status=int(status_line.split(" ", 2)[1]), headers=headers, body=body)

    def close(self) -> None:
        self._writer.close()


async def _fetch(port: int, request: bytes) -> Reply:
    conn = await Connection.open(port)
    try:
        async with asyncio.timeout(30):
            return await conn.exchange(request)
    finally:
        conn.close()


# ---------------------------------------------------------------- database and seed data


async def _drop_database(*, recreate: bool) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'drop database if exists "{DB_NAME}" with (force)'))
            if recreate:
                await conn.execute(text(f'create database "{DB_NAME}"'))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Seeded:
    tenant_id: uuid.UUID
    session_token: str


async def _signup(port: int, n: int) -> tuple[uuid.UUID, str]:
    body = json.dumps(
        {
            "email": f"owner{n}@bench.example.com",
            "password": PASSWORD,
            "display_name": f"Owner {n}",
            "company_name": f"Bench Company {n}",
            "industry": "general",
            "locale": "en",
        }
    ).encode()
    reply = await _fetch(
        port, _request_bytes("POST", "/api/v1/auth/signup", port, {"Content-Type": "application/json"}, body)
    )
    if reply.status != 201:
        raise RuntimeError(f"signup answered {reply.status}: {reply.body[:500]!r}")
    for cookie in reply.header_values("set-cookie"):
        name, _, rest = cookie.partition("=")
        if name.strip() == SESSION_COOKIE:
            return uuid.UUID(reply.json()["tenant"]["id"]), rest.split(";", 1)[0]
    raise RuntimeError(f"signup set no {SESSION_COOKIE} cookie")


async def _seed(port: int) -> Seeded:
    """Tenants through the real sign-up; their other members straight in SQL (invitations go by mail)."""
    tenants = [await _signup(port, n) for n in range(1 + OTHER_TENANTS)]
    # Later than the owners' memberships, and distinct, so the order by created_at is stable.
    start = datetime.now(UTC) + timedelta(seconds=1)
    users: list[dict[str, Any]] = []
    memberships: list[dict[str, Any]] = []
    for t, (tenant_id, _) in enumerate(tenants):
        for i in range(1, MEMBERS):
            user_id = uuid.uuid4()
            at = start + timedelta(milliseconds=t * MEMBERS + i)
            users.append(
                {
                    "id": user_id,
                    "email": f"member{i}@tenant{t}.bench.example.com",
                    "display_name": f"Member {t}-{i}",
                    "at": at,
                }
            )
            memberships.append({"tenant_id": tenant_id, "user_id": user_id, "role": "member", "at": at})
    engine = create_async_engine(SUPERUSER_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "insert into users (id, email, password_hash, display_name, locale, email_verified_at, "
                    "password_changed_at, created_at) values (:id, :email, '!', :display_name, 'en', :at, :at, :at)"
                ),
                users,
            )
            await conn.execute(
                text(
                    "insert into memberships (tenant_id, user_id, role, created_at) "
                    "values (:tenant_id, :user_id, :role, :at)"
                ),
                memberships,
            )
    finally:
        await engine.dispose()
    tenant_id, token = tenants[0]
    return Seeded(tenant_id=tenant_id, session_token=token)


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Round:
    target: str
    number: int
    completed: int
    seconds: float
    latencies: list[float]  # seconds, sorted

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        index = min(len(self.latencies) - 1, max(0, math.ceil(q * len(self.latencies)) - 1))
        return self.latencies[index] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(0.50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(0.99)


async def _load(target: str, number: int, port: int, request: bytes) -> Round:
    """``CLIENTS`` connections in closed loops: a warm-up, then a fixed measured window."""
    conns: list[Connection] = []
    latencies: list[float] = []
    completed = 0
    window_start = window_end = 0.0

    async def client(conn: Connection) -> None:
        nonlocal completed
        while (sent := time.perf_counter()) < window_end:
            reply = await conn.exchange(request)
            done = time.perf_counter()
            if reply.status != 200:
                raise RuntimeError(f"{target} answered {reply.status}: {reply.body[:500]!r}")
            if window_start <= done <= window_end:
                completed += 1
                if sent >= window_start:
                    latencies.append(done - sent)

    try:
        async with asyncio.timeout(WARMUP_SECONDS + MEASURE_SECONDS + 30):
            for _ in range(CLIENTS):
                conns.append(await Connection.open(port))
            window_start = time.perf_counter() + WARMUP_SECONDS
            window_end = window_start + MEASURE_SECONDS
            await asyncio.gather(*(client(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()
    latencies.sort()
    return Round(target=target, number=number, completed=completed, seconds=MEASURE_SECONDS, latencies=latencies)


def _row(label: str, target: str, throughput: float, p50: float, p99: float) -> str:
    return f"{label:<8}{target:<6}{throughput:>10.1f}{p50:>10.1f}{p99:>10.1f}"


async def _measure(app: Server, bare: Server, seeded: Seeded) -> list[Round]:
    # Both targets get the identical request bytes; the bare endpoint ignores the cookie.
    headers = {"Cookie": f"{SESSION_COOKIE}={seeded.session_token}", "Accept": "application/json"}
    requests = {
        "app": _request_bytes("GET", PATH, app.port, headers),
        "bare": _request_bytes("GET", PATH, bare.port, headers),
    }
    ports = {"app": app.port, "bare": bare.port}

    answers = {}
    for target in ("app", "bare"):
        reply = await _fetch(ports[target], requests[target])
        if reply.status != 200:
            raise RuntimeError(f"{target} answered {reply.status}: {reply.body[:500]!r}")
        answers[target] = reply.json()
    # The comparison only means something if both did the same work.
    if answers["app"] != answers["bare"]:
        raise RuntimeError(f"app and bare answers differ:\napp:  {answers['app']}\nbare: {answers['bare']}")
    if len(answers["app"]) != MEMBERS:
        raise RuntimeError(f"expected {MEMBERS} members, got {len(answers['app'])}")

    print(
        f"{PATH}: {CLIENTS} clients, {WARMUP_SECONDS:.0f} s warm-up + {MEASURE_SECONDS:.0f} s measured per round, "
        f"{MEMBERS} members in the tenant, {1 + OTHER_TENANTS} tenants"
    )
    print(f"{'round':<8}{'target':<6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}", flush=True)
    rounds: list[Round] = []
    for number in range(1, ROUNDS + 1):
        for target in ("bare", "app"):
            result = await _load(target, number, ports[target], requests[target])
            rounds.append(result)
            print(_row(str(number), target, result.throughput, result.p50_ms, result.p99_ms), flush=True)
    return rounds


def _report(rounds: list[Round]) -> None:
    medians: dict[str, tuple[float, float, float]] = {}
    for target in ("bare", "app"):
        mine = [r for r in rounds if r.target == target]
        medians[target] = (
            statistics.median(r.throughput for r in mine),
            statistics.median(r.p50_ms for r in mine),
            statistics.median(r.p99_ms for r in mine),
        )
        print(_row("median", target, *medians[target]))
    ratio = medians["app"][0] / medians["bare"][0]
    print(f"members throughput ratio (app/bare): {ratio:.2f} (target >= {TARGET_RATIO:.2f})")
    print("target met" if ratio >= TARGET_RATIO else "target MISSED", flush=True)


# ---------------------------------------------------------------- entry point


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run() -> None:
    """Recreate the bench database, serve both targets, seed, measure, report, drop the database."""
    _run_async(_drop_database(recreate=True))
    try:
        rounds = _serve_and_measure()
    finally:
        _run_async(_drop_database(recreate=False))
    _report(rounds)


def _serve_and_measure() -> list[Round]:
    upgrade(SUPERUSER_URL, APP_ROLE)  # synchronous: it runs its own event loop
    print(
        f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(other work on the machine makes the figures noisy)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="guiju-bench-") as tmp, ExitStack() as stack:
        log_dir = Path(tmp)
        started: list[Server] = []
        try:
            app_env = _server_env(
                {
                    "GUIJU_DATABASE_URL": RUNTIME_URL,
                    "GUIJU_SECRET_KEY": secrets.token_urlsafe(36),
                    "GUIJU_LOG_LEVEL": "WARNING",
                    "GUIJU_VAR_DIR": str(log_dir / "var"),
                }
            )
            # The production entry point, as `guiju api` serves it.
            app = Server("app", ["services.asgi:app"], app_env, log_dir)
            started.append(app)
            stack.enter_context(app)
            seeded = _run_async(_seed(app.port))
            bare_env = _server_env({BARE_URL_ENV: RUNTIME_URL, BARE_TENANT_ENV: str(seeded.tenant_id)})
            bare = Server("bare", ["--factory", "tests.bench.bench_members:create_bare_app"], bare_env, log_dir)
            started.append(bare)
            stack.enter_context(bare)
            return _run_async(_measure(app, bare, seeded))
        except Exception:
            for server in started:
                print(f"--- {server.name} server log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
