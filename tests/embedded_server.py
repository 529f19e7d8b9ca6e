"""``guiju run`` in a subprocess on a free port, with its log in a file: for end-to-end tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

ROOT = Path(__file__).resolve().parents[1]


class EmbeddedServer:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        """``env`` adds or overrides GUIJU_* settings (e.g. a PostgreSQL database)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUIJU_")}
        env.update(
            {
                "GUIJU_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'pages.db'}",
                "GUIJU_VAR_DIR": str(tmp),
                "GUIJU_PORT": str(self.port),
                "GUIJU_LOG_LEVEL": "INFO",
                **(env or {}),
            }
        )
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"], cwd=ROOT, env=env, stdout=self.log, stderr=self.log
        )
        # /readyz answers 200 once the server has migrated and started: ask until it does.
        ready = Retrying(
            retry=retry_if_exception_type(httpx.HTTPError) | retry_if_result(lambda status: status != 200),
            wait=wait_fixed(0.2),
            # Generous: on a busy 2-core machine the migrations and imports alone can take 40 s.
            stop=stop_after_delay(120),
        )
        try:
            ready(lambda: httpx.get(f"{self.base}/readyz", timeout=1).status_code)
        except RetryError:
            raise RuntimeError(f"guiju run did not start: {self.log_path.read_text()[-2000:]}") from None

    def link_for(self, email: str, path: str) -> str:
        deadline = time.monotonic() + 20
        pattern = re.compile(re.escape(self.base + path) + r"\?token=[A-Za-z0-9_.\-]+")
        while time.monotonic() < deadline:
            lines = [ln for ln in self.log_path.read_text().splitlines() if email in ln]
            for line in reversed(lines):
                found = pattern.search(line)
                if found:
                    return found.group(0)
            time.sleep(0.2)
        raise AssertionError(f"no {path} link mailed to {email}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()
