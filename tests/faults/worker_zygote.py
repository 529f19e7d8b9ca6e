"""Starts ``dramatiq services.worker`` processes forked from one that has already imported it.

Run as ``python -m tests.faults.worker_zygote <dramatiq options>`` with a worker's environment. For
each log path read from stdin it forks a child in a session of its own, with stdout and stderr
going to that file, which runs Dramatiq's command line exactly as ``python -m dramatiq
services.worker <options>`` would; it answers with the child's pid. The children find the worker
module (every service, the broker, the actors) already imported: a restart costs what the worker
does after its imports, not the seconds of the imports themselves, and a test that kills workers
fifty times is not mostly waiting for Python to import.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid

import dramatiq
import dramatiq.cli

import services.worker  # noqa: F401  (what every forked worker would import again)


def _run_worker(log_path: str, options: list[str]) -> None:
    """In the forked child: a session of its own (killed as a group), the log, then Dramatiq."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # Dramatiq waits for its own worker processes
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    # The Redis broker knows a worker by the id its broker drew when it was made, here before the
    # fork: each worker draws its own, as a started one does, or a killed worker's unacknowledged
    # messages would belong to the live one that took its id, and never go back to their queue.
    broker = dramatiq.get_broker()
    if hasattr(broker, "broker_id"):
        broker.broker_id = str(uuid.uuid4())
    sys.argv = ["dramatiq", "services.worker", *options]
    code = 1
    try:
        code = dramatiq.cli.main() or 0  # type: ignore[no-untyped-call]
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    options = sys.argv[1:]
    # The children are reaped by the kernel: none lingers as a zombie that still looks alive.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _run_worker(line.strip(), options)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
