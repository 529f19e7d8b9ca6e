"""The sandbox that runs submitted plugins' code, on its own: who the code is inside (an
unprivileged user without capabilities or the platform's variables), what it sees (only what is
listed, read-only; never the platform's data), where it may write (its private /tmp), the network
(its own loopback only), and each limit, named when hit, with nothing left behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.marketplace.sandbox import Limits, Outcome, Sandbox, SandboxConfig, SandboxUnavailable, python_paths
from tests.sandbox_support import SANDBOX_ID, most_in_one_sandbox, none_left

#: The variables the sandbox gives (and PWD, which the shell-less exec chain sets for itself).
SANDBOX_VARIABLES = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "LOGNAME", "PWD"}


def sandbox(tmp_path: Path, **limits: Any) -> Sandbox:
    """A sandbox as the platform makes one, its data directory being ``tmp_path / "var"``."""
    return Sandbox(SandboxConfig(uid=SANDBOX_ID, gid=SANDBOX_ID, limits=Limits(**limits), hidden=(tmp_path / "var",)))


def python(box: Sandbox, code: str, *, read_only: tuple[Path, ...] = (), wall_seconds: float = 60) -> Outcome:
    return box.run(
        [sys.executable, "-c", code],
        read_only=[*python_paths(), *read_only],
        workdir=Path("/tmp"),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        wall_seconds=wall_seconds,
    )


def test_the_code_is_an_unprivileged_user_without_capabilities_or_the_platforms_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("GUIJU_SECRET_KEY", canary)
    monkeypatch.setenv("GUIJU_CANARY", canary)
    code = """
import json, os, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
    "groups": os.getgroups(),
    "id": subprocess.run(["id"], capture_output=True, text=True).stdout.strip(),
    "environment": dict(os.environ),
    "capabilities": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "no_new_privs": status["NoNewPrivs"].strip(),
}))
"""
    outcome = python(sandbox(tmp_path), code)
    assert outcome.ok, outcome.stderr
    seen = json.loads(outcome.stdout)
    assert seen["ids"] == [SANDBOX_ID] * 4
    assert set(seen["groups"]) <= {SANDBOX_ID}
    assert seen["id"].startswith(f"uid={SANDBOX_ID}(sandbox) gid={SANDBOX_ID}(sandbox)")
    assert set(seen["capabilities"].values()) == {"0000000000000000"}
    assert seen["no_new_privs"] == "1"
    assert set(seen["environment"]) <= SANDBOX_VARIABLES | {"PYTHONDONTWRITEBYTECODE"}
    assert seen["environment"]["HOME"] == seen["environment"]["TMPDIR"] == "/tmp"
    assert canary not in outcome.stdout + outcome.stderr


def test_only_the_listed_paths_are_visible_read_only_and_its_tmp_alone_is_writable(tmp_path: Path) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    var = tmp_path / "var"
    var.mkdir()
    (var / "secret_key").write_text(canary)
    shown = tmp_path / "shown"
    shown.mkdir()
    (shown / "public.txt").write_text("hello")
    # Visible, but the root's alone: only a really unprivileged user fails to read it.
    (shown / "root-only.txt").write_text(canary)
    (shown / "root-only.txt").chmod(0o600)
    code = f"""
import json, os
tried = {{}}
for label, path in {{
    "secret_key": {str(var / "secret_key")!r},
    "var": {str(var)!r},
    "public": {str(shown / "public.txt")!r},
    "root_only": {str(shown / "root-only.txt")!r},
    "init_environment": "/proc/1/environ",
}}.items():
    try:
        tried[label] = "listed" if os.path.isdir(path) and os.listdir(path) else "read " + open(path).read()
    except OSError as exc:
        tried[label] = type(exc).__name__
for label, path in {{"shown": {str(shown / "new.txt")!r}, "tmp": "/tmp/new.txt"}}.items():
    try:
        open(path, "w").write("x")
        tried["write_" + label] = "written"
    except OSError as exc:
        tried["write_" + label] = f"{{type(exc).__name__}} {{exc.errno}}"
writable = []
for folder, subfolders, _ in os.walk("/"):
    if folder in ("/proc", "/sys"):
        subfolders[:] = []
    elif os.access(folder, os.W_OK):
        writable.append(folder)
tried["writable"] = writable
print(json.dumps(tried))
"""
    outcome = python(sandbox(tmp_path), code, read_only=(shown,))
    assert outcome.ok, outcome.stderr
    tried = json.loads(outcome.stdout)
    assert tried == {
        "secret_key": "FileNotFoundError",
        "var": "FileNotFoundError",
        "public": "read hello",
        "root_only": "PermissionError",
        "init_environment": "PermissionError",
        "write_shown": "OSError 30",  # EROFS
        "write_tmp": "written",
        "writable": ["/tmp"],
    }
    assert canary not in outcome.stdout + outcome.stderr
    assert not (shown / "new.txt").exists()


def test_a_path_holding_the_platforms_data_is_never_exposed(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    (tmp_path / "var" / "files").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "var")
    for shown in (tmp_path, tmp_path / "var" / "files", tmp_path / "link"):
        with pytest.raises(SandboxUnavailable, match="holds the platform's data"):
            python(box, "print('ran')", read_only=(shown,))


def test_the_network_is_its_own_loopback_alone(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"""
import json, socket
tried = {{}}
def connect(label, host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        tried[label] = "connected"
    except OSError as exc:
        tried[label] = f"{{type(exc).__name__}} {{exc.errno}}"
connect("the_platforms_port", "127.0.0.1", {port})
connect("postgres", "127.0.0.1", 5432)
connect("public", "1.1.1.1", 443)
try:
    socket.getaddrinfo("pypi.org", 443)
    tried["dns"] = "resolved"
except OSError as exc:
    tried["dns"] = type(exc).__name__
own = socket.create_server(("127.0.0.1", 0))
connect("own_loopback", "localhost", own.getsockname()[1])
print(json.dumps(tried))
"""
        outcome = python(sandbox(tmp_path), code)
        assert outcome.ok, outcome.stderr
        assert json.loads(outcome.stdout) == {
            "the_platforms_port": "ConnectionRefusedError 111",
            "postgres": "ConnectionRefusedError 111",
            "public": "OSError 101",  # ENETUNREACH: no route out of the sandbox
            "dns": "gaierror",
            "own_loopback": "connected",
        }
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing came


LIMITS: dict[str, tuple[dict[str, int], str, str]] = {
    "cpu": ({"cpu_seconds": 1}, "while True: pass", "used more than 1 s of CPU in one process (the CPU limit)"),
    "memory": (
        {"memory_mb": 256},
        "block = bytearray(512 * 1024 * 1024)",
        "needed more than 256 MiB of memory in one process (the memory limit)",
    ),
    "file_size": (
        {"file_size_mb": 4},
        "open('/tmp/big', 'wb').write(b'x' * 8 * 1024 * 1024)",
        "wrote a file larger than 4 MiB (the file-size limit)",
    ),
    "writable": (
        {"writable_mb": 8},
        "for i in range(64): open(f'/tmp/{i}', 'wb').write(b'x' * 1024 * 1024)",
        "filled the 8 MiB of writable space ($TMPDIR, the only writable place)",
    ),
    "processes": (
        {"processes": 16},
        "import os\nwhile True: os.fork()",
        "ran into the limit of 16 processes and threads at once (the process limit)",
    ),
    "read_only": ({}, "open('/usr/x', 'w')", "wrote outside $TMPDIR, and everything else is read-only in the checks"),
}


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_each_limit_stops_the_code_and_is_named(tmp_path: Path, limit: str) -> None:
    limits, code, named = LIMITS[limit]
    box = sandbox(tmp_path, **limits)
    outcome = python(box, code, wall_seconds=60)
    assert not outcome.ok and not outcome.timed_out
    assert named in box.limits_hit(outcome), (outcome.exit_status, outcome.stderr[-2000:])
    assert none_left(SANDBOX_ID)


def test_at_the_wall_clock_the_sandbox_and_everything_it_started_are_killed(tmp_path: Path) -> None:
    code = """
import os, signal, time
for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(number, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()  # a session of its own, as a daemon would
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
time.sleep(600)
"""
    box = sandbox(tmp_path)
    started = time.monotonic()
    outcome = python(box, code, wall_seconds=2)
    assert time.monotonic() - started < 15
    assert outcome.timed_out and outcome.exit_status is None
    assert box.limits_hit(outcome) == ["ran out of time: stopped after 2 s (the wall-clock limit)"]
    assert none_left(SANDBOX_ID)


def test_a_fork_bomb_stays_within_its_limit_while_the_machine_keeps_answering(tmp_path: Path) -> None:
    bomb = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    box = sandbox(tmp_path, processes=24)
    finished: list[Outcome] = []
    running = threading.Thread(target=lambda: finished.append(python(box, bomb, wall_seconds=5)))
    running.start()
    most, slowest = 0, 0.0
    while running.is_alive():
        most = max(most, most_in_one_sandbox(SANDBOX_ID))
        started = time.monotonic()
        subprocess.run(["true"], check=True)  # the machine still starts processes, promptly
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.1)
    running.join()
    [outcome] = finished
    assert outcome.timed_out and outcome.most_tasks >= 23
    # It says nothing, yet the report names the limit (the sandbox counts its processes).
    assert box.limits_hit(outcome) == [
        "ran out of time: stopped after 5 s (the wall-clock limit)",
        "ran into the limit of 24 processes and threads at once (the process limit)",
    ]
    assert 1 < most <= 24
    assert slowest < 2
    assert none_left(SANDBOX_ID)


def test_where_the_sandbox_cannot_run_nothing_runs(tmp_path: Path) -> None:
    missing = Sandbox(SandboxConfig(uid=SANDBOX_ID, gid=SANDBOX_ID, bwrap=str(tmp_path / "bwrap")))
    with pytest.raises(SandboxUnavailable, match="is not installed"):
        python(missing, "print('ran')")
    # A program that is not bubblewrap: the sandbox's first run proves nothing, so none is made.
    broken = Sandbox(SandboxConfig(uid=SANDBOX_ID, gid=SANDBOX_ID, bwrap="false"))
    with pytest.raises(SandboxUnavailable, match="the sandbox does not start here"):
        python(broken, "print('ran')")
