"""Apps & API as a browser posts its forms: an admin registers an app (its secret shown once),
changes it, makes a new secret, switches it off and on, disconnects it and deletes it; a member
makes a personal access token that works on the API and revokes it; refusals come back worded
beside their fields; members cannot reach the admins' parts, and another workspace's apps and
tokens cannot be reached by id."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from tests.conftest import World

ORIGIN = {"Origin": "http://guiju.test"}
CALLBACK = "https://erp.example/callback"


async def _post(api: Any, path: str, data: list[tuple[str, str]] | dict[str, str]) -> Any:
    form: dict[str, Any] = {}
    for key, value in data.items() if isinstance(data, dict) else data:
        form.setdefault(key, []).append(value)
    form["csrf_token"] = api.csrf
    return await api.client.post(path, data=form, headers=ORIGIN)


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _copied(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">([^<]+)<', html)
    assert found, html
    return unescape(found.group(1)).strip()


APP_FORM = [
    ("name", "Kingdee Sync"),
    ("publisher", "Partner Soft Ltd"),
    ("kind", "confidential"),
    ("redirect_uris", f"{CALLBACK}\r\n"),
    ("scopes", "records:read"),
    ("scopes", "runs:read"),
    ("service_role", "member"),
]


async def test_an_admin_registers_changes_and_deletes_an_app(world: World) -> None:
    owner, _ = await world.signup(locale="zh-CN")
    shown = await owner.client.get("/developer")
    assert shown.status_code == 200
    assert "应用与 API" in _text(shown.text) and 'href="/developer"' in shown.text  # in the sidebar

    bad = await _post(
        owner,
        "/developer/apps/new",
        [("name", "Sync"), ("publisher", "P"), ("kind", "public"), ("redirect_uris", "http://erp.example/cb")],
    )
    assert bad.status_code == 422
    text = _text(bad.text)
    assert "请输入完整地址，以 https:// 开头、不含 #" in text and "请至少选择一项它可以做的事。" in text
    assert 'value="Sync"' in bad.text and "http://erp.example/cb</textarea>" in bad.text

    registered = await _post(owner, "/developer/apps/new", APP_FORM)
    assert registered.status_code == 200, registered.text
    assert registered.headers["cache-control"] == "no-store"
    assert "请现在复制：它只显示这一次。" in _text(registered.text)
    secret = _copied(registered.text, "secret-value")
    [app] = (await owner.get("/api/v1/oauth/clients")).json()
    assert secret.endswith(app["secret_hint"]) and _copied(registered.text, "client-id") == app["client_id"]
    assert app["scopes"] == ["records:read", "runs:read"] and app["service_role"] == "member"

    detail = await owner.client.get(f"/developer/apps/{app['id']}")
    assert detail.status_code == 200 and secret not in detail.text and app["secret_hint"] in detail.text
    assert "查看你的数据表和记录" in _text(detail.text)
    edited = await _post(
        owner,
        f"/developer/apps/{app['id']}",
        [("name", "Kingdee Sync 2"), ("redirect_uris", CALLBACK), ("scopes", "records:read")],
    )
    assert edited.status_code == 303, edited.text
    assert (await owner.get(f"/api/v1/oauth/clients/{app['id']}")).json()["scopes"] == ["records:read"]
    refused = await _post(owner, f"/developer/apps/{app['id']}", [("logo_url", "http://x.example/a.png")])
    assert refused.status_code == 422
    assert "请输入以 https:// 开头的图标地址。" in _text(refused.text) and "请输入应用名称。" in _text(refused.text)

    rotated = await _post(owner, f"/developer/apps/{app['id']}/rotate-secret", {})
    assert rotated.status_code == 200 and _copied(rotated.text, "secret-value") != secret
    off = await _post(owner, f"/developer/apps/{app['id']}/disable", {})
    assert off.status_code == 303 and (await owner.get(f"/api/v1/oauth/clients/{app['id']}")).json()["disabled"]
    on = await _post(owner, f"/developer/apps/{app['id']}/enable", {})
    assert on.status_code == 303 and not (await owner.get(f"/api/v1/oauth/clients/{app['id']}")).json()["disabled"]

    # Another workspace's admin reaches none of it by id.
    other, _ = await world.signup(locale="en")
    assert (await other.client.get(f"/developer/apps/{app['id']}")).status_code == 404
    for action in ("rotate-secret", "disable", "delete"):
        assert (await _post(other, f"/developer/apps/{app['id']}/{action}", {})).status_code == 404
    assert (await _post(other, f"/developer/connected/{app['id']}/disconnect", {})).status_code == 404

    deleted = await _post(owner, f"/developer/apps/{app['id']}/delete", {})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/developer?notice=app_deleted"
    assert (await owner.get("/api/v1/oauth/clients")).json() == []


async def test_a_member_makes_a_personal_token_and_revokes_it(world: World) -> None:
    owner, _ = await world.signup(locale="en")
    member, _ = await world.invite_and_join(owner, "member")
    shown = await member.client.get("/developer")
    assert shown.status_code == 200
    text = _text(shown.text)
    assert "Personal access tokens" in text and "Developer apps" not in text
    assert (await member.client.get("/developer/apps/new")).status_code == 403
    form = await member.client.get("/developer/tokens/new")
    assert 'value="records:read"' in form.text and 'value="members:write"' not in form.text  # above a member

    too_long = await _post(
        member, "/developer/tokens/new", [("name", "Export"), ("scopes", "records:read"), ("expires_in_days", "999")]
    )
    assert too_long.status_code == 422 and "Lasts (days) is outside the allowed range." in _text(too_long.text)
    above = await _post(member, "/developer/tokens/new", [("name", "Export"), ("scopes", "members:write")])
    assert above.status_code == 422 and "Your role cannot allow some of these: untick them." in _text(above.text)
    made = await _post(
        member, "/developer/tokens/new", [("name", "Export"), ("scopes", "records:read"), ("expires_in_days", "30")]
    )
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = _copied(made.text, "secret-value")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await (await world.client()).get("/api/v1/collections", headers=bearer)).status_code == 200
    [listed] = (await member.get("/api/v1/personal-tokens")).json()

    other, _ = await world.signup(locale="en")
    assert (await _post(other, f"/developer/tokens/{listed['id']}/revoke", {})).status_code == 404
    revoked = await _post(member, f"/developer/tokens/{listed['id']}/revoke", {})
    assert revoked.status_code == 303 and revoked.headers["location"] == "/developer?notice=token_revoked"
    assert (await (await world.client()).get("/api/v1/collections", headers=bearer)).status_code == 401


async def test_the_settings_page_links_to_apps_and_api(world: World) -> None:
    owner, _ = await world.signup(locale="en")
    member, _ = await world.invite_and_join(owner, "member")
    settings = await member.client.get("/me")
    assert 'href="/developer"' in settings.text and "Apps &amp; API" in settings.text


async def test_an_admin_sees_a_connected_app_and_disconnects_it(world: World) -> None:
    from tests.integration.test_oauth import BASE, connect

    connected = await connect(world)
    owner = connected.owner
    listed = await owner.client.get("/developer")
    text = _text(listed.text)
    assert "Connected apps" in text and "People who connected it: 1" in text
    assert "See your collections and records" in text  # records:read in plain words
    bearer = {"Authorization": f"Bearer {connected.token['access_token']}"}
    assert (await owner.client.get("/api/v1/collections", headers=bearer)).status_code == 200

    other, _ = await world.signup(locale="en")
    assert (await _post(other, f"/developer/connected/{connected.app['id']}/disconnect", {})).status_code == 404
    answer = await owner.client.post(
        f"/developer/connected/{connected.app['id']}/disconnect",
        data={"csrf_token": owner.csrf or ""},
        headers={"Origin": BASE},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/developer?notice=app_disconnected"
    assert (await owner.client.get("/api/v1/collections", headers=bearer)).status_code == 401
    assert "No app is connected to this workspace." in _text((await owner.client.get("/developer")).text)
