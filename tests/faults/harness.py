"""Processes for fault tests: a private ``redis-server``, a private Postgres database, and ``guiju
worker`` / ``guiju scheduler`` subprocesses that can be killed with SIGKILL and started again.

Everything runs on spare ports and its own database, so killing it never disturbs the machine's
shared services or the rest of the test session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from services.db.migrate import upgrade
from tests.conftest import PG_HOST, PG_PORT, REQUIRE_SERVICES, Backend, _psql_admin, need_service

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "fault-tests-secret-key-" + "x" * 32
HEARTBEAT_TIMEOUT_MS = 2_000  # a killed worker's messages go back to the queue after this
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- Redis


def require_redis_server() -> str:
    """The ``redis-server`` binary; skips (fails under GUIJU_REQUIRE_SERVICES=1) when there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "no redis-server binary on this machine"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and GUIJU_REQUIRE_SERVICES=1 requires it")
        pytest.skip(f"{message}: skipping this fault test (CI installs one)")
    return binary


class RedisProcess:
    """A private ``redis-server`` on a spare port.

    With ``data_dir`` it keeps an append-only file synced at every write, as a production Redis
    would, so a SIGKILL loses nothing that was acknowledged; without it, a restart starts empty.
    """

    def __init__(self, port: int, data_dir: Path | None = None) -> None:
        self.port = port
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = Retrying(
            retry=retry_if_exception_type((redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError)),
            wait=wait_fixed(0.05),
            stop=stop_after_delay(10),
        )
        try:
            started(self._ping)
        except RetryError:
            raise RuntimeError("redis-server did not start") from None

    def _ping(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            client.ping()  # answers only once the append-only file is loaded
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL: the server vanishes as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def requeue_dead_workers(redis_url: str, heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS) -> None:
    """Run Dramatiq's queue maintenance now on every queue with taken messages.

    Workers run it on a random 0.1% of their Redis commands, so a killed worker's messages come
    back "eventually"; a test cannot wait for chance. This is exactly that maintenance: messages
    taken by workers silent for longer than the heartbeat timeout go back to their queues.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = b"dramatiq:__acks__."
        queues = {key[len(prefix) :].split(b".", 1)[1].decode() for key in client.scan_iter(match=prefix + b"*")}
    finally:
        client.close()
    if not queues:
        return
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url, heartbeat_timeout=heartbeat_timeout_ms, maintenance_chance=MAINTENANCE_SCALE
    )
    try:
        for queue in queues:
            broker.do_qsize(queue)
    finally:
        broker.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private Redis with a durable append-only file (a restart keeps its queues)."""
    require_redis_server()
    server = RedisProcess(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# ---------------------------------------------------------------- Postgres


@contextmanager
def private_database(prefix: str = "guiju_faults") -> Iterator[Backend]:
    """A migrated Postgres database of its own (its outbox is not shared with other tests)."""
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _psql_admin(f'CREATE DATABASE "{name}"')
    try:
        admin_url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
        upgrade(admin_url, "guiju_app")
        yield Backend("postgres", f"postgresql+asyncpg://guiju_app@{PG_HOST}:{PG_PORT}/{name}", admin_url)
    finally:
        _psql_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- guiju processes


def process_env(backend: Backend, redis_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a production ``guiju worker``/``guiju scheduler`` for these services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_")}
    env.update(
        GUIJU_DATABASE_URL=backend.url,
        GUIJU_MIGRATION_DATABASE_URL=backend.admin_url,
        GUIJU_REDIS_URL=redis_url,
        GUIJU_SECRET_KEY=SECRET_KEY,
        GUIJU_VAR_DIR=str(var_dir),
        GUIJU_BROKER_HEARTBEAT_TIMEOUT_MS=str(HEARTBEAT_TIMEOUT_MS),
        GUIJU_RELAY_INTERVAL_SECONDS="0.2",
        GUIJU_LOG_LEVEL="INFO",
        GUIJU_DB_POOL_SIZE="5",
    )
    env.update(extra)
    return env


def guiju_command(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "guiju"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


class GuijuProcess:
    """One ``guiju`` command in its own process group, logging to a file.

    ``kill()`` sends SIGKILL to the whole group: ``guiju worker`` runs Dramatiq, whose worker
    processes are children of the command, and a crash takes them all.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> int | None:
        """The status this run exited with; None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def start(self) -> GuijuProcess:
        assert not self.alive, f"{self.name} is already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def output(self) -> str:
        """What this run (since the last start) has logged."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        """Block until this run has logged ``text``; fail if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if (status := self.exit_status()) is not None:
                raise AssertionError(f"{self.name} exited with status {status}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not log {text!r} within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 the process and every child it started."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self, timeout: float = 15.0) -> None:
        """A graceful stop (SIGTERM to the group), SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()


WORKER_READY = "Worker process is ready for action."


def worker_process(
    env: dict[str, str], log_dir: Path, *, threads: int = 4, name: str = "worker", direct: bool = False
) -> GuijuProcess:
    """``guiju worker`` with one Dramatiq process.

    ``direct`` runs what ``guiju worker`` execs (``dramatiq services.worker``) without its start-up
    checks (settings, schema version): half the start-up time, for tests that restart workers often.
    """
    args = ["--processes", "1", "--threads", str(threads)]
    command = [sys.executable, "-m", "dramatiq", "services.worker", *args] if direct else guiju_command("worker", *args)
    return GuijuProcess(name, command, {**env, "GUIJU_PROCESS": "worker"}, log_dir)


class WorkerZygote:
    """A process that has imported the worker (``tests.faults.worker_zygote``) and forks restarts.

    What a forked worker runs is what ``worker_process(..., direct=True)`` runs, from the same
    environment, in a session of its own that ``kill()`` SIGKILLs as a group; only the imports
    are done once instead of at every start.
    """

    def __init__(self, env: dict[str, str], *, threads: int = 4) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker_zygote", "--processes", "1", "--threads", str(threads)],
            cwd=ROOT,
            env={**env, "GUIJU_PROCESS": "worker"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def fork(self, log_path: Path) -> int:
        """A new worker logging to ``log_path``; its pid (and process group)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{log_path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise AssertionError(f"the worker zygote exited with status {self.proc.wait(timeout=10)}")
        return int(answer)

    def worker(self, log_dir: Path, *, name: str) -> ForkedWorker:
        return ForkedWorker(self, name, log_dir)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # its loop ends, and so does it
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ForkedWorker(GuijuProcess):
    """A worker forked by a :class:`WorkerZygote`: started, watched and killed like the others."""

    def __init__(self, zygote: WorkerZygote, name: str, log_dir: Path) -> None:
        super().__init__(name, [], {}, log_dir)
        self.zygote = zygote
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self.pid is not None and _running(self.pid)

    def exit_status(self) -> int | None:
        # The zygote's children are reaped by the kernel, their statuses with them: -1 says "gone".
        return None if self.pid is None or _running(self.pid) else -1

    def start(self) -> GuijuProcess:
        assert not self.alive, f"{self.name} is already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.pid = self.zygote.fork(self.log_path)
        self.starts += 1
        return self

    def kill(self) -> None:
        if self.pid is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _running(self.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.pid = None

    def stop(self, timeout: float = 15.0) -> None:
        if self.pid is not None and _running(self.pid):
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _running(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.kill()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def scheduler_process(env: dict[str, str], log_dir: Path, *, name: str = "scheduler") -> GuijuProcess:
    """``guiju scheduler``: the outbox relay and the timers."""
    return GuijuProcess(name, guiju_command("scheduler"), env, log_dir)


# ---------------------------------------------------------------- waiting


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    seconds: float,
    what: str,
    interval: float = 0.2,
    on_wait: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until ``done(value)``; fail with the last value after ``seconds``.

    ``on_wait`` runs between polls (e.g. :func:`requeue_dead_workers`).
    """
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not done after {seconds:.0f} s; last seen: {value!r}")
        if on_wait is not None:
            await asyncio.to_thread(on_wait)
        await asyncio.sleep(interval)
