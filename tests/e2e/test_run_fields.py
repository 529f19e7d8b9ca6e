"""The run page's fields in a real browser on a phone: two big photos chosen, made small in the
browser and uploaded one by one with thumbnails (one fails on the way and is retried), a member
found by the type-ahead, a record found by its number, and the step completed in place (htmx),
with axe, reflow and touch-target checks."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.conftest import PASSWORD, unique_email
from tests.e2e.pages import (
    PHONE,
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
            "owner": {"kind": "starter"},
            "evidence": {"file": True},
            "fields": [
                {"key": "packer", "label": "打包人", "type": "user", "required": True},
                {"key": "customer", "label": "客户", "type": "relation", "target": "record", "required": True},
            ],
            "next": "review",
        },
        {
            "kind": "checklist",
            "key": "review",
            "title": "复核",
            "owner": {"kind": "starter"},
            "items": [{"key": "sealed", "label": "已封箱"}],
            "exceptions": [{"key": "broken", "label": "破损", "notify": [{"kind": "role", "role": "manager"}]}],
        },
    ],
}


def photo(path: Path, width: int = 3000, height: int = 2000) -> Path:
    """A phone-sized photo (a gradient: quick to make, light to send)."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image.save(path, "JPEG", quality=85)
    return path


def a_linked_run(server: EmbeddedServer) -> tuple[httpx.Client, str, str, str, str]:
    """An owner (signed in on the client) with a member 王芳, two customers and a run whose form
    links its order to one: (client, run id, the member's id, 张先生's id, the order's address)."""
    client, _email = sign_up_by_api(server, "zh-CN")
    headers = {"X-CSRF-Token": csrf_of(client)}
    invitee = unique_email("packer")
    invited = client.post("/api/v1/invitations", json={"email": invitee, "role": "member"}, headers=headers)
    assert invited.status_code == 201, invited.text
    token = server.link_for(invitee, "/invitations/accept").split("token=", 1)[1]
    with httpx.Client(base_url=server.base, timeout=15) as joiner:
        joined = joiner.post(
            "/api/v1/auth/accept-invitation", json={"token": token, "display_name": "王芳", "password": PASSWORD}
        )
        assert joined.status_code == 200, joined.text
        member_id = str(joined.json()["user"]["id"])
    customers = client.post(
        "/api/v1/collections",
        json={
            "key": "customers",
            "name": "客户",
            "fields": [
                {"key": "name", "label": "姓名", "type": "text"},
                {"key": "number", "label": "客户编号", "type": "text", "unique": True},
            ],
        },
        headers=headers,
    )
    assert customers.status_code == 201, customers.text
    ids = {}
    for name, number in (("李女士", "C-1024"), ("张先生", "C-2048")):
        made = client.post(
            f"/api/v1/collections/{customers.json()['id']}/records",
            json={"values": {"name": name, "number": number}},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        ids[name] = str(made.json()["id"])
    orders = client.post(
        "/api/v1/collections",
        json={
            "key": "orders",
            "name": "订单",
            "fields": [{"key": "customer", "label": "客户", "type": "relation", "target_collection": "customers"}],
        },
        headers=headers,
    )
    assert orders.status_code == 201, orders.text
    order = client.post(f"/api/v1/collections/{orders.json()['id']}/records", json={"values": {}}, headers=headers)
    assert order.status_code == 201, order.text
    created = client.post(
        "/api/v1/procedures",
        json={"key": "ship", "title": "发货", "definition": FLOW, "collection_id": orders.json()["id"]},
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
    run = client.post(
        "/api/v1/runs",
        json={"procedure_id": procedure["id"], "title": "订单 #A1024", "record_id": order.json()["id"]},
        headers=headers,
    )
    assert run.status_code == 201, run.text
    order_url = f"/api/v1/collections/{orders.json()['id']}/records/{order.json()['id']}"
    return client, str(run.json()["id"]), member_id, ids["张先生"], order_url


def test_photos_people_and_records_on_a_phone(browser: Any, server: EmbeddedServer, tmp_path: Path) -> None:
    client, run_id, member_id, zhang_id, order_url = a_linked_run(server)
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    # The first upload is cut off on the way; every later one goes through.
    uploads: list[str] = []

    def flaky(route: Any) -> None:
        uploads.append(route.request.url)
        if len(uploads) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/runs/*/uploads", flaky)
    page.goto(f"/runs/{run_id}")
    page.evaluate("window.stillTheSamePage = true")
    assert text_of(page, "#field-photos-hint") == "至少 1 张"
    assert page.get_attribute("#field-photos", "capture") == "environment"
    assert page.get_attribute("#field-photos", "accept") == "image/*"

    # Two photos of 3000×2000: thumbnails at once, one upload fails and offers a retry.
    page.set_input_files("#field-photos", [str(photo(tmp_path / "a.jpg")), str(photo(tmp_path / "b.jpg"))])
    page.wait_for_selector(".thumb[data-state=failed] button:has-text('重试')")
    page.wait_for_selector(".thumb[data-state=done]")
    assert page.locator(".thumb").count() == 2
    assert "没有上传" in text_of(page, ".thumb[data-state=failed]")
    page.click(".thumb[data-state=failed] button")
    page.locator(".thumb[data-state=done]").nth(1).wait_for()
    # Each thumbnail is the server's small copy now, loaded (the page's CSP forbids polling with eval).
    page.locator(".thumb img[src^='/files/']").nth(1).wait_for()
    shown = "Array.from(document.querySelectorAll('.thumb img')).filter(i => i.complete && i.naturalWidth > 0).length"
    for _ in range(50):
        if page.evaluate(shown) == 2:
            break
        page.wait_for_timeout(100)
    assert page.evaluate(shown) == 2
    assert len(uploads) == 3
    kept = page.eval_on_selector_all("input[name=photos_kept]", "inputs => inputs.map(i => i.value)")
    assert len(kept) == 2
    for file_id in kept:
        stored = client.get(f"/api/v1/files/{file_id}/content")
        assert stored.status_code == 200
        assert Image.open(io.BytesIO(stored.content)).size == (1600, 1067)
        thumb = client.get(f"/files/{file_id}/thumbnail")
        assert thumb.status_code == 200 and len(thumb.content) <= 30 * 1024
    assert page.input_value("#field-photos") == ""  # the full-size photos are not sent again

    # The packer: typed, found after a pause, picked by name (with the role beside it); "我" is one tap.
    assert page.is_visible("[data-typeahead=field-f_packer] button:has-text('我')")
    page.fill("#field-f_packer", "王")
    found = page.wait_for_selector("button[data-pick-for=field-f_packer][data-value='" + member_id + "']")
    assert "成员" in re.sub(r"\s+", " ", found.inner_text())
    found.click()
    assert page.input_value("#field-f_packer-value") == member_id
    assert "王芳" in text_of(page, "#field-f_packer-picked")

    # The customer: found by number, shown with its title and key field.
    page.fill("#field-f_customer", "2048")
    record = page.wait_for_selector(f"button[data-pick-for=field-f_customer][data-value='{zhang_id}']")
    assert "张先生" in record.inner_text() and "客户编号 C-2048" in record.inner_text()
    check_page(page, "run-fields", PHONE, "zh-CN")
    record.click()
    assert page.input_value("#field-f_customer-value") == zhang_id

    # Completed in place: the notice and the next step arrive without a new page.
    page.click(".action-bar button[type=submit]")
    page.wait_for_selector(".flash.success")
    assert "已完成“拣货”，“复核”已交给 李娜。" in text_of(page, ".flash")
    assert page.evaluate("window.stillTheSamePage === true")
    assert page.evaluate("document.activeElement.classList.contains('flash')")
    assert text_of(page, "#step-title") == "复核"
    assert "李娜 完成了“拣货”。" in text_of(page, ".history")
    assert client.get(order_url).json()["values"]["customer"] == zhang_id
    check_page(page, "run-fields-done", PHONE, "zh-CN")

    # A comment: refused beside its field with the server's words, then added, all in place.
    page.click("button:has-text('发表评论')")
    page.wait_for_selector("#field-body[aria-invalid=true]")
    assert "请输入评论。" in text_of(page, "#field-body-error")
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    page.fill("#field-body", "已封箱，@王芳 请复核")
    page.click("button:has-text('发表评论')")
    page.wait_for_selector(".flash.success")
    assert "已封箱，@王芳 请复核" in text_of(page, ".comment-list")

    # A problem reported and resolved without leaving the page.
    page.click("#report > summary")
    page.check("input[name=kind][value=broken]")
    page.click("button:has-text('上报')")
    page.wait_for_selector(".banner.danger")
    assert "破损" in text_of(page, ".banner.danger")
    page.click(".banner.danger summary")
    page.click(".banner.danger button[type=submit]")
    page.wait_for_selector(".flash.success:has-text('异常已处理。')")
    assert page.locator(".banner.danger").count() == 0
    assert page.evaluate("window.stillTheSamePage === true")
    page.context.close()
