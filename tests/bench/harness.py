"""What every API benchmark needs: servers in their own processes, a small keep-alive HTTP client,
a bench database, sign-up, and closed-loop load with latency percentiles."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
POSTGRES = f"{HOST}:5432"
APP_ROLE = "guiju_app"
ADMIN_URL = f"postgresql+asyncpg://postgres@{POSTGRES}/postgres"
SESSION_COOKIE = "guiju_session"
STARTUP_SECONDS = 30.0
PASSWORD = "bench-Passw0rd-2024"

T = TypeVar("T")


def superuser_url(db_name: str) -> str:
    return f"postgresql+asyncpg://postgres@{POSTGRES}/{db_name}"


def runtime_url(db_name: str) -> str:
    return f"postgresql+asyncpg://{APP_ROLE}@{POSTGRES}/{db_name}"


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(extra: dict[str, str]) -> dict[str, str]:
    # The caller's GUIJU_* settings (a Redis URL, a pool size) must not change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_")}
    env.update(extra)
    return env


class Server:
    """A one-worker uvicorn process on a free local port, stopped on exit."""

    def __init__(self, name: str, app_args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
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
        process = self._process
        assert process is not None

        def connect() -> None:
            code = process.poll()
            if code is not None:  # not an OSError: no more tries
                raise RuntimeError(f"the {self.name} server exited with status {code}:\n{self.log_tail()}")
            socket.create_connection((HOST, self.port), timeout=1).close()

        ready = Retrying(
            retry=retry_if_exception_type(OSError), wait=wait_fixed(0.1), stop=stop_after_delay(STARTUP_SECONDS)
        )
        try:
            ready(connect)
        except RetryError:
            raise RuntimeError(f"the {self.name} server did not start within {STARTUP_SECONDS:.0f} s") from None


# ---------------------------------------------------------------- a minimal HTTP/1.1 client

# A minimal keep-alive client keeps the load generator's own CPU use small, which matters when it
# shares two cores with both servers and Postgres.


def request_bytes(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
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


async def fetch(port: int, request: bytes) -> Reply:
    conn = await Connection.open(port)
    try:
        async with asyncio.timeout(30):
            return await conn.exchange(request)
    finally:
        conn.close()


# ---------------------------------------------------------------- database and sign-up


async def drop_database(name: str, *, recreate: bool) -> None:
    engine = create_async_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'drop database if exists "{name}" with (force)'))
            if recreate:
                await conn.execute(text(f'create database "{name}"'))
    finally:
        await engine.dispose()


async def signup(port: int, n: int) -> tuple[uuid.UUID, str]:
    """A new workspace's id and its owner's session cookie."""
    tenant_id, cookie, _csrf = await signup_session(port, n)
    return tenant_id, cookie


async def signup_session(port: int, n: int, locale: str = "en") -> tuple[uuid.UUID, str, str]:
    """A new workspace's id, and its owner's session cookie and CSRF token (for writes)."""
    body = json.dumps(
        {
            "email": f"owner{n}@bench.example.com",
            "password": PASSWORD,
            "display_name": f"Owner {n}",
            "company_name": f"Bench Company {n}",
            "industry": "general",
            "locale": locale,
        }
    ).encode()
    reply = await fetch(
        port, request_bytes("POST", "/api/v1/auth/signup", port, {"Content-Type": "application/json"}, body)
    )
    if reply.status != 201:
        raise RuntimeError(f"signup answered {reply.status}: {reply.body[:500]!r}")
    for cookie in reply.header_values("set-cookie"):
        name, _, rest = cookie.partition("=")
        if name.strip() == SESSION_COOKIE:
            document = reply.json()
            return uuid.UUID(document["tenant"]["id"]), rest.split(";", 1)[0], document["csrf_token"]
    raise RuntimeError(f"signup set no {SESSION_COOKIE} cookie")


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


# Builds the next request of one client (by its index); closed loops call it before every request.
RequestFor = Callable[[int], bytes]


def constant_request(request: bytes) -> RequestFor:
    """Every client sends the same request."""
    return lambda _client: request


async def load(
    target: str,
    number: int,
    port: int,
    request_for: RequestFor,
    *,
    clients: int,
    warmup_seconds: float,
    measure_seconds: float,
    ok_statuses: frozenset[int] = frozenset({200}),
) -> Round:
    """``clients`` connections in closed loops: a warm-up, then a fixed measured window."""
    conns: list[Connection] = []
    latencies: list[float] = []
    completed = 0
    window_start = window_end = 0.0

    async def client(index: int, conn: Connection) -> None:
        nonlocal completed
        while (sent := time.perf_counter()) < window_end:
            reply = await conn.exchange(request_for(index))
            done = time.perf_counter()
            if reply.status not in ok_statuses:
                raise RuntimeError(f"{target} answered {reply.status}: {reply.body[:500]!r}")
            if window_start <= done <= window_end:
                completed += 1
                if sent >= window_start:
                    latencies.append(done - sent)

    try:
        async with asyncio.timeout(warmup_seconds + measure_seconds + 30):
            for _ in range(clients):
                conns.append(await Connection.open(port))
            window_start = time.perf_counter() + warmup_seconds
            window_end = window_start + measure_seconds
            await asyncio.gather(*(client(i, conn) for i, conn in enumerate(conns)))
    finally:
        for conn in conns:
            conn.close()
    latencies.sort()
    return Round(target=target, number=number, completed=completed, seconds=measure_seconds, latencies=latencies)


def round_order(number: int, steps: Sequence[T]) -> list[T]:
    """The order in which round ``number`` (from 1) runs ``steps``: as given in odd rounds, reversed
    in even ones (A B, B A, A B, ...). Every benchmark runs its baseline and what it measures this
    way, so that neither always goes first: a small shared machine drifts (caches warm, neighbours
    come and go), and whatever runs first in every round would carry that drift alone."""
    return list(steps) if number % 2 else list(reversed(steps))


def on_fresh_database(name: str, body: Callable[[], T]) -> T:
    """``body()`` with the bench database ``name`` created anew, and dropped after, whatever happens."""
    run_async(drop_database(name, recreate=True))
    try:
        return body()
    finally:
        run_async(drop_database(name, recreate=False))


def print_load() -> None:
    """The machine's load before a run: the figures that follow are only as quiet as it is."""
    print(
        f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(other work on the machine makes the figures noisy)",
        flush=True,
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
