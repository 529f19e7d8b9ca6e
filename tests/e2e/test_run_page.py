"""Journey 5 in a real browser: the run page of a small procedure, at phone and desktop sizes in
Chinese and English (axe, no sideways scroll, 44 px targets, screenshots), and a step worked on a
phone: claim, a refused completion that keeps every answer, a photo taken, the step done."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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

FLOW: dict[str, Any] = {
    "start": "pack",
    "steps": [
        {
            "kind": "form",
            "key": "pack",
            "title": "拣货",
            "owner": {"kind": "role", "role": "member"},
            "instructions": {"what": "按订单拣齐**全部**商品。", "how": "易碎品包两层。", "standard": "摇晃无声响。"},
            "due": {"within": {"hours": 4, "business": False}},
            "evidence": {"file": True},
            "fields": [
                {"key": "parcel", "label": "快递单号", "type": "text", "required": True},
                {"key": "weight", "label": "重量", "type": "number", "required": True},
                {"key": "cod", "label": "代收货款", "type": "money"},
                {"key": "pickup_at", "label": "取件时间", "type": "datetime"},
                {"key": "carrier", "label": "快递公司", "type": "select", "options": ["顺丰", "京东", "EMS"]},
                {"key": "extras", "label": "附加服务", "type": "multi_select", "options": ["礼品包装", "保价"]},
                {"key": "fragile", "label": "易碎", "type": "boolean"},
            ],
            "exceptions": [{"key": "short", "label": "缺货", "notify": [{"kind": "role", "role": "manager"}]}],
            "next": "review",
        },
        {
            "kind": "checklist",
            "key": "review",
            "title": "复核",
            "owner": {"kind": "starter"},
            "items": [{"key": "sealed", "label": "已封箱"}, {"key": "labelled", "label": "已贴单"}],
        },
    ],
}


def a_run(server: EmbeddedServer, language: str) -> tuple[httpx.Client, str]:
    """An owner (signed in on the returned client) and a new run of the procedure."""
    client, _email = sign_up_by_api(server, language)
    headers = {"X-CSRF-Token": csrf_of(client)}
    created = client.post(
        "/api/v1/procedures",
        json={"key": "ship", "title": "发货" if language == "zh-CN" else "Ship", "definition": FLOW},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    published = client.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish",
        json={"change_note": "v1"},
        headers=headers,
    )
    assert published.status_code == 200, published.text
    run = client.post("/api/v1/runs", json={"procedure_id": procedure["id"], "title": "订单 #A1024"}, headers=headers)
    assert run.status_code == 201, run.text
    return client, str(run.json()["id"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_run_page_passes_the_checks(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    client, run_id = a_run(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
    page.goto(f"/runs/{run_id}")
    assert text_of(page, "h1") == "订单 #A1024"
    check_page(page, "run", size, language)
    page.click("form[action$='/claim'] button")
    page.wait_for_selector("#field-f_parcel")
    check_page(page, "run-claimed", size, language)
    page.click(".action-bar button[type=submit]")
    page.wait_for_selector(".error-summary")
    check_page(page, "run-errors", size, language)
    page.context.close()


def test_a_step_worked_on_a_phone(browser: Any, server: EmbeddedServer, tmp_path: Any) -> None:
    client, run_id = a_run(server, "zh-CN")
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    page.goto(f"/runs/{run_id}")
    assert "第 1/2 步" in text_of(page, "main")
    assert "正常" in text_of(page, ".current-step")
    # The flowchart's step list is folded away on a phone; the instructions are not.
    assert not page.is_visible(".step-list")
    assert "全部" in text_of(page, ".instructions")
    page.click("form[action$='/claim'] button:has-text('领取')")
    page.wait_for_selector("#field-f_parcel")
    assert page.get_attribute("#field-photos", "capture") == "environment"

    page.fill("#field-f_weight", "很重")
    page.check("text=京东")
    page.click(".action-bar button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert page.title().startswith("错误：")
    summary = text_of(page, ".error-summary")
    assert "请输入快递单号。" in summary and "请至少拍 1 张照片。" in summary
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    assert page.input_value("#field-f_weight") == "很重"
    assert page.is_checked("input[name=f_carrier][value=京东]")

    photo = tmp_path / "box.jpg"
    photo.write_bytes(b"\xff\xd8\xff fake jpeg")
    page.fill("#field-f_parcel", "SF1024")
    page.fill("#field-f_weight", "１２.５")
    page.set_input_files("#field-photos", str(photo))
    page.click(".action-bar button[type=submit]")
    page.wait_for_selector(".flash.success")
    assert "已完成“拣货”，“复核”已交给 李娜。" in text_of(page, ".flash")
    check_page(page, "run-done", PHONE, "zh-CN")
    page.context.close()
