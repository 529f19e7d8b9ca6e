"""Apps & API in a real browser: an admin registers an app and sees its secret once; a member
makes a personal access token and a script uses it; and the consent step of the OAuth code flow
with PKCE, driven by Authlib's own client against the running server, answered in the browser.
Phone and desktop sizes in Chinese and English."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.e2e.pages import (
    DESKTOP,
    PHONE,
    Size,
    browser_cookies,
    check_page,
    csrf_of,
    open_page,
    sign_up_by_api,
    text_of,
)
from tests.embedded_server import EmbeddedServer

T = TypeVar("T")
CALLBACK_PATH = "/oauth-test-callback"  # no such page: the browser lands on a 404, which is enough
WORDS = {
    "zh-CN": {"title": "应用与 API", "once": "请现在复制：它只显示这一次。", "scopes": "请至少选择一项它可以做的事。"},
    "en": {
        "title": "Apps & API",
        "once": "Copy it now: it is shown only this once.",
        "scopes": "Choose at least one thing it may do.",
    },
}


def run_async(work: Awaitable[T]) -> T:
    """``work`` on an event loop of its own thread (Playwright's sync API holds this one)."""

    async def wrapped() -> T:
        return await work

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wrapped()).result()


@pytest.mark.parametrize(("size", "language"), [(PHONE, "zh-CN"), (DESKTOP, "en")], ids=["phone-zh", "desktop-en"])
def test_an_admin_registers_an_app_and_sees_its_secret_once(
    browser: Any, server: EmbeddedServer, size: Size, language: str
) -> None:
    words = WORDS[language]
    owner, _ = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(owner, server.base))
    page.goto("/developer")
    assert text_of(page, "h1") == words["title"]
    page.click("a[href='/developer/apps/new']")
    page.wait_for_url("**/developer/apps/new")
    page.fill("#field-name", "Kingdee Sync")
    page.fill("#field-publisher", "Partner Soft Ltd")
    page.fill("#field-redirect_uris", "https://erp.example.com/callback")
    page.click("form.dev-form button[type=submit]")  # no scope ticked: refused beside the field
    page.wait_for_selector(".error-summary")
    assert words["scopes"] in text_of(page, "#field-scopes")
    assert page.input_value("#field-name") == "Kingdee Sync"
    check_page(page, "developer-app-error", size, language)

    page.check("input[name=scopes][value='records:read']")
    page.check("input[name=scopes][value='runs:read']")
    page.click("form.dev-form button[type=submit]")
    page.wait_for_selector("#secret-value")
    assert words["once"] in text_of(page, ".secret-warning")
    secret = text_of(page, "#secret-value")
    client_id = text_of(page, "#client-id")
    assert secret.startswith("gjcs_") and client_id.startswith("gj_")
    check_page(page, "developer-app-secret", size, language)

    # Never again: the app's page shows only the secret's last characters.
    page.click("main a.button")
    page.wait_for_url("**/developer/apps/*")
    assert client_id in text_of(page, "main") and secret not in page.content()
    assert secret[-4:] in text_of(page, "main")
    check_page(page, "developer-app", size, language)
    page.context.close()
    owner.close()


@pytest.mark.parametrize(("size", "language"), [(PHONE, "en"), (DESKTOP, "zh-CN")], ids=["phone-en", "desktop-zh"])
def test_a_personal_token_works_for_a_script(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    owner, _ = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(owner, server.base))
    page.goto("/developer/tokens/new")
    page.fill("#field-name", "Nightly export")
    page.check("input[name=scopes][value='records:read']")
    page.fill("#field-expires_in_days", "30")
    page.click("form.dev-form button[type=submit]")
    page.wait_for_selector("#secret-value")
    token = text_of(page, "#secret-value")
    assert token.startswith("gjat_")

    with httpx.Client(base_url=server.base, timeout=15) as script:
        answer = script.get("/api/v1/collections", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        # Its scope is records:read only: runs stay closed to it.
        assert script.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 403

    page.goto("/developer")
    assert "Nightly export" in text_of(page, "main") and token not in page.content()
    check_page(page, "developer", size, language)
    page.context.close()
    owner.close()


def test_the_consent_step_in_the_browser_gives_the_app_a_token(browser: Any, server: EmbeddedServer) -> None:
    language = "zh-CN"
    owner, _ = sign_up_by_api(server, language, company="Tea House")
    callback = server.base + CALLBACK_PATH
    registered = owner.post(
        "/api/v1/oauth/clients",
        json={
            "name": "Kingdee Sync",
            "publisher": "Partner Soft Ltd",
            "kind": "confidential",
            "redirect_uris": [callback],
            "scopes": ["records:read", "runs:read"],
        },
        headers={"X-CSRF-Token": csrf_of(owner)},
    )
    assert registered.status_code == 201, registered.text
    app = registered.json()
    oauth = AsyncOAuth2Client(
        client_id=app["client"]["client_id"],
        client_secret=app["client_secret"],
        redirect_uri=callback,
        scope="records:read runs:read",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = secrets.token_urlsafe(48)
    url, state = oauth.create_authorization_url(f"{server.base}/oauth/authorize", code_verifier=verifier)

    page = open_page(browser, server.base, PHONE, language, browser_cookies(owner, server.base))
    page.goto(url)
    shown = text_of(page, "main")
    assert "Kingdee Sync" in shown and "Partner Soft Ltd" in shown and "Tea House" in shown
    assert "查看你的数据表和记录" in shown  # records:read in plain words
    check_page(page, "oauth-consent", PHONE, language)
    page.get_by_role("radio", name="Tea House").check()
    page.click("button[name=decision][value=allow]")
    page.wait_for_url(f"{callback}?*")
    landed = page.url
    assert parse_qs(urlsplit(landed).query)["state"] == [state]
    page.context.close()

    async def finish() -> tuple[dict[str, Any], int]:
        async with oauth:
            token = await oauth.fetch_token(
                f"{server.base}/oauth/token", authorization_response=landed, code_verifier=verifier
            )
            answer = await oauth.get(f"{server.base}/api/v1/collections")
            return dict(token), answer.status_code

    token, status = run_async(finish())
    assert token["scope"] == "records:read runs:read" and token["refresh_token"]
    assert status == 200
    owner.close()
