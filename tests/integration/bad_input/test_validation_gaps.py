"""Definitions that contradict themselves or name what does not exist are refused with 422 and
every problem listed: bounds whose min is above their max, and action steps naming a plugin or
an action the platform does not have."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from services.gallery.loader import PackInvalid, load_pack
from tests.conftest import World
from tests.integration.test_records import make_collection, pointers

MINI_SHOP = Path(__file__).resolve().parents[2] / "fixtures" / "packs" / "v1" / "mini-shop"


async def test_fields_with_min_above_max_are_refused_all_at_once(world: World) -> None:
    api, _ = await world.signup()
    fields = [
        {"key": "qty", "label": "Qty", "type": "number", "min": 10, "max": 1},
        {"key": "code", "label": "Code", "type": "text", "min": 8, "max": 2},
        {"key": "total", "label": "Total", "type": "money", "currency": "CNY", "min": 500, "max": 100},
        {"key": "tags", "label": "Tags", "type": "multi_select", "options": ["a", "b"], "min": 2, "max": 1},
        {
            "key": "lines",
            "label": "Lines",
            "type": "line_items",
            "min": 3,
            "max": 1,
            "fields": [{"key": "w", "label": "Weight", "type": "number", "min": 1.5, "max": 0.5}],
        },
        {"key": "ok", "label": "Fine", "type": "number", "min": 1, "max": 1},
    ]
    refused = await api.post("/api/v1/collections", {"key": "parts", "name": "Parts", "fields": fields})
    assert refused.status_code == 422, refused.text
    assert pointers(refused) == {
        ("/fields/0/min", "min_above_max"),
        ("/fields/1/min", "min_above_max"),
        ("/fields/2/min", "min_above_max"),
        ("/fields/3/min", "min_above_max"),
        ("/fields/4/min", "min_above_max"),
        ("/fields/4/fields/0/min", "min_above_max"),
    }

    collection_id = await make_collection(api, "parts", [fields[-1]])
    changed = await api.patch(f"/api/v1/collections/{collection_id}", {"fields": [{**fields[-1], "min": 2}]})
    assert changed.status_code == 422 and pointers(changed) == {("/fields/0/min", "min_above_max")}, changed.text


def _task(key: str, value: dict[str, Any] | None, next_key: str | None) -> dict[str, Any]:
    step: dict[str, Any] = {"kind": "task", "key": key, "title": key, "owner": {"kind": "starter"}, "next": next_key}
    if value is not None:
        step["evidence"] = {"value": {"label": "Weight", **value}}
    return step


def _action(key: str, plugin: str, action: str, next_key: str | None) -> dict[str, Any]:
    return {"kind": "action", "key": key, "title": key, "plugin": plugin, "action": action, "next": next_key}


async def _draft(api: Any, definition: dict[str, Any]) -> tuple[str, str]:
    created = await api.post("/api/v1/procedures", {"key": "weigh", "title": "Weigh", "definition": definition})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["draft_version_id"]


async def test_publishing_refuses_bounds_and_plugin_actions_that_cannot_be(world: World) -> None:
    api, _ = await world.signup()
    definition = {
        "start": "weigh",
        "steps": [
            _task("weigh", {"min": 10, "max": 2}, "aim"),
            _task("aim", {"target": 50, "min": 0, "max": 20}, "invoice"),
            # erp is deployed on the platform but not installed in this workspace: that is fine.
            _action("invoice", "erp", "reconcile", "fax"),
            _action("fax", "fax_machine", "send", "mail"),
            _action("mail", "messaging", "send_pigeon", "exact"),
            _task("exact", {"target": 5, "tolerance": 1, "min": 5, "max": 5}, None),
        ],
    }
    procedure_id, version_id = await _draft(api, definition)
    version = f"/api/v1/procedures/{procedure_id}/versions/{version_id}"

    refused = await api.post(f"{version}/publish", {"change_note": "first"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "procedure_invalid"
    assert pointers(refused) == {
        ("/steps/0/evidence/value/min", "min_above_max"),
        ("/steps/1/evidence/value/target", "target_out_of_range"),
        ("/steps/3/plugin", "unknown_plugin"),
        ("/steps/4/action", "unknown_plugin_action"),
    }
    checked = await api.get(f"{version}/problems")
    assert checked.status_code == 200 and checked.json()["valid"] is False, checked.text
    assert pointers(checked) == pointers(refused)

    fixed = {
        **definition,
        "steps": [
            _task("weigh", {"min": 2, "max": 10}, "aim"),
            _task("aim", {"target": 10, "min": 0, "max": 20}, "invoice"),
            _action("invoice", "erp", "reconcile", "exact"),
            definition["steps"][-1],
        ],
    }
    saved = await api.request("PUT", version, json={"definition": fixed})
    assert saved.status_code == 200, saved.text
    published = await api.post(f"{version}/publish", {"change_note": "first"})
    assert published.status_code == 200, published.text


def test_a_pack_with_min_above_max_is_refused_when_loaded(tmp_path: Path) -> None:
    pack = tmp_path / "mini-shop"
    shutil.copytree(MINI_SHOP, pack)
    collection = pack / "collections" / "shop_orders.yaml"
    collection.write_text(
        collection.read_text(encoding="utf-8").replace(
            "    type: number\n", "    type: number\n    min: 10\n    max: 1\n"
        ),
        encoding="utf-8",
    )
    procedure = pack / "procedures" / "ship_order.yaml"
    procedure.write_text(
        procedure.read_text(encoding="utf-8").replace(
            "evidence: {note: true}", "evidence: {value: {label: {zh-CN: 重量, en: Weight}, min: 5, max: 1}}"
        ),
        encoding="utf-8",
    )
    with pytest.raises(PackInvalid) as refused:
        load_pack(pack)
    found = {(p.pointer, p.code) for p in refused.value.errors or []}
    assert ("collections/shop_orders.yaml#/fields/1/min", "min_above_max") in found, found
    assert ("procedures/ship_order.yaml#/definition/steps/2/evidence/value/min", "min_above_max") in found, found
