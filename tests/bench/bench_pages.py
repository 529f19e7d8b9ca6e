"""Pages on Postgres: the server time to render My tasks (``GET /tasks``, the frontline's home
screen) with 1,000 open tasks, against the JSON API call that lists the same first page
(``GET /api/v1/my/tasks?limit=20``, claimable steps included, as on the page).

One workspace; its owner holds 1,000 open steps, started through the API from four procedures:
600 assigned to the owner (who started the runs) and 400 that the owner's role may claim, with due
times overdue, due soon, later and none. The page does what the API call does, and more: the counts
of every view, the procedures for the filter, each step's number in its version, the HTML.

One client sends one request at a time, so a latency is the server's time (plus the loopback); each
round runs the targets in turn, in an order reversed every other round. A third target, the settings
page (``GET /me``), is the floor of any signed-in page: reading the viewer (session, person,
workspaces) and the layout, with nothing of My tasks. Reported: p50 and p95 of each, their medians
over the rounds, and the ratio of the p95s. Targets: the page's p95 at most 50 ms, and at most twice
the API's.

Then the same pages on a phone (:mod:`tests.bench.vitals`: slow 4G, the CPU four times slower,
360x740, nothing cached), each opened in a fresh browser and then used once: My tasks (its filters
opened), its claimable view (a task claimed, the card swapped in place), a run (its steps opened),
and the settings page as the floor. Reported per round and as medians: LCP, CLS, INP and the bytes
transferred; targets LCP at most 2.5 s, INP at most 200 ms, CLS at most 0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from services.db.migrate import upgrade
from tests.bench import vitals
from tests.bench.harness import (
    APP_ROLE,
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
    signup_session,
    superuser_url,
)

DB_NAME = "guiju_bench_pages"
SUPERUSER_URL = superuser_url(DB_NAME)
RUNTIME_URL = runtime_url(DB_NAME)

PAGE_PATH = "/tasks"
FLOOR_PATH = "/me"
API_PATH = "/api/v1/my/tasks?limit=20"
OPEN_TASKS = 1_000
CLIENTS = 1
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 8.0
ROUNDS = 3
STARTERS = 8
TARGET_P95_MS = 50.0
TARGET_RATIO = 2.0
VITALS_ROUNDS = 3

# (title, owner of the first step, minutes to its due time, how many runs)
PROCEDURES: tuple[tuple[str, dict[str, Any], int | None, int], ...] = (
    ("Order fulfilment", {"kind": "starter"}, 24 * 60, 300),
    ("Returns", {"kind": "starter"}, 0, 150),
    ("Supplier check", {"kind": "starter"}, None, 150),
    ("Picking", {"kind": "role", "role": "member"}, 120, 400),
)


class Owner:
    def __init__(self, token: str, csrf: str) -> None:
        self.token = token
        self.csrf = csrf

    def headers(self, accept: str = "application/json") -> dict[str, str]:
        return {
            "Cookie": f"{SESSION_COOKIE}={self.token}",
            "X-CSRF-Token": self.csrf,
            "Accept": accept,
            "Content-Type": "application/json",
        }


def _call(method: str, path: str, port: int, owner: Owner, body: Any = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    return request_bytes(method, path, port, owner.headers(), payload)


def _expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise RuntimeError(f"{what} answered {reply.status}: {reply.body[:500]!r}")
    return reply.json()


def _definition(owner: dict[str, Any], due_minutes: int | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n in range(1, 6):
        step: dict[str, Any] = {"kind": "task", "key": f"step_{n}", "title": f"Step {n}", "owner": owner}
        if due_minutes is not None:
            step["due"] = {"within": {"minutes": due_minutes, "business": False}}
        if n < 5:
            step["next"] = f"step_{n + 1}"
        steps.append(step)
    return {"start": "step_1", "steps": steps}


async def _publish(port: int, owner: Owner, n: int, title: str, definition: dict[str, Any]) -> str:
    body = {"key": f"bench_pages_{n}", "title": title, "definition": definition}
    procedure = _expect(await fetch(port, _call("POST", "/api/v1/procedures", port, owner, body)), 201, "create")
    path = f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish"
    _expect(await fetch(port, _call("POST", path, port, owner, {"change_note": "bench"})), 200, "publish")
    return str(procedure["id"])


async def _start_runs(port: int, owner: Owner, procedure_id: str, count: int) -> None:
    remaining = count

    async def starter(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            number = remaining
            remaining -= 1
            body = {"procedure_id": procedure_id, "title": f"A{number:05d}"}
            _expect(await conn.exchange(_call("POST", "/api/v1/runs", port, owner, body)), 201, "start run")

    conns = [await Connection.open(port) for _ in range(STARTERS)]
    try:
        await asyncio.gather(*(starter(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()


async def _seed(port: int) -> Owner:
    _tenant_id, token, csrf = await signup_session(port, 1)
    owner = Owner(token, csrf)
    for n, (title, step_owner, due, count) in enumerate(PROCEDURES, start=1):
        procedure_id = await _publish(port, owner, n, title, _definition(step_owner, due))
        await _start_runs(port, owner, procedure_id, count)
    return owner


def _row(label: str, target: str, rnd: Round | tuple[float, float, float]) -> str:
    figures = (rnd.throughput, rnd.p50_ms, rnd.percentile_ms(0.95)) if isinstance(rnd, Round) else rnd
    return f"{label:<8}{target:<8}{figures[0]:>10.1f}{figures[1]:>10.1f}{figures[2]:>10.1f}"


def _medians(rounds: list[Round], target: str) -> tuple[float, float, float]:
    mine = [r for r in rounds if r.target == target]
    return (
        statistics.median(r.throughput for r in mine),
        statistics.median(r.p50_ms for r in mine),
        statistics.median(r.percentile_ms(0.95) for r in mine),
    )


async def _measure(app: Server) -> tuple[Owner, str]:
    owner = await _seed(app.port)
    page_request = request_bytes("GET", PAGE_PATH, app.port, owner.headers("text/html"))
    api_request = request_bytes("GET", API_PATH, app.port, owner.headers())
    floor_request = request_bytes("GET", FLOOR_PATH, app.port, owner.headers("text/html"))
    if (await fetch(app.port, floor_request)).status != 200:
        raise RuntimeError(f"{FLOOR_PATH} does not answer 200")
    page = await fetch(app.port, page_request)
    if page.status != 200:
        raise RuntimeError(f"{PAGE_PATH} answered {page.status}: {page.body[:500]!r}")
    html = page.body.decode()
    cards = len(re.findall(r'<h2 class="task-run">', html))
    total = re.search(r'aria-current="page">[^<]*<span class="chip-count">([\d,]+)</span>', html)
    if cards != 20 or total is None or int(total.group(1).replace(",", "")) != OPEN_TASKS:
        raise RuntimeError(f"the page shows {cards} cards of {total.group(1) if total else '?'} tasks")
    items = _expect(await fetch(app.port, api_request), 200, API_PATH)["items"]
    if len(items) != 20:
        raise RuntimeError(f"the API lists {len(items)} tasks")
    print(
        f"my tasks page: {OPEN_TASKS:,} open tasks (600 assigned, 400 claimable), {CLIENTS} client, "
        f"GET {PAGE_PATH} ({len(page.body):,} bytes of HTML) vs GET {API_PATH}, floor GET {FLOOR_PATH}; "
        f"{WARMUP_SECONDS:.0f} s warm-up + {MEASURE_SECONDS:.0f} s measured per round"
    )
    print(f"{'round':<8}{'target':<8}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}", flush=True)
    rounds: list[Round] = []

    async def one(target: str, request: bytes, number: int) -> Round:
        return await load(
            target,
            number,
            app.port,
            constant_request(request),
            clients=CLIENTS,
            warmup_seconds=WARMUP_SECONDS,
            measure_seconds=MEASURE_SECONDS,
        )

    for number in range(1, ROUNDS + 1):
        targets = [("page", page_request), ("api", api_request), ("floor", floor_request)]
        for target, request in round_order(number, targets):
            rounds.append(await one(target, request, number))
            print(_row(str(number), target, rounds[-1]), flush=True)
    page_m, api_m = _medians(rounds, "page"), _medians(rounds, "api")
    print(_row("median", "page", page_m))
    print(_row("median", "api", api_m))
    floor_m = _medians(rounds, "floor")
    print(_row("median", "floor", floor_m))
    print(
        f"a signed-in page's floor ({FLOOR_PATH}) p95 is {floor_m[2] / api_m[2]:.2f} x the API's; "
        f"My tasks adds {page_m[2] - floor_m[2]:.1f} ms (p95) and {page_m[1] - floor_m[1]:.1f} ms (p50) to it"
    )
    ratio = page_m[2] / api_m[2]
    print(
        f"my tasks page p95 {page_m[2]:.1f} ms (target <= {TARGET_P95_MS:.0f}), "
        f"page/api p95 ratio {ratio:.2f} (target <= {TARGET_RATIO:.2f})"
    )
    met = page_m[2] <= TARGET_P95_MS and ratio <= TARGET_RATIO
    print("target met" if met else "target MISSED", flush=True)
    run_link = re.search(r'href="(/runs/[0-9a-f-]+)"', html)
    if run_link is None:
        raise RuntimeError("My tasks links to no run")
    return owner, run_link.group(1)


def _open_filters(page: Any) -> None:
    page.click(".task-filters summary")


def _claim(page: Any) -> None:
    page.click(".claim-button")
    page.wait_for_selector(".task-outcome")


def _open_steps(page: Any) -> None:
    page.click("details.flow > summary")


def _vitals_row(label: str, target: str, v: vitals.Vitals) -> str:
    return (
        f"{label:<8}{target:<8}{v.lcp_ms:>10.0f}{v.cls:>10.3f}{vitals.inp_text(v.inp_ms):>10}"
        f"{v.assets_bytes / 1024:>10.1f}{v.transferred_bytes / 1024:>10.1f}"
    )


def _measure_vitals(port: int, owner: Owner, run_path: str) -> None:
    if vitals.chromium() is None:
        print("phone vitals: skipped (no chromium binary)", flush=True)
        return
    base = f"http://127.0.0.1:{port}"
    cookies = [{"name": SESSION_COOKIE, "value": owner.token, "url": base}]
    targets: list[tuple[str, str, Any, str]] = [
        ("tasks", PAGE_PATH, _open_filters, "opening the filters"),
        ("claim", f"{PAGE_PATH}?view=claimable", _claim, "claiming a task"),
        ("run", run_path, _open_steps, "opening the steps"),
        ("floor", FLOOR_PATH, None, ""),
    ]
    print(
        f"phone vitals: {vitals.DOWN_BYTES_PER_SECOND * 8 / 1e6:.1f} Mbps down, "
        f"{vitals.UP_BYTES_PER_SECOND * 8 / 1e3:.0f} Kbps up, {vitals.RTT_MS} ms RTT, "
        f"CPU {vitals.CPU_SLOWDOWN}x slower, "
        f"{vitals.VIEWPORT['width']}x{vitals.VIEWPORT['height']}, nothing cached; tasks = GET {PAGE_PATH}, "
        f"claim = its claimable view, run = GET {run_path}, floor = GET {FLOOR_PATH}; {VITALS_ROUNDS} rounds"
    )
    print(
        f"{'round':<8}{'target':<8}{'LCP ms':>10}{'CLS':>10}{'INP ms':>10}{'JS+CSS KB':>10}{'all KB':>10}", flush=True
    )
    measured: dict[str, list[vitals.Vitals]] = {name: [] for name, *_ in targets}
    with vitals.SlowPhone(base, cookies) as phone:
        for number in range(1, VITALS_ROUNDS + 1):
            for name, path, interact, _what in round_order(number, targets):
                measured[name].append(phone.measure(path, interact))
                print(_vitals_row(str(number), name, measured[name][-1]), flush=True)
    medians = {name: vitals.median_vitals(found) for name, found in measured.items()}
    for name, median in medians.items():
        print(_vitals_row("median", name, median))
    floor = medians["floor"]
    for name, _path, interact, what in targets:
        if interact is None:
            continue
        v = medians[name]
        print(
            f"{name}: LCP {v.lcp_ms:.0f} ms (target <= {vitals.TARGET_LCP_MS:.0f}; "
            f"{v.lcp_ms / floor.lcp_ms:.2f} x the floor's), "
            f"INP {vitals.inp_text(v.inp_ms)} ms {what} (target <= {vitals.TARGET_INP_MS:.0f}), "
            f"CLS {v.cls:.3f} (target <= {vitals.TARGET_CLS})"
        )
    all_met = all(vitals.met(v) for v in medians.values())
    print("phone vitals target met" if all_met else "phone vitals target MISSED", flush=True)


def run() -> None:
    """Recreate the bench database, serve the app, seed, measure, report, drop the database."""
    on_fresh_database(DB_NAME, _serve_and_measure)


def _serve_and_measure() -> None:
    upgrade(SUPERUSER_URL, APP_ROLE)  # synchronous: it runs its own event loop
    print_load()
    with tempfile.TemporaryDirectory(prefix="guiju-bench-") as tmp, ExitStack() as stack:
        log_dir = Path(tmp)
        env = server_env(
            {
                "GUIJU_DATABASE_URL": RUNTIME_URL,
                "GUIJU_SECRET_KEY": secrets.token_urlsafe(36),
                "GUIJU_LOG_LEVEL": "WARNING",
                "GUIJU_VAR_DIR": str(log_dir / "var"),
            }
        )
        app = Server("app", ["services.asgi:app"], env, log_dir)
        try:
            stack.enter_context(app)
            owner, run_path = run_async(_measure(app))
            _measure_vitals(app.port, owner, run_path)
        except Exception:
            print(f"--- app server log (tail):\n{app.log_tail()}", file=sys.stderr)
            raise


if __name__ == "__main__":
    run()
