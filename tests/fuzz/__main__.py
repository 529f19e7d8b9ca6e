"""``make fuzz``: Schemathesis against the served OpenAPI document, on a fresh PostgreSQL database.

Starts ``guiju run`` (uvicorn) on a new database, migrated and served as the runtime role
``guiju_app`` under Row-Level Security, signs a user up, creates one of each thing the paths name
(tests/fuzz/seed.py) and runs Schemathesis twice against ``/docs/openapi.json``: signed in (the
session cookie and the ``X-CSRF-Token`` header on every request, the seeded ids as path
parameters), then anonymous. Any 5xx, and any response whose status, media type, headers or body the
document does not describe, fails the stage.

Settings (environment):
  GUIJU_FUZZ_EXAMPLES   test cases per operation and phase in the signed-in pass (default 50)
  GUIJU_FUZZ_ANONYMOUS_EXAMPLES   the same for the anonymous pass (default 10)
  GUIJU_FUZZ_SEED       the random seed (default 1, so that CI runs the same cases each time);
                        ``random`` picks one and prints it
  GUIJU_FUZZ_WORKERS    concurrent Schemathesis workers (default 1)
Reports (JUnit XML) and the server's log go to var/fuzz/.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.embedded_server import ROOT, EmbeddedServer
from tests.fuzz.seed import Seeder

PG_HOST, PG_PORT = "127.0.0.1", 5432
APP_ROLE = "guiju_app"
OUT = ROOT / "var" / "fuzz"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
# Signing out ends the session every other request of the signed-in pass runs with; the anonymous
# pass covers it.
SIGNED_IN_EXCLUDED = ["/api/v1/auth/logout"]


@dataclass(frozen=True)
class Pass:
    name: str
    headers: dict[str, str]
    max_examples: int
    excluded_paths: list[str]
    parameters: dict[str, str | int]


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"GUIJU_FUZZ_{name}") or default


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _config(run: Pass) -> Path:
    """A schemathesis.toml giving the run's fixed parameter values."""
    path = OUT / f"{run.name}.schemathesis.toml"
    lines = ["[parameters]", *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(run.parameters.items()))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _schemathesis(base: str, run: Pass, seed: int, workers: str) -> int:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(_config(run)),
        "run",
        f"{base}/docs/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(run.max_examples),
        "--seed",
        str(seed),
        "--workers",
        workers,
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(OUT / f"{run.name}.junit.xml"),
        "--no-color",
    ]
    for name, value in run.headers.items():
        command += ["--header", f"{name}: {value}"]
    if run.headers:
        # The credentials are the ones above: generated ones would replace them.
        command += ["--generation-with-security-parameters", "false"]
    for path in run.excluded_paths:
        command += ["--exclude-path", path]
    print(f"\n=== {run.name}: {run.max_examples} example(s) per operation, seed {seed}", flush=True)
    # In OUT: Schemathesis keeps a cache in its working directory.
    return subprocess.run(command, cwd=OUT, check=False).returncode


def main() -> int:
    try:
        asyncio.run(_admin("SELECT 1"))
    except OSError as exc:
        print(f"fuzz: PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {exc}", file=sys.stderr)
        return 2
    examples = int(_setting("EXAMPLES", "50"))
    anonymous_examples = int(_setting("ANONYMOUS_EXAMPLES", "10"))
    raw_seed = _setting("SEED", "1")
    seed = random.randrange(2**31) if raw_seed == "random" else int(raw_seed)
    workers = _setting("WORKERS", "1")

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    database = f"guiju_fuzz_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    server: EmbeddedServer | None = None
    try:
        # `guiju run` migrates as the owner (creating the runtime role if needed) and serves as
        # the runtime role, without BYPASSRLS: Row-Level Security applies to every request.
        server = EmbeddedServer(
            OUT,
            env={
                "GUIJU_DATABASE_URL": f"postgresql+asyncpg://{APP_ROLE}@{PG_HOST}:{PG_PORT}/{database}",
                "GUIJU_MIGRATION_DATABASE_URL": f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}",
                "GUIJU_DB_APP_ROLE": APP_ROLE,
            },
        )
        seeder = Seeder(server.base)
        try:
            headers = seeder.sign_up()
            parameters = seeder.workspace()
        finally:
            seeder.close()
        passes = [
            Pass("signed-in", headers, examples, SIGNED_IN_EXCLUDED, parameters),
            Pass("anonymous", {}, anonymous_examples, [], {}),
        ]
        results = {run.name: _schemathesis(server.base, run, seed, workers) for run in passes}
    finally:
        if server is not None:
            server.stop()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    print(f"\n=== fuzz summary (seed {seed}):")
    for name, code in results.items():
        print(f"  {name}: {'passed' if code == 0 else f'FAILED (schemathesis exit {code})'}")
    print(f"  reports and the server log: {OUT.relative_to(ROOT)}/")
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
