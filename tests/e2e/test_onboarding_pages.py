"""Journey 2 in a real browser: a new owner's onboarding wizard (packs with a preview, roles with
one left unassigned, sample data, install with live progress, what to do next) at phone and
desktop sizes, in Chinese and English."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.pages import (
    SIZES,
    Size,
    browser_cookies,
    check_page,
    open_page,
    sign_up_by_api,
    text_of,
)
from tests.embedded_server import EmbeddedServer

PACK = "general-starter"
WORDS = {
    "zh-CN": {
        "step1": "第 1 步，共 4 步",
        "step2": "第 2 步，共 4 步",
        "next": "下一步",
        "me": "我自己",
        "warning": "没有人能领取这个角色的待办",
        "install": "开始安装",
        "continue": "继续",
        "done": "工作区已准备好",
        "delete": "删除全部示例数据",
        "deleted": "示例数据已删除。",
    },
    "en": {
        "step1": "Step 1 of 4",
        "step2": "Step 2 of 4",
        "next": "Next",
        "me": "Myself",
        "warning": "Nobody can claim this role's tasks",
        "install": "Install",
        "continue": "Continue",
        "done": "Your workspace is ready",
        "delete": "Delete all sample records",
        "deleted": "The sample records are deleted.",
    },
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_a_new_owner_goes_through_the_wizard(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    words = WORDS[language]
    client, _email = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
    page.goto("/onboarding")
    page.wait_for_url("**/onboarding/packs")
    assert words["step1"] in text_of(page, "main")
    check_page(page, "onboarding-packs", size, language)

    page.click(f"a[href='/onboarding/packs/{PACK}']")
    page.wait_for_url(f"**/onboarding/packs/{PACK}")
    assert page.locator("ol.step-list li").count() > 0
    check_page(page, "onboarding-preview", size, language)
    page.go_back()

    page.check(f"input[name=packs][value={PACK}]")
    page.click(f"button:has-text('{words['next']}')")
    page.wait_for_url("**/onboarding/roles")
    main = text_of(page, "main")
    assert words["step2"] in main and words["warning"] in main
    check_page(page, "onboarding-roles", size, language)
    # The first role is mine; the others stay unassigned (said, never silently the owner's).
    page.locator("fieldset.role-card").first.locator("input[value=me]").check()
    page.click(f"button:has-text('{words['install']}')")
    page.wait_for_url("**/onboarding/install")
    # htmx installs and polls every 2 s until the pack is in.
    page.wait_for_selector(f"a.button:has-text('{words['continue']}')", timeout=90_000)
    value, maximum = page.get_attribute("progress", "value"), page.get_attribute("progress", "max")
    assert value == maximum and int(value or 0) > 0
    check_page(page, "onboarding-install", size, language)

    page.click(f"a.button:has-text('{words['continue']}')")
    page.wait_for_url("**/onboarding/done")
    assert words["done"] in text_of(page, "h1")
    check_page(page, "onboarding-done", size, language)
    page.click(f"button:has-text('{words['delete']}')")
    page.wait_for_selector(".flash")
    assert text_of(page, ".flash") == words["deleted"]
    page.context.close()
    client.close()
