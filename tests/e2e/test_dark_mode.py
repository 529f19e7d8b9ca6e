"""The dark colour scheme (``prefers-color-scheme: dark``): the landing page, My tasks, a run (its
form's error summary included) and the dashboard at phone and desktop sizes in both languages pass
every page check, colour contrast included, on the dark tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.pages import (
    LANGUAGES,
    SIZES,
    Size,
    browser_cookies,
    check_page,
    open_page,
)
from tests.e2e.test_run_page import a_run
from tests.e2e.test_task_pages import a_workspace_with_tasks
from tests.embedded_server import EmbeddedServer

DARK_CANVAS = "rgb(13, 17, 23)"  # --g-canvas in the dark scheme
DARK_TEXT = "rgb(230, 237, 243)"  # --g-text


def assert_dark(page: Any) -> None:
    colours = page.evaluate(
        "() => [getComputedStyle(document.documentElement).backgroundColor, getComputedStyle(document.body).color]"
    )
    assert colours == [DARK_CANVAS, DARK_TEXT], f"the page is not drawn in the dark scheme: {colours}"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.name)
@pytest.mark.parametrize("language", LANGUAGES)
def test_pages_in_the_dark_scheme_pass_the_checks(
    browser: Any, server: EmbeddedServer, size: Size, language: str
) -> None:
    page = open_page(browser, server.base, size, language, color_scheme="dark")
    page.goto("/")
    assert_dark(page)
    check_page(page, "dark-landing", size, language)
    page.context.close()

    client = a_workspace_with_tasks(server, language)
    page = open_page(browser, server.base, size, language, browser_cookies(client, server.base), color_scheme="dark")
    page.goto("/tasks")
    assert page.locator(".task-card .tag").count() > 0
    assert_dark(page)
    check_page(page, "dark-my-tasks", size, language)
    page.goto("/app")
    check_page(page, "dark-dashboard", size, language)
    page.context.close()

    run_client, run_id = a_run(server, language)
    page = open_page(
        browser, server.base, size, language, browser_cookies(run_client, server.base), color_scheme="dark"
    )
    page.goto(f"/runs/{run_id}")
    assert_dark(page)
    check_page(page, "dark-run", size, language)
    page.click("form[action$='/claim'] button")
    page.wait_for_selector("#field-f_parcel")
    page.click(".action-bar button[type=submit]")
    page.wait_for_selector(".error-summary")
    check_page(page, "dark-run-errors", size, language)
    page.context.close()
