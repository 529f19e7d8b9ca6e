"""Notices about runs: who gets which, once however often an event arrives, worded in the reader's
language when read, sent on by e-mail as each member chooses; the pages (list, bell, mark read,
settings); and one workspace never reading or marking another's."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.db import open_session
from services.marketplace import service as marketplace
from services.notifications import service as notifications
from services.outbox.models import OutboxEvent
from services.outbox.service import event_message
from services.scheduler import service as scheduler
from services.sops.runs import notices
from tests.conftest import Api, World, deliver_events, mail_to
from tests.integration.test_builtin_messaging import Inbox, listed, smtp_server
from tests.integration.test_runs import STARTER, open_step, publish, role, start
from tests.plugin_support import run_plugin_hooks

FLOW: dict[str, Any] = {
    "start": "deliver",
    "steps": [
        {
            "kind": "task",
            "key": "deliver",
            "title": "Deliver the parcel",
            "owner": role("member"),
            "due": {"within": {"hours": 4, "business": False}},
            "exceptions": [
                {
                    "key": "stuck",
                    "label": "Parcel stuck at customs",
                    "notify": [role("manager")],
                    "escalate_after": {"hours": 2, "business": False},
                    "escalate_to": [role("manager")],
                }
            ],
        }
    ],
}
RUN = "Ship an order"
__all__ = ["listed", "smtp_server"]  # fixtures of the messaging tests, used by name below


async def mine(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/notifications", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def of_kind(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [n for n in items if n["kind"] == kind]


async def redeliver(tenant_id: uuid.UUID) -> None:
    """Hand the notices' subscriber every event of the workspace again (at-least-once delivery)."""
    async with open_session(system=True) as db:
        rows = (await db.scalars(select(OutboxEvent).where(OutboxEvent.tenant_id == tenant_id))).all()
        messages = [event_message(r) for r in rows]
    await notices.on_run_events(messages)


async def set_locale(api: Api, locale: str, name: str | None = None) -> None:
    body: dict[str, Any] = {"locale": locale}
    if name:
        body["display_name"] = name
    response = await api.patch("/api/v1/auth/profile", body)
    assert response.status_code == 200, response.text


async def team(world: World) -> tuple[Api, dict[str, Any], Api, str, Api, str]:
    owner, body = await world.signup(display_name="Li Wei")
    member, member_id = await world.invite_and_join(owner, "member")
    manager, manager_id = await world.invite_and_join(owner, "manager")
    await set_locale(manager, "en", "Zhao Min")
    return owner, body, member, member_id, manager, manager_id


async def test_claimable_then_assigned_once_each_in_the_reader_s_language(world: World) -> None:
    owner, body, member, member_id, manager, _ = await team(world)
    tenant_id = uuid.UUID(body["tenant"]["id"])
    procedure_id, _ = await publish(owner, FLOW)
    run = await start(owner, procedure_id)
    await deliver_events()

    # Ready for the member role: the member may claim it; the manager and owner are not told.
    (claimable,) = of_kind(await mine(member), "step_claimable")
    assert claimable["title"] == f"You can claim the step “Deliver the parcel” of “{RUN}”."
    assert claimable["link"] == f"/runs/{run['id']}" and claimable["params"]["run_id"] == run["id"]
    assert of_kind(await mine(manager), "step_claimable") == []

    step = open_step(run, "deliver")
    assigned = await owner.post(f"/api/v1/runs/{run['id']}/steps/{step['id']}/assign", {"user_id": member_id})
    assert assigned.status_code == 200, assigned.text
    await deliver_events()
    (notice,) = of_kind(await mine(member), "step_assigned")
    assert notice["title"] == f"Li Wei assigned the step “Deliver the parcel” of “{RUN}” to you."
    assert "actor_id" in notice["params"] and "Li Wei" not in str(notice["params"])

    # Delivered again (the broker's at-least-once), the events notify nobody a second time.
    before = len(await mine(member))
    await redeliver(tenant_id)
    await redeliver(tenant_id)
    assert len(await mine(member)) == before

    # The reader's language is the one they have when they read; names are the current ones.
    await set_locale(member, "zh-CN")
    await set_locale(owner, "en", "Li Wei (boss)")
    worded = {n["kind"]: n["title"] for n in await mine(member)}
    assert worded["step_assigned"] == "Li Wei (boss) 把工单“Ship an order”的步骤“Deliver the parcel”指派给了你。"
    assert worded["step_claimable"] == "你可以领取工单“Ship an order”的步骤“Deliver the parcel”。"


HANDOVER: dict[str, Any] = {
    "start": "count",
    "steps": [
        {"kind": "task", "key": "count", "title": "Count the stock", "owner": STARTER, "next": "pack"},
        {"kind": "task", "key": "pack", "title": "Pack the order", "owner": role("member"), "next": "sign"},
        {"kind": "task", "key": "sign", "title": "Sign the delivery note", "owner": STARTER},
    ],
}


async def test_a_step_you_get_by_your_own_doing_tells_you_nothing(world: World) -> None:
    owner, _body, member, _member_id, _manager, _ = await team(world)
    procedure_id, _ = await publish(owner, HANDOVER)
    run = await start(owner, procedure_id)
    done = await owner.post(f"/api/v1/runs/{run['id']}/steps/{open_step(run, 'count')['id']}/complete", {})
    assert done.status_code == 200, done.text
    await deliver_events()
    # The first step went to the owner because they started the run: no notice.
    assert of_kind(await mine(owner), "step_assigned") == []

    pack = open_step(done.json(), "pack")
    packed = await member.post(f"/api/v1/runs/{run['id']}/steps/{pack['id']}/complete", {})
    assert packed.status_code == 200, packed.text
    await deliver_events()
    # The last step is the owner's again, now because the member finished theirs: they are told.
    (notice,) = of_kind(await mine(owner), "step_assigned")
    assert notice["params"]["step"] == "Sign the delivery note"


async def test_a_claim_tells_nobody_and_a_reported_problem_tells_handlers_and_starter(world: World) -> None:
    owner, body, member, _member_id, manager, _ = await team(world)
    owner_email = body["user"]["email"]
    procedure_id, _ = await publish(owner, FLOW)
    run = await start(owner, procedure_id)
    step = open_step(run, "deliver")
    claimed = await member.post(f"/api/v1/runs/{run['id']}/steps/{step['id']}/claim", {})
    assert claimed.status_code == 200, claimed.text
    # The owner wants no e-mail about problems; the manager keeps the default (e-mail on).
    prefs = await owner.request("PUT", "/api/v1/notifications/preferences", {"email": [], "messaging": []})
    assert prefs.status_code == 200, prefs.text
    assert {p["kind"]: p["email"] for p in prefs.json()}["exception_raised"] is False
    await deliver_events()
    assert of_kind(await mine(member), "step_assigned") == []  # taking a task yourself tells nobody

    raised = await member.post(
        f"/api/v1/runs/{run['id']}/exceptions", {"kind": "stuck", "step_id": step["id"], "note": "held for papers"}
    )
    assert raised.status_code == 201, raised.text
    await deliver_events()
    expected = f"Wang Fang reported a problem on “{RUN}”: Parcel stuck at customs."
    for reader in (owner, manager):  # the run's starter and the people the problem's kind names
        (notice,) = of_kind(await mine(reader), "exception_raised")
        assert (notice["title"], notice["body"]) == (expected, "held for papers")
    assert of_kind(await mine(member), "exception_raised") == []  # not the one who reported it

    await deliver_events()  # the mails the notices asked for
    manager_email = (await manager.get("/api/v1/auth/session")).json()["user"]["email"]
    (mail,) = mail_to(manager_email, "notification")
    assert mail.subject == expected and mail.locale == "en"
    assert f"http://guiju.test/runs/{run['id']}" in mail.body and "held for papers" in mail.body
    assert mail_to(owner_email, "notification") == []


async def test_overdue_escalated_and_mentions(world: World) -> None:
    owner, _body, member, member_id, manager, _manager_id = await team(world)
    await set_locale(member, "zh-CN")
    procedure_id, _ = await publish(owner, FLOW)
    run = await start(owner, procedure_id)
    step = open_step(run, "deliver")
    assert (await member.post(f"/api/v1/runs/{run['id']}/steps/{step['id']}/claim", {})).status_code == 200

    await scheduler.fire_due(datetime.fromisoformat(step["due_at"]) + timedelta(minutes=1))
    await deliver_events()
    (overdue,) = of_kind(await mine(member), "step_overdue")
    assert overdue["title"] == "工单“Ship an order”的步骤“Deliver the parcel”已超时。"

    raised = await owner.post(f"/api/v1/runs/{run['id']}/exceptions", {"kind": "stuck", "step_id": step["id"]})
    assert raised.status_code == 201, raised.text
    await scheduler.fire_due(datetime.fromisoformat(raised.json()["escalate_at"]) + timedelta(minutes=1))
    await deliver_events()
    (escalated,) = of_kind(await mine(manager), "exception_escalated")
    assert escalated["title"] == (
        f"A problem on “{RUN}” is still open and is escalated to you: Parcel stuck at customs."
    )

    member_email = (await member.get("/api/v1/auth/session")).json()["user"]["email"]
    comment = await owner.post(
        f"/api/v1/runs/{run['id']}/comments",
        {"body": f"@Zhao Min and @{member_email}: the customs papers?", "mentions": [member_id]},
    )
    assert comment.status_code == 201, comment.text
    await deliver_events()
    (mention,) = of_kind(await mine(member, unread="true"), "mentioned")
    assert mention["title"] == "Li Wei 在工单“Ship an order”中提到了你。"
    assert mention["body"].startswith("@Zhao Min")
    assert len(of_kind(await mine(manager), "mentioned")) == 1
    assert of_kind(await mine(owner), "mentioned") == []  # the author is not told of their own words


async def test_pages_bell_open_and_mark_all_read(world: World) -> None:
    owner, _body, member, member_id, _manager, _ = await team(world)
    origin = {"Origin": "http://guiju.test"}
    empty = await member.get("/notifications")
    assert empty.status_code == 200 and "No notifications yet" in empty.text
    procedure_id, _ = await publish(owner, FLOW)
    run = await start(owner, procedure_id)
    await deliver_events()
    step = open_step(run, "deliver")
    await owner.post(f"/api/v1/runs/{run['id']}/steps/{step['id']}/assign", {"user_id": member_id})
    await deliver_events()

    listing = await member.get("/notifications")
    assert listing.status_code == 200
    assert 'aria-label="Notifications (2 unread)"' in listing.text
    assert "You can claim the step “Deliver the parcel” of “Ship an order”." in listing.text
    assert listing.text.count('class="notice unread"') == 2 and "Unread:" in listing.text
    assert ">Today<" in listing.text
    assert "(2 unread)" in listing.text  # the tab bar's count, in words

    bell = await member.get("/notifications/bell")
    assert bell.status_code == 200 and 'aria-label="Notifications (2 unread)"' in bell.text
    assert 'hx-swap-oob="true"' in bell.text and "<html" not in bell.text

    (first, _second) = await mine(member)
    opened = await member.get(f"/notifications/{first['id']}/open", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/runs/{run['id']}"
    assert (await member.get("/api/v1/notifications/unread-count")).json() == {"unread": 1}
    unread_tab = await member.get("/notifications", params={"show": "unread"})
    assert unread_tab.text.count('class="notice unread"') == 1

    session = (await member.get("/api/v1/auth/session")).json()
    refused = await member.client.post("/notifications/read-all", data={"csrf_token": session["csrf_token"]})
    assert refused.status_code == 403  # no Origin: not from this site
    marked = await member.client.post(
        "/notifications/read-all", data={"csrf_token": session["csrf_token"]}, headers=origin, follow_redirects=False
    )
    assert marked.status_code == 303 and "notice=all_read" in marked.headers["location"]
    assert (await member.get("/api/v1/notifications/unread-count")).json() == {"unread": 0}
    after = await member.get("/notifications?notice=all_read")
    assert "All notifications are marked read." in after.text and 'class="notice unread"' not in after.text
    assert 'aria-label="Notifications"' in after.text

    await set_locale(member, "zh-CN")
    chinese = await member.get("/notifications")
    assert "你可以领取工单“Ship an order”的步骤“Deliver the parcel”。" in chinese.text and "今天" in chinese.text
    assert "暂无通知" in (await member.get("/notifications?show=mentions")).text


async def test_settings_section_saves_the_channels(world: World) -> None:
    owner, _ = await world.signup()
    settings = await owner.get("/me")
    assert settings.status_code == 200
    assert 'action="/me/notifications"' in settings.text and "A problem is reported" in settings.text
    session = (await owner.get("/api/v1/auth/session")).json()
    saved = await owner.client.post(
        "/me/notifications",
        data={"csrf_token": session["csrf_token"], "email": ["mentioned", "step_overdue"], "messaging": ["mentioned"]},
        headers={"Origin": "http://guiju.test"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/me?notice=saved"
    prefs = {
        p["kind"]: (p["email"], p["messaging"]) for p in (await owner.get("/api/v1/notifications/preferences")).json()
    }
    assert prefs["mentioned"] == (True, True) and prefs["step_overdue"] == (True, False)
    assert prefs["exception_raised"] == (False, False)
    page = await owner.get("/me")
    assert 'value="mentioned" checked' in page.text


async def test_one_workspace_never_reads_or_marks_another_s(world: World) -> None:
    owner_a, body_a, member_a, member_a_id, _m, _ = await team(world)
    procedure_id, _ = await publish(owner_a, FLOW)
    await start(owner_a, procedure_id)
    await deliver_events()
    (notice,) = await mine(member_a)
    await owner_a.request("PUT", "/api/v1/notifications/preferences", {"email": ["mentioned"], "messaging": []})

    owner_b, _ = await world.signup()
    assert (await owner_b.post(f"/api/v1/notifications/{notice['id']}/read")).status_code == 404
    assert (await owner_b.get(f"/notifications/{notice['id']}/open", follow_redirects=False)).status_code == 404
    assert await mine(owner_b) == []
    assert (await owner_b.get("/api/v1/notifications/unread-count")).json() == {"unread": 0}
    assert (await owner_b.post("/api/v1/notifications/read-all")).json() == {"marked": 0}
    assert (await member_a.get("/api/v1/notifications/unread-count")).json() == {"unread": 1}
    prefs_b = {p["kind"]: p["email"] for p in (await owner_b.get("/api/v1/notifications/preferences")).json()}
    assert prefs_b["mentioned"] is False and prefs_b["exception_raised"] is True  # B's own defaults

    # Raw reads in B's scope see none of A's rows (the ORM criterion, and RLS on Postgres).
    tenant_b = uuid.UUID((await owner_b.get("/api/v1/auth/session")).json()["tenant"]["id"])
    async with open_session(tenant_b) as db:
        rows, _cursor = await notifications.list_notifications(db, uuid.UUID(member_a_id))
        assert rows == []
        assert await notifications.preferences(db, uuid.UUID(body_a["user"]["id"])) != []  # defaults only
        assert await notifications.unread_count(db, uuid.UUID(member_a_id)) == 0


async def test_notices_go_through_the_messaging_plugin_to_those_who_want_them(
    world: World, listed: None, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    marketplace.configure(dataclasses.replace(world.settings, plugin_allow_http_hosts=("127.0.0.1",)))
    try:
        owner, _ = await world.signup(display_name="Li Wei")
        keen, _keen_id = await world.invite_and_join(owner, "member")
        quiet, _quiet_id = await world.invite_and_join(owner, "member")
        off = await quiet.request("PUT", "/api/v1/notifications/preferences", {"email": [], "messaging": []})
        assert off.status_code == 200, off.text
        config = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_from_address": "ops@acme.test",
            "notification_channels": ["email"],
        }
        scopes = (await owner.get("/api/v1/marketplace/plugins/messaging")).json()["scopes"]
        installed = await owner.post("/api/v1/plugins/messaging/install", {"scopes": scopes, "config": config})
        assert installed.status_code == 201, installed.text
        procedure_id, _ = await publish(owner, FLOW)
        await start(owner, procedure_id)
        for _ in range(2):  # the notices, then what they send on
            await deliver_events()
        await run_plugin_hooks("messaging")
    finally:
        marketplace.configure(world.settings)
    keen_email = (await keen.get("/api/v1/auth/session")).json()["user"]["email"]
    quiet_email = (await quiet.get("/api/v1/auth/session")).json()["user"]["email"]
    assert len(of_kind(await mine(quiet), "step_claimable")) == 1  # in the app, always
    [message] = inbox.to(keen_email)
    assert message["Subject"] == f"You can claim the step “Deliver the parcel” of “{RUN}”."
    assert inbox.to(quiet_email) == []  # they turned messages off for this kind
