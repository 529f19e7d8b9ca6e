"""The guiju command: production refusals, tenant administration, plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Backend, unique_email

ROOT = Path(__file__).resolve().parents[2]


def guiju(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def base_env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_")}
    env.update({"GUIJU_DATABASE_URL": url, "GUIJU_VAR_DIR": str(tmp_path), "GUIJU_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def test_production_refuses_a_missing_or_short_secret(tmp_path: Path, sqlite_backend: Backend) -> None:
    env = base_env(tmp_path, sqlite_backend.url, GUIJU_REDIS_URL="redis://127.0.0.1:6379/15")
    missing = guiju("scheduler", env=env)
    assert missing.returncode == 2
    assert "GUIJU_SECRET_KEY is not set" in missing.stderr
    short = guiju("api", env={**env, "GUIJU_SECRET_KEY": "too-short"})
    assert short.returncode == 2
    assert "at least 32" in short.stderr


def test_production_refuses_pending_migrations(tmp_path: Path) -> None:
    env = base_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", GUIJU_SECRET_KEY="k" * 40)
    result = guiju("api", env=env)
    assert result.returncode == 2
    assert "pending migration" in result.stderr
    assert "guiju db upgrade" in result.stderr


def test_db_upgrade_then_tenant_create_list_suspend(tmp_path: Path) -> None:
    env = base_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", GUIJU_OWNER_PASSWORD=PASSWORD)
    assert guiju("db", "upgrade", env=env).returncode == 0
    assert guiju("db", "pending", env=env).stdout.strip() == "none"
    email = unique_email("cli")
    created = guiju(
        "tenant",
        "create",
        "acme-clinic",
        "--name",
        "Acme Clinic",
        "--industry",
        "clinic",
        "--owner-email",
        email,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    duplicate = guiju("tenant", "create", "acme-clinic", "--name", "Again", "--owner-email", unique_email(), env=env)
    assert duplicate.returncode == 2
    assert "taken" in duplicate.stderr
    listed = guiju("tenant", "list", env=env).stdout
    assert "acme-clinic\tactive\tclinic\tAcme Clinic" in listed
    assert guiju("tenant", "suspend", "acme-clinic", env=env).returncode == 0
    assert "acme-clinic\tsuspended" in guiju("tenant", "list", env=env).stdout
    assert guiju("tenant", "suspend", "no-such", env=env).returncode == 2
    assert guiju("tenant", "resume", "acme-clinic", env=env).returncode == 0


def test_plugins_list_shows_the_built_in_plugins_and_what_the_deny_list_leaves(
    tmp_path: Path, sqlite_backend: Backend
) -> None:
    env = base_env(tmp_path, sqlite_backend.url)
    result = guiju("plugin", "list", env=env)
    assert result.returncode == 0
    assert {line.split("\t")[0]: line.split("\t")[2] for line in result.stdout.splitlines()} == {
        "customs": "loaded",
        "erp": "loaded",
        "messaging": "loaded",
    }
    denied = guiju("plugin", "list", env={**env, "GUIJU_PLUGINS_DENY": "customs,erp,messaging"})
    assert denied.returncode == 0
    assert sorted(denied.stdout.splitlines()) == [
        f"{name}\t?\trefused: in GUIJU_PLUGINS_DENY" for name in ("customs", "erp", "messaging")
    ]


@pytest.mark.timeout(90)
def test_guiju_run_serves_the_platform(tmp_path: Path) -> None:
    """The embedded all-in-one: migrates a fresh SQLite database and serves health, docs and the API."""
    import httpx

    from tests.embedded_server import EmbeddedServer

    server = EmbeddedServer(tmp_path)
    try:
        ready = httpx.get(f"{server.base}/readyz", timeout=5).json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
        assert "swagger" in httpx.get(f"{server.base}/docs", timeout=5).text.lower()
        assert (
            httpx.get(f"{server.base}/static/vendor/swagger-ui-dist/swagger-ui-bundle.js", timeout=5).status_code == 200
        )
        email = unique_email("run")
        signup = httpx.post(
            f"{server.base}/api/v1/auth/signup",
            timeout=10,
            json={
                "email": email,
                "password": PASSWORD,
                "display_name": "Li",
                "company_name": "Run Co",
                "industry": "ecommerce",
                "locale": "en",
            },
        )
        assert signup.status_code == 201
        # The in-process worker delivers the verification mail to the log.
        assert server.link_for(email, "/verify-email").startswith(f"{server.base}/verify-email?token=")
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_guiju_worker_logs_json_lines(tmp_path: Path) -> None:
    """Dramatiq's supervisor and its worker processes log through the JSON formatter."""
    import json
    import signal
    import time

    from tests.faults.harness import RedisProcess, free_port, require_redis_server

    require_redis_server()
    redis_server = RedisProcess(free_port())
    redis_server.start()
    env = base_env(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}",
        GUIJU_SECRET_KEY="w" * 40,
        GUIJU_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
        GUIJU_LOG_LEVEL="INFO",
    )
    log_path = tmp_path / "worker.log"
    try:
        assert guiju("db", "upgrade", env=env).returncode == 0
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "worker", "--processes", "1", "--threads", "1"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while "Worker process is ready for action." not in log_path.read_text():
                assert worker.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)  # the supervisor stops its worker processes
            worker.wait(timeout=30)
    finally:
        redis_server.stop()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert "dramatiq.MainProcess" in loggers
    assert "dramatiq.WorkerProcess(0)" in loggers
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
