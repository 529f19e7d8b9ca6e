"""Bearer tokens on Postgres: ``GET /api/v1/collections`` with a personal access token against the
same call with the session cookie of the same person, in the same workspace, in the same run.

A Bearer call does what a session call does (one statement finds the credential and binds the
workspace) and more: the person's membership is read, since a token outlives a change of role, and
the token's rate limit is counted (two tiers, as by default; set so high here that no call is
refused). The limit is counted where the server keeps it: in memory without Redis (one process),
in Redis otherwise (every API process shares it), so both are measured, each on its own server.

One client sends one request at a time, so a latency is the server's time (plus the loopback), and
the two credentials take turns request by request (session, Bearer, Bearer, session, ...): whatever
else the machine is doing falls on both alike. Each round is ``PAIRS`` calls of each. Reported per
limiter storage: p50, p95 and p99 of each credential over every round, the p99 of each round, and
the ratio of the p99s (Bearer/session). Target: at most 1.2.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.db.migrate import upgrade
from tests.bench.harness import (
    APP_ROLE,
    HOST,
    SESSION_COOKIE,
    Connection,
    Reply,
    Round,
    Server,
    fetch,
    on_fresh_database,
    print_load,
    request_bytes,
    run_async,
    runtime_url,
    server_env,
    signup_session,
    superuser_url,
)

DB_NAME = "guiju_bench_bearer"
SUPERUSER_URL = superuser_url(DB_NAME)
RUNTIME_URL = runtime_url(DB_NAME)
# A database of its own, so the broker's queues and the counters stay apart from other work's.
REDIS_URL = f"redis://{HOST}:6379/11"

PATH = "/api/v1/collections"
COLLECTIONS = 5
OTHER_TENANTS = 3  # with collections and tokens of their own, so the statements have rows to skip
WARMUP_PAIRS = 200
PAIRS = 2_000  # per round and credential: 20 calls beyond the p99 of each round, 60 of all
ROUNDS = 3
# Two tiers like the default (600/minute;20000/hour), so the limiter does the same work per call.
API_CLIENT_LIMITS = "100000000/minute;1000000000/hour"
TARGET_RATIO = 1.2
KINDS = ("session", "bearer")


@dataclass(frozen=True)
class Caller:
    session_cookie: str
    csrf: str
    bearer_token: str = ""

    def headers(self, kind: str) -> dict[str, str]:
        if kind == "bearer":
            return {"Authorization": f"Bearer {self.bearer_token}", "Accept": "application/json"}
        return {"Cookie": f"{SESSION_COOKIE}={self.session_cookie}", "Accept": "application/json"}


def _expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise RuntimeError(f"{what} answered {reply.status}: {reply.body[:500]!r}")
    return reply.json()


def _write(method: str, path: str, port: int, caller: Caller, body: Any) -> bytes:
    headers = {
        "Cookie": f"{SESSION_COOKIE}={caller.session_cookie}",
        "X-CSRF-Token": caller.csrf,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    return request_bytes(method, path, port, headers, json.dumps(body).encode())


async def _seed_workspace(port: int, n: int) -> Caller:
    """A workspace through the real sign-up, its collections, and its owner's personal token."""
    _tenant_id, cookie, csrf = await signup_session(port, n)
    caller = Caller(session_cookie=cookie, csrf=csrf)
    for c in range(COLLECTIONS):
        body = {
            "key": f"bench_{c}",
            "name": f"Bench collection {c}",
            "fields": [{"key": "title", "label": "Title", "type": "text"}],
        }
        _expect(await fetch(port, _write("POST", PATH, port, caller, body)), 201, "create collection")
    wanted: dict[str, Any] = {"name": "bench script", "scopes": ["records:read"], "expires_in_days": 30}
    token = _expect(await fetch(port, _write("POST", "/api/v1/personal-tokens", port, caller, wanted)), 201, "token")
    return Caller(session_cookie=cookie, csrf=csrf, bearer_token=token["access_token"])


async def _seed(port: int) -> Caller:
    callers = [await _seed_workspace(port, n) for n in range(1 + OTHER_TENANTS)]
    return callers[0]


# ---------------------------------------------------------------- load


def _turns(pairs: int) -> list[str]:
    """session, bearer, bearer, session, ...: each credential goes first in half of the pairs, so
    neither always follows the other."""
    turns: list[str] = []
    for pair in range(pairs):
        turns += list(KINDS) if pair % 2 == 0 else list(reversed(KINDS))
    return turns


async def _interleaved(conn: Connection, requests: dict[str, bytes], pairs: int) -> dict[str, list[float]]:
    """One request at a time, the credentials in turn; each one's latencies in seconds, sorted."""
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for kind in _turns(pairs):
        sent = time.perf_counter()
        reply = await conn.exchange(requests[kind])
        latencies[kind].append(time.perf_counter() - sent)
        if reply.status != 200:
            raise RuntimeError(f"{kind} answered {reply.status}: {reply.body[:500]!r}")
    for values in latencies.values():
        values.sort()
    return latencies


def _round(kind: str, number: int, latencies: list[float]) -> Round:
    return Round(target=kind, number=number, completed=len(latencies), seconds=sum(latencies), latencies=latencies)


def _row(label: str, kind: str, result: Round) -> str:
    p50, p95, p99 = (result.percentile_ms(q) for q in (0.50, 0.95, 0.99))
    return f"{label:<8}{kind:<9}{result.completed:>8}{p50:>10.2f}{p95:>10.2f}{p99:>10.2f}"


async def _measure(storage: str, server: Server, caller: Caller) -> float:
    """The rounds on ``server``; prints them and returns the p99 ratio (Bearer/session) over all."""
    requests = {kind: request_bytes("GET", PATH, server.port, caller.headers(kind)) for kind in KINDS}
    # Both credentials must be answered alike, or the comparison means nothing.
    answers = {kind: _expect(await fetch(server.port, requests[kind]), 200, kind) for kind in KINDS}
    if answers["session"] != answers["bearer"] or len(answers["session"]) != COLLECTIONS:
        raise RuntimeError(f"the answers differ or are not {COLLECTIONS} collections: {answers}")
    reply = await fetch(server.port, requests["bearer"])
    if not reply.header_values("ratelimit-limit"):
        raise RuntimeError("a Bearer answer without RateLimit-* headers: the limiter was not used")

    print(
        f"{PATH}, rate limit kept in {storage}: one request at a time, {PAIRS} of each credential per round, "
        f"in turn, after {WARMUP_PAIRS} of each to warm up",
        flush=True,
    )
    print(f"{'round':<8}{'kind':<9}{'calls':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}", flush=True)
    pooled: dict[str, list[float]] = {kind: [] for kind in KINDS}
    round_p99: dict[str, list[float]] = {kind: [] for kind in KINDS}
    conn = await Connection.open(server.port)
    try:
        await _interleaved(conn, requests, WARMUP_PAIRS)
        for number in range(1, ROUNDS + 1):
            latencies = await _interleaved(conn, requests, PAIRS)
            for kind in KINDS:
                result = _round(kind, number, latencies[kind])
                pooled[kind] += latencies[kind]
                round_p99[kind].append(result.p99_ms)
                print(_row(str(number), kind, result), flush=True)
    finally:
        conn.close()
    overall = {kind: _round(kind, 0, sorted(pooled[kind])) for kind in KINDS}
    for kind in KINDS:
        print(_row("all", kind, overall[kind]))
    ratio = overall["bearer"].p99_ms / overall["session"].p99_ms
    per_round = [b / s for b, s in zip(round_p99["bearer"], round_p99["session"], strict=True)]
    print(
        f"p99 ratio (Bearer/session), limit in {storage}: {ratio:.2f} over all rounds, "
        f"{statistics.median(per_round):.2f} the median of the rounds' (target <= {TARGET_RATIO:.2f}); "
        f"{'target met' if ratio <= TARGET_RATIO else 'target MISSED'}",
        flush=True,
    )
    return ratio


# ---------------------------------------------------------------- entry point


def run() -> None:
    """Recreate the bench database, serve the app twice (limits in memory, in Redis), seed, measure,
    report, drop the database."""
    on_fresh_database(DB_NAME, _serve_and_measure)


def _serve_and_measure() -> None:
    upgrade(SUPERUSER_URL, APP_ROLE)  # synchronous: it runs its own event loop
    print_load()
    with tempfile.TemporaryDirectory(prefix="guiju-bench-") as tmp, ExitStack() as stack:
        log_dir = Path(tmp)
        # One secret for both servers: a session cookie of one is good on the other.
        shared = {
            "GUIJU_DATABASE_URL": RUNTIME_URL,
            "GUIJU_SECRET_KEY": secrets.token_urlsafe(36),
            "GUIJU_LOG_LEVEL": "WARNING",
            "GUIJU_API_CLIENT_LIMITS": API_CLIENT_LIMITS,
        }
        servers = {
            "memory": Server("memory", ["services.asgi:app"], server_env({**shared, "GUIJU_VAR_DIR": tmp}), log_dir),
            "redis": Server(
                "redis",
                ["services.asgi:app"],
                server_env({**shared, "GUIJU_VAR_DIR": tmp, "GUIJU_REDIS_URL": REDIS_URL}),
                log_dir,
            ),
        }
        started: list[Server] = []
        try:
            for server in servers.values():
                stack.enter_context(server)
                started.append(server)
            # Seeded through the server without Redis: nothing it enqueues lands in a shared broker.
            caller = run_async(_seed(servers["memory"].port))
            ratios = {storage: run_async(_measure(storage, server, caller)) for storage, server in servers.items()}
        except Exception:
            for server in started:
                print(f"--- {server.name} server log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
    print(
        "Bearer/session p99: "
        + ", ".join(f"{ratio:.2f} with the limit in {storage}" for storage, ratio in ratios.items())
        + f" (target <= {TARGET_RATIO:.2f})",
        flush=True,
    )


if __name__ == "__main__":
    run()
