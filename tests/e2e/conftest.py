"""The page tests' server and browser: one ``guiju run`` per test process, shared by every page test
module that process runs, and one chromium per module.

Each test signs up workspaces of its own, so nothing one module does is seen by another; starting
the server (its migrations and imports) is what takes the time, once instead of once per module.
The browser stays per module: Playwright's synchronous API keeps an event loop running in the
thread while it is open, and the asynchronous tests a process runs after a page module need that
thread free.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.pages import CHROMIUM_FLAGS, chromium_path
from tests.embedded_server import EmbeddedServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    running = EmbeddedServer(tmp_path_factory.mktemp("pages"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()
