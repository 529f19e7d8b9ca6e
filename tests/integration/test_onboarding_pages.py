"""The onboarding wizard through its pages, as a browser posts its forms (same-site Origin, the
form's CSRF token): sign-up leads into it; packs, roles (with an unassigned role, a key clash and
samples), install with progress (htmx fragment, and without JS), done with sample removal; each
step is saved and resumed; another workspace sees nothing of it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from services.gallery import service as gallery
from tests.conftest import PASSWORD, World, deliver_events, mail_to, token_from, unique_email

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "packs"
ORIGIN = {"Origin": "http://guiju.test"}


@pytest.fixture
def offered(world: World) -> Iterator[None]:
    gallery.configure(dataclasses.replace(world.settings, template_packs=(str(FIXTURES / "v1"),)))
    yield
    gallery.configure(world.settings)


async def _post(api: Any, path: str, data: dict[str, Any] | list[tuple[str, str]], **headers: str) -> Any:
    form: dict[str, Any] = {}
    for key, value in data.items() if isinstance(data, dict) else data:
        form.setdefault(key, []).append(value)
    form["csrf_token"] = api.csrf
    return await api.client.post(path, data=form, headers={**ORIGIN, **headers})


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


async def test_sign_up_leads_into_the_wizard(world: World) -> None:
    api = await world.client()
    email = unique_email("owner")
    form = {
        "display_name": "Li Wei",
        "email": email,
        "password": PASSWORD,
        "company_name": "Tea Co",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
    }
    signed_up = await api.client.post("/signup", data=form, headers=ORIGIN)
    assert signed_up.status_code == 303, signed_up.text
    assert signed_up.headers["location"] == "/onboarding"
    resumed = await api.client.get("/onboarding")
    assert resumed.status_code == 303 and resumed.headers["location"] == "/onboarding/packs"
    packs = await api.client.get("/onboarding/packs")
    assert packs.status_code == 200
    text = _text(packs.text)
    assert "第 1 步，共 4 步" in text and "电商店铺运营" in text
    assert re.search(r"\d+ 个流程 · \d+ 个数据表 · \d+ 条自动化", text)


async def test_the_wizard_from_packs_to_done(world: World, offered: None) -> None:
    api, body = await world.signup(locale="en")
    owner = body["user"]["id"]
    # A collection the pack also brings: a key clash to decide.
    await api.post(
        "/api/v1/collections",
        {"key": "shop_orders", "name": "My orders", "fields": [{"key": "n", "label": "N", "type": "text"}]},
    )
    page = await api.client.get("/onboarding/packs")
    assert "Step 1 of 4" in _text(page.text) and "Small shop orders" in page.text
    assert "1 procedures · 1 data tables · 1 automations" in _text(page.text)
    preview = await api.client.get("/onboarding/packs/mini-shop")
    assert preview.status_code == 200 and "What will be created" in preview.text and "Ship an order" in preview.text
    # Each procedure is previewed as its flowchart, the step list beside it as its text alternative.
    assert '<svg class="flowchart-svg"' in preview.text and 'aria-label="Flowchart of Ship an order"' in preview.text

    none_chosen = await _post(api, "/onboarding/packs", {})
    assert none_chosen.status_code == 422 and "Choose at least one pack." in none_chosen.text
    chosen = await _post(api, "/onboarding/packs", [("packs", "mini-shop")])
    assert chosen.status_code == 303 and chosen.headers["location"] == "/onboarding/roles"
    # Saved: coming back resumes at step 2.
    assert (await api.client.get("/onboarding")).headers["location"] == "/onboarding/roles"

    roles = await api.client.get("/onboarding/roles")
    text = _text(roles.text)
    assert "Step 2 of 4" in text and "Packer" in text and "Checker" in text
    assert "Nobody can claim this role's tasks" in text  # unassigned is the default, said plainly
    assert "shop_orders_2" in roles.text and "Use the existing shop_orders" in text

    bad = await _post(
        api,
        "/onboarding/roles",
        {"role:mini-shop:packer": "invite", "email:mini-shop:packer": "not-an-email", "samples": "yes"},
    )
    assert bad.status_code == 422 and "Enter an email address" in bad.text
    answers = {
        "role:mini-shop:packer": "me",
        "role:mini-shop:checker": "none",
        "clash:mini-shop:shop_orders": "install_as",
        "newkey:mini-shop:shop_orders": "shop_orders_2",
        "samples": "yes",
    }
    saved = await _post(api, "/onboarding/roles", answers)
    assert saved.status_code == 303 and saved.headers["location"] == "/onboarding/install"

    install = await api.client.get("/onboarding/install")
    assert "Step 3 of 4" in _text(install.text) and "0/" in _text(install.text)
    assert 'hx-post="/onboarding/install/next"' in install.text and "every 2s" in install.text
    fragment = await _post(api, "/onboarding/install/next", {}, **{"HX-Request": "true"})
    assert fragment.status_code == 200, fragment.text
    assert "<html" not in fragment.text and "Installed" in fragment.text
    done, total = map(int, re.search(r"(\d+)/(\d+) items installed", _text(fragment.text)).groups())  # type: ignore[union-attr]
    assert done == total > 0 and 'hx-post="/onboarding/install/next"' not in fragment.text

    # What the wizard asked for was installed: packer is the owner, checker nobody, the new key.
    installed = (await api.get("/api/v1/templates/mini-shop")).json()
    assert installed["roles"] == {"packer": owner}
    collections = {c["key"] for c in (await api.get("/api/v1/collections")).json()}
    assert collections == {"shop_orders", "shop_orders_2"}

    finished = await api.client.get("/onboarding/done")
    text = _text(finished.text)
    assert "Step 4 of 4" in text and "What to do next" in text and "Invite your team" in text
    assert "1 roles without a person" in text and "1 sample records are marked as samples." in text
    removed = await _post(api, "/onboarding/samples/delete", {})
    assert removed.status_code == 303
    after = await api.client.get(removed.headers["location"])
    assert "The sample records are deleted." in after.text and "Delete all sample records" not in after.text


async def test_a_failed_pack_shows_its_reason_and_retries(world: World, offered: None) -> None:
    api, _ = await world.signup(locale="en")
    await _post(api, "/onboarding/packs", [("packs", "mini-shop")])
    await _post(api, "/onboarding/roles", {"samples": "no"})
    # Between the choice and the install, someone makes a table with the pack's key: the pack fails.
    taken = await api.post(
        "/api/v1/collections",
        {"key": "shop_orders", "name": "Mine", "fields": [{"key": "n", "label": "N", "type": "text"}]},
    )
    assert taken.status_code == 201, taken.text
    # Without JS: the button installs the next pack and comes back to the page.
    stepped = await _post(api, "/onboarding/install/next", {})
    assert stepped.status_code == 303
    page = _text((await api.client.get("/onboarding/install")).text)
    assert "Failed" in page and "Reason:" in page and "Retry" in page
    # The owner gives their table another key, then retries.
    assert (await api.post(f"/api/v1/collections/{taken.json()['id']}/rename", {"key": "my_orders"})).status_code == 200
    retried = await _post(api, "/onboarding/install/retry/mini-shop", {})
    assert retried.status_code == 303
    await _post(api, "/onboarding/install/next", {})
    assert "Installed" in _text((await api.client.get("/onboarding/install")).text)


async def test_the_wizard_needs_an_admin_and_the_same_site(world: World, offered: None) -> None:
    api, _ = await world.signup()
    member, _ = await world.invite_and_join(api, "member")
    assert (await member.client.get("/onboarding/packs")).status_code == 403
    no_origin = await api.client.post("/onboarding/packs", data={"packs": "mini-shop", "csrf_token": api.csrf})
    assert no_origin.status_code == 403
    no_token = await api.client.post("/onboarding/packs", data={"packs": "mini-shop"}, headers=ORIGIN)
    assert no_token.status_code == 403


async def test_another_workspace_sees_nothing_of_a_wizard(world: World, offered: None) -> None:
    api, _ = await world.signup()
    other, _ = await world.signup()
    await _post(api, "/onboarding/packs", [("packs", "mini-shop")])
    await _post(api, "/onboarding/roles", {"samples": "yes"})
    await _post(api, "/onboarding/install/next", {})
    assert (await other.client.get("/onboarding")).headers["location"] == "/onboarding/packs"
    assert (await other.client.get("/onboarding/install")).headers["location"] == "/onboarding/packs"
    page = await other.client.get("/onboarding/packs")
    assert 'value="mini-shop" checked' not in page.text
    assert (await other.get("/api/v1/templates/mini-shop")).status_code == 404
    # Deleting samples there leaves this workspace's samples alone.
    await _post(other, "/onboarding/samples/delete", {})
    orders = next(c for c in (await api.get("/api/v1/collections")).json() if c["key"] == "shop_orders")
    listed = (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"]
    assert [r["sample"] for r in listed] == [True]


async def test_the_wizards_problems_are_worded_in_chinese_and_an_early_invitee_gets_the_role(
    world: World, offered: None
) -> None:
    api, _ = await world.signup(locale="zh-CN")
    none_chosen = await _post(api, "/onboarding/packs", {})
    assert none_chosen.status_code == 422 and "请至少选择一个行业模板。" in _text(none_chosen.text)
    await _post(api, "/onboarding/packs", [("packs", "mini-shop")])
    await world.invite_and_join(api, "member")
    taken_email = next(m["email"] for m in (await api.get("/api/v1/members")).json() if m["role"] == "member")
    bad = await _post(
        api,
        "/onboarding/roles",
        {
            "role:mini-shop:packer": "member",
            "role:mini-shop:checker": "invite",
            "email:mini-shop:checker": "ｍｅｉ＠example.com",
            "samples": "no",
        },
    )
    assert bad.status_code == 422
    text = _text(bad.text)
    assert "请为这个角色选择一位成员。" in text and "请输入邮箱地址，例如 name@example.com。" in text
    assert "choose a member" not in text and "half-width" not in text  # never the service's English detail
    already = await _post(
        api,
        "/onboarding/roles",
        {"role:mini-shop:packer": "invite", "email:mini-shop:packer": taken_email, "samples": "no"},
    )
    assert already.status_code == 422 and "此人已经是这个工作区的成员。" in _text(already.text)

    # One person invited for both roles joins before the install: the install gives them both.
    email = unique_email("early")
    answers = {
        "role:mini-shop:packer": "invite",
        "email:mini-shop:packer": email,
        "role:mini-shop:checker": "invite",
        "email:mini-shop:checker": email.upper(),
        "samples": "no",
    }
    saved = await _post(api, "/onboarding/roles", answers)
    assert saved.status_code == 303, saved.text
    [invitation] = (await api.get("/api/v1/invitations")).json()
    assert invitation["pack_roles"] == ["mini-shop:packer", "mini-shop:checker"]
    await deliver_events()
    joiner = await world.client()
    accepted = await joiner.post(
        "/api/v1/auth/accept-invitation",
        {"token": token_from(mail_to(email, "invitation")[-1]), "display_name": "Zhao", "password": PASSWORD},
    )
    assert accepted.status_code == 200, accepted.text
    await _post(api, "/onboarding/install/next", {})
    installed = (await api.get("/api/v1/templates/mini-shop")).json()
    joined = accepted.json()["user"]["id"]
    assert installed["roles"] == {"packer": joined, "checker": joined}
