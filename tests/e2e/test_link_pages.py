"""The pages behind the mailed links, in a real headless Chromium against ``guiju run``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD, REQUIRE_SERVICES, unique_email
from tests.embedded_server import EmbeddedServer as Server

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
