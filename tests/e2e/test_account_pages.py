"""Journey 1 in a real browser: the landing page, sign-up with the browser's time zone, the mailed
links (confirm the email, set a new password, accept an invitation), sign-in and out, the language
switch and my settings; at phone and desktop sizes, in Chinese and English."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, unique_email
from tests.e2e.pages import (
    DESKTOP,
    LANGUAGES,
    PHONE,
    SIZES,
    Size,
    browser_cookies,
    check_page,
    csrf_of,
    open_page,
    sign_up_by_api,
    text_of,
)
from tests.embedded_server import EmbeddedServer


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_public_pages_pass_the_checks(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    page = open_page(browser, server.base, size, language)
    page.goto("/")
    heading = text_of(page, "h1")
    expected = "让你的流程在员工手机上跑起来" if language == "zh-CN" else "Your procedures, run on your staff's phones"
    assert heading == expected
    check_page(page, "landing", size, language)
    for path, name in (("/signup", "signup"), ("/login", "login"), ("/forgot-password", "forgot-password")):
        page.goto(path)
        check_page(page, name, size, language)
    page.context.close()


def test_sign_up_on_a_phone_in_chinese_lands_in_the_app_with_the_browsers_time_zone(
    browser: Any, server: EmbeddedServer
) -> None:
    page = open_page(browser, server.base, PHONE, "zh-CN")
    page.goto("/")
    page.click("text=免费注册")
    assert page.url.endswith("/signup")
    # The browser's time zone is filled in and shown before anything is sent.
    assert page.input_value("#field-timezone") == "Asia/Shanghai"

    page.fill("#field-display_name", "王芳")
    page.fill("#field-email", "not-an-email")
    page.fill("#field-password", "short")
    page.fill("#field-company_name", "芳芳小店")
    page.click("main button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert page.title().startswith("错误：")
    summary = text_of(page, ".error-summary")
    assert "请输入邮箱地址，例如 name@example.com。" in summary
    assert "请至少使用 10 个字符。" in summary
    # The answers stay (the password is never sent back), the summary has the focus.
    assert page.input_value("#field-display_name") == "王芳"
    assert page.input_value("#field-company_name") == "芳芳小店"
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    assert page.get_attribute("#field-email", "aria-invalid") == "true"
    check_page(page, "signup-errors", PHONE, "zh-CN")

    email = unique_email("wangfang")
    page.fill("#field-email", email)
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    # A new owner continues into the onboarding wizard; the dashboard asks to confirm the email.
    page.wait_for_url("**/onboarding/packs")
    assert "第 1 步，共 4 步" in text_of(page, "main")
    page.goto("/app")
    assert "请确认你的邮箱" in text_of(page, "main")
    check_page(page, "dashboard-new", PHONE, "zh-CN")

    with httpx.Client(base_url=server.base, timeout=10, cookies=_cookies_of(page)) as api:
        session = api.get("/api/v1/auth/session").json()
    assert session["tenant"]["timezone"] == "Asia/Shanghai"
    assert session["tenant"]["name"] == "芳芳小店"
    assert session["user"]["locale"] == "zh-CN"

    # The mailed link confirms the address and comes back to the app.
    page.goto(server.link_for(email, "/verify-email"))
    check_page(page, "verify-email", PHONE, "zh-CN")
    page.click("text=确认我的邮箱")
    page.wait_for_url("**/app?notice=email_verified")
    assert text_of(page, ".flash") == "邮箱已确认。"
    assert "请确认你的邮箱" not in text_of(page, "main")
    page.context.close()


def test_an_english_desktop_sign_up_takes_the_browsers_own_zone(browser: Any, server: EmbeddedServer) -> None:
    page = open_page(browser, server.base, DESKTOP, "en")
    page.goto("/signup")
    assert page.input_value("#field-timezone") == "Europe/London"
    email = unique_email("london")
    page.fill("#field-display_name", "Ann Lee")
    page.fill("#field-email", email)
    page.fill("#field-password", PASSWORD)
    page.fill("#field-company_name", "Lee Trading")
    page.check("main input[name=locale][value=en]")
    page.click("main button[type=submit]")
    page.wait_for_url("**/onboarding/packs")
    page.goto("/app")
    check_page(page, "dashboard-new", DESKTOP, "en")
    with httpx.Client(base_url=server.base, timeout=10, cookies=_cookies_of(page)) as api:
        assert api.get("/api/v1/tenant").json()["timezone"] == "Europe/London"
    page.context.close()


def test_sign_out_sign_in_and_a_wrong_password(browser: Any, server: EmbeddedServer) -> None:
    client, email = sign_up_by_api(server, "en")
    page = open_page(browser, server.base, DESKTOP, "en", browser_cookies(client, server.base))
    page.goto("/me")
    check_page(page, "settings", DESKTOP, "en")
    page.click("text=Sign out")
    page.wait_for_url("**/login?notice=signed_out")
    assert text_of(page, ".flash") == "You are signed out."
    # A page for signed-in people sends a visitor to sign in, and back after.
    page.goto("/me")
    page.wait_for_url("**/login?next=/me")
    page.fill("#field-email", email)
    page.fill("#field-password", "wrong password here")
    page.click("main button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert "The email or password is wrong." in text_of(page, ".error-summary")
    assert page.input_value("#field-email") == email
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/me")
    assert text_of(page, "h1") == "My settings"
    page.context.close()
    client.close()


def test_a_forgotten_password_is_reset_from_the_mailed_link(browser: Any, server: EmbeddedServer) -> None:
    client, email = sign_up_by_api(server, "zh-CN")
    client.close()
    page = open_page(browser, server.base, PHONE, "zh-CN")
    page.goto("/login")
    page.click("text=忘记密码？")
    page.fill("#field-email", email)
    page.click("main button[type=submit]")
    page.wait_for_url("**/login?notice=reset_sent")
    link = server.link_for(email, "/reset-password")
    page.goto(link)
    check_page(page, "reset-password", PHONE, "zh-CN")
    page.fill("#field-password", "short")
    page.click("main button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert "请至少使用 10 个字符。" in text_of(page, ".error-summary")
    new_password = "a new and long pass phrase 42"
    page.fill("#field-password", new_password)
    page.click("main button[type=submit]")
    page.wait_for_url("**/app?notice=password_reset")
    # The link is used up: a second try says so in plain words.
    page.goto(link)
    page.fill("#field-password", new_password)
    page.click("main button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert "链接已被使用" in text_of(page, ".error-summary")
    page.context.close()


def test_an_invitation_is_accepted_into_the_app(browser: Any, server: EmbeddedServer) -> None:
    owner, _ = sign_up_by_api(server, "zh-CN")
    invitee = unique_email("invitee")
    invited = owner.post(
        "/api/v1/invitations", json={"email": invitee, "role": "member"}, headers={"X-CSRF-Token": csrf_of(owner)}
    )
    assert invited.status_code == 201, invited.text
    page = open_page(browser, server.base, PHONE, "zh-CN")
    page.goto(server.link_for(invitee, "/invitations/accept"))
    check_page(page, "accept-invitation", PHONE, "zh-CN")
    page.fill("#field-display_name", "赵六")
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/app?notice=joined")
    assert text_of(page, ".flash") == "欢迎，你已加入工作区。"
    members = owner.get("/api/v1/members").json()
    assert {m["display_name"] for m in members} >= {"赵六"}
    page.context.close()
    owner.close()


def test_the_language_switch_and_my_settings(browser: Any, server: EmbeddedServer) -> None:
    client, _ = sign_up_by_api(server, "zh-CN")
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    page.goto("/me")
    assert text_of(page, "h1") == "我的设置"
    page.click(".lang-switch button")
    page.wait_for_url("**/me")
    assert text_of(page, "h1") == "My settings"
    assert client.get("/api/v1/auth/session").json()["user"]["locale"] == "en"

    page.fill("#field-timezone", "Mars/Olympus")
    page.click("text=Save profile")
    page.wait_for_selector(".error-summary")
    assert "Enter a time zone such as Asia/Shanghai." in text_of(page, ".error-summary")
    page.fill("#field-timezone", "Asia/Tokyo")
    page.fill("#field-display_name", "Nana")
    page.check("main input[name=locale][value=zh-CN]")
    page.click("text=Save profile")
    page.wait_for_url("**/me?notice=saved")
    assert text_of(page, ".flash") == "已保存。"
    user = client.get("/api/v1/auth/session").json()["user"]
    assert (user["display_name"], user["locale"], user["timezone"]) == ("Nana", "zh-CN", "Asia/Tokyo")
    check_page(page, "settings-saved", PHONE, "zh-CN")
    page.context.close()
    client.close()


def _cookies_of(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_unknown_address_is_a_page_for_a_browser_and_problem_json_for_the_api(
    browser: Any, server: EmbeddedServer, language: str
) -> None:
    page = open_page(browser, server.base, PHONE, language)
    answer = page.goto("/no-such-page")
    assert answer is not None and answer.status == 404
    assert text_of(page, "h1") == ("页面不存在" if language == "zh-CN" else "This page does not exist")
    check_page(page, "not-found", PHONE, language)
    page.context.close()
    api = httpx.get(f"{server.base}/api/v1/no-such-thing", headers={"Accept": "text/html"}, timeout=10)
    assert api.status_code == 404 and api.headers["content-type"].startswith("application/problem+json")
