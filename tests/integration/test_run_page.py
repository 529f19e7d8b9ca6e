"""The run page (工单), driven through its page routes with a real run of a small procedure, on
SQLite and Postgres: what it shows, and every action people take on it (plain form posts)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from tests.conftest import Api, World
from tests.integration.test_runs import publish, start

ORIGIN = {"Origin": "http://guiju.test"}

FIELDS: list[dict[str, Any]] = [
    {"key": "parcel", "label": "Parcel number", "type": "text", "required": True},
    {"key": "remarks", "label": "Remarks", "type": "long_text"},
    {"key": "weight", "label": "Weight", "type": "number", "required": True},
    {"key": "cod", "label": "Cash on delivery", "type": "money"},
    {"key": "ship_on", "label": "Ship on", "type": "date"},
    {"key": "pickup_at", "label": "Pickup time", "type": "datetime"},
    {"key": "fragile", "label": "Fragile", "type": "boolean"},
    {"key": "carrier", "label": "Carrier", "type": "select", "options": ["SF", "JD", "EMS"]},
    {"key": "extras", "label": "Extras", "type": "multi_select", "options": ["gift wrap", "insurance"]},
    {"key": "contact", "label": "Contact email", "type": "email"},
    {"key": "phone", "label": "Phone", "type": "phone"},
    {"key": "packer", "label": "Packer", "type": "user"},
    {"key": "company", "label": "Company", "type": "entity"},
    {"key": "label_scan", "label": "Label scan", "type": "file"},
    {"key": "order_ref", "label": "Order", "type": "relation"},
]

FLOW: dict[str, Any] = {
    "start": "pack",
    "steps": [
        {
            "kind": "form",
            "key": "pack",
            "title": "Pack the order",
            "owner": {"kind": "role", "role": "member"},
            "instructions": {
                "what": "Pack **every** item.",
                "how": "Wrap <b>glass</b> twice.",
                "standard": "No rattle.",
            },
            "due": {"within": {"hours": 4, "business": False}},
            "evidence": {"file": True},
            "fields": FIELDS,
            "exceptions": [
                {"key": "damaged", "label": "Goods damaged", "notify": [{"kind": "role", "role": "manager"}]}
            ],
            "next": "check",
        },
        {
            "kind": "checklist",
            "key": "check",
            "title": "Check the parcel",
            "owner": {"kind": "starter"},
            "items": [{"key": "sealed", "label": "Sealed"}, {"key": "labelled", "label": "Labelled"}],
            "next": "payment",
        },
        {
            "kind": "wait",
            "key": "payment",
            "title": "Wait for the payment",
            "duration": {"days": 3, "business": False},
            "next": "approve",
        },
        {
            "kind": "approval",
            "key": "approve",
            "title": "Approve the shipment",
            "owner": {"kind": "role", "role": "manager"},
            "on_reject": {"goto": "check"},
        },
    ],
}


async def page_post(api: Api, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    fields = {"csrf_token": api.csrf or "", **(data or {})}
    return await api.client.post(path, data=fields, headers=ORIGIN, **kw)


async def set_locale(api: Api, locale: str) -> None:
    response = await page_post(api, "/language", {"locale": locale, "next": "/app"})
    assert response.status_code == 303


def visible_text(html: str) -> str:
    """The words of a page (tags and their attributes left out)."""
    return re.sub(r"<[^>]+>", " ", html)


def steps_of(html: str) -> list[str]:
    return re.findall(r'action="/runs/[^/]+/steps/(\d+)/(\w+)"', html)


async def a_run(world: World) -> tuple[Api, Api, dict[str, Any], str]:
    owner, _body = await world.signup(locale="en")
    member, member_id = await world.invite_and_join(owner, "member")
    procedure_id, _ = await publish(owner, FLOW)
    run = await start(owner, procedure_id, title="Order A1024")
    return owner, member, run, member_id


def step_id(run: dict[str, Any], key: str) -> int:
    return int(next(s["id"] for s in run["steps"] if s["key"] == key and s["status"] in ("ready", "in_progress")))


async def test_the_run_page_shows_the_step_its_form_and_names(world: World) -> None:
    owner, member, run, _member_id = await a_run(world)
    await set_locale(member, "en")
    response = await member.client.get(f"/runs/{run['id']}")
    assert response.status_code == 200, response.text
    html = response.text
    assert "Order A1024" in html and "Ship an order" in html and "version 1" in html
    assert "Pack the order" in html and "Step 1 of 4" in html
    # The SLA tag in words (and its icon), the instructions as Markdown with raw HTML kept as text.
    assert "On time" in html
    assert "<strong>every</strong>" in html and "&lt;b&gt;glass&lt;/b&gt;" in html
    # Unclaimed: the primary action is to claim it; names, never ids.
    assert (str(step_id(run, "pack")), "claim") in steps_of(html)
    assert "Li Wei started the run." in html
    assert run["started_by"] not in visible_text(html) and run["id"] not in visible_text(html)
    # Report a problem offers the step's kinds.
    assert "Report a problem" in html and "Goods damaged" in html
    # The flowchart shows where the run stands: the step in focus is current, and links to its guide.
    current = re.search(r'<a[^>]*aria-current="step"[^>]*>', html.split('class="flowchart', 1)[1])
    assert current is not None and f"/sops/{run['procedure_id']}/steps/pack" in current.group(0)

    claimed = await page_post(member, f"/runs/{run['id']}/steps/{step_id(run, 'pack')}/claim")
    assert claimed.status_code == 303
    html = (await member.client.get(claimed.headers["location"])).text
    assert "The step is yours now." in html
    # Every kind of field, with the input a phone needs.
    assert 'name="f_parcel"' in html
    assert re.search(r'<textarea id="field-f_remarks" name="f_remarks"', html)
    assert re.search(r'type="text" inputmode="decimal" id="field-f_weight"', html)
    assert re.search(r'<span class="muted">CNY</span><input type="text" inputmode="decimal" id="field-f_cod"', html)
    assert 'type="date" id="field-f_ship_on"' in html
    assert 'type="datetime-local" id="field-f_pickup_at"' in html and "Time zone:" in html
    assert 'type="checkbox" id="field-f_fragile"' in html
    assert html.count('type="radio" name="f_carrier"') == 3
    assert html.count('type="checkbox" name="f_extras"') == 2
    assert 'type="email" id="field-f_contact"' in html
    assert 'type="tel" inputmode="tel" id="field-f_phone"' in html
    assert "Me (Wang Fang)" in html and 'name="f_packer"' in html
    assert 'name="f_company"' in html
    assert 'type="file" id="field-f_label_scan"' in html
    assert 'type="search" id="field-f_order_ref"' in html
    assert 'accept="image/*" capture="environment" multiple' in html
    assert "Complete step" in html
    # A manager (here the owner) hands a step to someone else; a member is not offered it.
    assert 'action="/runs/' + run["id"] + f'/steps/{step_id(run, "pack")}/assign"' not in html
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert f'/steps/{step_id(run, "pack")}/assign"' in html and "Reassign" in html
    nobody = await page_post(owner, f"/runs/{run['id']}/steps/{step_id(run, 'pack')}/assign", {"assignee": ""})
    assert nobody.status_code == 422 and "Choose who takes it over from the list." in nobody.text
    handed = await page_post(
        owner, f"/runs/{run['id']}/steps/{step_id(run, 'pack')}/assign", {"assignee": run["started_by"]}
    )
    assert handed.status_code == 303
    html = (await owner.client.get(handed.headers["location"])).text
    assert "The step is handed over." in html and "Li Wei" in visible_text(html)


async def test_completing_with_problems_keeps_every_answer_then_succeeds(world: World) -> None:
    owner, member, run, member_id = await a_run(world)
    pack = step_id(run, "pack")
    await page_post(member, f"/runs/{run['id']}/steps/{pack}/claim")
    profile = {"display_name": "Wang Fang", "locale": "en", "timezone": "Asia/Shanghai"}
    assert (await page_post(member, "/me/profile", profile)).status_code == 303
    answers = {"f_weight": "heavy", "f_remarks": "top shelf", "f_carrier": "JD", "f_extras": ["insurance"]}
    for locale, wording in (
        ("en", ["Enter parcel number.", "Enter weight in the form shown.", "Add photos: at least 1."]),
        ("zh-CN", ["请输入Parcel number。", "请按提示的格式填写Weight。", "请至少拍 1 张照片。"]),
    ):
        await set_locale(member, locale)
        refused = await page_post(member, f"/runs/{run['id']}/steps/{pack}/complete", answers)
        assert refused.status_code == 422, refused.text
        html = refused.text
        for words in wording:
            assert words in html, (locale, words)
        assert 'href="#field-f_parcel"' in html and 'aria-invalid="true"' in html
        assert 'value="heavy"' in html and "top shelf" in html
        assert re.search(r'name="f_carrier" value="JD" checked', html)
        assert re.search(r'name="f_extras" value="insurance" checked', html)
    await set_locale(member, "en")

    # Full-width digits and a local time are accepted; the photo and the file go through the files service.
    photo = ("box.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
    scan = ("label.pdf", b"%PDF-1.4 fake", "application/pdf")
    done = await page_post(
        member,
        f"/runs/{run['id']}/steps/{pack}/complete",
        {
            "f_parcel": "SF1024",
            "f_weight": "１２.５",
            "f_cod": "99.50",
            "f_pickup_at": "2026-03-05T14:00",
            "f_fragile": "true",
            "f_carrier": "SF",
            "f_extras": ["gift wrap", "insurance"],
            "f_packer": member_id,
        },
        files=[("photos", photo), ("f_label_scan", scan)],
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/runs/{run['id']}?done={pack}"
    html = (await member.client.get(done.headers["location"])).text
    assert "“Pack the order” is done; “Check the parcel” is now with Li Wei." in html
    assert 'href="/tasks"' in html and "Next task" in html
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    data = detail["data"]
    assert data["weight"] == 12.5 and data["cod"] == {"amount": 9950, "currency": "CNY"}
    assert data["pickup_at"] == "2026-03-05T06:00:00Z"  # 14:00 in the member's Asia/Shanghai
    assert data["fragile"] is True and data["extras"] == ["gift wrap", "insurance"]
    assert uuid.UUID(data["label_scan"])
    assert "Wang Fang finished “Pack the order”." in html


async def test_checklist_wait_and_approval(world: World) -> None:
    owner, member, run, _member_id = await a_run(world)
    pack = step_id(run, "pack")
    run = (
        await owner.post(
            f"/api/v1/runs/{run['id']}/steps/{pack}/complete",
            {"values": {"parcel": "A", "weight": 1}, "evidence": {"files": [await _upload(owner)]}},
        )
    ).json()
    check = step_id(run, "check")
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "Check the parcel" in html and "0/2" in html and "No time limit" in html
    refused = await page_post(owner, f"/runs/{run['id']}/steps/{check}/complete", {"checked": ["sealed"]})
    assert refused.status_code == 422 and "Tick every item of the checklist." in refused.text
    assert "1/2" in refused.text
    done = await page_post(owner, f"/runs/{run['id']}/steps/{check}/complete", {"checked": ["sealed", "labelled"]})
    assert done.status_code == 303

    # The wait shows what it waits for; a member cannot end it, an admin (the owner) can.
    html = (await member.client.get(f"/runs/{run['id']}")).text
    assert "Waiting: Wait for the payment" in html and "Continue now" not in html
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    wait = step_id(detail, "payment")
    forbidden = await page_post(member, f"/runs/{run['id']}/steps/{wait}/continue")
    assert forbidden.status_code == 403 and "You cannot do this" in forbidden.text
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "Continue now" in html
    continued = await page_post(owner, f"/runs/{run['id']}/steps/{wait}/continue")
    assert continued.status_code == 303
    html = (await owner.client.get(continued.headers["location"])).text
    assert "The wait is over; the run goes on." in html
    audit = await owner.get("/api/v1/audit", params={"action": "run.wait_continued"})
    assert audit.status_code == 200 and audit.json()["items"], audit.text

    # Approval: the owner claims, a rejection needs a reason and goes back to the checklist.
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    approve = step_id(detail, "approve")
    assert (await page_post(owner, f"/runs/{run['id']}/steps/{approve}/claim")).status_code == 303
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "Approve" in html and "Reject" in html
    no_reason = await page_post(owner, f"/runs/{run['id']}/steps/{approve}/reject", {"reason": " "})
    assert no_reason.status_code == 422 and "Enter reason." in no_reason.text
    rejected = await page_post(owner, f"/runs/{run['id']}/steps/{approve}/reject", {"reason": "Label is torn"})
    assert rejected.status_code == 303
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    check = step_id(detail, "check")
    await page_post(owner, f"/runs/{run['id']}/steps/{check}/complete", {"checked": ["sealed", "labelled"]})
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    wait = step_id(detail, "payment")
    await page_post(owner, f"/runs/{run['id']}/steps/{wait}/continue")
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    approve = step_id(detail, "approve")
    await page_post(owner, f"/runs/{run['id']}/steps/{approve}/claim")
    approved = await page_post(owner, f"/runs/{run['id']}/steps/{approve}/approve", {"note": "ok"})
    assert approved.status_code == 303
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "This run is complete." in html and "Li Wei rejected “Approve the shipment”." in html


async def test_report_and_resolve_a_problem_and_comment_with_a_mention(world: World) -> None:
    owner, member, run, member_id = await a_run(world)
    pack = step_id(run, "pack")
    missing = await page_post(member, f"/runs/{run['id']}/exceptions", {"step_id": str(pack)})
    assert missing.status_code == 422 and "Choose what went wrong from the list." in missing.text
    photo = ("crushed.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
    reported = await page_post(
        member,
        f"/runs/{run['id']}/exceptions",
        {"kind": "damaged", "step_id": str(pack), "problem_note": "Box crushed"},
        files=[("problem_photos", photo)],
    )
    assert reported.status_code == 303, reported.text
    html = (await member.client.get(f"/runs/{run['id']}")).text
    assert "Problem: Goods damaged" in html and "Box crushed" in html and "Reported by Wang Fang" in html
    # The member is not among those who handle it; the owner (a manager and more) is.
    assert "/resolve" not in html
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    exception = detail["exceptions"][0]
    assert exception["file_ids"] and exception["status"] == "open"
    refused = await page_post(member, f"/runs/{run['id']}/exceptions/{exception['id']}/resolve")
    assert refused.status_code == 403
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert f"/exceptions/{exception['id']}/resolve" in html
    resolved = await page_post(
        owner, f"/runs/{run['id']}/exceptions/{exception['id']}/resolve", {f"resolution_{exception['id']}": "Repacked"}
    )
    assert resolved.status_code == 303
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "Li Wei resolved “Goods damaged”. Repacked" in html
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    assert detail["exceptions"][0]["resolution_note"] == "Repacked"

    empty = await page_post(owner, f"/runs/{run['id']}/comments", {"body": "  "})
    assert empty.status_code == 422 and "Enter comment." in empty.text
    commented = await page_post(owner, f"/runs/{run['id']}/comments", {"body": "@Wang Fang please check the label"})
    assert commented.status_code == 303
    html = (await owner.client.get(commented.headers["location"])).text
    assert "@Wang Fang please check the label" in html and "Comment added." in html
    events = await owner.get("/api/v1/audit", params={"action": "run.commented"})
    assert events.json()["items"][0]["after"]["mentions"] == [member_id]


async def test_another_workspace_cannot_see_or_act_on_the_run(world: World) -> None:
    owner, _member, run, _member_id = await a_run(world)
    stranger, _ = await world.signup(locale="en")
    assert (await stranger.client.get(f"/runs/{run['id']}")).status_code == 404
    pack = step_id(run, "pack")
    for path, data in (
        (f"/runs/{run['id']}/steps/{pack}/claim", {}),
        (f"/runs/{run['id']}/steps/{pack}/complete", {"f_parcel": "x"}),
        (f"/runs/{run['id']}/steps/{pack}/reject", {"reason": "x"}),
        (f"/runs/{run['id']}/exceptions", {"kind": "damaged"}),
        (f"/runs/{run['id']}/exceptions/1/resolve", {}),
        (f"/runs/{run['id']}/comments", {"body": "peek"}),
        (f"/runs/{run['id']}/steps/3/continue", {}),
    ):
        response = await page_post(stranger, path, data)
        assert response.status_code == 404, (path, response.status_code)
    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    assert detail["exceptions"] == [] and step_id(detail, "pack") == pack
    comments = (await owner.get(f"/api/v1/runs/{run['id']}/comments")).json()
    assert comments == []


async def _upload(api: Api) -> str:
    response = await api.client.post(
        "/api/v1/files",
        files={"file": ("p.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")},
        headers={"X-CSRF-Token": api.csrf or ""},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_step_that_asks_for_the_procedure_to_be_read_first(world: World) -> None:
    owner, _ = await world.signup(locale="en")
    flow = {
        "start": "weigh",
        "steps": [
            {
                "kind": "task",
                "key": "weigh",
                "title": "Weigh the parcel",
                "owner": {"kind": "starter"},
                "requires_acknowledgement": True,
            }
        ],
    }
    procedure_id, _ = await publish(owner, flow)
    run = await start(owner, procedure_id)
    weigh = step_id(run, "weigh")
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    assert "Read the procedure first" in html and f'action="/runs/{run["id"]}/acknowledge"' in html
    refused = await page_post(owner, f"/runs/{run['id']}/steps/{weigh}/complete")
    assert refused.status_code == 409
    assert "Confirm that you have read the procedure first, then complete the step." in refused.text
    acknowledged = await page_post(owner, f"/runs/{run['id']}/acknowledge")
    assert acknowledged.status_code == 303
    html = (await owner.client.get(acknowledged.headers["location"])).text
    assert "Noted: you have read this version." in html and "Read the procedure first" not in html
    done = await page_post(owner, f"/runs/{run['id']}/steps/{weigh}/complete")
    assert done.status_code == 303
    html = (await owner.client.get(done.headers["location"])).text
    assert "“Weigh the parcel” is done, and so is the run." in html and "This run is complete." in html


async def test_a_record_link_offers_the_target_collection_s_records_by_title(world: World) -> None:
    owner, _ = await world.signup(locale="en")
    suffix = uuid.uuid4().hex[:6]
    customers = await owner.post(
        "/api/v1/collections",
        {
            "key": f"customers_{suffix}",
            "name": "Customers",
            "fields": [{"key": "name", "label": "Name", "type": "text"}],
        },
    )
    assert customers.status_code == 201, customers.text
    customer = await owner.post(f"/api/v1/collections/{customers.json()['id']}/records", {"values": {"name": "Ms Li"}})
    assert customer.status_code == 201, customer.text
    orders = await owner.post(
        "/api/v1/collections",
        {
            "key": f"orders_{suffix}",
            "name": "Orders",
            "fields": [
                {"key": "customer", "label": "Customer", "type": "relation", "target_collection": f"customers_{suffix}"}
            ],
        },
    )
    assert orders.status_code == 201, orders.text
    order = await owner.post(f"/api/v1/collections/{orders.json()['id']}/records", {"values": {}})
    assert order.status_code == 201, order.text
    flow = {
        "start": "link",
        "steps": [
            {
                "kind": "form",
                "key": "link",
                "title": "Link the customer",
                "owner": {"kind": "starter"},
                "fields": [
                    {"key": "customer", "label": "Customer", "type": "relation", "target": "record", "required": True}
                ],
            }
        ],
    }
    procedure_id, _ = await publish(owner, flow, collection_id=orders.json()["id"])
    run = await start(owner, procedure_id, record_id=order.json()["id"])
    html = (await owner.client.get(f"/runs/{run['id']}")).text
    # A choice among the customers by name (the type-ahead's plain list), never an id to type.
    assert re.search(r'<option value="' + customer.json()["id"] + r'"\s*>Ms Li</option>', html)
    done = await page_post(
        owner, f"/runs/{run['id']}/steps/{step_id(run, 'link')}/complete", {"f_customer": customer.json()["id"]}
    )
    assert done.status_code == 303, done.text
    record = await owner.get(f"/api/v1/collections/{orders.json()['id']}/records/{order.json()['id']}")
    assert record.json()["values"]["customer"] == customer.json()["id"]
