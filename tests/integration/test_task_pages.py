"""The dashboard and My tasks pages, driven through the app as a browser would (form posts with the
site's Origin), on both backends."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from services.db import open_session
from services.notifications import service as notifications
from services.sops.runs.models import StepInstance
from services.sops.runs.service import sla_state
from tenants.base import utcnow
from tests.conftest import Api, World

ORIGIN = {"Origin": "http://guiju.test"}
HTMX = {**ORIGIN, "HX-Request": "true"}


def _flow(*keys: str, owner: dict[str, Any] | None = None, due_minutes: int | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        step: dict[str, Any] = {"kind": "task", "key": key, "title": key.title(), "owner": owner or {"kind": "starter"}}
        if due_minutes is not None:
            step["due"] = {"within": {"minutes": due_minutes, "business": False}}
        if i + 1 < len(keys):
            step["next"] = keys[i + 1]
        steps.append(step)
    return {"start": keys[0], "steps": steps}


async def publish(api: Api, definition: dict[str, Any], title: str) -> str:
    created = await api.post(
        "/api/v1/procedures", {"key": f"p_{uuid.uuid4().hex[:10]}", "title": title, "definition": definition}
    )
    assert created.status_code == 201, created.text
    procedure = created.json()
    path = f"/api/v1/procedures/{procedure['id']}/versions/{procedure['draft_version_id']}/publish"
    published = await api.post(path, {"change_note": "first"})
    assert published.status_code == 200, published.text
    return str(procedure["id"])


async def start(api: Api, procedure_id: str, title: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"procedure_id": procedure_id}
    if title:
        body["title"] = title
    response = await api.post("/api/v1/runs", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def ready_step(run: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["status"] == "ready")


async def page(api: Api, path: str, **params: Any) -> str:
    response = await api.get(path, params=params, headers={"Accept": "text/html"})
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return str(response.text)


def cards(html: str) -> list[str]:
    """The run titles of the page's task cards, in order."""
    return re.findall(r'<h2 class="task-run"><a href="/runs/[0-9a-f-]+">([^<]*)</a>', html)


def chip(html: str, label: str) -> int:
    found = re.search(re.escape(label) + r'<span class="chip-count">(\d+)</span>', html)
    assert found, label
    return int(found.group(1))


async def test_my_tasks_lists_mine_and_claimable_with_names_and_counts(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    mine = await publish(owner, _flow("pack", "check", "ship"), "Order fulfilment")
    shared = await publish(owner, _flow("pick", owner={"kind": "role", "role": "member"}), "Picking")
    await start(member, mine, "A1024")
    await start(owner, shared, "B2048")
    await start(owner, mine, "C4096")  # the owner's own: not the member's

    html = await page(member, "/tasks")
    assert cards(html) == ["A1024", "B2048"] or cards(html) == ["B2048", "A1024"]
    assert "Order fulfilment" in html and "Picking" in html
    assert "Pack · Step 1 of 3" in html
    assert "C4096" not in html
    assert not re.search(r">[0-9a-f]{8}-[0-9a-f]{4}-", html), "an id is shown"
    assert (chip(html, "All"), chip(html, "Assigned to me"), chip(html, "Claimable"), chip(html, "Overdue")) == (
        2,
        1,
        1,
        0,
    )
    assert "No time limit" in html
    assert cards(await page(member, "/tasks", view="claimable")) == ["B2048"]
    assert cards(await page(member, "/tasks", view="mine")) == ["A1024"]
    assert cards(await page(member, "/tasks", q="a10")) == ["A1024"]
    assert cards(await page(member, "/tasks", procedure=shared)) == ["B2048"]
    assert "No tasks match these filters." in await page(member, "/tasks", q="nothing like it")
    assert cards(await page(member, "/tasks", q="%")) == []  # searched as written, not a pattern
    assert cards(await page(member, "/tasks", q="_1024")) == []

    # The JSON API lists claimable steps too unless asked not to.
    api = (await member.get("/api/v1/my/tasks")).json()
    assert sorted(t["run_title"] for t in api["items"]) == ["A1024", "B2048"]
    only_mine = (await member.get("/api/v1/my/tasks", params={"include_claimable": "false"})).json()
    assert [t["run_title"] for t in only_mine["items"]] == ["A1024"]

    # The tab bar leads members to My tasks.
    assert 'href="/tasks" aria-current="page"' in html


async def test_empty_state(world: World) -> None:
    owner, _ = await world.signup()
    html = await page(owner, "/tasks")
    assert "No tasks yet. New tasks will appear here, and you will be notified." in html
    chinese, _ = await world.signup(locale="zh-CN")
    procedure = await publish(chinese, _flow("pick", "check", due_minutes=0), "订单履约")
    await start(chinese, procedure, "A1024")
    html = await page(chinese, "/tasks")
    assert "<h1>待办</h1>" in html and "拣货" not in html
    assert "Pick · 第 1/2 步" in html and "已超时" in html and "截止 今天" in html
    assert "全部<span" in html and "指派给我" in html
    empty = await page(chinese, "/tasks", view="claimable")
    assert "没有符合筛选条件的待办。" in empty


async def test_claim_from_the_page_without_and_with_htmx(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    other, _ = await world.invite_and_join(owner, "member")
    procedure = await publish(owner, _flow("pick", owner={"kind": "role", "role": "member"}), "Picking")
    first = await start(owner, procedure, "A1")
    second = await start(owner, procedure, "A2")

    # Without JavaScript: a form post, then back to the list it came from.
    step = ready_step(first)
    form = {"csrf_token": member.csrf, "next": "/tasks?view=claimable"}
    done = await member.client.post(f"/tasks/{first['id']}/{step['id']}/claim", data=form, headers=ORIGIN)
    assert done.status_code == 303
    assert done.headers["location"] == "/tasks?view=claimable&notice=task_claimed"
    assert cards(await page(member, "/tasks", view="mine")) == ["A1"]

    # With htmx: the card comes back as it now stands.
    step = ready_step(second)
    claimed = await member.client.post(
        f"/tasks/{second['id']}/{step['id']}/claim",
        data={"next": "/tasks"},
        headers={**HTMX, "X-CSRF-Token": member.csrf or ""},
    )
    assert claimed.status_code == 200, claimed.text
    assert "<html" not in claimed.text and "A2" in claimed.text
    assert "You claimed this task: it is yours now." in claimed.text and "Assigned to me" in claimed.text

    # Someone else was quicker: the card says who.
    beaten = await other.client.post(
        f"/tasks/{second['id']}/{step['id']}/claim",
        data={"next": "/tasks"},
        headers={**HTMX, "X-CSRF-Token": other.csrf or ""},
    )
    assert beaten.status_code == 409
    assert "Already claimed by Wang Fang." in beaten.text
    assert "claim-button" not in beaten.text
    # And without JavaScript, the list says so.
    plain = await other.client.post(
        f"/tasks/{second['id']}/{step['id']}/claim", data={"csrf_token": other.csrf, "next": "/tasks"}, headers=ORIGIN
    )
    assert plain.status_code == 409
    assert "Already claimed by Wang Fang." in plain.text and "<h1>My tasks</h1>" in plain.text

    # A form from elsewhere, or without the token, is refused.
    forged = await other.client.post(f"/tasks/{first['id']}/1/claim", data={"next": "/tasks"}, headers=ORIGIN)
    assert forged.status_code == 403


async def test_sla_tags(world: World) -> None:
    owner, signed = await world.signup()
    tenant_id = uuid.UUID(signed["tenant"]["id"])
    late = await publish(owner, _flow("late", due_minutes=0), "Late")
    soon = await publish(owner, _flow("soon", due_minutes=60), "Soon")
    fine = await publish(owner, _flow("fine", due_minutes=600), "Fine")
    never = await publish(owner, _flow("never"), "Never")
    runs = {name: await start(owner, pid, name) for name, pid in (("L", late), ("S", soon), ("F", fine), ("N", never))}
    # The "soon" step has been ready for most of its hour: 10 minutes left of 60 is the last quarter.
    async with open_session(tenant_id) as db:
        await db.execute(
            update(StepInstance)
            .where(StepInstance.run_id == uuid.UUID(runs["S"]["id"]))
            .values(ready_at=utcnow() - timedelta(minutes=50), due_at=utcnow() + timedelta(minutes=10))
        )
    html = await page(owner, "/tasks")
    assert cards(html) == ["L", "S", "F", "N"]  # overdue, due soon, by due time, no time limit
    assert re.search(r'class="tag danger">.*?Overdue by', html, re.S)
    assert re.search(r'class="tag warning">.*?Due soon · (9|10) min left', html, re.S)
    assert re.search(r'class="tag success">.*?On time', html, re.S)
    assert "No time limit" in html and "Due today" in html
    assert chip(html, "Overdue") == 1
    assert cards(await page(owner, "/tasks", view="overdue")) == ["L"]


def test_sla_state_rules() -> None:
    now = utcnow()
    hour = timedelta(hours=1)
    assert sla_state(None, None, now) == "none"
    assert sla_state(now - hour, now - timedelta(seconds=1), now) == "overdue"
    assert sla_state(now - 3 * hour, now + hour, now) == "due_soon"  # 25% left
    assert sla_state(now - 2 * hour, now + hour, now) == "on_time"  # a third left
    # A long limit is due soon only in its last 24 hours.
    assert sla_state(now - 100 * 24 * hour, now + 25 * hour, now) == "on_time"
    assert sla_state(now - 100 * 24 * hour, now + 23 * hour, now) == "due_soon"


async def test_pages_of_twenty(world: World) -> None:
    owner, _ = await world.signup()
    procedure = await publish(owner, _flow("do"), "Many")
    for n in range(23):
        await start(owner, procedure, f"R{n:02d}")
    first = await page(owner, "/tasks")
    assert len(cards(first)) == 20 and 'href="/tasks?page=2"' in first
    second = await page(owner, "/tasks", page=2)
    assert len(cards(second)) == 3 and set(cards(first)).isdisjoint(cards(second))
    more = await owner.get("/tasks", params={"page": 2}, headers={"HX-Request": "true"})
    assert more.status_code == 200 and "<html" not in more.text
    assert len(cards(more.text)) == 3 and 'hx-swap-oob="true"' in more.text


async def test_tenants_never_see_each_others_tasks(world: World) -> None:
    owner_a, _ = await world.signup()
    member_a, _ = await world.invite_and_join(owner_a, "member")
    owner_b, _ = await world.signup()
    member_b, _ = await world.invite_and_join(owner_b, "member")
    procedure = await publish(owner_a, _flow("pick", owner={"kind": "role", "role": "member"}), "Picking")
    run = await start(owner_a, procedure, "SECRET-A")
    assert cards(await page(member_a, "/tasks")) == ["SECRET-A"]
    html = await page(member_b, "/tasks")
    assert cards(html) == [] and "SECRET-A" not in html and chip(html, "All") == 0
    step = ready_step(run)
    refused = await member_b.client.post(
        f"/tasks/{run['id']}/{step['id']}/claim", data={"csrf_token": member_b.csrf, "next": "/tasks"}, headers=ORIGIN
    )
    assert refused.status_code == 404
    assert "SECRET-A" not in refused.text
    # Still claimable in tenant A.
    assert cards(await page(member_a, "/tasks", view="claimable")) == ["SECRET-A"]
    dashboard = await page(owner_b, "/app")
    assert "SECRET-A" not in dashboard and "Picking" not in dashboard


async def test_dashboard_and_start_a_run(world: World) -> None:
    owner, signed = await world.signup()
    empty = await page(owner, "/app")
    assert "Install an industry pack" in empty and 'href="/onboarding"' in empty
    procedure = await publish(owner, _flow("pack", "ship"), "Order fulfilment")
    html = await page(owner, "/app")
    assert "Install an industry pack" not in html
    assert "Start a run" in html and "Order fulfilment" in html
    assert 'href="/tasks?view=overdue"' in html

    started = await owner.client.post(
        "/app/start-run", data={"csrf_token": owner.csrf, "procedure_id": procedure}, headers=ORIGIN
    )
    assert started.status_code == 303
    run_id = started.headers["location"].removeprefix("/runs/")
    run = (await owner.get(f"/api/v1/runs/{run_id}")).json()
    assert run["title"] == "Order fulfilment" and run["status"] == "running"

    html = await page(owner, "/app")
    assert re.search(r"<span>Order fulfilment</span><strong>1 running</strong>", html)
    assert re.search(r"<strong>1</strong>To do", html)
    assert "No open problems." in html

    # An open exception shows with its kind's label and its run, and links to the run.
    flow = _flow("pack")
    flow["steps"][0]["exceptions"] = [{"key": "damaged", "label": "Damaged goods"}]
    packing = await publish(owner, flow, "Packing")
    run = await start(owner, packing, "B77")
    raised = await owner.post(f"/api/v1/runs/{run['id']}/exceptions", {"kind": "damaged", "step_id": 1})
    assert raised.status_code == 201, raised.text
    html = await page(owner, "/app")
    assert "Damaged goods" in html and f'href="/runs/{run["id"]}">B77</a> · Pack' in html
    assert "Reported today" in html

    # Unread notifications, linked only to this site.
    assert "No unread notifications." in html
    tenant_id, user_id = uuid.UUID(signed["tenant"]["id"]), uuid.UUID(signed["user"]["id"])
    async with open_session(tenant_id) as db:
        await notifications.notify(db, [user_id], "Check the B77 parcel", link=f"/runs/{run['id']}")
        await notifications.notify(db, [user_id], "Look elsewhere", link="https://elsewhere.example/")
        # A notice the platform words itself (a kind and its names): worded for the reader.
        await notifications.send(
            db,
            [user_id],
            "step_overdue",
            {"step": "Pack", "run": "B77"},
            link=f"/runs/{run['id']}",
            dedupe_key="overdue-b77",
        )
    html = await page(owner, "/app")
    assert f'<a href="/runs/{run["id"]}">Check the B77 parcel</a>' in html
    assert f'<a href="/runs/{run["id"]}">The step “Pack” of “B77” is overdue.</a>' in html
    assert "Look elsewhere" in html and "elsewhere.example" not in html

    # Nothing chosen, or another workspace's procedure: the form again, with the problem beside it.
    missing = await owner.client.post("/app/start-run", data={"csrf_token": owner.csrf}, headers=ORIGIN)
    assert missing.status_code == 422 and "Some answers need fixing" in missing.text
    other, _ = await world.signup()
    foreign = await other.client.post(
        "/app/start-run", data={"csrf_token": other.csrf, "procedure_id": procedure}, headers=ORIGIN
    )
    assert foreign.status_code == 422 and "Order fulfilment" not in foreign.text
    assert (await owner.get(f"/api/v1/runs/{run_id}")).status_code == 200
    runs = (await other.get("/api/v1/runs")).json()
    assert runs["items"] == []
