"""A validly signed webhook call sent again within the signature's 5 minutes gets the first copy's
answer and starts nothing, also when the copies arrive at the same moment."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from services.automation import replays
from services.automation.models import WebhookReplay
from services.db import open_session
from tenants.base import utcnow
from tests.conftest import World
from tests.integration.test_webhooks_inbound import _signed, _webhook_automation

JSON = {"Content-Type": "application/json"}


async def _executions(api: Any, automation_id: str) -> list[str]:
    listed = await api.get(f"/api/v1/automations/{automation_id}/executions")
    assert listed.status_code == 200, listed.text
    return [e["id"] for e in listed.json()]


async def _deliveries(api: Any, automation_id: str) -> list[str]:
    listed = await api.get(f"/api/v1/automations/{automation_id}/webhook/deliveries")
    return [d["status"] for d in listed.json()]


async def test_a_replayed_delivery_gets_the_first_answer_and_runs_nothing(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, secret = await _webhook_automation(api, verify=True)
    sender = (await world.client()).client
    body = json.dumps({"code": "A-1"}).encode()
    signed = {**JSON, "X-Guiju-Signature": _signed(secret, body)}

    first = await sender.post(path, content=body, headers=signed)
    assert first.status_code == 202, first.text
    again = await sender.post(path, content=body, headers=signed)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert await _executions(api, automation_id) == [first.json()["execution_id"]]
    assert await _deliveries(api, automation_id) == ["replayed", "accepted"]

    # A new signature (another moment, or another body) is another delivery.
    other = await sender.post(path, content=body, headers={**JSON, "X-Guiju-Signature": _signed(secret, body, 1)})
    assert other.status_code == 401  # stale: outside the 5 minutes, refused before anything else
    later = await sender.post(
        path, content=body + b" ", headers={**JSON, "X-Guiju-Signature": _signed(secret, body + b" ")}
    )
    assert later.status_code == 202 and later.json() != first.json(), later.text
    assert len(await _executions(api, automation_id)) == 2


async def test_two_copies_at_once_start_one_execution(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, secret = await _webhook_automation(api, verify=True)
    senders = [(await world.client()).client for _ in range(4)]
    body = json.dumps({"code": "B-7"}).encode()
    signed = {**JSON, "X-Guiju-Signature": _signed(secret, body)}

    answers = await asyncio.gather(*(sender.post(path, content=body, headers=signed) for sender in senders))

    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({a.json()["execution_id"] for a in answers}) == 1
    assert await _executions(api, automation_id) == [answers[0].json()["execution_id"]]
    assert sorted(await _deliveries(api, automation_id)) == ["accepted", "replayed", "replayed", "replayed"]


async def test_a_refused_delivery_is_refused_again_even_once_it_would_run(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, secret = await _webhook_automation(api, verify=True)
    disabled = await api.patch(f"/api/v1/automations/{automation_id}", {"enabled": False})
    assert disabled.status_code == 200, disabled.text
    sender = (await world.client()).client
    body = b'{"code": "C-1"}'
    signed = {**JSON, "X-Guiju-Signature": _signed(secret, body)}

    first = await sender.post(path, content=body, headers=signed)
    assert first.status_code == 409 and first.json()["code"] == "automation_disabled", first.text
    enabled = await api.patch(f"/api/v1/automations/{automation_id}", {"enabled": True})
    assert enabled.status_code == 200, enabled.text
    again = await sender.post(path, content=body, headers=signed)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert await _executions(api, automation_id) == []


async def test_remembered_deliveries_are_forgotten_after_their_window(world: World) -> None:
    api, body = await world.signup()
    _automation_id, path, secret = await _webhook_automation(api, verify=True)
    payload = b'{"code": "D-1"}'
    sent = await (await world.client()).client.post(
        path, content=payload, headers={**JSON, "X-Guiju-Signature": _signed(secret, payload)}
    )
    assert sent.status_code == 202, sent.text
    tenant_id = uuid.UUID(body["tenant"]["id"])

    async def remembered() -> int:
        async with open_session(tenant_id) as db:
            return int(await db.scalar(select(func.count()).select_from(WebhookReplay)) or 0)

    async with open_session(tenant_id) as db:
        assert await replays.prune(db, utcnow() + timedelta(minutes=5)) == 0  # still inside the window
    assert await remembered() == 1
    async with open_session(tenant_id) as db:
        assert await replays.prune(db, utcnow() + timedelta(minutes=7)) == 1
    assert await remembered() == 0
