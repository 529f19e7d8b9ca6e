"""Run every ``bench_*`` module of this package in name order; exit 1 if any of them failed to run.

Arguments name the benchmarks to run instead (``engine`` or ``bench_engine``), e.g.
``python -m tests.bench engine``.
"""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the benchmarks' cleanup, which stops the servers they started.
    sys.exit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    package = __package__ or "tests.bench"
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    wanted = set(sys.argv[1:])
    if wanted:
        names = [n for n in names if n in wanted or n.removeprefix("bench_") in wanted]
    if not names:
        print("no benchmark modules found", file=sys.stderr)
        return 1
    failed: list[str] = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"{package}.{name}").run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        outcome = "FAILED" if name in failed else "done"
        print(f"== {name}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
