"""The members page as a browser posts its forms: members with their roles, the pack roles nobody
holds, invitations with their roles (sent again, revoked), roles changed, a role given, a member
deactivated, refusals worded in the viewer's language; only owners and admins see it, and another
workspace's members and invitations never appear and cannot be changed by id."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from tests.conftest import World, deliver_events, mail_to, unique_email

ORIGIN = {"Origin": "http://guiju.test"}
PACK = "general-starter"
LEAD, HR = f"{PACK}:team_lead", f"{PACK}:hr"


async def _post(api: Any, path: str, data: list[tuple[str, str]] | dict[str, str]) -> Any:
    form: dict[str, Any] = {}
    for key, value in data.items() if isinstance(data, dict) else data:
        form.setdefault(key, []).append(value)
    form["csrf_token"] = api.csrf
    return await api.client.post(path, data=form, headers=ORIGIN)


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


async def _workspace(world: World) -> tuple[Any, dict[str, Any]]:
    owner, body = await world.signup(locale="zh-CN")
    installed = await owner.post(f"/api/v1/templates/{PACK}/install", {"roles": {}, "samples": False})
    assert installed.status_code == 201, installed.text
    return owner, body


async def _holders(api: Any) -> dict[str, str | None]:
    return {r["key"]: r["user_id"] for r in (await api.get("/api/v1/pack-roles")).json()}


async def test_an_owner_invites_changes_roles_and_deactivates_on_the_members_page(world: World) -> None:
    owner, body = await _workspace(world)
    owner_id = body["user"]["id"]
    shown = await owner.client.get("/members")
    assert shown.status_code == 200
    text = _text(shown.text)
    assert "成员与角色" in text and "无人负责的角色" in text and "负责人" in text and "无人负责" in text
    assert body["user"]["email"] in text and 'href="/members"' in shown.text  # in the navigation

    bad = await _post(owner, "/members/invite", [("email", "not-an-email"), ("role", "member"), ("pack_roles", LEAD)])
    assert bad.status_code == 422
    assert "请输入邮箱地址，例如 name@example.com。" in _text(bad.text) and 'value="not-an-email"' in bad.text
    taken = await _post(owner, "/members/invite", {"email": body["user"]["email"], "role": "member"})
    assert taken.status_code == 409 and "此人已经是这个工作区的成员。" in _text(taken.text)

    email = unique_email("lead")
    sent = await _post(owner, "/members/invite", [("email", email), ("role", "member"), ("pack_roles", LEAD)])
    assert sent.status_code == 303 and sent.headers["location"] == "/members?notice=invitation_sent"
    [invitation] = (await owner.get("/api/v1/invitations")).json()
    assert invitation["pack_roles"] == [LEAD]
    listed = _text((await owner.client.get("/members")).text)
    assert email in listed and "已邀请" in listed and "角色： 负责人 · " in listed
    await deliver_events()
    again = await _post(owner, f"/members/invitations/{invitation['id']}/resend", {})
    assert again.status_code == 303
    await deliver_events()
    assert len(mail_to(email, "invitation")) == 2
    revoked = await _post(owner, f"/members/invitations/{invitation['id']}/revoke", {})
    assert revoked.status_code == 303 and (await owner.get("/api/v1/invitations")).json() == []

    member, member_id = await world.invite_and_join(owner, "member")
    changed = await _post(owner, f"/members/{member_id}/roles", [("role", "manager"), ("pack_roles", LEAD)])
    assert changed.status_code == 303, changed.text
    roles = {m["user_id"]: m["role"] for m in (await owner.get("/api/v1/members")).json()}
    assert roles[member_id] == "manager"
    assert (await _holders(owner))[LEAD] == member_id
    given = await _post(owner, "/members/pack-roles", {"key": HR, "user_id": member_id})
    assert given.status_code == 303 and (await _holders(owner))[HR] == member_id
    # Unticked: the role goes back to nobody.
    unticked = await _post(owner, f"/members/{member_id}/roles", [("role", "manager"), ("pack_roles", HR)])
    assert unticked.status_code == 303 and (await _holders(owner))[LEAD] is None

    last_owner = await _post(owner, f"/members/{owner_id}/roles", {"role": "member"})
    assert last_owner.status_code == 409
    assert "工作区至少要有一位所有者：请先把别人设为所有者。" in _text(last_owner.text)

    deactivated = await _post(owner, f"/members/{member_id}/remove", {})
    assert deactivated.status_code == 303 and deactivated.headers["location"] == "/members?notice=member_removed"
    assert member_id not in {m["user_id"] for m in (await owner.get("/api/v1/members")).json()}
    assert (await _holders(owner))[HR] is None  # a holder who left holds nothing
    assert (await member.get("/api/v1/my/tasks")).status_code in (401, 403)


async def test_the_members_page_is_for_owners_and_admins(world: World) -> None:
    owner, _ = await _workspace(world)
    member, _member_id = await world.invite_and_join(owner, "manager")
    page = await member.client.get("/members")
    assert page.status_code == 403 and "你没有权限这样做" in _text(page.text)
    assert 'href="/members"' not in (await member.client.get("/tasks")).text
    refused = await _post(member, "/members/invite", {"email": unique_email("x"), "role": "member"})
    assert refused.status_code == 403
    assert (await owner.get("/api/v1/invitations")).json() == []
    admin, _ = await world.invite_and_join(owner, "admin")
    assert (await admin.client.get("/members")).status_code == 200


async def test_another_workspace_never_sees_or_changes_members_and_invitations(world: World) -> None:
    owner, _ = await _workspace(world)
    email = unique_email("pending")
    await _post(owner, "/members/invite", [("email", email), ("role", "member"), ("pack_roles", LEAD)])
    [invitation] = (await owner.get("/api/v1/invitations")).json()
    _member, member_id = await world.invite_and_join(owner, "member")
    member_email = next(m["email"] for m in (await owner.get("/api/v1/members")).json() if m["user_id"] == member_id)

    intruder, _ = await _workspace(world)
    page = _text((await intruder.client.get("/members")).text)
    assert email not in page and member_email not in page
    for path, data in (
        (f"/members/{member_id}/roles", [("role", "admin"), ("pack_roles", LEAD)]),
        (f"/members/{member_id}/remove", []),
        (f"/members/invitations/{invitation['id']}/resend", []),
        (f"/members/invitations/{invitation['id']}/revoke", []),
    ):
        answer = await _post(intruder, path, data)
        assert answer.status_code == 404, (path, answer.status_code)
    roles = {m["user_id"]: m["role"] for m in (await owner.get("/api/v1/members")).json()}
    assert roles[member_id] == "member"
    assert [i["id"] for i in (await owner.get("/api/v1/invitations")).json()] == [invitation["id"]]
    assert (await _holders(owner))[LEAD] is None
