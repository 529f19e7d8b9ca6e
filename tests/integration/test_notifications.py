"""In-app notifications: made by an automation's notify action, read and marked read by their member."""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq

from services.automation import service as automations
from tests.conftest import World, deliver_events


async def notify_by_webhook(api: Any, client: Any, user_id: str, title: str) -> str:
    """An automation that notifies ``user_id`` when its webhook is called; call it once, run it."""
    created = await api.post(
        "/api/v1/automations",
        {
            "name": "Ping",
            "trigger": {"type": "webhook"},
            "actions": [{"kind": "notify", "to": [user_id], "title": {"en": title + " {{ payload.n }}"}, "link": "/x"}],
        },
    )
    assert created.status_code == 201, created.text
    rotated = await api.post(f"/api/v1/automations/{created.json()['id']}/webhook/rotate")
    assert rotated.status_code == 200, rotated.text
    url = rotated.json()["url"]
    called = await client.post(url[url.index("/hooks/") :], json={"n": 1})
    assert called.status_code == 202, called.text
    await asyncio.to_thread(dramatiq.get_broker().join, automations.ACTIONS_QUEUE, timeout=30_000)
    await deliver_events()
    return str(created.json()["id"])


async def test_a_member_reads_and_marks_their_own_notifications(world: World) -> None:
    owner, _ = await world.signup()
    member, member_id = await world.invite_and_join(owner, "member")
    await notify_by_webhook(owner, (await world.client()).client, member_id, "Hello")
    await notify_by_webhook(owner, (await world.client()).client, member_id, "Again")

    mine = (await member.get("/api/v1/notifications")).json()
    assert [n["title"] for n in mine["items"]] == ["Again 1", "Hello 1"]
    assert (await owner.get("/api/v1/notifications")).json()["items"] == []  # the owner got none

    first_page = (await member.get("/api/v1/notifications", params={"limit": 1})).json()
    assert [n["title"] for n in first_page["items"]] == ["Again 1"]
    second_page = (
        await member.get("/api/v1/notifications", params={"limit": 1, "cursor": first_page["next_cursor"]})
    ).json()
    assert [n["title"] for n in second_page["items"]] == ["Hello 1"] and second_page["next_cursor"] is None

    notification_id = mine["items"][1]["id"]
    assert (await owner.post(f"/api/v1/notifications/{notification_id}/read")).status_code == 404  # not theirs
    read = await member.post(f"/api/v1/notifications/{notification_id}/read")
    assert read.status_code == 200 and read.json()["read_at"] is not None
    unread = (await member.get("/api/v1/notifications", params={"unread": "true"})).json()
    assert [n["title"] for n in unread["items"]] == ["Again 1"]
    bad = await member.get("/api/v1/notifications", params={"cursor": "nonsense"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["code"] == "invalid_cursor"
