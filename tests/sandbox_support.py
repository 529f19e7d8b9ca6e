"""What the sandbox tests share: a sandbox user no other process of the machine has, a count of
its processes in each sandbox, and a way to see that the sandbox left none behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path

#: A uid and gid of this test run alone (no account has them): what runs as it is the sandbox's.
SANDBOX_ID = 61000 + os.getpid() % 4000


def processes_of(uid: int) -> list[int]:
    """The pids of this machine's processes whose real uid is ``uid``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        real = next((line.split()[1] for line in status.splitlines() if line.startswith("Uid:")), "")
        if real == str(uid):
            found.append(int(entry.name))
    return found


def most_in_one_sandbox(uid: int) -> int:
    """The most processes of ``uid`` in one pid namespace (one sandbox) at this moment."""
    sandboxes: Counter[str] = Counter()
    for pid in processes_of(uid):
        with contextlib.suppress(OSError):
            sandboxes[os.readlink(f"/proc/{pid}/ns/pid")] += 1
    return max(sandboxes.values(), default=0)


def none_left(uid: int, seconds: float = 5) -> bool:
    """Whether every process of ``uid`` is gone within ``seconds``."""
    deadline = time.monotonic() + seconds
    while processes_of(uid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
