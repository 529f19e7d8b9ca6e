"""Members and roles in a real browser: an owner invites someone for a pack role in the onboarding
wizard, the invitee accepts from the mailed link and finds the role's task in My tasks; the members
page at phone and desktop sizes in Chinese and English (a role nobody holds, an invitation, a role
given), and the 403 page for a member."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, unique_email
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

PACK = "general-starter"
LEAD = f"{PACK}:team_lead"
WORDS = {
    "zh-CN": {
        "install": "开始安装",
        "continue": "继续",
        "step": "收集本周数据",
        "title": "成员与角色",
        "nobody": "无人负责",
        "give": "分配角色",
        "send": "发送邀请",
        "saved": "已保存。",
        "sent": "邀请已发送。",
        "forbidden": "你没有权限这样做",
    },
    "en": {
        "install": "Install",
        "continue": "Continue",
        "step": "Collect the week's figures",
        "title": "Members and roles",
        "nobody": "Nobody",
        "give": "Give role",
        "send": "Send invitation",
        "saved": "Saved.",
        "sent": "The invitation is sent.",
        "forbidden": "You cannot do this",
    },
}


def _weekly_review(owner: httpx.Client) -> str:
    installed = owner.get(f"/api/v1/templates/{PACK}").json()
    return str(next(i["object_id"] for i in installed["items"] if i["key"] == "weekly_review_meeting"))


def test_a_role_given_in_the_wizard_reaches_the_invitee_in_my_tasks(browser: Any, server: EmbeddedServer) -> None:
    words = WORDS["zh-CN"]
    owner, _ = sign_up_by_api(server, "zh-CN")
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(owner, server.base))
    page.goto("/onboarding/packs")
    page.check(f"input[name=packs][value={PACK}]")
    page.click("main button[type=submit]")
    page.wait_for_url("**/onboarding/roles")
    invitee = unique_email("lead")
    page.check(f"input[name='role:{LEAD}'][value=invite]")
    page.fill(f"input[name='email:{LEAD}']", invitee)
    page.click(f"button:has-text('{words['install']}')")
    page.wait_for_url("**/onboarding/install")
    page.wait_for_selector(f"a.button:has-text('{words['continue']}')", timeout=90_000)
    page.context.close()

    # A run started before they join waits for nobody; joining gives it to them.
    headers = {"X-CSRF-Token": csrf_of(owner)}
    started = owner.post("/api/v1/runs", json={"procedure_id": _weekly_review(owner)}, headers=headers)
    assert started.status_code == 201, started.text
    page = open_page(browser, server.base, PHONE, "zh-CN")
    page.goto(server.link_for(invitee, "/invitations/accept"))
    page.fill("#field-display_name", "周七")
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/app?notice=joined")
    page.goto("/tasks")
    assert words["step"] in text_of(page, "main")
    check_page(page, "invitee-tasks", PHONE, "zh-CN")
    page.context.close()
    holders = {r["key"]: r["user_id"] for r in owner.get("/api/v1/pack-roles").json()}
    members = {m["email"]: m["user_id"] for m in owner.get("/api/v1/members").json()}
    assert holders[LEAD] == members[invitee]
    owner.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_members_page(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    words = WORDS[language]
    owner, _ = sign_up_by_api(server, language)
    headers = {"X-CSRF-Token": csrf_of(owner)}
    installed = owner.post(f"/api/v1/templates/{PACK}/install", json={"roles": {}, "samples": False}, headers=headers)
    assert installed.status_code == 201, installed.text
    page = open_page(browser, server.base, size, language, browser_cookies(owner, server.base))
    page.goto("/members")
    assert text_of(page, "h1") == words["title"]
    assert words["nobody"] in text_of(page, "main")
    check_page(page, "members", size, language)

    # Invite with a role; the invitation is listed with it.
    invitee = unique_email("new")
    page.fill("#field-email", invitee)
    page.check(f"#field-pack_roles input[value='{LEAD}']")  # six roles: ticked in a list of checkboxes
    page.click(f"button:has-text('{words['send']}')")
    page.wait_for_url("**/members?notice=invitation_sent")
    assert text_of(page, ".flash") == words["sent"]
    assert invitee in text_of(page, "main")

    # A refused invitation comes back worded beside its field, the answer kept.
    page.fill("#field-email", "not-an-email")
    page.click(f"button:has-text('{words['send']}')")
    page.wait_for_selector(".error-summary")
    assert page.get_attribute("#field-email", "aria-invalid") == "true"
    check_page(page, "members-error", size, language)

    # Give the first role nobody holds to the owner.
    first = page.locator("form[action='/members/pack-roles']").first
    first.locator("select").select_option(index=1)
    first.locator("button").click()
    page.wait_for_url("**/members?notice=saved")
    assert text_of(page, ".flash") == words["saved"]
    page.context.close()
    owner.close()


def test_a_member_gets_the_403_page(browser: Any, server: EmbeddedServer) -> None:
    owner, _ = sign_up_by_api(server, "en")
    email = unique_email("staff")
    invited = owner.post("/api/v1/invitations", json={"email": email}, headers={"X-CSRF-Token": csrf_of(owner)})
    assert invited.status_code == 201, invited.text
    page = open_page(browser, server.base, PHONE, "en")
    page.goto(server.link_for(email, "/invitations/accept"))
    page.fill("#field-display_name", "Sam")
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/app?notice=joined")
    answer = page.goto("/members")
    assert answer is not None and answer.status == 403
    assert text_of(page, "h1") == WORDS["en"]["forbidden"]
    check_page(page, "members-forbidden", PHONE, "en")
    page.context.close()
    owner.close()
