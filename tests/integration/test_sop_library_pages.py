"""The SOP library's pages: the list, a procedure's page, a step's guide, the QR sheet; starting a
run and confirming a version from them; and nothing of another workspace."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import segno
from sqlalchemy import func, select

from services.db import open_session
from services.sops.procedures import suggestions
from services.sops.procedures.links import ALPHABET
from services.sops.procedures.models import Acknowledgement, ProcedureLink, ProcedureSuggestion
from tenants.errors import NotFound
from tenants.models import Role
from tenants.principal import Principal
from tests.conftest import Api, World

ORIGIN = {"Origin": "http://guiju.test"}


def task(key: str, title: str, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "task",
        "key": key,
        "title": title,
        "owner": {"kind": "role", "role": "member"},
        "next": next_key,
        **extra,
    }


def definition(*, acknowledge: bool = False) -> dict[str, Any]:
    return {
        "start": "receive",
        "steps": [
            task(
                "receive",
                "Receive the order",
                "split",
                instructions={
                    "what": "Check the **order** <script>alert(1)</script>",
                    "how": "[guide](javascript:alert(1)) then [docs](https://example.com/x)",
                    "standard": "",
                },
                exceptions=[{"key": "missing", "label": "Out of stock", "fallback": ["call"], "then": "resume"}],
                requires_acknowledgement=acknowledge,
            ),
            {"kind": "parallel", "key": "split", "title": "Split", "branches": ["pick", "invoice"], "join": "join"},
            task("pick", "Pick the goods", "join"),
            task("invoice", "Issue the invoice", "join"),
            {"kind": "join", "key": "join", "title": "Join", "next": "ship"},
            task("ship", "Ship <it>"),
            task("call", "Call the customer"),
        ],
    }


async def publish(api: Api, body: dict[str, Any], title: str = "Fulfil an order") -> tuple[str, str]:
    created = await api.post(
        "/api/v1/procedures",
        {
            "key": f"p_{uuid.uuid4().hex[:10]}",
            "title": title,
            "purpose": "Ship every paid order within a day",
            "definition": body,
        },
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    version_id = procedure["draft_version_id"]
    published = await api.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{version_id}/publish", {"change_note": "first"}
    )
    assert published.status_code == 200, published.text
    return procedure["id"], version_id


async def form(api: Api, path: str, **fields: str) -> Any:
    assert api.csrf
    return await api.client.post(path, data={"csrf_token": api.csrf, **fields}, headers=ORIGIN)


async def test_the_library_lists_published_procedures_only(world: World) -> None:
    api, _ = await world.signup(locale="en")
    empty = await api.get("/sops")
    assert empty.status_code == 200
    assert "No procedures are published yet." in empty.text and 'href="/gallery"' in empty.text
    procedure_id, _v = await publish(api, definition())
    draft = await api.post(
        "/api/v1/procedures", {"key": "draft_only", "title": "Only a draft", "definition": definition()}
    )
    assert draft.status_code == 201
    page = await api.get("/sops")
    assert page.status_code == 200
    assert "Fulfil an order" in page.text and "Only a draft" not in page.text
    assert "v1 · 5 steps" in page.text
    assert f'href="/sops/{procedure_id}/qr"' in page.text
    assert 'aria-current="page"' in page.text and 'href="/sops"' in page.text
    found = await api.get("/sops", params={"q": "FULFIL"})
    assert "Fulfil an order" in found.text
    missing = await api.get("/sops", params={"q": "nothing like it"})
    assert "Fulfil an order" not in missing.text and "No procedure matches" in missing.text


async def test_the_procedure_page_shows_steps_and_flowchart_and_starts_a_run(world: World) -> None:
    api, _ = await world.signup(locale="en")
    procedure_id, _v = await publish(api, definition())
    page = await api.get(f"/sops/{procedure_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Ship every paid order within a day" in text
    assert "<svg" in text and "flowchart-svg" in text
    assert "Ship &lt;it&gt;" in text and "Ship <it>" not in text  # escaped everywhere
    for key in ("receive", "pick", "invoice", "ship", "call"):
        assert f'href="/sops/{procedure_id}/steps/{key}"' in text
    assert "⚠" in text and "Out of stock" in text
    assert "Start a run" in text and "Acknowledge" not in text
    started = await form(api, f"/sops/{procedure_id}/start")
    assert started.status_code == 303, started.text
    run_id = started.headers["location"].removeprefix("/runs/")
    run = await api.get(f"/api/v1/runs/{run_id}")
    assert run.status_code == 200 and run.json()["procedure_id"] == procedure_id


async def test_acknowledgement_is_stored_once_per_version(world: World) -> None:
    api, body = await world.signup(locale="en")
    procedure_id, version_id = await publish(api, definition(acknowledge=True))
    page = await api.get(f"/sops/{procedure_id}")
    assert "Acknowledge" in page.text and "Start a run" not in page.text
    listed = await api.get("/sops")
    assert "Needs your acknowledgement" in listed.text
    for _ in range(2):
        done = await form(api, f"/sops/{procedure_id}/acknowledge", version_id=version_id)
        assert done.status_code == 303 and done.headers["location"].endswith("notice=acknowledged")
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        count = await db.scalar(select(func.count()).select_from(Acknowledgement))
    assert count == 1
    page = await api.get(f"/sops/{procedure_id}?notice=acknowledged")
    assert "Start a run" in page.text and "Acknowledged" in page.text
    assert "Acknowledged" in (await api.get("/sops")).text


async def test_the_step_guide_renders_instructions_safely_and_offers_the_task(world: World) -> None:
    api, _ = await world.signup(locale="en")
    procedure_id, _v = await publish(api, definition())
    guide = await api.get(f"/sops/{procedure_id}/steps/receive")
    assert guide.status_code == 200, guide.text
    assert "<strong>order</strong>" in guide.text
    assert "<script>alert(1)</script>" not in guide.text and "&lt;script&gt;" in guide.text
    assert 'href="javascript:' not in guide.text and 'href="https://example.com/x"' in guide.text
    assert "Out of stock" in guide.text and "Step 1 of 5" in guide.text
    assert "Start a run" in guide.text  # the start step
    later = await api.get(f"/sops/{procedure_id}/steps/pick")
    assert "Start a run" not in later.text and "Go to my task" not in later.text
    started = await form(api, f"/sops/{procedure_id}/start")
    run_id = started.headers["location"].removeprefix("/runs/")
    claimed = await api.post(f"/api/v1/runs/{run_id}/steps/1/claim")
    assert claimed.status_code == 200, claimed.text
    mine = await api.get(f"/sops/{procedure_id}/steps/receive")
    assert "Go to my task" in mine.text and f'href="/runs/{run_id}"' in mine.text
    assert (await api.get(f"/sops/{procedure_id}/steps/split")).status_code == 404  # a bar is no step
    assert (await api.get(f"/sops/{procedure_id}/steps/nope")).status_code == 404


def _modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules of a segno inline SVG path (relative moves, horizontal runs)."""
    path = re.search(r'class="qr-dark"[^>]* d="([^"]+)"', svg)
    assert path is not None
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, numbers in re.findall(r"([Mmhv])([-\d. ]+)", path.group(1)):
        values = [float(n) for n in numbers.split()]
        if command == "M":
            x, y = values[0], values[1]
        elif command == "m":
            x, y = x + values[0], y + values[1]
        elif command == "h":
            start, x = x, x + values[0]
            for col in range(int(min(start, x)), int(max(start, x))):
                dark.add((col, int(y)))
        elif command == "v":
            y += values[0]
    return dark


async def test_the_qr_sheet_encodes_a_short_link_to_each_steps_guide(world: World) -> None:
    api, body = await world.signup(locale="en")
    procedure_id, _v = await publish(api, definition())
    sheet = await api.get(f"/sops/{procedure_id}/qr")
    assert sheet.status_code == 200, sheet.text
    base = world.settings.public_url.rstrip("/")
    cells = re.findall(r'<li class="qr-cell">\s*(<svg.*?</svg>).*?<p class="qr-url">([^<]+)</p>', sheet.text, re.S)
    assert len(cells) == 6  # the procedure, then its five steps
    urls = [f"{base.split('://')[0]}://{url}" for _svg, url in cells]
    assert all(re.fullmatch(rf"{re.escape(base)}/q/[{ALPHABET}]{{7}}", url) for url in urls), urls
    assert len(set(urls)) == 6
    for (svg, _printed), url in zip(cells, urls, strict=True):
        expected = segno.make(url, error="m", micro=False)
        assert _modules(svg) == {
            (col + 4, row + 4) for row, line in enumerate(expected.matrix) for col, bit in enumerate(line) if bit
        }
    assert "Step 1: Receive the order" in sheet.text and "Fulfil an order · v1" in sheet.text
    # Each code leads to its page: the procedure's (where a run starts), then the steps' guides.
    targets = []
    for url in urls:
        followed = await api.get(url.removeprefix(base))
        assert followed.status_code == 303, followed.text
        targets.append(followed.headers["location"])
    steps = ["receive", "pick", "invoice", "ship", "call"]
    assert targets == [f"/sops/{procedure_id}", *(f"/sops/{procedure_id}/steps/{key}" for key in steps)]
    # The links are stable: the sheet shown again, or after a new version, prints the same codes.
    again = re.findall(r'<p class="qr-url">([^<]+)</p>', (await api.get(f"/sops/{procedure_id}/qr")).text)
    assert [f"{base.split('://')[0]}://{url}" for url in again] == urls
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        assert await db.scalar(select(func.count()).select_from(ProcedureLink)) == 6


async def test_a_short_link_opens_for_its_workspace_only(world: World) -> None:
    a, _ = await world.signup(locale="en")
    procedure_id, _v = await publish(a, definition())
    sheet = await a.get(f"/sops/{procedure_id}/qr")
    path = "/" + re.findall(r'<p class="qr-url">[^/<]+/([^<]+)</p>', sheet.text)[1]
    member, _user = await world.invite_and_join(a)
    opened = await member.get(path)
    assert opened.status_code == 303 and opened.headers["location"] == f"/sops/{procedure_id}/steps/receive"
    shouted = "/q/" + path.removeprefix("/q/").upper()  # typed in capitals
    assert (await member.get(shouted)).status_code == 303
    b, _ = await world.signup(locale="en")
    assert (await b.get(path)).status_code == 404
    assert (await b.get("/q/zzzzzzz")).status_code == 404 and (await a.get("/q/not-a-code")).status_code == 404
    anonymous = await world.client()
    refused = await anonymous.get(path)
    assert refused.status_code in (302, 303) and refused.headers["location"] == f"/login?next={path}"


async def test_an_anonymous_visitor_signs_in_first_and_comes_back(world: World) -> None:
    api = await world.client()
    path = f"/sops/{uuid.uuid4()}/steps/receive"
    response = await api.get(path)
    assert response.status_code in (302, 303)
    assert response.headers["location"] == f"/login?next={path}"


async def test_another_workspace_sees_nothing(world: World) -> None:
    a, _ = await world.signup(locale="en")
    procedure_id, version_id = await publish(a, definition(acknowledge=True))
    b, _ = await world.signup(locale="en")
    assert "Fulfil an order" not in (await b.get("/sops")).text
    for path in (f"/sops/{procedure_id}", f"/sops/{procedure_id}/steps/receive", f"/sops/{procedure_id}/qr"):
        assert (await b.get(path)).status_code == 404, path
    assert (await form(b, f"/sops/{procedure_id}/acknowledge", version_id=version_id)).status_code == 404
    assert (await form(b, f"/sops/{procedure_id}/start")).status_code == 404
    api_ack = await b.post(f"/api/v1/procedures/{procedure_id}/versions/{version_id}/acknowledge")
    assert api_ack.status_code == 404


async def test_a_procedure_about_a_record_is_not_started_from_the_library(world: World) -> None:
    api, _ = await world.signup(locale="en")
    collection = await api.post(
        "/api/v1/collections",
        {
            "key": f"orders_{uuid.uuid4().hex[:6]}",
            "name": "Orders",
            "fields": [{"key": "status", "label": "Status", "type": "text"}],
        },
    )
    assert collection.status_code == 201, collection.text
    created = await api.post(
        "/api/v1/procedures",
        {
            "key": "about_orders",
            "title": "Handle an order",
            "collection_id": collection.json()["id"],
            "definition": definition(),
        },
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    published = await api.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish", {"change_note": "v1"}
    )
    assert published.status_code == 200, published.text
    page = await api.get(f"/sops/{procedure['id']}")
    assert "start it from that record" in page.text and ">Start a run<" not in page.text
    refused = await form(api, f"/sops/{procedure['id']}/start")
    assert refused.status_code == 422
    assert "A run of this procedure is about one record: start it from that record." in refused.text
    runs = await api.get("/api/v1/runs")
    assert runs.json()["items"] == []


async def test_the_flowchart_words_conditions_with_the_collections_labels(world: World) -> None:
    api, _ = await world.signup(locale="zh-CN")
    collection = await api.post(
        "/api/v1/collections",
        {
            "key": f"orders_{uuid.uuid4().hex[:6]}",
            "name": "订单",
            "fields": [
                {"key": "total", "label": "订单金额", "type": "money", "currency": "CNY"},
                {"key": "status", "label": "状态", "type": "text"},
            ],
        },
    )
    assert collection.status_code == 201, collection.text
    body = {
        "start": "check",
        "steps": [
            {
                "kind": "decision",
                "key": "check",
                "title": "看金额",
                "branches": [
                    {"when": "record.total.amount > 500000", "next": "approve"},
                    {"when": "record.status == '已取消'", "next": None, "label": "订单已取消"},
                ],
                "default": "ship",
            },
            task("approve", "主管审批", "ship"),
            task("ship", "发货"),
        ],
    }
    created = await api.post(
        "/api/v1/procedures",
        {"key": "big_orders", "title": "大额订单", "collection_id": collection.json()["id"], "definition": body},
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    published = await api.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish", {"change_note": "v1"}
    )
    assert published.status_code == 200, published.text
    page = await api.get(f"/sops/{procedure['id']}")
    assert page.status_code == 200, page.text
    assert "<title>订单金额 &gt; ¥5,000.00</title>" in page.text
    assert "<title>否则</title>" in page.text and "record." not in page.text


async def suggest(api: Api, procedure_id: str, step: str, text: str) -> Any:
    return await form(api, f"/sops/{procedure_id}/steps/{step}/suggest", text=text)


async def test_a_suggestion_reaches_the_procedures_owner(world: World) -> None:
    owner, body = await world.signup(locale="zh-CN")
    procedure_id, version_id = await publish(owner, definition(), title="订单履约")
    member, member_id = await world.invite_and_join(owner)
    guide = await member.get(f"/sops/{procedure_id}/steps/pick")
    assert 'action="/sops/' in guide.text and "/steps/pick/suggest" in guide.text
    sent = await suggest(member, procedure_id, "pick", "  Say which shelf comes first  ")
    assert (
        sent.status_code == 303
        and sent.headers["location"] == f"/sops/{procedure_id}/steps/pick?notice=suggestion_sent"
    )
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        (row,) = (await db.scalars(select(ProcedureSuggestion))).all()
    assert (str(row.procedure_id), str(row.version_id), row.step_key) == (procedure_id, version_id, "pick")
    assert (str(row.author_id), row.text, row.status) == (member_id, "Say which shelf comes first", "open")
    notices = (await owner.get("/api/v1/notifications")).json()["items"]
    (notice,) = [n for n in notices if n["kind"] == "procedure_suggestion"]
    assert notice["title"] == "Wang Fang 对“订单履约”的步骤“Pick the goods”提了建议。"
    assert notice["body"] == "Say which shelf comes first"
    assert notice["link"] == f"/sops/{procedure_id}/steps/pick"
    assert not [
        n for n in (await member.get("/api/v1/notifications")).json()["items"] if n["kind"] == "procedure_suggestion"
    ]


async def test_an_empty_or_too_long_suggestion_is_refused_beside_its_field(world: World) -> None:
    api, body = await world.signup(locale="en")
    procedure_id, _v = await publish(api, definition())
    empty = await suggest(api, procedure_id, "receive", "   ")
    assert empty.status_code == 422
    assert "Error:" in empty.text and "Enter what should change." in empty.text
    assert 'aria-invalid="true"' in empty.text and 'href="#field-text"' in empty.text
    long = "x" * 2001
    too_long = await suggest(api, procedure_id, "receive", long)
    assert too_long.status_code == 422 and "What should change is too long; shorten it." in too_long.text
    assert long in too_long.text  # the answer is kept
    assert (await suggest(api, procedure_id, "split", "A bar")).status_code == 404
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        assert await db.scalar(select(func.count()).select_from(ProcedureSuggestion)) == 0


async def test_suggestions_stay_in_their_workspace(world: World) -> None:
    a, a_body = await world.signup(locale="en")
    procedure_id, _v = await publish(a, definition())
    assert (await suggest(a, procedure_id, "receive", "Mine")).status_code == 303
    b, b_body = await world.signup(locale="en")
    assert (await suggest(b, procedure_id, "receive", "Peek")).status_code == 404
    async with open_session(uuid.UUID(b_body["tenant"]["id"])) as db:
        assert await db.scalar(select(func.count()).select_from(ProcedureSuggestion)) == 0
        principal = Principal(
            uuid.UUID(b_body["user"]["id"]), uuid.uuid4(), uuid.UUID(b_body["tenant"]["id"]), Role.OWNER, ""
        )
        with pytest.raises(NotFound):
            await suggestions.list_suggestions(db, principal, uuid.UUID(procedure_id))
    async with open_session(uuid.UUID(a_body["tenant"]["id"])) as db:
        principal = Principal(
            uuid.UUID(a_body["user"]["id"]), uuid.uuid4(), uuid.UUID(a_body["tenant"]["id"]), Role.OWNER, ""
        )
        (mine,) = await suggestions.list_suggestions(db, principal, uuid.UUID(procedure_id), status="open")
        assert mine.text == "Mine"
        done = await suggestions.set_status(db, principal, uuid.UUID(procedure_id), mine.id, "done")
        assert done.status == "done"
