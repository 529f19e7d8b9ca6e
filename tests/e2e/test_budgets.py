"""The weight budgets of the design brief, measured in a real browser on the served bytes.

- The task screens (My tasks, a run, the dashboard) each load at most 60 KB of scripts and
  styles, as transferred (gzip), and at most 25 KB of styles.
- Everything any page may load from ``/static`` (the API reference's Swagger UI aside: it is
  served to developers at ``/docs``, not part of the app) is at most 100 KB gzipped.
- My tasks with 20 cards is at most 40 KB of HTML (pages are sent uncompressed).
- Every file a page loads is addressed by its hash and cached for good (``immutable``).

Bytes are deterministic: these are assertions, not benchmarks. The timings on a slow phone
network (LCP, INP, CLS) are measured by the ``pages`` bench.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from services.web.static_files import IMMUTABLE
from services.web.templating import STATIC_DIR, template_dirs
from tests.e2e.pages import LANGUAGES, PHONE, browser_cookies, csrf_of, open_page, sign_up_by_api
from tests.e2e.test_run_page import a_run
from tests.embedded_server import EmbeddedServer

KB = 1024
TASK_SCREEN_ASSETS = 60 * KB
APP_CSS = 25 * KB
WHOLE_APP = 100 * KB
TASKS_HTML = 40 * KB
CARDS = 20
#: Served under /static for the API reference only (``services/openapi/docs_page.py``).
API_REFERENCE = ("vendor/swagger-ui-dist/", "docs/")
ASSET_SUFFIXES = (".js", ".css", ".svg", ".png", ".woff2")


@dataclass
class Weight:
    """What a page loaded: its HTML, and each static file with its transferred body size."""

    html_bytes: int = 0
    assets: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (resource type, bytes)
    cache_control: dict[str, str] = field(default_factory=dict)

    def total(self, *types: str) -> int:
        return sum(size for kind, size in self.assets.values() if kind in types)


def weigh(browser: Any, server: EmbeddedServer, client: httpx.Client, path: str, language: str) -> Weight:
    """Open ``path`` in a fresh context (nothing cached) and weigh what it transferred."""
    page = open_page(browser, server.base, PHONE, language, browser_cookies(client, server.base))
    finished: list[Any] = []
    page.on("requestfinished", lambda request: finished.append(request))
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, path
    page.wait_for_load_state("networkidle")
    weight = Weight(html_bytes=len(answer.body()))
    for request in finished:
        address = httpx.URL(request.url)
        if not address.path.startswith("/static/"):
            continue
        response = request.response()
        assert response is not None and response.status == 200, request.url
        relative = f"{address.path.removeprefix('/static/')}"
        weight.assets[relative] = (request.resource_type, request.sizes()["responseBodySize"])
        weight.cache_control[relative] = response.header_value("cache-control") or ""
        if request.resource_type in ("script", "stylesheet"):
            assert response.header_value("content-encoding") == "gzip", f"{relative} is sent uncompressed"
    page.context.close()
    return weight


def a_workspace_with_many_tasks(server: EmbeddedServer, language: str, runs: int = CARDS + 5) -> httpx.Client:
    """An owner with ``runs`` open tasks (more than a page holds), titled as a shop would title them."""
    client, _email = sign_up_by_api(server, language)
    headers = {"X-CSRF-Token": csrf_of(client)}
    zh = language == "zh-CN"
    title = "订单履约（线上店铺）" if zh else "Order fulfilment (online shop)"
    steps = [
        {
            "kind": "task",
            "key": key,
            "title": name,
            "owner": {"kind": "starter"},
            "due": {"within": {"hours": 4, "business": False}},
            **({"next": following} if following else {}),
        }
        for key, name, following in (
            ("pick", "拣货并核对数量" if zh else "Pick and count the items", "pack"),
            ("pack", "打包" if zh else "Pack the parcel", None),
        )
    ]
    created = client.post(
        "/api/v1/procedures",
        json={"key": "fulfil", "title": title, "definition": {"start": "pick", "steps": steps}},
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
    for n in range(runs):
        name = f"订单 #A{1024 + n} · 李女士" if zh else f"Order #A{1024 + n} · Ms Li"
        run = client.post("/api/v1/runs", json={"procedure_id": procedure["id"], "title": name}, headers=headers)
        assert run.status_code == 201, run.text
    return client


def whole_app() -> dict[str, int]:
    """Every file under /static a page may load (the API reference's aside), as paths -> 0."""
    return {
        p.relative_to(STATIC_DIR).as_posix(): 0
        for p in sorted(STATIC_DIR.rglob("*"))
        if p.is_file()
        and p.suffix in ASSET_SUFFIXES
        and not p.relative_to(STATIC_DIR).as_posix().startswith(API_REFERENCE)
    }


def named_by_templates() -> set[str]:
    """The files the templates name with ``static_url('…')``."""
    named: set[str] = set()
    for directory in template_dirs():
        for template in directory.rglob("*.html"):
            named.update(re.findall(r"static_url\(\s*['\"]([^'\"]+)['\"]\s*\)", template.read_text(encoding="utf-8")))
    return named


def test_the_whole_app_is_at_most_100_kb_gzipped(server: EmbeddedServer) -> None:
    files = whole_app()
    assert named_by_templates() <= set(files), "a template names a file outside the weighed set"
    with httpx.Client(base_url=server.base, timeout=15, headers={"Accept-Encoding": "gzip"}) as client:
        for relative in files:
            with client.stream("GET", f"/static/{relative}") as answer:
                assert answer.status_code == 200, relative
                files[relative] = sum(len(chunk) for chunk in answer.iter_raw())
    total = sum(files.values())
    listing = ", ".join(f"{name} {size / KB:.1f}" for name, size in files.items())
    assert total <= WHOLE_APP, f"the app's static files weigh {total / KB:.1f} KB gzipped: {listing}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_task_screens_keep_to_their_budgets(browser: Any, server: EmbeddedServer, language: str) -> None:
    client = a_workspace_with_many_tasks(server, language)
    run_client, run_id = a_run(server, language)
    screens = {
        "/tasks": weigh(browser, server, client, "/tasks", language),
        "/app": weigh(browser, server, client, "/app", language),
        "/runs/<id>": weigh(browser, server, run_client, f"/runs/{run_id}", language),
    }
    weighed = set(whole_app())
    for path, weight in screens.items():
        scripts_and_styles = weight.total("script", "stylesheet")
        styles = weight.total("stylesheet")
        assert weight.total("stylesheet") > 0 and weight.total("script") > 0, f"{path} loaded no styles or scripts"
        assert scripts_and_styles <= TASK_SCREEN_ASSETS, f"{path}: {scripts_and_styles / KB:.1f} KB of JS+CSS"
        assert styles <= APP_CSS, f"{path}: {styles / KB:.1f} KB of CSS"
        assert set(weight.assets) <= weighed, f"{path} loads files the whole-app budget does not weigh"
        for relative, policy in weight.cache_control.items():
            assert policy == IMMUTABLE, f"{path} loads {relative} without a hashed, immutable address: {policy!r}"
    tasks_html = screens["/tasks"].html_bytes
    assert tasks_html <= TASKS_HTML, f"My tasks with {CARDS} cards is {tasks_html / KB:.1f} KB of HTML"


def test_my_tasks_shows_twenty_cards_a_page(browser: Any, server: EmbeddedServer) -> None:
    # The HTML budget above is for a full page of cards.
    client = a_workspace_with_many_tasks(server, "en")
    page = open_page(browser, server.base, PHONE, "en", browser_cookies(client, server.base))
    page.goto("/tasks")
    assert page.locator(".task-card").count() == CARDS
    page.context.close()
