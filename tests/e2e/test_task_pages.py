"""Journeys 3 and 4 in a real browser: My tasks and the dashboard at phone and desktop sizes in
Chinese and English (axe, no sideways scroll, 44 px targets, screenshots), and a task claimed on a
phone with the card swapped in place."""

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


def _flow(title: str, owner: dict[str, Any], due_minutes: int | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n, key in enumerate(("pick", "check", "ship"), start=1):
        step: dict[str, Any] = {"kind": "task", "key": key, "title": f"{title} {n}", "owner": owner}
        if due_minutes is not None:
            step["due"] = {"within": {"minutes": due_minutes, "business": False}}
        if n < 3:
            step["next"] = ("check", "ship")[n - 1]
        steps.append(step)
    return {"start": "pick", "steps": steps}


def a_workspace_with_tasks(server: EmbeddedServer, language: str) -> httpx.Client:
    """An owner with tasks of every kind: overdue, on time, no time limit, and claimable."""
    client, _email = sign_up_by_api(server, language)
    headers = {"X-CSRF-Token": csrf_of(client)}
    zh = language == "zh-CN"
    procedures = (
        ("returns", "退货处理" if zh else "Returns", {"kind": "starter"}, 0),
        ("orders", "订单履约" if zh else "Order fulfilment", {"kind": "starter"}, 600),
        ("checks", "供应商核查" if zh else "Supplier check", {"kind": "starter"}, None),
        ("picking", "拣货" if zh else "Picking", {"kind": "role", "role": "member"}, 120),
    )
    for key, title, owner, due in procedures:
        created = client.post(
            "/api/v1/procedures",
            json={"key": key, "title": title, "definition": _flow(title, owner, due)},
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
        for n in range(2):
            run_title = f"{'订单' if zh else 'Order'} #A10{n}{len(key)}"
            run = client.post(
                "/api/v1/runs", json={"procedure_id": procedure["id"], "title": run_title}, headers=headers
            )
            assert run.status_code == 201, run.text
    return client


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_my_tasks_and_the_dashboard_pass_the_checks(
    browser: Any, server: EmbeddedServer, size: Size, language: str
) -> None:
    client = a_workspace_with_tasks(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
    page.goto("/tasks")
    assert page.locator(".task-card").count() == 8
    check_page(page, "my-tasks", size, language)
    page.goto("/tasks?view=claimable")
    assert page.locator(".task-card").count() == 2
    page.goto("/tasks?q=nothing-like-it")
    check_page(page, "my-tasks-empty", size, language)
    page.goto("/app")
    check_page(page, "dashboard", size, language)
    page.context.close()
    # A new workspace: one card, to install an industry pack.
    fresh, _email = sign_up_by_api(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(fresh, server.base))
    page.goto("/app")
    assert page.locator("a[href='/onboarding']").count() >= 1
    check_page(page, "dashboard-new", size, language)
    page.context.close()


def test_a_task_claimed_on_a_phone(browser: Any, server: EmbeddedServer) -> None:
    client = a_workspace_with_tasks(server, "zh-CN")
    page = open_page(browser, server.base, PHONE, "zh-CN", browser_cookies(client, server.base))
    page.goto("/tasks?view=claimable")
    assert text_of(page, "h1") == "待办"
    first = page.locator(".task-item").first
    item_id = first.get_attribute("id")
    first.locator("button:has-text('领取')").click()
    card = page.locator(f"#{item_id}")
    card.locator(".task-outcome").wait_for()
    # Swapped in place (no new page): the card says so and is the member's now.
    assert "领取成功" in text_of(page, f"#{item_id} .task-outcome")
    assert "指派给我" in text_of(page, f"#{item_id}")
    assert page.url.endswith("/tasks?view=claimable")
    check_page(page, "my-tasks-claimed", PHONE, "zh-CN")
    # The title leads to the run.
    page.click(f"#{item_id} h2 a")
    page.wait_for_url("**/runs/*")
    page.context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_start_a_run_is_the_dashboards_primary_action_in_view_on_a_phone(
    browser: Any, server: EmbeddedServer, language: str
) -> None:
    client = a_workspace_with_tasks(server, language)
    label = "发起工单" if language == "zh-CN" else "Start a run"
    for size in SIZES:
        page = open_page(browser, server.base, size, language, browser_cookies(client, server.base))
        page.goto("/app")
        button = page.locator(f".start-bar button:has-text('{label}')")
        box = button.bounding_box()
        assert box is not None and page.evaluate("window.scrollY") == 0
        position = page.eval_on_selector(".start-bar", "el => getComputedStyle(el).position")
        if size.phone:
            # Above the tab bar, inside the first screen, without scrolling; and it stays there.
            tabbar_top = page.eval_on_selector(".tabbar", "el => el.getBoundingClientRect().top")
            assert position == "fixed"
            assert box["y"] >= 0 and box["y"] + box["height"] <= tabbar_top <= size.height
            page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
            moved = button.bounding_box()
            assert moved is not None and moved["y"] == box["y"]
        else:
            assert position == "static"  # in the side column like the other cards
        check_page(page, "dashboard-start-bar", size, language)
        # The bar's form starts a run and lands on its page.
        button.click()
        page.wait_for_url("**/runs/*")
        page.context.close()
    client.close()
