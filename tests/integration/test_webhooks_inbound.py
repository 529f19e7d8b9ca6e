"""Inbound automation webhooks: the secret URL, the signature check, JSON only, the size limit, and
a visible log of refused calls."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from services.automation import webhooks
from tests.conftest import World


async def _webhook_automation(api: Any, *, verify: bool, mapping: dict[str, str] | None = None) -> tuple[str, str, str]:
    """A webhook automation (its id, its ``/hooks/…`` path and signing secret) that waits 5 minutes."""
    created = await api.post(
        "/api/v1/automations",
        {
            "name": "Orders from the shop",
            "trigger": {"type": "webhook", "verify_signature": verify, "mapping": mapping or {"code": "payload.code"}},
            "actions": [{"kind": "wait", "duration": {"minutes": 5, "business": False}}],
        },
    )
    assert created.status_code == 201, created.text
    automation_id = created.json()["id"]
    rotated = await api.post(f"/api/v1/automations/{automation_id}/webhook/rotate")
    assert rotated.status_code == 200, rotated.text
    url = rotated.json()["url"]
    return automation_id, url[url.index("/hooks/") :], rotated.json()["signing_secret"]


def _signed(secret: str, body: bytes, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    return f"t={at},v1={hmac.new(secret.encode(), f'{at}.'.encode() + body, hashlib.sha256).hexdigest()}"


async def _deliveries(api: Any, automation_id: str) -> list[tuple[str, str | None]]:
    listed = await api.get(f"/api/v1/automations/{automation_id}/webhook/deliveries")
    assert listed.status_code == 200, listed.text
    return [(d["status"], d["code"]) for d in listed.json()]


async def test_signed_calls_run_and_bad_ones_are_refused_and_logged(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, secret = await _webhook_automation(api, verify=True)
    stranger = await world.client()  # no session, no CSRF token: the URL is the credential
    body = json.dumps({"code": "A-1"}).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "d-1"}

    good = await stranger.client.post(
        path, content=body, headers={**headers, "X-Guiju-Signature": _signed(secret, body)}
    )
    assert good.status_code == 202, good.text
    executions = await api.get(f"/api/v1/automations/{automation_id}/executions")
    assert [e["id"] for e in executions.json()] == [good.json()["execution_id"]]

    bad = await stranger.client.post(
        path, content=body, headers={**headers, "X-Guiju-Signature": _signed("x" * 20, body)}
    )
    assert bad.status_code == 401 and bad.json()["code"] == "bad_signature"
    stale = _signed(secret, body, int(time.time()) - 600)
    old = await stranger.client.post(path, content=body, headers={**headers, "X-Guiju-Signature": stale})
    assert old.status_code == 401 and "5 minutes" in old.json()["detail"]
    unsigned = await stranger.client.post(path, content=body, headers=headers)
    assert unsigned.status_code == 401
    assert await _deliveries(api, automation_id) == [
        ("refused", "bad_signature"),
        ("refused", "bad_signature"),
        ("refused", "bad_signature"),
        ("accepted", None),
    ]

    # Rotating replaces the URL: the old one is unknown from now on.
    _id, new_path, _secret = automation_id, *(await _rotate(api, automation_id))
    assert new_path != path
    gone = await stranger.client.post(path, content=body, headers=headers)
    assert gone.status_code == 404


async def _rotate(api: Any, automation_id: str) -> tuple[str, str]:
    rotated = await api.post(f"/api/v1/automations/{automation_id}/webhook/rotate")
    url = rotated.json()["url"]
    return url[url.index("/hooks/") :], rotated.json()["signing_secret"]


async def test_json_only_size_limit_and_unknown_tokens(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, _secret = await _webhook_automation(api, verify=False)
    stranger = await world.client()
    form = await stranger.client.post(
        path, content=b"code=A-1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type"
    broken = await stranger.client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_json"
    huge = json.dumps({"blob": "x" * (world.settings.webhook_max_bytes + 1)}).encode()
    too_big = await stranger.client.post(path, content=huge, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"
    ok = await stranger.client.post(path, content=b'{"code": "B"}', headers={"Content-Type": "application/json"})
    assert ok.status_code == 202, ok.text
    assert [c for _, c in await _deliveries(api, automation_id)] == [
        None,
        "payload_too_large",
        "invalid_json",
        "unsupported_media_type",
    ]
    for token in ("nope", f"{'0' * 32}.{'a' * 43}", path.rsplit("/", 1)[1][:-1] + "x"):
        unknown = await stranger.client.post(
            f"/hooks/{token}", content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert unknown.status_code == 404, token


async def test_rotation_needs_a_manager_and_a_webhook_trigger(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, _secret = await _webhook_automation(api, verify=False)
    member, _ = await world.invite_and_join(api, "member")
    assert (await member.post(f"/api/v1/automations/{automation_id}/webhook/rotate")).status_code == 403
    assert (await member.get(f"/api/v1/automations/{automation_id}/webhook/deliveries")).status_code == 403

    # The member's refused rotation changed nothing: the URL still starts the automation.
    stranger = await world.client()
    headers = {"Content-Type": "application/json"}
    kept = await stranger.client.post(path, content=b'{"code": "K-1"}', headers=headers)
    assert kept.status_code == 202, kept.text
    # A manager rotates: the new URL starts the automation, the old one is gone.
    manager, _ = await world.invite_and_join(api, "manager")
    new_path, _new_secret = await _rotate(manager, automation_id)
    assert new_path != path
    assert (await stranger.client.post(path, content=b"{}", headers=headers)).status_code == 404
    started = await stranger.client.post(new_path, content=b'{"code": "K-2"}', headers=headers)
    assert started.status_code == 202, started.text
    executions = (await manager.get(f"/api/v1/automations/{automation_id}/executions")).json()
    assert {e["id"] for e in executions} == {kept.json()["execution_id"], started.json()["execution_id"]}
    assert await _deliveries(manager, automation_id) == [("accepted", None), ("accepted", None)]

    # Only a webhook automation has a URL to rotate.
    scheduled = await api.post(
        "/api/v1/automations",
        {
            "name": "Every morning",
            "trigger": {"type": "schedule", "cron": "0 9 * * *"},
            "actions": [{"kind": "wait", "duration": {"minutes": 5, "business": False}}],
        },
    )
    assert scheduled.status_code == 201, scheduled.text
    no_url = await manager.post(f"/api/v1/automations/{scheduled.json()['id']}/webhook/rotate")
    assert no_url.status_code == 409 and no_url.json()["code"] == "not_a_webhook_automation"


def test_signature_check_is_exact() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    header = _signed("k" * 20, body, now)
    assert webhooks.signature_problem(header, "k" * 20, body, now=now + 299) is None
    assert webhooks.signature_problem(header, "k" * 20, body + b" ", now=now) is not None
    assert webhooks.signature_problem("t=1,v1=zz", "k" * 20, body, now=now) is not None
    assert webhooks.signature_problem(None, "k" * 20, body, now=now) is not None
