"""The pages behind the mailed links, in a real headless Chromium against ``guiju run``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, REQUIRE_SERVICES, unique_email

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "no chromium binary (make test installs Debian's chromium where it can)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and GUIJU_REQUIRE_SERVICES=1 requires it")
        pytest.skip(f"{message}: skipping page tests")
    return path


class Server:
    def __init__(self, tmp: Path) -> None:
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
            }
        )
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"], cwd=ROOT, env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"guiju run did not start: {self.log_path.read_text()[-2000:]}")

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("pages"))
    yield running
    running.stop()


def test_verify_reset_and_accept_pages_work_in_a_browser(chromium: str, server: Server) -> None:
    from playwright.sync_api import sync_playwright

    owner_email = unique_email("page-owner")
    with httpx.Client(base_url=server.base, timeout=10) as api:
        signup = api.post(
            "/api/v1/auth/signup",
            json={
                "email": owner_email,
                "password": PASSWORD,
                "display_name": "Li",
                "company_name": "Page Co",
                "industry": "clinic",
                "locale": "zh-CN",
            },
        )
        assert signup.status_code == 201
        csrf = signup.json()["csrf_token"]
        invitee = unique_email("page-invitee")
        invited = api.post(
            "/api/v1/invitations", json={"email": invitee, "role": "member"}, headers={"X-CSRF-Token": csrf}
        )
        assert invited.status_code == 201
        verify_link = server.link_for(owner_email, "/verify-email")
        accept_link = server.link_for(invitee, "/invitations/accept")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(locale="en-US")
                page.goto(verify_link)
                assert page.text_content("h1") == "Confirm your email"
                page.click("#submit")
                page.wait_for_selector("#result.ok")

                zh_page = browser.new_page(locale="zh-CN")
                zh_page.goto(accept_link)
                assert zh_page.text_content("h1") == "接受邀请"
                zh_page.fill("#display_name", "王芳")
                zh_page.fill("#password", "short")
                zh_page.click("#submit")
                zh_page.wait_for_selector("#result.error")
                assert "password" in (zh_page.text_content("#result") or "")
                zh_page.fill("#password", PASSWORD)
                zh_page.click("#submit")
                zh_page.wait_for_selector("#result.ok")
            finally:
                browser.close()

        session = api.get("/api/v1/auth/session").json()
        assert session["user"]["email_verified"] is True
        members = api.get("/api/v1/members").json()
        assert {m["email"] for m in members} == {owner_email, invitee}
