"""Journey 7 in a real browser: the bell with its count in the top bar and the tab bar, the
notifications page (empty, then with notices of a run), marking all read, and the settings
section, at phone and desktop sizes in Chinese and English (axe, no sideways scroll, 44 px
targets, screenshots)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.pages import (
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

FLOW: dict[str, Any] = {
    "start": "pack",
    "steps": [
        # Nobody holds the member role yet: the owner is the one who may claim it.
        {"kind": "task", "key": "pack", "title": "拣货", "owner": {"kind": "role", "role": "member"}, "next": "review"},
        {"kind": "task", "key": "review", "title": "复核", "owner": {"kind": "starter"}},
    ],
}


def unread(client: httpx.Client) -> int:
    count: int = client.get("/api/v1/notifications/unread-count").json()["unread"]
    return count


def a_notified_owner(server: EmbeddedServer, language: str) -> httpx.Client:
    """An owner who started a run and was told they may claim its first step (once the worker ran)."""
    client, _email = sign_up_by_api(server, language)
    headers = {"X-CSRF-Token": csrf_of(client)}
    created = client.post(
        "/api/v1/procedures",
        json={"key": "ship", "title": "发货" if language == "zh-CN" else "Ship", "definition": FLOW},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    published = client.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish",
        json={"change_note": "v1"},
        headers=headers,
    )
    assert published.status_code == 200, published.text
    run = client.post("/api/v1/runs", json={"procedure_id": procedure["id"], "title": "订单 #A1024"}, headers=headers)
    assert run.status_code == 201, run.text
    deadline = time.monotonic() + 20
    while unread(client) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unread(client) == 1
    return client


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_notification_pages_pass_the_checks(
    browser: Any, server: EmbeddedServer, size: Size, language: str
) -> None:
    zh = language == "zh-CN"
    fresh, _email = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(fresh, server.base))
    page.goto("/notifications")
    assert text_of(page, "h1") == ("通知" if zh else "Notifications")
    assert ("暂无通知" if zh else "No notifications yet") in text_of(page, "main")
    check_page(page, "notifications-empty", size, language)
    page.context.close()

    client = a_notified_owner(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
    page.goto("/notifications")
    label = "通知（1 条未读）" if zh else "Notifications (1 unread)"
    assert page.get_attribute("#bell", "aria-label") == label
    sentence = "你可以领取工单“订单 #A1024”的步骤“拣货”。" if zh else "You can claim the step “拣货” of “订单 #A1024”."
    assert sentence in text_of(page, ".notices")
    assert ("今天" if zh else "Today") in text_of(page, ".notice-group h2")
    if size.phone:
        assert page.is_visible(".tabbar #tab-badge-notifications .badge")
    check_page(page, "notifications", size, language)

    page.click("text=" + ("全部标为已读" if zh else "Mark all read"))
    page.wait_for_selector(".flash.success")
    assert page.get_attribute("#bell", "aria-label") == ("通知" if zh else "Notifications")
    assert page.query_selector(".notice.unread") is None
    check_page(page, "notifications-read", size, language)

    page.goto("/me")
    assert page.is_visible("#notifications-heading")
    check_page(page, "settings-notifications", size, language)
    page.context.close()


def test_opening_a_notice_on_a_phone_goes_to_its_run_and_saves_settings(browser: Any, server: EmbeddedServer) -> None:
    client = a_notified_owner(server, "zh-CN")
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    page.goto("/app")
    assert page.get_attribute("#bell", "aria-label") == "通知（1 条未读）"
    page.click(".tabbar a[href='/notifications']")
    page.click(".notice.unread a")
    page.wait_for_url("**/runs/**")
    assert text_of(page, "h1") == "订单 #A1024"
    assert page.get_attribute("#bell", "aria-label") == "通知"

    page.goto("/me")
    page.check("#field-email input[value=mentioned]")
    page.click("text=保存通知设置")
    page.wait_for_selector(".flash.success")
    assert page.is_checked("#field-email input[value=mentioned]")
    page.context.close()
