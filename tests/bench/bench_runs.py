"""Runs on Postgres: complete-step throughput and p99 under 50 concurrent clients, and "my tasks" p99
with 1,000 and with 1,000,000 step instances in the database (10,000 tenants).

Complete step: one workspace, a published procedure of ten sequential task steps owned by whoever
starts the run, and runs started through the API beforehand, each client completing the steps of
its own runs (``POST /api/v1/runs/{run_id}/steps/{step_id}/complete``, one after the other). The
baseline, measured in the same run, is a bare Litestar endpoint on the same path and driver, as the
runtime role: the RLS settings, an UPDATE of the client's run by primary key, an INSERT of one outbox
row. Each round runs both, in turn first (bare then app, app then bare, ...), and the medians are
reported; no target, the figures are reported. Every completion of one workspace appends to the
workspace's hash-chained audit trail, whose head row is locked until commit, so the 50 clients'
completions are serialised there.

My tasks: ``GET /api/v1/my/tasks`` of one member with 20 open tasks, from 20 concurrent clients,
first with 1,000 step instances in the table (10 workspaces), then with 1,000,000 (10,000
workspaces: the same workspace with a long finished history, and 9,990 others of skewed sizes,
each with a few members, most steps done, some open, due times spread). The answer must be the same
at both sizes. Sizes cannot alternate, so: the small rounds, then the large ones, medians compared.
Target: p99 at 1,000,000 is at most 1.5 times p99 at 1,000. The seed goes straight to the tables
as the superuser (COPY), then ``VACUUM ANALYZE``; the plans of the app's own statement are printed
(one-off as the superuser, and prepared as the runtime role, the way the app runs it).

Each server is one uvicorn worker in its own process, connected as the runtime role (so Row-Level
Security applies); the load comes from this process over keep-alive connections.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, post
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.db.migrate import upgrade
from services.sops.engine import Actor
from services.sops.runs.service import TaskFilters, my_tasks_query
from tenants.base import new_id, utcnow
from tests.bench.harness import (
    APP_ROLE,
    PASSWORD,
    SESSION_COOKIE,
    Connection,
    Reply,
    Round,
    Server,
    constant_request,
    fetch,
    load,
    on_fresh_database,
    print_load,
    request_bytes,
    round_order,
    run_async,
    runtime_url,
    server_env,
    superuser_url,
)

DB_NAME = "guiju_bench_runs"
SUPERUSER_URL = superuser_url(DB_NAME)
RUNTIME_URL = runtime_url(DB_NAME)
POOL_SIZE = 10  # the app's default GUIJU_DB_POOL_SIZE

# Complete step
COMPLETE_CLIENTS = 50
COMPLETE_WARMUP_SECONDS = 2.0
COMPLETE_MEASURE_SECONDS = 10.0
COMPLETE_ROUNDS = 3
STEPS_PER_RUN = 10
CALIBRATION_SECONDS = 2.0
CALIBRATION_STEPS = 4 * STEPS_PER_RUN  # per client: more than two seconds can take
STARTERS = 8  # concurrent connections that start runs before a round

# My tasks
# The member's own steps: the 1M/1k comparison is about the assignee index (claimable steps are the
# My tasks page's case, in bench_pages).
TASKS_PATH = "/api/v1/my/tasks?include_claimable=false"
TASKS_CLIENTS = 20
TASKS_WARMUP_SECONDS = 2.0
TASKS_MEASURE_SECONDS = 8.0
TASKS_ROUNDS = 3
SMALL_ROWS = 1_000
LARGE_ROWS = 1_000_000
SMALL_TENANTS = 10
LARGE_TENANTS = 10_000
OPEN_TASKS = 20  # the measured member's, identical at both sizes
MEASURED_HISTORY_ROWS = 20_000  # the measured workspace's finished steps added at the large size
TARGET_P99_RATIO = 1.5
TASKS_INDEX = "ix_step_instances_tenant_id_assignee_id_status_due_at"

BARE_URL_ENV = "GUIJU_BENCH_DATABASE_URL"
BARE_TENANT_ENV = "GUIJU_BENCH_TENANT_ID"
# "complete" or "tasks" measures that half alone (the other takes minutes); unset: both.
PART_ENV = "GUIJU_BENCH_RUNS_PART"


# ---------------------------------------------------------------- the bare endpoint

BARE_RLS_SQL = text(
    "select set_config('app.tenant_id', :tenant_id, true), set_config('app.system_scope', :system, true)"
)
BARE_UPDATE_SQL = text(
    "update runs set lock_version = lock_version + 1, updated_at = :now "
    "where tenant_id = :tenant_id and id = :run_id returning lock_version"
)
BARE_OUTBOX_SQL = text(
    "insert into outbox_events (id, tenant_id, type, payload, actor, created_at, attempts, next_attempt_at) "
    "values (:id, :tenant_id, 'step.completed', :payload, :actor, :now, 0, :now)"
)


def create_bare_app() -> Litestar:
    """The complete route's path, no auth, no middleware: one minimal write transaction (uvicorn factory)."""
    tenant_id = uuid.UUID(os.environ[BARE_TENANT_ENV])
    rls_params = {"tenant_id": str(tenant_id), "system": "off"}
    engine = create_async_engine(os.environ[BARE_URL_ENV], pool_size=POOL_SIZE, max_overflow=POOL_SIZE)

    @post("/api/v1/runs/{run_id:uuid}/steps/{step_id:int}/complete", status_code=200)
    async def complete(run_id: uuid.UUID, step_id: int) -> dict[str, Any]:
        now = utcnow()
        async with engine.begin() as conn:
            await conn.execute(BARE_RLS_SQL, rls_params)
            lock_version = (
                await conn.execute(BARE_UPDATE_SQL, {"now": now, "tenant_id": tenant_id, "run_id": run_id})
            ).scalar_one()
            payload = json.dumps({"run_id": str(run_id), "step_id": step_id})
            await conn.execute(
                BARE_OUTBOX_SQL,
                {"id": new_id(), "tenant_id": tenant_id, "payload": payload, "actor": "bench", "now": now},
            )
        return {"id": str(run_id), "step_id": step_id, "lock_version": lock_version}

    return Litestar(route_handlers=[complete], on_shutdown=[engine.dispose], openapi_config=None, logging_config=None)


# ---------------------------------------------------------------- accounts and API calls


@dataclass(frozen=True)
class Account:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    session_token: str
    csrf_token: str

    def headers(self) -> dict[str, str]:
        return {
            "Cookie": f"{SESSION_COOKIE}={self.session_token}",
            "X-CSRF-Token": self.csrf_token,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }


async def _signup(port: int, n: int) -> Account:
    body = json.dumps(
        {
            "email": f"runs{n}@bench.example.com",
            "password": PASSWORD,
            "display_name": f"Runner {n}",
            "company_name": f"Runs Company {n}",
            "industry": "general",
            "locale": "en",
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    reply = await fetch(port, request_bytes("POST", "/api/v1/auth/signup", port, headers, body))
    if reply.status != 201:
        raise RuntimeError(f"signup answered {reply.status}: {reply.body[:500]!r}")
    answer = reply.json()
    for cookie in reply.header_values("set-cookie"):
        name, _, rest = cookie.partition("=")
        if name.strip() == SESSION_COOKIE:
            return Account(
                tenant_id=uuid.UUID(answer["tenant"]["id"]),
                user_id=uuid.UUID(answer["user"]["id"]),
                session_token=rest.split(";", 1)[0],
                csrf_token=answer["csrf_token"],
            )
    raise RuntimeError(f"signup set no {SESSION_COOKIE} cookie")


def _call(method: str, path: str, port: int, account: Account, body: Any = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    return request_bytes(method, path, port, account.headers(), payload)


def _expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise RuntimeError(f"{what} answered {reply.status}: {reply.body[:500]!r}")
    return reply.json()


# ---------------------------------------------------------------- complete step: seed


def _definition() -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n in range(1, STEPS_PER_RUN + 1):
        step: dict[str, Any] = {"kind": "task", "key": f"step_{n}", "title": f"Step {n}", "owner": {"kind": "starter"}}
        if n < STEPS_PER_RUN:
            step["next"] = f"step_{n + 1}"
        steps.append(step)
    return {"start": "step_1", "steps": steps}


async def _publish(port: int, account: Account) -> uuid.UUID:
    body = {"key": "bench_ten_tasks", "title": "Ten tasks", "definition": _definition()}
    procedure = _expect(
        await fetch(port, _call("POST", "/api/v1/procedures", port, account, body)), 201, "create procedure"
    )
    path = f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish"
    _expect(await fetch(port, _call("POST", path, port, account, {"change_note": "bench"})), 200, "publish")
    return uuid.UUID(procedure["id"])


def _ready_step(run: dict[str, Any]) -> dict[str, Any]:
    ready: list[dict[str, Any]] = [s for s in run["steps"] if s["status"] == "ready"]
    if len(ready) != 1:
        raise RuntimeError(f"expected one ready step, got {ready}")
    return ready[0]


async def _start_runs(port: int, account: Account, procedure_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """``count`` runs started through the API over a few connections; each one's first step is the caller's."""
    request = _call("POST", "/api/v1/runs", port, account, {"procedure_id": str(procedure_id)})
    started: list[uuid.UUID] = []
    remaining = count

    async def starter(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            run = _expect(await conn.exchange(request), 201, "start run")
            step = _ready_step(run)
            if step["id"] != 1 or step["assignee_id"] != str(account.user_id):
                raise RuntimeError(f"the first step is not the starter's: {step}")
            started.append(uuid.UUID(run["id"]))

    conns = [await Connection.open(port) for _ in range(min(STARTERS, count))]
    try:
        await asyncio.gather(*(starter(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return started


async def _probe(port: int, account: Account, procedure_id: uuid.UUID) -> None:
    """One run completed step by step: step ids go 1..10 and the run ends completed (what the load relies on)."""
    (run_id,) = await _start_runs(port, account, procedure_id, 1)
    for step_id in range(1, STEPS_PER_RUN + 1):
        path = f"/api/v1/runs/{run_id}/steps/{step_id}/complete"
        run = _expect(await fetch(port, _call("POST", path, port, account, {})), 200, "complete")
        if step_id < STEPS_PER_RUN and _ready_step(run)["id"] != step_id + 1:
            raise RuntimeError(f"after step {step_id} the ready step is {_ready_step(run)}")
    if run["status"] != "completed":
        raise RuntimeError(f"the probe run ended {run['status']}")


class StepQueues:
    """Each client's open steps, in the order it completes them (a run's steps one after the other)."""

    def __init__(self, port: int, account: Account, procedure_id: uuid.UUID) -> None:
        self.port = port
        self.account = account
        self.procedure_id = procedure_id
        self.queues: list[deque[tuple[uuid.UUID, int]]] = [deque() for _ in range(COMPLETE_CLIENTS)]
        self.taken = [0] * COMPLETE_CLIENTS

    def request_for(self, client: int) -> bytes:
        queue = self.queues[client]
        if not queue:
            raise RuntimeError(f"client {client} ran out of open steps: start more runs before a round")
        run_id, step_id = queue.popleft()
        self.taken[client] += 1
        return _call("POST", f"/api/v1/runs/{run_id}/steps/{step_id}/complete", self.port, self.account, {})

    async def top_up(self, per_client: int) -> int:
        """Start enough runs that every client has ``per_client`` open steps ahead; returns how many."""
        wanted = [max(0, math.ceil((per_client - len(q)) / STEPS_PER_RUN)) for q in self.queues]
        started = await _start_runs(self.port, self.account, self.procedure_id, sum(wanted)) if sum(wanted) else []
        runs = iter(started)
        for queue, count in zip(self.queues, wanted, strict=True):
            for _ in range(count):
                run_id = next(runs)
                queue.extend((run_id, step_id) for step_id in range(1, STEPS_PER_RUN + 1))
        self.taken = [0] * COMPLETE_CLIENTS
        return len(started)


def _row(label: str, target: str, throughput: float, p50: float, p99: float) -> str:
    return f"{label:<8}{target:<8}{throughput:>10.1f}{p50:>10.1f}{p99:>10.1f}"


def _medians(rounds: Sequence[Round], target: str) -> tuple[float, float, float]:
    mine = [r for r in rounds if r.target == target]
    return (
        statistics.median(r.throughput for r in mine),
        statistics.median(r.p50_ms for r in mine),
        statistics.median(r.p99_ms for r in mine),
    )


async def _measure_complete(app: Server, bare: Server, account: Account) -> None:
    procedure_id = await _publish(app.port, account)
    await _probe(app.port, account, procedure_id)
    steps = StepQueues(app.port, account, procedure_id)
    # The bare endpoint updates one run of each client's own, so that clients never wait on each other.
    bare_runs = await _start_runs(app.port, account, procedure_id, COMPLETE_CLIENTS)
    bare_requests = [
        _call("POST", f"/api/v1/runs/{run_id}/steps/1/complete", bare.port, account, {}) for run_id in bare_runs
    ]
    # A short unreported load tells how many steps a round consumes: each client needs about
    # throughput * window / clients of them; half again more are started before every round.
    await steps.top_up(CALIBRATION_STEPS)
    calibration = await load(
        "app",
        0,
        app.port,
        steps.request_for,
        clients=COMPLETE_CLIENTS,
        warmup_seconds=0.0,
        measure_seconds=CALIBRATION_SECONDS,
    )
    window = COMPLETE_WARMUP_SECONDS + COMPLETE_MEASURE_SECONDS
    per_client = math.ceil(calibration.throughput * window / COMPLETE_CLIENTS * 1.5) + STEPS_PER_RUN

    print(
        f"complete step: {COMPLETE_CLIENTS} clients in one workspace, each on its own runs of "
        f"{STEPS_PER_RUN} sequential task steps; {COMPLETE_WARMUP_SECONDS:.0f} s warm-up + "
        f"{COMPLETE_MEASURE_SECONDS:.0f} s measured per round; bare = RLS settings + UPDATE by key + "
        "INSERT outbox row"
    )
    print(f"{'round':<8}{'target':<8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}", flush=True)
    rounds: list[Round] = []

    async def bare_round(number: int) -> Round:
        return await load(
            "bare",
            number,
            bare.port,
            lambda client: bare_requests[client],
            clients=COMPLETE_CLIENTS,
            warmup_seconds=COMPLETE_WARMUP_SECONDS,
            measure_seconds=COMPLETE_MEASURE_SECONDS,
        )

    async def app_round(number: int) -> Round:
        nonlocal per_client
        await steps.top_up(per_client)
        measured = await load(
            "app",
            number,
            app.port,
            steps.request_for,
            clients=COMPLETE_CLIENTS,
            warmup_seconds=COMPLETE_WARMUP_SECONDS,
            measure_seconds=COMPLETE_MEASURE_SECONDS,
        )
        per_client = max(per_client, math.ceil(max(steps.taken) * 1.5) + STEPS_PER_RUN)
        return measured

    for number in range(1, COMPLETE_ROUNDS + 1):
        for one_round in round_order(number, [bare_round, app_round]):
            rounds.append(await one_round(number))
            done = rounds[-1]
            print(_row(str(number), done.target, done.throughput, done.p50_ms, done.p99_ms), flush=True)
    bare_m, app_m = _medians(rounds, "bare"), _medians(rounds, "app")
    print(_row("median", "bare", *bare_m))
    print(_row("median", "app", *app_m))
    print(
        f"complete step (app/bare): throughput {app_m[0] / bare_m[0]:.2f}, p50 {app_m[1] / bare_m[1]:.2f}, "
        f"p99 {app_m[2] / bare_m[2]:.2f} (no target: figures reported)",
        flush=True,
    )


# ---------------------------------------------------------------- my tasks: seed

RUN_COLUMNS = (
    "tenant_id",
    "id",
    "procedure_id",
    "version_id",
    "version_number",
    "status",
    "title",
    "started_by",
    "started_at",
    "finished_at",
    "state",
    "lock_version",
    "created_at",
    "updated_at",
)
STEP_COLUMNS = (
    "tenant_id",
    "run_id",
    "step_id",
    "procedure_id",
    "run_title",
    "key",
    "title",
    "kind",
    "status",
    "optional",
    "assignee_id",
    "role",
    "ready_at",
    "due_at",
    "overdue_notified_at",
    "finished_at",
    "finished_by",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class Workspace:
    tenant_id: uuid.UUID
    members: tuple[uuid.UUID, ...]
    procedures: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class OpenStep:
    """The open step a running run ends with: whose (or a role's), in which state, due when."""

    assignee: uuid.UUID | None
    status: str = "ready"
    due_at: datetime | None = None
    role: str | None = None


@dataclass
class Seed:
    """Rows for ``runs`` and ``step_instances`` in COPY order, generated run by run."""

    now: datetime
    rng: random.Random
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)

    def run(self, ws: Workspace, done: int, open_step: OpenStep | None = None) -> None:
        """A run with ``done`` finished steps and, when running, one open step after them."""
        run_id = new_id()
        procedure_id = self.rng.choice(ws.procedures)
        title = f"Order {self.rng.randrange(100_000)}"
        started_by = self.rng.choice(ws.members)
        # Finished work is spread over the last year; running runs started within the last weeks.
        age = timedelta(days=self.rng.uniform(20, 365) if open_step is None else self.rng.uniform(0, 20))
        started = self.now - age
        moment = started
        for step_id in range(1, done + 1):
            finished = moment + timedelta(hours=self.rng.uniform(0.2, 8))
            worker = self.rng.choice(ws.members)
            status = "skipped" if self.rng.random() < 0.03 else "done"
            self.steps.append(
                (
                    ws.tenant_id,
                    run_id,
                    step_id,
                    procedure_id,
                    title,
                    f"step_{step_id}",
                    f"Step {step_id}",
                    "task",
                    status,
                    False,
                    worker,
                    None,
                    moment,
                    moment + timedelta(hours=24),
                    None,
                    finished,
                    worker,
                    moment,
                    finished,
                )
            )
            moment = finished
        if open_step is not None:
            step_id = done + 1
            due, notified = open_step.due_at, None
            if due is not None and due < self.now:
                notified = due  # the scheduler has already told: no timer left
            self.steps.append(
                (
                    ws.tenant_id,
                    run_id,
                    step_id,
                    procedure_id,
                    title,
                    f"step_{step_id}",
                    f"Step {step_id}",
                    "task",
                    open_step.status,
                    False,
                    open_step.assignee,
                    open_step.role,
                    moment,
                    due,
                    notified,
                    None,
                    None,
                    moment,
                    moment,
                )
            )
        status = "running" if open_step is not None else "completed"
        finished_at = None if open_step is not None else moment
        self.runs.append(
            (
                ws.tenant_id,
                run_id,
                procedure_id,
                procedure_id,
                1,
                status,
                title,
                started_by,
                started,
                finished_at,
                "{}",
                done + 2,
                started,
                moment,
            )
        )

    def fill(self, ws: Workspace, rows: int, running_share: float = 0.1) -> None:
        """Runs of ``ws`` adding exactly ``rows`` step instances: most finished, some running."""
        while rows > 0:
            if running_share == 0 or (rows >= STEPS_PER_RUN and self.rng.random() >= running_share):
                done = min(rows, STEPS_PER_RUN)
                self.run(ws, done)
                rows -= done
                continue
            done = min(self.rng.randrange(STEPS_PER_RUN), rows - 1)
            due = self.now + timedelta(hours=self.rng.uniform(-72, 14 * 24)) if self.rng.random() < 0.8 else None
            if self.rng.random() < 0.15:
                open_step = OpenStep(assignee=None, due_at=due, role="member")
            else:
                status = "in_progress" if self.rng.random() < 0.3 else "ready"
                open_step = OpenStep(assignee=self.rng.choice(ws.members), status=status, due_at=due)
            self.run(ws, done, open_step)
            rows -= done + 1


def _workspace(rng: random.Random, tenant_id: uuid.UUID, members: Sequence[uuid.UUID] = ()) -> Workspace:
    extra = rng.randint(2, 5) - len(members)
    return Workspace(
        tenant_id=tenant_id,
        members=(*members, *(new_id() for _ in range(max(0, extra)))),
        procedures=tuple(new_id() for _ in range(3)),
    )


def _measured_rows(seed: Seed, ws: Workspace, user_id: uuid.UUID, rows: int) -> None:
    """The measured member's ``OPEN_TASKS`` open steps (two without a due time, a few overdue),
    then the rest of the workspace's ``rows``: colleagues' open steps, claimable ones, history."""
    colleagues = [m for m in ws.members if m != user_id]
    for i in range(OPEN_TASKS):
        due = None if i in (5, 12) else seed.now + timedelta(hours=7 * (i - 3) + 0.5)
        status = "in_progress" if i % 4 == 0 else "ready"
        seed.run(ws, i % 5, OpenStep(assignee=user_id, status=status, due_at=due))
    for i in range(15):
        due = seed.now + timedelta(hours=5 * i - 20)
        seed.run(ws, 2, OpenStep(assignee=colleagues[i % len(colleagues)], due_at=due))
    for i in range(5):
        seed.run(ws, 0, OpenStep(assignee=None, due_at=seed.now + timedelta(hours=3 * i), role="member"))
    written = sum(1 for s in seed.steps if s[0] == ws.tenant_id)
    seed.fill(ws, rows - written, running_share=0.0)


async def _copy(engine: AsyncEngine, seed: Seed, tenants: Sequence[Workspace]) -> None:
    """Tenants, members (users and memberships), runs and step instances, by COPY as the superuser."""
    now = seed.now
    tenant_rows = [
        (ws.tenant_id, f"bench-{ws.tenant_id.hex}", "Bench", "general", "UTC", "en", "active", now) for ws in tenants
    ]
    user_rows = [
        (m, f"{m.hex}@bench.example.com", "!", "Member", "en", now, now, now) for ws in tenants for m in ws.members
    ]
    member_rows = [(ws.tenant_id, m, "member", now) for ws in tenants for m in ws.members]
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        async with raw.transaction():
            await raw.copy_records_to_table(
                "tenants",
                records=tenant_rows,
                columns=["id", "slug", "name", "industry", "timezone", "locale", "status", "created_at"],
            )
            await raw.copy_records_to_table(
                "users",
                records=user_rows,
                columns=[
                    "id",
                    "email",
                    "password_hash",
                    "display_name",
                    "locale",
                    "email_verified_at",
                    "password_changed_at",
                    "created_at",
                ],
            )
            await raw.copy_records_to_table(
                "memberships", records=member_rows, columns=["tenant_id", "user_id", "role", "created_at"]
            )
            await raw.copy_records_to_table("runs", records=seed.runs, columns=list(RUN_COLUMNS))
            await raw.copy_records_to_table("step_instances", records=seed.steps, columns=list(STEP_COLUMNS))


async def _count_and_vacuum(engine: AsyncEngine) -> int:
    # VACUUM so that autovacuum does not start in a measured round, ANALYZE for the planner, and a
    # CHECKPOINT so that the seed's dirty pages are not written out during one.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("vacuum (analyze) runs, step_instances, tenants, users, memberships"))
        await conn.execute(text("checkpoint"))
        return int((await conn.execute(text("select count(*) from step_instances"))).scalar_one())


def _skewed_sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """``count`` workspace sizes (step instances) summing to ``total``: many small, a few large."""
    weights = [rng.paretovariate(1.3) for _ in range(count)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    # Rounding leaves a small difference: spread it over the largest workspaces.
    difference = total - sum(sizes)
    order = sorted(range(count), key=lambda i: sizes[i], reverse=True)
    step = 1 if difference > 0 else -1
    i = 0
    while difference != 0:
        index = order[i % count]
        if sizes[index] + step >= 1:
            sizes[index] += step
            difference -= step
        i += 1
    return sizes


def _tasks_query(account: Account) -> Any:
    return my_tasks_query(account.tenant_id, Actor(user_id=account.user_id, role="owner"), TaskFilters(), limit=50)


async def _explain(engine: AsyncEngine, account: Account) -> str:
    """The plan of the app's own "my tasks" statement for the measured member (run as the superuser)."""
    sql = str(_tasks_query(account).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
    async with engine.connect() as conn:
        rows = (await conn.execute(text("explain (analyze, buffers, costs off) " + sql))).all()
    return "\n".join(str(r[0]) for r in rows)


def _literal(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


async def _prepared_plan(account: Account) -> str:
    """The plan the app's connection runs: its statement prepared (as asyncpg does) and run a few
    times as the runtime role under Row-Level Security, with the app's ``plan_cache_mode``; after
    five runs Postgres would otherwise switch to a generic plan that ignores the caller's skew."""
    compiled = _tasks_query(account).compile(
        dialect=postgresql_asyncpg.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"render_postcompile": True},
    )
    assert compiled.positiontup is not None
    values = ", ".join(_literal(compiled.params[name]) for name in compiled.positiontup)
    engine = create_async_engine(RUNTIME_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(BARE_RLS_SQL, {"tenant_id": str(account.tenant_id), "system": "off"})
            await conn.execute(text("set local plan_cache_mode = force_custom_plan"))
            await conn.execute(text("prepare bench_my_tasks as " + str(compiled)))
            for _ in range(6):
                await conn.execute(text(f"execute bench_my_tasks({values})"))
            explain = text(f"explain (analyze, buffers, costs off) execute bench_my_tasks({values})")
            rows = (await conn.execute(explain)).all()
            await conn.execute(text("deallocate bench_my_tasks"))
    finally:
        await engine.dispose()
    return "\n".join(str(r[0]) for r in rows)


# ---------------------------------------------------------------- my tasks: measure


def _task_keys(reply: Reply) -> list[tuple[str, int]]:
    answer = _expect(reply, 200, TASKS_PATH)
    return [(t["run_id"], t["step_id"]) for t in answer["items"]]


async def _task_rounds(app: Server, request: bytes, size: str) -> list[Round]:
    rounds: list[Round] = []
    for number in range(1, TASKS_ROUNDS + 1):
        result = await load(
            size,
            number,
            app.port,
            constant_request(request),
            clients=TASKS_CLIENTS,
            warmup_seconds=TASKS_WARMUP_SECONDS,
            measure_seconds=TASKS_MEASURE_SECONDS,
        )
        rounds.append(result)
        print(_row(str(number), size, result.throughput, result.p50_ms, result.p99_ms), flush=True)
    return rounds


async def _measure_tasks(app: Server) -> None:
    engine = create_async_engine(SUPERUSER_URL)
    try:
        # The complete-step runs leave: the table holds only what this part seeds.
        async with engine.begin() as conn:
            await conn.execute(text("truncate runs, step_instances, run_exceptions, run_comments"))
        account = await _signup(app.port, 2)
        rng = random.Random(20240601)
        seed = Seed(now=utcnow(), rng=rng)
        measured = _workspace(rng, account.tenant_id, [account.user_id])
        # The measured workspace has ~200 of the 1,000; nine others share the rest.
        _measured_rows(seed, measured, account.user_id, 200)
        others = [_workspace(rng, new_id()) for _ in range(SMALL_TENANTS - 1)]
        for ws, size in zip(others, _skewed_sizes(rng, len(others), SMALL_ROWS - 200), strict=True):
            seed.fill(ws, size)
        # The measured workspace exists already (sign-up): only its members and rows are new.
        await _copy_members(engine, measured)
        await _copy(engine, seed, others)
        small_count = await _count_and_vacuum(engine)

        request = request_bytes("GET", TASKS_PATH, app.port, account.headers())
        small_answer = _task_keys(await fetch(app.port, request))
        if len(small_answer) != OPEN_TASKS:
            raise RuntimeError(f"expected {OPEN_TASKS} tasks, got {len(small_answer)}")
        print(
            f"my tasks: {TASKS_CLIENTS} clients, GET {TASKS_PATH} of one member with {OPEN_TASKS} open tasks; "
            f"{TASKS_WARMUP_SECONDS:.0f} s warm-up + {TASKS_MEASURE_SECONDS:.0f} s measured per round; "
            f"small = {small_count:,} step instances in {SMALL_TENANTS} workspaces"
        )
        print(f"{'round':<8}{'target':<8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}", flush=True)
        rounds = await _task_rounds(app, request, "1k")

        grow = Seed(now=seed.now, rng=rng)
        grow.fill(measured, MEASURED_HISTORY_ROWS, running_share=0.0)
        new_tenants = [_workspace(rng, new_id()) for _ in range(LARGE_TENANTS - SMALL_TENANTS)]
        remaining = LARGE_ROWS - small_count - MEASURED_HISTORY_ROWS
        for ws, size in zip(new_tenants, _skewed_sizes(rng, len(new_tenants), remaining), strict=True):
            grow.fill(ws, size)
        print(
            f"growing to {LARGE_ROWS:,} step instances in {LARGE_TENANTS:,} workspaces "
            f"({len(grow.runs):,} runs more) ...",
            flush=True,
        )
        await _copy(engine, grow, new_tenants)
        del grow
        large_count = await _count_and_vacuum(engine)
        if _task_keys(await fetch(app.port, request)) != small_answer:
            raise RuntimeError("the measured member's tasks differ between the two sizes")
        plan = await _explain(engine, account)
        print(f"large = {large_count:,} step instances; plan of the app's statement (superuser, same predicate):")
        print("    " + plan.replace("\n", "\n    "), flush=True)
        prepared = await _prepared_plan(account)
        print("plan of the prepared statement after six runs (runtime role, RLS, the app's plan_cache_mode):")
        print("    " + prepared.replace("\n", "\n    "), flush=True)
        for name, text_of_plan in (("the plan", plan), ("the prepared statement's plan", prepared)):
            if TASKS_INDEX not in text_of_plan:
                print(f"WARNING: {name} does not use {TASKS_INDEX}", flush=True)
        rounds += await _task_rounds(app, request, "1M")
    finally:
        await engine.dispose()
    small_m, large_m = _medians(rounds, "1k"), _medians(rounds, "1M")
    print(_row("median", "1k", *small_m))
    print(_row("median", "1M", *large_m))
    ratio = large_m[2] / small_m[2]
    print(f"my tasks p99 ratio (1M/1k): {ratio:.2f} (target <= {TARGET_P99_RATIO:.2f})")
    print("target met" if ratio <= TARGET_P99_RATIO else "target MISSED", flush=True)


async def _copy_members(engine: AsyncEngine, ws: Workspace) -> None:
    """The measured workspace's members besides its owner, as users and memberships."""
    now = utcnow()
    async with engine.begin() as conn:
        for member in ws.members[1:]:
            await conn.execute(
                text(
                    "insert into users (id, email, password_hash, display_name, locale, email_verified_at, "
                    "password_changed_at, created_at) values (:id, :email, '!', 'Member', 'en', :now, :now, :now)"
                ),
                {"id": member, "email": f"{member.hex}@bench.example.com", "now": now},
            )
            await conn.execute(
                text(
                    "insert into memberships (tenant_id, user_id, role, created_at) "
                    "values (:tenant_id, :user_id, 'member', :now)"
                ),
                {"tenant_id": ws.tenant_id, "user_id": member, "now": now},
            )


# ---------------------------------------------------------------- entry point


def run() -> None:
    """Recreate the bench database, serve both targets, seed, measure, report, drop the database."""
    on_fresh_database(DB_NAME, _serve_and_measure)


def _serve_and_measure() -> None:
    upgrade(SUPERUSER_URL, APP_ROLE)  # synchronous: it runs its own event loop
    print_load()
    with tempfile.TemporaryDirectory(prefix="guiju-bench-") as tmp, ExitStack() as stack:
        log_dir = Path(tmp)
        started: list[Server] = []
        try:
            app_env = server_env(
                {
                    "GUIJU_DATABASE_URL": RUNTIME_URL,
                    "GUIJU_SECRET_KEY": secrets.token_urlsafe(36),
                    "GUIJU_LOG_LEVEL": "WARNING",
                    "GUIJU_VAR_DIR": str(log_dir / "var"),
                }
            )
            app = Server("app", ["services.asgi:app"], app_env, log_dir)
            started.append(app)
            stack.enter_context(app)
            account = run_async(_signup(app.port, 1))
            bare_env = server_env({BARE_URL_ENV: RUNTIME_URL, BARE_TENANT_ENV: str(account.tenant_id)})
            bare = Server("bare", ["--factory", "tests.bench.bench_runs:create_bare_app"], bare_env, log_dir)
            started.append(bare)
            stack.enter_context(bare)
            part = os.environ.get(PART_ENV, "")
            if part in ("", "complete"):
                run_async(_measure_complete(app, bare, account))
            bare.stop()
            if part in ("", "tasks"):
                run_async(_measure_tasks(app))
        except Exception:
            for server in started:
                print(f"--- {server.name} server log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise


if __name__ == "__main__":
    run()
