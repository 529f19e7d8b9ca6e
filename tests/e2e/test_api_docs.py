"""``/docs`` in a real headless Chromium against ``guiju run``: Swagger UI renders every operation
of the OpenAPI 3.1 document, from our own files only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from services.openapi import OPENAPI_JSON_PATH
from services.openapi.document import documented_operations
from tests.embedded_server import EmbeddedServer

_METHOD_AND_PATH = """els => els.map(e =>
  e.querySelector('.opblock-summary-method').textContent + ' ' +
  e.querySelector('.opblock-summary-path').dataset.path)"""


def test_docs_render_every_operation_of_the_document(browser: Any, server: EmbeddedServer) -> None:
    document = httpx.get(server.base + OPENAPI_JSON_PATH, timeout=10).json()
    assert document["openapi"].startswith("3.1")
    expected = len(documented_operations(document))
    assert expected > 100

    page = browser.new_page(locale="en-US")
    try:
        console_errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
        page.on("pageerror", lambda error: console_errors.append(str(error)))
        origins: set[str] = set()
        page.on("request", lambda request: origins.add(urlsplit(request.url).netloc))
        failed: list[str] = []
        page.on("response", lambda response: response.status >= 400 and failed.append(response.url))

        page.goto(server.base + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)

        # Swagger UI draws only the operations near the viewport of a long list: scroll through
        # the page and collect every operation it draws on the way.
        drawn: set[str] = set()
        top, height = 0, page.evaluate("document.body.scrollHeight")
        while top < height:
            page.evaluate(f"window.scrollTo(0, {top})")
            page.wait_for_timeout(100)
            drawn |= set(page.locator(".opblock").evaluate_all(_METHOD_AND_PATH))
            top, height = top + 300, page.evaluate("document.body.scrollHeight")
        assert len(drawn) == expected, f"Swagger UI drew {len(drawn)} of {expected} operations"

        signup = page.locator('.opblock-post:has(.opblock-summary-path[data-path="/api/v1/auth/signup"])')
        top = 0
        while signup.count() == 0 and top < height:
            page.evaluate(f"window.scrollTo(0, {top})")
            page.wait_for_timeout(100)
            top += 200
        assert signup.count() == 1
        assert signup.first.is_visible()
        assert page.get_by_text("Unable to render this definition").count() == 0
        assert page.locator(".errors-wrapper").count() == 0

        # Opening an operation shows its problem+json errors.
        signup.first.locator(".opblock-summary").click()
        page.wait_for_selector(".opblock-post.is-open .responses-table")
        responses = page.locator(".opblock-post.is-open .responses-table").first.inner_text()
        assert "application/problem+json" in responses
    finally:
        page.context.close()

    assert failed == []
    assert console_errors == []
    assert origins == {urlsplit(server.base).netloc}, "the page loaded something from another site"
