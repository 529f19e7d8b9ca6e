"""Authenticated ``GET /api/v1/members`` on Postgres under 50 concurrent clients, against a bare
Litestar endpoint running the same query on the same driver, in the same run.

Target: the app's throughput is at least 0.6 of the bare endpoint's. Each server is one uvicorn
worker in its own process, connected to the database as the runtime role (so Row-Level Security
applies to both); the load comes from this process over keep-alive connections. Each round runs
both, in turn first (bare then app, app then bare, ...), and the medians are reported, because a
small machine is noisy.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, get
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.db.migrate import upgrade
from tests.bench.harness import (
    APP_ROLE,
    SESSION_COOKIE,
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
    signup,
    superuser_url,
)

DB_NAME = "guiju_bench"
SUPERUSER_URL = superuser_url(DB_NAME)
RUNTIME_URL = runtime_url(DB_NAME)

PATH = "/api/v1/members"
CLIENTS = 50
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 10.0
ROUNDS = 3
POOL_SIZE = 10  # the app's default GUIJU_DB_POOL_SIZE
MEMBERS = 20  # in the measured tenant, owner included
OTHER_TENANTS = 4  # as large as the measured one, so the query has rows to filter out
TARGET_RATIO = 0.6

BARE_URL_ENV = "GUIJU_BENCH_DATABASE_URL"
BARE_TENANT_ENV = "GUIJU_BENCH_TENANT_ID"

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


# ---------------------------------------------------------------- database and seed data


@dataclass(frozen=True)
class Seeded:
    tenant_id: uuid.UUID
    session_token: str


async def _seed(port: int) -> Seeded:
    """Tenants through the real sign-up; their other members straight in SQL (invitations go by mail)."""
    tenants = [await signup(port, n) for n in range(1 + OTHER_TENANTS)]
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


def _row(label: str, target: str, throughput: float, p50: float, p99: float) -> str:
    return f"{label:<8}{target:<6}{throughput:>10.1f}{p50:>10.1f}{p99:>10.1f}"


async def _measure(app: Server, bare: Server, seeded: Seeded) -> list[Round]:
    # Both targets get the identical request bytes; the bare endpoint ignores the cookie.
    headers = {"Cookie": f"{SESSION_COOKIE}={seeded.session_token}", "Accept": "application/json"}
    requests = {
        "app": request_bytes("GET", PATH, app.port, headers),
        "bare": request_bytes("GET", PATH, bare.port, headers),
    }
    ports = {"app": app.port, "bare": bare.port}

    answers = {}
    for target in ("app", "bare"):
        reply = await fetch(ports[target], requests[target])
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
        for target in round_order(number, ["bare", "app"]):
            result = await load(
                target,
                number,
                ports[target],
                constant_request(requests[target]),
                clients=CLIENTS,
                warmup_seconds=WARMUP_SECONDS,
                measure_seconds=MEASURE_SECONDS,
            )
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


def run() -> None:
    """Recreate the bench database, serve both targets, seed, measure, report, drop the database."""
    rounds = on_fresh_database(DB_NAME, _serve_and_measure)
    _report(rounds)


def _serve_and_measure() -> list[Round]:
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
            # The production entry point, as `guiju api` serves it.
            app = Server("app", ["services.asgi:app"], app_env, log_dir)
            started.append(app)
            stack.enter_context(app)
            seeded = run_async(_seed(app.port))
            bare_env = server_env({BARE_URL_ENV: RUNTIME_URL, BARE_TENANT_ENV: str(seeded.tenant_id)})
            bare = Server("bare", ["--factory", "tests.bench.bench_members:create_bare_app"], bare_env, log_dir)
            started.append(bare)
            stack.enter_context(bare)
            return run_async(_measure(app, bare, seeded))
        except Exception:
            for server in started:
                print(f"--- {server.name} server log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
