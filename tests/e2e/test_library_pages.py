"""Journey 6 in a real browser: the SOP library, a procedure's page with its flowchart (its ways
worded), a step's guide (its photos, suggesting a change) and the QR sheet (short links); confirming
a version and starting a run; at phone and desktop sizes, in Chinese and English."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import httpx
import pytest
import segno

from tests.conftest import PASSWORD
from tests.e2e.pages import (
    DESKTOP,
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

TITLES = {
    "zh-CN": {
        "receive": "接收订单并核对收货地址",
        "pick": "拣货",
        "invoice": "开发票",
        "ship": "发货",
        "call": "联系客户",
    },
    "en": {
        "receive": "Receive the order and check the address",
        "pick": "Pick",
        "invoice": "Invoice",
        "ship": "Ship",
        "call": "Call the customer",
    },
}
PROBLEM = {"zh-CN": "缺货", "en": "Out of stock"}


AMOUNT = {"zh-CN": "金额", "en": "Amount"}


def definition(language: str, *, acknowledge: bool, photo_id: str | None = None) -> dict[str, Any]:
    t = TITLES[language]
    member = {"kind": "role", "role": "member"}
    photo = f"\n\n![{t['receive']}](/api/v1/files/{photo_id}/content)" if photo_id else ""
    return {
        "start": "receive",
        "data": [{"key": "amount", "type": "number", "label": AMOUNT[language]}],
        "steps": [
            {
                "kind": "task",
                "key": "receive",
                "title": t["receive"],
                "owner": member,
                "next": "check",
                "requires_acknowledgement": acknowledge,
                "instructions": {"what": "**" + t["receive"] + "**", "how": "1. a\n2. b" + photo, "standard": "ok"},
                "exceptions": [{"key": "missing", "label": PROBLEM[language], "fallback": ["call"]}],
            },
            {
                "kind": "decision",
                "key": "check",
                "title": "金额判断" if language == "zh-CN" else "Check the amount",
                "branches": [{"when": "data.amount > 5000", "next": "split"}],
                "default": "split",
            },
            {"kind": "parallel", "key": "split", "title": "Split", "branches": ["pick", "invoice"], "join": "join"},
            {"kind": "task", "key": "pick", "title": t["pick"], "owner": member, "next": "join"},
            {"kind": "task", "key": "invoice", "title": t["invoice"], "owner": member, "next": "join"},
            {"kind": "join", "key": "join", "title": "Join", "next": "ship"},
            {"kind": "task", "key": "ship", "title": t["ship"], "owner": {"kind": "starter"}},
            {"kind": "task", "key": "call", "title": t["call"], "owner": member},
        ],
    }


def upload_photo(client: httpx.Client) -> str:
    """A small PNG (a QR code's picture will do) uploaded as the workspace's file."""
    picture = io.BytesIO()
    segno.make("guiju").save(picture, kind="png", scale=10)
    uploaded = client.post(
        "/api/v1/files",
        files={"file": ("shelf.png", picture.getvalue(), "image/png")},
        headers={"X-CSRF-Token": csrf_of(client)},
    )
    assert uploaded.status_code == 201, uploaded.text
    return str(uploaded.json()["id"])


def publish(client: httpx.Client, language: str, *, acknowledge: bool = False, photo: bool = False) -> str:
    headers = {"X-CSRF-Token": csrf_of(client)}
    photo_id = upload_photo(client) if photo else None
    created = client.post(
        "/api/v1/procedures",
        json={
            "key": f"p_{uuid.uuid4().hex[:8]}",
            "title": "订单履约" if language == "zh-CN" else "Fulfil an order",
            "purpose": "每个已付款订单一天内发出" if language == "zh-CN" else "Ship every paid order within a day",
            "definition": definition(language, acknowledge=acknowledge, photo_id=photo_id),
        },
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
    return str(procedure["id"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_library_pages_pass_the_checks(browser: Any, server: EmbeddedServer, size: Size, language: str) -> None:
    client, _email = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
    page.goto("/sops")
    assert ("还没有发布的流程" if language == "zh-CN" else "No procedures are published yet.") in text_of(page, "main")
    check_page(page, "library-empty", size, language)

    procedure_id = publish(client, language, photo=True)
    page.goto("/sops")
    assert text_of(page, "h1") == ("SOP 库" if language == "zh-CN" else "SOP library")
    assert ("v1 · 6 步" if language == "zh-CN" else "v1 · 6 steps") in text_of(page, "main")
    check_page(page, "library", size, language)

    page.click(f"a[href='/sops/{procedure_id}']")
    page.wait_for_url(f"**/sops/{procedure_id}")
    steps = page.locator(".sop-steps li").all_inner_texts()
    assert len(steps) == 6 and TITLES[language]["receive"] in steps[0]
    assert page.locator("svg.flowchart-svg a.fc-link").count() == 6
    chart = page.inner_html("svg.flowchart-svg")
    assert ("⚠ 异常：缺货" if language == "zh-CN" else "⚠ Problem: Out of stock") in chart
    # The decision's ways are worded: the field by its label, the default as "otherwise".
    labels = page.eval_on_selector_all("svg.flowchart-svg .fc-label title", "ts => ts.map(t => t.textContent)")
    assert labels == [f"{AMOUNT[language]} > 5000 / " + ("否则" if language == "zh-CN" else "Otherwise")]
    # The chart is drawn at its own size: its text stays readable, the main column is on screen.
    box = page.locator("svg.flowchart-svg a.fc-link").first.bounding_box()
    assert box is not None and box["x"] + box["width"] <= size.width
    font = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.fc-role')).fontSize)")
    assert font >= 14
    check_page(page, "sop-procedure", size, language)

    page.goto(f"/sops/{procedure_id}/steps/receive")
    assert text_of(page, "h1") == TITLES[language]["receive"]
    assert ("遇到问题时" if language == "zh-CN" else "If something goes wrong") in text_of(page, "main")
    photo = page.locator(".sop-instructions img.sop-photo")
    assert photo.get_attribute("loading") == "lazy" and photo.get_attribute("alt") == TITLES[language]["receive"]
    photo.scroll_into_view_if_needed()
    # Waited for from outside the page: a waiting function polled inside it is evaluated from a
    # string, which the page's CSP (no 'unsafe-eval') refuses once the photo is not there at once.
    photo.evaluate(
        "img => img.complete || new Promise(done => ['load', 'error'].forEach(e => img.addEventListener(e, done)))"
    )
    assert page.evaluate("document.querySelector('img.sop-photo').naturalWidth") > 0
    box = photo.bounding_box()
    assert box is not None and box["x"] + box["width"] <= size.width
    check_page(page, "sop-step", size, language)

    # Suggest a change: an empty one is refused beside its field, then one is sent.
    page.click("#suggest button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    wanted = "请输入需要怎么改。" if language == "zh-CN" else "Enter what should change."
    assert wanted in text_of(page, ".error-summary") and wanted in text_of(page, "#suggest")
    assert page.title().startswith("错误：" if language == "zh-CN" else "Error:")
    check_page(page, "sop-step-error", size, language)
    page.fill("#field-text", "先拣大件" if language == "zh-CN" else "Pick the big items first")
    page.click("#suggest button[type=submit]")
    page.wait_for_url(f"**/sops/{procedure_id}/steps/receive?notice=suggestion_sent")
    sent = "谢谢，你的建议已发给流程负责人。" if language == "zh-CN" else "Thanks: your suggestion"
    assert sent in text_of(page, ".flash")

    page.goto(f"/sops/{procedure_id}/qr")
    assert page.locator(".qr-cell svg.qr").count() == 7
    printed = page.locator(".qr-url").all_inner_texts()
    assert all(re.fullmatch(r"[^/\s]+/q/[a-z0-9]{7}", url) for url in printed), printed
    check_page(page, "sop-qr", size, language)
    page.emulate_media(media="print")
    assert page.locator(".tabbar").is_hidden() and page.locator(".topbar").is_hidden()
    page.context.close()


def test_confirm_then_start_a_run_on_a_phone(browser: Any, server: EmbeddedServer) -> None:
    client, _email = sign_up_by_api(server, "zh-CN")
    procedure_id = publish(client, "zh-CN", acknowledge=True)
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    page.goto("/sops")
    assert "需确认" in text_of(page, "main")
    page.goto(f"/sops/{procedure_id}")
    assert page.locator("text=发起工单").count() == 0
    page.click("button:has-text('确认已读')")
    page.wait_for_url(f"**/sops/{procedure_id}?notice=acknowledged")
    assert "已确认阅读这个版本。" in text_of(page, ".flash")
    page.click("button:has-text('发起工单')")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    assert client.get(f"/api/v1/runs/{run_id}").json()["procedure_id"] == procedure_id
    page.context.close()


def test_a_scanned_code_signs_in_first_and_opens_the_step(browser: Any, server: EmbeddedServer) -> None:
    client, email = sign_up_by_api(server, "en")
    procedure_id = publish(client, "en")
    sheet = client.get(f"/sops/{procedure_id}/qr").text
    short = "/" + re.findall(r'<p class="qr-url">[^/<]+/([^<]+)</p>', sheet)[3]  # step 3: Pick
    page = open_page(browser, server.base, PHONE, "en")
    page.goto(short)
    page.wait_for_url(lambda url: "/login?next=" in url)
    page.fill("#field-email", email)
    page.fill("#field-password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"**/sops/{procedure_id}/steps/pick")
    assert text_of(page, "h1") == "Pick"
    page.context.close()


def test_flowchart_steps_are_reachable_by_keyboard(browser: Any, server: EmbeddedServer) -> None:
    client, _email = sign_up_by_api(server, "en")
    procedure_id = publish(client, "en")
    page = open_page(browser, server.base, DESKTOP, "en", browser_cookies(client, server.base))
    page.goto(f"/sops/{procedure_id}")
    page.locator("svg.flowchart-svg a.fc-link").first.focus()
    assert page.evaluate("document.activeElement.getAttribute('href')") == f"/sops/{procedure_id}/steps/receive"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/sops/{procedure_id}/steps/receive")
    page.context.close()
