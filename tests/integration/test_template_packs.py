"""The gallery's own packs, and packs plugins ship: every one loads, is listed and installs whole
(once) into a new workspace on each database; what needs a plugin the workspace lacks waits,
disabled with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from services.gallery import service as gallery
from services.marketplace import service as marketplace
from tests.conftest import World
from tests.plugin_support import deployed, plugin_module

BUILTIN = sorted(path.name for path in gallery.BUILTIN_PACKS.iterdir() if path.is_dir())
INDUSTRIES = {"ecommerce", "foreign_trade", "clinic", "general"}


def test_the_gallery_offers_a_pack_for_every_industry_and_refuses_none() -> None:
    offered = gallery.catalog()
    assert offered.refused == []
    assert {pack.industry for pack in offered.packs.values()} >= INDUSTRIES
    for pack in offered.packs.values():
        if pack.industry == "general":
            continue
        procedures = pack.of_kind("procedure")
        assert len(procedures) >= 4, pack.id
        for item in procedures:
            steps = item.data["definition"]["steps"]
            assert 6 <= len(steps) <= 15, (pack.id, item.key, len(steps))
            assert any(s.get("exceptions") or s.get("on_reject") for s in steps), (pack.id, item.key)
        assert all(c.data.get("samples") for c in pack.of_kind("collection")), pack.id
        assert pack.of_kind("automation"), pack.id


@pytest.mark.parametrize("pack_id", BUILTIN)
async def test_a_builtin_pack_installs_whole_and_once(world: World, pack_id: str) -> None:
    await marketplace.list_deployed_plugins()
    api, _ = await world.signup(locale="zh-CN")
    installed = await api.post(f"/api/v1/templates/{pack_id}/install", {})
    assert installed.status_code == 201, installed.text
    report = installed.json()
    pack = gallery.catalog().packs[pack_id]
    assert len(report["items"]) == len(pack.items)
    procedures = (await api.get("/api/v1/procedures")).json()
    assert {p["key"] for p in procedures} == {i.key for i in pack.of_kind("procedure")}
    assert all(p["latest_published_version"] == 1 for p in procedures)
    missing = {p["name"] for p in report["missing_plugins"]}
    automations = (await api.get("/api/v1/automations")).json()
    for automation in automations:
        uses = {a.get("plugin") for a in automation["actions"] if a.get("kind") == "plugin"}
        if automation["trigger"].get("type") == "plugin":
            uses.add(automation["trigger"]["plugin"])
        if uses & missing:
            assert not automation["enabled"] and "安装后再启用" in automation["disabled_reason"], automation
    again = await api.post(f"/api/v1/templates/{pack_id}/install", {})
    assert again.status_code == 200 and again.json()["changed"] is False
    assert len((await api.get("/api/v1/procedures")).json()) == len(procedures)


async def test_foreign_trade_waits_for_its_plugins_then_runs_with_them(world: World) -> None:
    await marketplace.list_deployed_plugins()
    api, _ = await world.signup(locale="zh-CN")
    installed = (await api.post("/api/v1/templates/foreign-trade/install", {})).json()
    assert {p["name"] for p in installed["missing_plugins"]} >= {"customs", "erp"}
    assert any("created disabled" in note for note in installed["notes"])

    fresh, body = await world.signup(locale="en")
    for plugin in ("customs", "erp", "messaging"):
        listing = (await fresh.get(f"/api/v1/marketplace/plugins/{plugin}")).json()
        scopes = listing["versions"][0]["scopes"]
        granted = await fresh.post(f"/api/v1/plugins/{plugin}/install", {"scopes": scopes, "collections": []})
        assert granted.status_code == 201, granted.text
    # Every role taken by the owner ("myself"): nothing waits for a member either.
    roles = {str(r["key"]): body["user"]["id"] for r in gallery.catalog().packs["foreign-trade"].roles}
    report = (await fresh.post("/api/v1/templates/foreign-trade/install", {"roles": roles})).json()
    assert report["missing_plugins"] == [] and report["unassigned_roles"] == []
    assert all(a["enabled"] for a in (await fresh.get("/api/v1/automations")).json())


@pytest.fixture
def shipped_pack(tmp_path: Path) -> Path:
    target = tmp_path / "acme-mini"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "packs" / "v1" / "mini-shop", target)
    meta = target / "pack.yaml"
    meta.write_text(meta.read_text(encoding="utf-8").replace("id: mini-shop", "id: acme-mini"), encoding="utf-8")
    return target


async def test_a_plugin_ships_a_pack_listed_under_its_publisher(world: World, shipped_pack: Path) -> None:
    def templates(register: Any) -> None:
        register(shipped_pack)

    with deployed(plugin_module("acme-packs", hooks={"guiju_templates": templates})):
        await marketplace.list_deployed_plugins()
        api, _ = await world.signup()
        listed = (await api.get("/api/v1/gallery/packs?plugin=acme-packs")).json()
        assert [(p["id"], p["publisher"], p["plugin"]) for p in listed] == [("acme-mini", "Acme", "acme-packs")]
        preview = (await api.get("/api/v1/gallery/packs/acme-mini")).json()
        required = {p["name"]: p for p in preview["required_plugins"]}
        assert required["acme-packs"]["deployed"] is True and required["acme-packs"]["installed"] is False
        installed = await api.post("/api/v1/templates/acme-mini/install", {})
        assert installed.status_code == 201, installed.text
        assert [p["name"] for p in installed.json()["missing_plugins"]] == ["acme-packs"]
    # Without the plugin its pack leaves the gallery (what it installed stays the workspace's).
    assert "acme-mini" not in [p["id"] for p in (await api.get("/api/v1/gallery/packs")).json()]
