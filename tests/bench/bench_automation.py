"""Runs on Redis + Postgres: "a record change committed -> an automation's action executed".

Latency: records are created at 200 per second (and, to see what the pipeline adds when it is not
saturated, at 20 per second), open loop, spread over several workspaces, each with one automation
"on record created: notify the owner"; for each one the time from the commit of the record to the
notification row (its ``created_at``, set inside the action's transaction) is measured. The commit's
time is the database's clock at the last statement of the record's transaction (its outbox row's
``created_at``, from ``clock_timestamp()``), not this process's clock when it sees the commit: with
many changes in flight, this process may resume a finished commit late, and a late stamp would
hide that much latency; p50 and p99 are reported, with where the time
goes: commit -> relayed (outbox ``dispatched_at``), relayed -> execution created (the hop through
the ``events`` queue), execution -> notification (the action). Target: p99 <= 100 ms at 200 per
second. The relay runs in ``guiju scheduler``, a process of its own, as in production, with the
default ``GUIJU_RELAY_INTERVAL_SECONDS`` and with a short one; the worker is ``guiju worker`` with
its default process count, and with one process.

Throughput: a backlog of record changes is relayed into Redis with no worker running, then one
``guiju worker`` process (``--processes 1``, default threads) starts, and the rate at which the
notifications appear between the 10th and the 90th percentile of the backlog is its sustained
events per second. The baseline, measured in the same run on the same Redis: a backlog of no-op
messages drained by one Dramatiq worker process with the same threads and middleware. The two
alternate over rounds (baseline then automations, automations then baseline, ...), each backlog
drained completely before the next round; the median of the rounds' ratios is reported.
Target: at least 0.3 of the baseline.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.app import create_app
from services.db import database, dispose_databases, set_database_url
from services.db.migrate import upgrade
from services.outbox import service as outbox
from services.settings import Settings
from tenants.base import new_id
from tests.bench.harness import (
    APP_ROLE,
    drop_database,
    round_order,
    run_async,
    runtime_url,
    server_env,
    superuser_url,
)
from tests.bench.noop_actor import NOOP_QUEUE, noop
from tests.conftest import Api, signup_body
from tests.faults.harness import WORKER_READY, GuijuProcess, RedisProcess, free_port, guiju_command

DB_NAME = "guiju_bench_automation"
SUPERUSER_URL = superuser_url(DB_NAME)
RUNTIME_URL = runtime_url(DB_NAME)
SECRET_KEY = "bench-automation-secret-" + "k" * 32

TENANTS = 8
RATE = 200.0  # events per second: the target's rate
LOW_RATE = 20.0  # well under one worker's capacity: what the pipeline itself adds
WARMUP_SECONDS = 3.0
MEASURE_SECONDS = 10.0
BACKLOG = 1500
NOOP_BACKLOG = 30_000
THROUGHPUT_ROUNDS = 3
WORKER_THREADS = 4  # the default GUIJU_WORKER_THREADS
DEFAULT_WORKER_PROCESSES = 2  # `guiju worker`'s default --processes
DEFAULT_RELAY_INTERVAL = "1.0"
SHORT_RELAY_INTERVAL = "0.02"
TARGET_P99_MS = 100.0
TARGET_RATIO = 0.3
WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class Workspace:
    tenant_id: uuid.UUID
    owner_id: uuid.UUID
    collection_id: uuid.UUID


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _env(redis_url: str, var_dir: Path, relay_interval: str) -> dict[str, str]:
    return server_env(
        {
            "GUIJU_DATABASE_URL": RUNTIME_URL,
            "GUIJU_MIGRATION_DATABASE_URL": SUPERUSER_URL,
            "GUIJU_REDIS_URL": redis_url,
            "GUIJU_SECRET_KEY": SECRET_KEY,
            "GUIJU_VAR_DIR": str(var_dir),
            "GUIJU_LOG_LEVEL": "INFO",  # the default: what production logs is part of the cost
            "GUIJU_RELAY_INTERVAL_SECONDS": relay_interval,
            "GUIJU_PROCESS": "worker",
        }
    )


def _worker(env: dict[str, str], log_dir: Path, processes: int = 1) -> GuijuProcess:
    return GuijuProcess(
        "worker",
        guiju_command("worker", "--processes", str(processes), "--threads", str(WORKER_THREADS)),
        env,
        log_dir,
    )


def _dramatiq_ready(process: GuijuProcess) -> None:
    process.wait_for_output(WORKER_READY, 120)


# ---------------------------------------------------------------- the raw round trip


def _drain_rate(sample: Callable[[], int], total: int, what: str) -> float:
    """Poll the remaining count until 0; the rate between 90% and 10% remaining, per second."""
    high, low = total * 0.9, total * 0.1
    t_high = t_low = None
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        remaining = sample()
        now = time.monotonic()
        if t_high is None and remaining <= high:
            t_high = now
        if t_low is None and remaining <= low:
            t_low = now
            break
        if now > deadline:
            raise RuntimeError(f"{what}: {remaining} of {total} still waiting after {WAIT_SECONDS:.0f} s")
        time.sleep(0.01)
    assert t_high is not None
    return (high - low) / max(t_low - t_high, 1e-6)


def measure_raw(redis_url: str, log_dir: Path) -> float:
    broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
    broker.declare_queue(NOOP_QUEUE)
    try:
        broker.flush(NOOP_QUEUE)  # nothing of an earlier round
        for _ in range(NOOP_BACKLOG):
            broker.enqueue(noop.message())
        env = server_env({"GUIJU_REDIS_URL": redis_url, "GUIJU_LOG_LEVEL": "WARNING"})
        worker = GuijuProcess(
            "noop-worker",
            [
                sys.executable,
                "-m",
                "dramatiq",
                "tests.bench.noop_actor",
                "--processes",
                "1",
                "--threads",
                str(WORKER_THREADS),
            ],
            env,
            log_dir,
        )
        worker.start()
        try:
            rate = _drain_rate(lambda: int(broker.do_qsize(NOOP_QUEUE)), NOOP_BACKLOG, "no-op messages")
            _drain_rate(lambda: int(broker.do_qsize(NOOP_QUEUE)), 1, "the last no-op messages")
        finally:
            worker.stop()
        return rate
    finally:
        broker.close()


# ---------------------------------------------------------------- workspaces and automations


def _settings(var_dir: Path) -> Settings:
    return Settings(
        var_dir=var_dir,
        database_url=RUNTIME_URL,
        migration_database_url=SUPERUSER_URL,
        secret_key=SECRET_KEY,
        base_url="http://guiju.bench",
        log_level="WARNING",
    )


async def prepare(var_dir: Path) -> list[Workspace]:
    app = create_app(_settings(var_dir))
    workspaces = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://guiju.bench"
    ) as client:
        for n in range(TENANTS):
            client.cookies.clear()
            api = Api(client)
            response = await api.post("/api/v1/auth/signup", signup_body(company_name=f"Automation bench {n}"))
            assert response.status_code == 201, response.text
            tenant_id, owner_id = uuid.UUID(response.json()["tenant"]["id"]), response.json()["user"]["id"]
            response = await api.post(
                "/api/v1/collections",
                {"key": "orders", "name": "Orders", "fields": [{"key": "n", "label": "N", "type": "number"}]},
            )
            assert response.status_code == 201, response.text
            collection_id = response.json()["id"]
            response = await api.post(
                "/api/v1/automations",
                {
                    "name": "Tell the owner about every order",
                    "trigger": {"type": "record_event", "collection_id": collection_id, "events": ["created"]},
                    "actions": [{"kind": "notify", "to": [owner_id], "title": "{{ record_id }}"}],
                },
            )
            assert response.status_code == 201, response.text
            workspaces.append(Workspace(tenant_id, uuid.UUID(owner_id), uuid.UUID(collection_id)))
    return workspaces


async def create_record(workspace: Workspace, n: int) -> uuid.UUID:
    """One record and its ``record.created`` event committed in one transaction; returns the record's
    id. The event's ``created_at`` is the database's clock at the transaction's last statement before
    the commit: what the latency is measured from.

    The generator writes what the records service commits for a new record (the row, the outbox
    event with the same payload, the NOTIFY that wakes the relays, under the tenant's RLS setting)
    in one round trip of plain SQL rather than through the service: the service's validation, ORM
    and audit chain would cost the generator more CPU than the pipeline under test gets on a small
    machine, and what is measured starts at the commit either way. Every value in the SQL is made
    here (ids, numbers), none comes from outside.
    """
    record_id, event_id = new_id(), new_id()
    payload = json.dumps(
        {
            "collection_id": str(workspace.collection_id),
            "collection_key": "orders",
            "record_id": str(record_id),
            "entity_id": None,
            "changed_fields": ["n"],
            "values": {"n": n},
            "before": None,
        }
    )
    tenant, owner = workspace.tenant_id, workspace.owner_id
    script = (
        "BEGIN;"
        f"SELECT set_config('app.tenant_id', '{tenant}', true), set_config('app.system_scope', 'off', true);"
        "INSERT INTO records (tenant_id, id, collection_id, values, version, created_by, updated_by, created_at,"
        f" updated_at) VALUES ('{tenant}', '{record_id}', '{workspace.collection_id}', '{{\"n\": {n}}}', 1,"
        f" '{owner}', '{owner}', now(), now());"
        "INSERT INTO outbox_events (id, tenant_id, type, payload, created_at, attempts, next_attempt_at)"
        f" VALUES ('{event_id}', '{tenant}', 'record.created', '{payload}', clock_timestamp(), 0, now());"
        f"NOTIFY {outbox.NOTIFY_CHANNEL};"
        "COMMIT;"
    )
    async with database().engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute(script)  # the simple query protocol: the whole script in one round trip
    return record_id


# ---------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    label: str
    count: int
    total: list[float]  # ms, per event
    relay: list[float]
    dispatch: list[float]
    action: list[float]

    def line(self) -> str:
        def p(values: list[float]) -> str:
            return f"p50 {_percentile(values, 0.5):7.1f}  p99 {_percentile(values, 0.99):7.1f}"

        return (
            f"{self.label}: {self.count} events\n"
            f"    commit -> action executed   {p(self.total)} ms\n"
            f"    commit -> relayed           {p(self.relay)} ms\n"
            f"    relayed -> execution        {p(self.dispatch)} ms\n"
            f"    execution -> action done    {p(self.action)} ms"
        )


async def _wait_for(probe: Callable[[], Awaitable[int]], expected: int, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while (seen := await probe()) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {seen} of {expected} after {WAIT_SECONDS:.0f} s")
        await asyncio.sleep(0.2)


async def _count_notifications(admin: AsyncEngine) -> int:
    async with admin.connect() as conn:
        return int((await conn.execute(text("select count(*) from notifications"))).scalar_one())


async def measure_latency(label: str, rate: float, workspaces: list[Workspace], admin: AsyncEngine) -> Latency:
    measured: set[uuid.UUID] = set()
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []
    before = await _count_notifications(admin)

    # At most this many changes in flight (the connection pool's size); beyond it the generator
    # falls behind its schedule, and says so.
    in_flight = asyncio.Semaphore(16)

    async def one(n: int, keep: bool) -> None:
        try:
            async with in_flight:
                record_id = await create_record(workspaces[n % len(workspaces)], n)
        except BaseException as exc:
            errors.append(exc)
            return
        if keep:
            measured.add(record_id)

    start = time.monotonic()
    total = int((WARMUP_SECONDS + MEASURE_SECONDS) * rate)
    for n in range(total):
        # Open loop: each change starts on schedule, whether or not the earlier ones are done.
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n, n >= WARMUP_SECONDS * rate))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{len(errors)} record changes failed; the first: {errors[0]!r}")
    late = time.monotonic() - start - total / rate
    if late > 1.0:
        print(f"    (the load generator fell {late:.1f} s behind its schedule)", flush=True)
    await _wait_for(lambda: _count_notifications(admin), before + total, f"{label}: notifications")

    async with admin.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "select n.title, o.created_at, o.dispatched_at, e.created_at, n.created_at from notifications n "
                    "join automation_executions e on split_part(n.dedupe_key, ':', 1) = e.id::text "
                    "join outbox_events o on o.id::text = e.event_id"
                )
            )
        ).all()
    by_record = {uuid.UUID(row[0]): row[1:] for row in rows}
    totals, relays, dispatches, actions = [], [], [], []
    for record_id in measured:
        committed_at, relayed, executed, done = by_record[record_id]
        totals.append((done - committed_at).total_seconds() * 1000)
        relays.append((relayed - committed_at).total_seconds() * 1000)
        dispatches.append((executed - relayed).total_seconds() * 1000)
        actions.append((done - executed).total_seconds() * 1000)
    return Latency(label, len(measured), totals, relays, dispatches, actions)


# ---------------------------------------------------------------- throughput


async def measure_throughput(
    workspaces: list[Workspace], admin: AsyncEngine, env: dict[str, str], log_dir: Path
) -> float:
    """A backlog relayed with no worker running, then drained by one worker process."""
    before = await _count_notifications(admin)
    scheduler = GuijuProcess("scheduler-backlog", guiju_command("scheduler"), env, log_dir).start()
    try:
        sem = asyncio.Semaphore(8)

        async def one(n: int) -> None:
            async with sem:
                await create_record(workspaces[n % len(workspaces)], n)

        await asyncio.gather(*(one(n) for n in range(BACKLOG)))

        async def relayed() -> int:
            async with admin.connect() as conn:
                pending = (
                    await conn.execute(text("select count(*) from outbox_events where dispatched_at is null"))
                ).scalar_one()
            return BACKLOG - int(pending)

        await _wait_for(relayed, BACKLOG, "backlog relayed")
        worker = _worker(env, log_dir).start()
        try:
            await asyncio.to_thread(_dramatiq_ready, worker)
            loop = asyncio.get_running_loop()

            def remaining() -> int:
                future = asyncio.run_coroutine_threadsafe(_count_notifications(admin), loop)
                return before + BACKLOG - future.result()

            rate = await asyncio.to_thread(_drain_rate, remaining, BACKLOG, "backlog actions")
            # The whole backlog done, so that nothing of it is counted in a later round.
            await _wait_for(lambda: _count_notifications(admin), before + BACKLOG, "the backlog's last actions")
            return rate
        finally:
            worker.stop()
    finally:
        scheduler.stop()


async def _throughput_rounds(
    redis_server: RedisProcess, workspaces: list[Workspace], admin: AsyncEngine, env: dict[str, str], log_dir: Path
) -> tuple[list[float], list[float]]:
    """The raw round trip's and the automations' rates, ``THROUGHPUT_ROUNDS`` of each, in turn first."""
    rates: dict[str, list[float]] = {"raw": [], "automations": []}
    print(f"{'round':<8}{'raw msg/s':>12}{'automation events/s':>22}", flush=True)
    for number in range(1, THROUGHPUT_ROUNDS + 1):
        for name in round_order(number, list(rates)):
            if name == "raw":
                rates[name].append(await asyncio.to_thread(measure_raw, redis_server.url, log_dir))
            else:
                rates[name].append(await measure_throughput(workspaces, admin, env, log_dir))
        print(f"{number:<8}{rates['raw'][-1]:>12.0f}{rates['automations'][-1]:>22.0f}", flush=True)
    print(
        f"(raw: a no-op actor, 1 worker process, {WORKER_THREADS} threads; automations: `guiju worker`, 1 process)",
        flush=True,
    )
    return rates["raw"], rates["automations"]


# ---------------------------------------------------------------- the run


def run() -> None:
    if shutil.which("redis-server") is None:
        raise RuntimeError("no redis-server binary: this benchmark starts a Redis of its own")
    with tempfile.TemporaryDirectory(prefix="guiju-bench-automation-") as tmp:
        var_dir = Path(tmp)
        redis_server = RedisProcess(free_port())
        redis_server.start()
        try:
            _run(redis_server, var_dir)
        finally:
            redis_server.stop()


def _run(redis_server: RedisProcess, var_dir: Path) -> None:
    run_async(drop_database(DB_NAME, recreate=True))
    upgrade(SUPERUSER_URL, APP_ROLE)
    os.environ.pop("GUIJU_REDIS_URL", None)
    set_database_url(RUNTIME_URL)
    try:
        run_async(_measure(redis_server, var_dir))
    finally:
        set_database_url(None)
        run_async(drop_database(DB_NAME, recreate=False))


async def _measure(redis_server: RedisProcess, var_dir: Path) -> None:
    admin = create_async_engine(SUPERUSER_URL)
    try:
        workspaces = await prepare(var_dir)
        print(f"{TENANTS} workspaces, one automation each (record created -> notify the owner)", flush=True)
        rounds = []
        for rate, interval, processes in (
            (RATE, DEFAULT_RELAY_INTERVAL, DEFAULT_WORKER_PROCESSES),
            (RATE, DEFAULT_RELAY_INTERVAL, 1),
            (LOW_RATE, DEFAULT_RELAY_INTERVAL, 1),
            (LOW_RATE, SHORT_RELAY_INTERVAL, 1),
        ):
            env = _env(redis_server.url, var_dir, interval)
            scheduler = GuijuProcess("scheduler", guiju_command("scheduler"), env, var_dir).start()
            worker = _worker(env, var_dir, processes).start()
            label = f"{rate:.0f} events/s, relay interval {interval} s, {processes} worker process(es)"
            try:
                await asyncio.to_thread(_dramatiq_ready, worker)
                rounds.append(await measure_latency(label, rate, workspaces, admin))
            finally:
                worker.stop()
                scheduler.stop()
            print(rounds[-1].line(), flush=True)
        env = _env(redis_server.url, var_dir, DEFAULT_RELAY_INTERVAL)
        raws, rates = await _throughput_rounds(redis_server, workspaces, admin, env, var_dir)
    finally:
        await admin.dispose()
        await dispose_databases()
    ratio = statistics.median(rate / raw for rate, raw in zip(rates, raws, strict=True))
    print(
        f"sustained automation throughput (1 worker process): median {statistics.median(rates):8.0f} events/s, "
        f"raw round trip median {statistics.median(raws):8.0f} msg/s; the rounds' ratios' median "
        f"{ratio:.2f} (target >= {TARGET_RATIO})"
    )
    default_p99 = _percentile(rounds[0].total, 0.99)
    print(
        f"p99 commit -> action at {RATE:.0f} events/s: {default_p99:.1f} ms with `guiju worker`'s default "
        f"{DEFAULT_WORKER_PROCESSES} processes (target <= {TARGET_P99_MS:.0f} ms), "
        f"{_percentile(rounds[1].total, 0.99):.1f} ms with 1; "
        f"at {LOW_RATE:.0f} events/s {_percentile(rounds[2].total, 0.99):.1f} ms with the default relay interval, "
        f"{_percentile(rounds[3].total, 0.99):.1f} ms with {SHORT_RELAY_INTERVAL} s"
    )
    verdicts = [
        f"latency {'met' if default_p99 <= TARGET_P99_MS else 'MISSED'}",
        f"throughput {'met' if ratio >= TARGET_RATIO else 'MISSED'}",
    ]
    print("targets: " + ", ".join(verdicts), flush=True)


__all__ = ["run"]
