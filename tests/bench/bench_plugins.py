"""What the plugin host adds to a plugin action's call, in process and over HTTP.

In process: a no-op action called through the host against a plain Python call of the same no-op.
(a) The host's call machinery alone: a ``HostContext`` and an ``ActionCall`` built and
``registry.call_plugin`` awaited, as ``host.call_action`` does for every call, for an ``async def``
handler and for a plain ``def`` one (which the host runs in a worker thread), minus the plain
``await handler(call)`` / ``handler(call)``. Target: at most 50 µs per call for the host's own
machinery, the async handler's figure (the sync one adds a worker thread's round trip; it is shown
against the target too). (b) For information, the whole ``host.call_action``: besides (a), the
installation's and the version's rows read from an embedded SQLite database (a fresh session's
reads: nothing is in the session's identity map) and the input and output checked against the
action's JSON Schemas.

Remote: (a) the host's remote call (``host.call_remote``: the body built, signed with HMAC, POSTed,
the answer parsed and checked against the output schema) against a bare HTTP round trip (the same
JSON body POSTed unsigned by the same keep-alive client) to the same local plugin service, which
runs in its own process and verifies every signed request as a partner's service must. Sequential
calls. Target: at most 1.3 times the bare round trip. (b) For information, the whole
``host.call_action`` of the remote action, which adds the installation's read (a fresh session's)
and the input's check.

Rounds alternate the baseline and the host and the medians are reported, because a small shared
machine is noisy.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

from guiju_sdk import ActionCall, registry, remote
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts.models import User
from services.db import dispose_databases, open_session, set_database_url
from services.db.migrate import upgrade
from services.marketplace import configuration as marketplace_configuration
from services.marketplace import host
from services.marketplace import service as marketplace
from services.marketplace.context import _client
from services.marketplace.models import PluginInstallation
from services.settings import Settings
from tenants.context import system_scope, tenant_scope
from tenants.provisioning import create_tenant
from tests.bench.harness import HOST, Server, round_order, run_async, server_env
from tests.plugin_support import deployed, list_remote_version, plugin_module, remote_action

ROUNDS = 7
MACHINERY_CALLS = 20_000  # per round, (a)
FULL_CALLS = 2_000  # per round, (b)
REMOTE_CALLS = 1_000  # per round
WARMUP_CALLS = 200
TARGET_OVERHEAD_US = 50.0
TARGET_REMOTE_RATIO = 1.3

PLUGIN = "bench-noop"
REMOTE_PLUGIN = "bench-remote-noop"
VERSION = "1.0.0"
ASYNC_ACTION, SYNC_ACTION = "noop", "noop_sync"
TIME_LIMIT_MS = 2_000
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {"type": "object"}
PAYLOAD: dict[str, Any] = {"n": 1}
IDEMPOTENCY_KEY = "bench-execution:0"
EXECUTION_ID = str(uuid.UUID(int=1))
LABELS = {"zh-CN": "空操作", "en": "No-op"}

# The remote plugin's service (its own process): the signing secret comes in this variable.
SECRET_VARIABLE = "BENCH_PLUGIN_SIGNING_SECRET"
SECRET = "bench-plugins-signing-secret-" + "s" * 20
BARE_PATH = "/bare"
ANSWER = json.dumps({"output": {}}).encode()


# ---------------------------------------------------------------- the plugins


async def noop(call: ActionCall) -> dict[str, Any]:
    return {}


def noop_sync(call: ActionCall) -> dict[str, Any]:
    return {}


def register_actions(register: Any) -> None:
    for name, handler in ((ASYNC_ACTION, noop), (SYNC_ACTION, noop_sync)):
        register(
            name,
            handler,
            labels=LABELS,
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
            time_limit_ms=TIME_LIMIT_MS,
        )


@cache
def _served_secret() -> bytes:
    return os.environ[SECRET_VARIABLE].encode()


_nonces = remote.NonceCache()

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def remote_plugin_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The remote plugin (an ASGI app for uvicorn): ``POST .../actions/{name}`` signed, verified
    with the SDK as a partner's service must, and ``POST /bare`` unsigned; both answer
    ``{"output": {}}``."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, answer = 200, ANSWER
    if scope["path"] != BARE_PATH:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            remote.verify(_served_secret(), headers, body, nonces=_nonces)
        except remote.SignatureInvalid as exc:
            status, answer = 401, json.dumps({"error": {"message": exc.reason}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


# ---------------------------------------------------------------- the workspace


async def _create_workspace() -> uuid.UUID:
    """A tenant with both plugins installed (no scopes, no settings)."""
    with system_scope():
        async with open_session(system=True) as db:
            owner = User(email="owner@plugins.bench.example.com", password_hash="-", display_name="Owner")
            db.add(owner)
            await db.flush()
            tenant = await create_tenant(
                db,
                slug="plugins-bench",
                name="Plugins bench",
                industry="general",
                timezone="Asia/Shanghai",
                locale="en",
                owner_id=owner.id,
            )
            tenant_id = tenant.id
    with tenant_scope(tenant_id):
        async with open_session(tenant_id) as db:
            for plugin in (PLUGIN, REMOTE_PLUGIN):
                db.add(
                    PluginInstallation(
                        tenant_id=tenant_id,
                        plugin=plugin,
                        version=VERSION,
                        granted_scopes=[],
                        config={},
                        secrets={},
                    )
                )
    return tenant_id


# ---------------------------------------------------------------- measuring


def _plain_call() -> ActionCall:
    return ActionCall(
        input=PAYLOAD, idempotency_key=IDEMPOTENCY_KEY, tenant_id=str(uuid.UUID(int=2)), execution_id=EXECUTION_ID
    )


async def _plain_async(calls: int) -> int:
    """``calls`` plain awaits of the no-op; ns."""
    call = _plain_call()
    started = time.perf_counter_ns()
    for _ in range(calls):
        await noop(call)
    return time.perf_counter_ns() - started


async def _plain_sync(calls: int) -> int:
    call = _plain_call()
    started = time.perf_counter_ns()
    for _ in range(calls):
        noop_sync(call)
    return time.perf_counter_ns() - started


def _machinery(
    db: AsyncSession, installation: PluginInstallation, version: host.RunnableVersion, action: str
) -> Callable[[int], Awaitable[int]]:
    """What ``host.call_action`` does around the handler of an in-process action: the context,
    the call, ``registry.call_plugin`` (a coroutine awaited, a plain function in a worker thread)."""
    loaded = marketplace.loaded_plugin(PLUGIN)
    assert loaded is not None
    spec = loaded[1].actions[action]

    async def measure(calls: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(calls):
            context = host.HostContext(db, installation, version.scopes, IDEMPOTENCY_KEY)
            call = ActionCall(
                input=PAYLOAD,
                idempotency_key=IDEMPOTENCY_KEY,
                tenant_id=str(installation.tenant_id),
                execution_id=EXECUTION_ID,
                context=context,
            )
            await registry.call_plugin(spec.handler, call, time_limit_seconds=spec.time_limit_ms / 1000)
        return time.perf_counter_ns() - started

    return measure


def _call_action(db: AsyncSession, tenant_id: uuid.UUID, plugin: str, action: str) -> Callable[[int], Awaitable[int]]:
    """``calls`` calls of ``host.call_action``, each as a fresh session makes it (the rows read
    from the database, not found in the session); ns, the clearing of the session left out."""

    async def measure(calls: int) -> int:
        total = 0
        for _ in range(calls):
            db.expunge_all()
            started = time.perf_counter_ns()
            output = await host.call_action(
                db, tenant_id, plugin, action, PAYLOAD, idempotency_key=IDEMPOTENCY_KEY, execution_id=EXECUTION_ID
            )
            total += time.perf_counter_ns() - started
            if output != {}:
                raise RuntimeError(f"{plugin}.{action} answered {output!r}")
        return total

    return measure


def _remote_call(
    installation: PluginInstallation, version: host.RunnableVersion, action: str
) -> Callable[[int], Awaitable[int]]:
    """``calls`` remote calls as the host makes them once the installation is read; ns."""
    declared = version.actions[action]

    async def measure(calls: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(calls):
            output = await host.call_remote(version, installation, declared, PAYLOAD, IDEMPOTENCY_KEY, EXECUTION_ID)
            if output != {}:
                raise RuntimeError(f"the remote action answered {output!r}")
        return time.perf_counter_ns() - started

    return measure


def _bare_post(tenant_id: uuid.UUID, port: int) -> Callable[[int], Awaitable[int]]:
    """``calls`` POSTs of the body the host sends, unsigned, by the host's own client; ns."""
    body = remote.action_request_body(
        input=PAYLOAD, idempotency_key=IDEMPOTENCY_KEY, tenant_id=str(tenant_id), execution_id=EXECUTION_ID, config={}
    )
    url = f"http://{HOST}:{port}{BARE_PATH}"
    headers = {"Content-Type": "application/json"}

    async def measure(calls: int) -> int:
        client = _client()
        total = 0
        for _ in range(calls):
            started = time.perf_counter_ns()
            response = await client.post(url, content=body, headers=headers, timeout=TIME_LIMIT_MS / 1000)
            total += time.perf_counter_ns() - started
            if response.status_code != 200 or response.content != ANSWER:
                raise RuntimeError(f"the bare POST answered {response.status_code}: {response.content[:300]!r}")
        return total

    return measure


async def _rounds(
    title: str,
    columns: list[tuple[str, Callable[[int], Awaitable[int]]]],
    calls: int,
    *,
    unit: str = "µs",
) -> list[float]:
    """``ROUNDS`` rounds, each running every column's ``calls`` calls in turn (in reverse order
    every other round, so no column always runs first); the medians of the per-call times, in
    ``unit``. Each round's times are kept in ``_last_rounds`` for paired ratios."""
    scale = {"µs": 1_000, "ms": 1_000_000}[unit]
    for _, measure in columns:
        await measure(WARMUP_CALLS)
    print(f"{title}, {calls} calls per round ({unit} per call)")
    print(f"{'round':<8}" + "".join(f"{name:>24}" for name, _ in columns), flush=True)
    per_call: list[list[float]] = [[] for _ in columns]
    for number in range(1, ROUNDS + 1):
        for index, (_, measure) in round_order(number, list(enumerate(columns))):
            gc.collect()
            per_call[index].append(await measure(calls) / calls / scale)
        print(f"{number:<8}" + "".join(f"{values[-1]:>24.2f}" for values in per_call), flush=True)
    medians = [statistics.median(values) for values in per_call]
    print(f"{'median':<8}" + "".join(f"{value:>24.2f}" for value in medians), flush=True)
    _last_rounds[:] = per_call
    return medians


_last_rounds: list[list[float]] = []


def _paired_ratio(column: int, baseline: int) -> float:
    """The median over rounds of ``column``'s time over ``baseline``'s in the same round: each
    pair ran back to back, so the machine's drift between rounds cancels out."""
    return statistics.median(a / b for a, b in zip(_last_rounds[column], _last_rounds[baseline], strict=True))


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


async def _measure(tenant_id: uuid.UUID, port: int) -> tuple[list[str], bool]:
    """The summary's lines, and whether every target was met."""
    summary: list[str] = []
    with tenant_scope(tenant_id):
        async with open_session(tenant_id) as db:
            installation = await db.scalar(select(PluginInstallation).where(PluginInstallation.plugin == PLUGIN))
            version = await host.runnable_version(db, PLUGIN, VERSION)
            assert installation is not None and version is not None
            plain_async, host_async, plain_sync, host_sync = await _rounds(
                "in-process (a): the host's call machinery (HostContext + ActionCall + registry.call_plugin)",
                [
                    ("plain await", _plain_async),
                    ("host, async handler", _machinery(db, installation, version, ASYNC_ACTION)),
                    ("plain call", _plain_sync),
                    ("host, sync handler", _machinery(db, installation, version, SYNC_ACTION)),
                ],
                MACHINERY_CALLS,
            )
            over_async, over_sync = host_async - plain_async, host_sync - plain_sync
            # The target is the host's own machinery (the async handler's figure); the sync handler's
            # figure adds the round trip to a worker thread and back, shown against the target too.
            met = over_async <= TARGET_OVERHEAD_US
            summary.append(
                f"in-process: host machinery {over_async:.1f} µs/call over a plain call (async handler), "
                f"{over_sync:.1f} µs (sync handler, worker thread); target ≤ {TARGET_OVERHEAD_US:.0f} µs: "
                f"{_verdict(met)} (sync handler: {'within' if over_sync <= TARGET_OVERHEAD_US else 'over'} it)"
            )

        async with open_session(tenant_id) as db:
            plain_async, full_async, plain_sync, full_sync = await _rounds(
                "in-process (b): host.call_action (2 row reads on SQLite, schema checks, the machinery)",
                [
                    ("plain await", _plain_async),
                    ("call_action, async", _call_action(db, tenant_id, PLUGIN, ASYNC_ACTION)),
                    ("plain call", _plain_sync),
                    ("call_action, sync", _call_action(db, tenant_id, PLUGIN, SYNC_ACTION)),
                ],
                FULL_CALLS,
            )
            summary.append(
                f"in-process: the whole call_action {full_async - plain_async:.0f} µs/call over a plain call "
                f"(async handler), {full_sync - plain_sync:.0f} µs (sync handler); information, no target"
            )

        async with open_session(tenant_id) as db:
            remote_installation = await db.scalar(
                select(PluginInstallation).where(PluginInstallation.plugin == REMOTE_PLUGIN)
            )
            remote_version = await host.runnable_version(db, REMOTE_PLUGIN, VERSION)
            assert remote_installation is not None and remote_version is not None
            bare, through_host, whole = await _rounds(
                "remote: the host's remote call, and the whole call_action, against a bare POST of the same body",
                [
                    ("bare POST", _bare_post(tenant_id, port)),
                    ("host.call_remote", _remote_call(remote_installation, remote_version, ASYNC_ACTION)),
                    ("host.call_action", _call_action(db, tenant_id, REMOTE_PLUGIN, ASYNC_ACTION)),
                ],
                REMOTE_CALLS,
                unit="ms",
            )
            ratio = _paired_ratio(1, 0)
            met = met and ratio <= TARGET_REMOTE_RATIO
            summary.append(
                f"remote: {through_host:.3f} ms through the host's remote call, {bare:.3f} ms bare (medians): "
                f"ratio {ratio:.2f}, the median of the rounds' ratios (target ≤ {TARGET_REMOTE_RATIO}): "
                f"{_verdict(ratio <= TARGET_REMOTE_RATIO)}"
            )
            summary.append(
                f"remote: the whole call_action {whole:.3f} ms (ratio {whole / bare:.2f}; it adds the "
                "installation's read from the database and the input's check); information, no target"
            )
    return summary, met


async def _prepare_and_measure(port: int) -> tuple[list[str], bool]:
    try:
        await marketplace.list_deployed_plugins()
        await list_remote_version(
            REMOTE_PLUGIN,
            VERSION,
            endpoint=f"http://{HOST}:{port}/guiju",
            secret=SECRET,
            actions=[
                remote_action(
                    ASYNC_ACTION, input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA, time_limit_ms=TIME_LIMIT_MS
                )
            ],
        )
        tenant_id = await _create_workspace()
        return await _measure(tenant_id, port)
    finally:
        await _client().aclose()
        await dispose_databases()


# ---------------------------------------------------------------- the run


def run() -> None:
    configured = (
        marketplace_configuration._config.settings,
        marketplace_configuration._config.keyring,
    )  # put back afterwards
    with tempfile.TemporaryDirectory(prefix="guiju-bench-plugins-") as tmp:
        var_dir = Path(tmp)
        url = f"sqlite+aiosqlite:///{var_dir / 'guiju.db'}"
        upgrade(url)
        plugin = plugin_module(PLUGIN, VERSION, hooks={"guiju_actions": register_actions})
        service = Server(
            "remote-plugin",
            ["tests.bench.bench_plugins:remote_plugin_app", "--lifespan", "off"],
            server_env({SECRET_VARIABLE: SECRET}),
            var_dir,
        )
        marketplace.configure(
            Settings(
                var_dir=var_dir,
                database_url=url,
                migration_database_url=url,
                secret_key="x" * 48,
                base_url="http://guiju.bench",
                log_level="WARNING",
                plugin_allow_http_hosts=(HOST,),
            )
        )
        set_database_url(url)
        try:
            with deployed(plugin), service:
                summary, met = run_async(_prepare_and_measure(service.port))
        finally:
            set_database_url(None)
            marketplace_configuration._config.settings, marketplace_configuration._config.keyring = configured
    for line in summary:
        print(line)
    print(f"targets: {_verdict(met)}", flush=True)


__all__ = ["remote_plugin_app", "run"]
