"""The harness of the page tests: Debian's chromium driven by Playwright against ``guiju run``, phone
and desktop sizes in both languages, and the checks every page passes.

A page test uses the fixtures ``server`` and ``browser`` (``conftest.py``: one of each per test
process, shared by every module it runs) and, for each page it visits, :func:`check_page`: axe-core
finds no serious or critical violation, nothing scrolls sideways, every control is at least 44 px
tall, and a screenshot lands in ``var/screenshots/`` (CI keeps that folder).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, REQUIRE_SERVICES, unique_email
from tests.embedded_server import ROOT, EmbeddedServer

SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--font-render-hinting=none",
]


@dataclass(frozen=True)
class Size:
    name: str
    width: int
    height: int
    phone: bool


PHONE = Size("phone", 360, 740, True)
DESKTOP = Size("desktop", 1280, 800, False)
SIZES = (PHONE, DESKTOP)
LANGUAGES = ("zh-CN", "en")
#: axe impacts that fail a page.
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
#: The narrowest width a page reflows to without sideways scrolling (WCAG 1.4.10: 320 CSS px).
REFLOW_WIDTH = 320


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "no chromium binary (make test installs Debian's chromium where it can)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and GUIJU_REQUIRE_SERVICES=1 requires it")
        pytest.skip(f"{message}: skipping page tests")
    return path


def open_page(
    browser: Any,
    base_url: str,
    size: Size,
    language: str,
    cookies: list[dict[str, Any]] | None = None,
    *,
    color_scheme: str = "light",
) -> Any:
    """A fresh browser context (its own cookies) at ``size`` in ``language`` and ``color_scheme``
    (``light`` or ``dark``); returns its page."""
    context = browser.new_context(
        color_scheme=color_scheme,
        base_url=base_url,
        viewport={"width": size.width, "height": size.height},
        locale=language,
        is_mobile=size.phone,
        has_touch=size.phone,
        device_scale_factor=1,
        timezone_id="Asia/Shanghai" if language == "zh-CN" else "Europe/London",
    )
    if cookies:
        context.add_cookies(cookies)
    context.add_init_script(_RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


# What the page's Content-Security-Policy blocked (a style, script or image the page then lacks).
_RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  const source = `${(e.sourceFile || '').split('/').pop()}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${(e.blockedURI || '').slice(0, 60)} ${source}`);
});
"""


# The controls a finger must hit: buttons, fields, and links that stand alone (a link inside a
# sentence is exempt, as WCAG 2.5.8 exempts inline targets).
_SMALL_TARGETS = """
() => {
  const small = [];
  const controls = document.querySelectorAll(
    'button, input:not([type=hidden]):not([type=checkbox]):not([type=radio]), select, textarea, ' +
    'a.button, nav a, .chips a, [role=button]');
  for (const el of controls) {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden') continue;
    if (el.closest('.skip-link')) continue;
    const label = (el.textContent || el.name || '').trim().slice(0, 40);
    if (box.height < 44 - 0.5) small.push(`${el.tagName.toLowerCase()} "${label}" ${Math.round(box.height)}px`);
  }
  return small;
}
"""


_SCROLL_WIDTH = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
# How far the page scrolls sideways, and the deepest elements whose right edge passes the viewport
# (what to fix): an empty list when nothing does.
_OVERFLOW = """
() => {
  const root = document.documentElement;
  const over = root.scrollWidth - root.clientWidth;
  if (over <= 0) return [];
  const edge = root.clientWidth;
  const past = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.right > edge + 0.5 && ![...el.children].some(c => c.getBoundingClientRect().right > edge + 0.5)) {
      const cls = (el.getAttribute('class') || '').trim().replace(/\\s+/g, '.');
      past.push(`${el.tagName.toLowerCase()}${cls ? '.' + cls : ''} +${Math.round(box.right - edge)}px`);
    }
  }
  return [`${over}px`, ...past.slice(0, 5)];
}
"""


def check_page(page: Any, name: str, size: Size, language: str) -> None:
    """The checks every page passes, then its screenshot (``<name>-<size>-<language>.png``).

    A page checked at phone size must also reflow at 320 px wide (WCAG 1.4.10): it is narrowed for
    a moment and must not scroll sideways there either."""
    from axe_playwright_python.sync_playwright import Axe

    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.lang") == language, f"{name}: the page is not in {language}"
    # Read before axe runs: axe's own probes set style attributes, which the policy reports too.
    blocked = page.evaluate("window.__cspViolations || []")
    assert blocked == [], f"{name} ({size.name}, {language}): the page's CSP blocked {blocked}"
    results = Axe().run(page)
    page.evaluate("window.__cspViolations = []")  # axe's own, for a later check of the same page
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]
    assert blocking == [], f"{name} ({size.name}, {language}): axe found {blocking}"
    overflow = page.evaluate(_SCROLL_WIDTH)
    assert overflow <= 0, f"{name} ({size.name}, {language}): scrolls sideways by {overflow}px"
    if size.phone:
        page.set_viewport_size({"width": REFLOW_WIDTH, "height": size.height})
        narrow = page.evaluate(_OVERFLOW)
        page.set_viewport_size({"width": size.width, "height": size.height})
        assert narrow == [], f"{name} ({language}): scrolls sideways at {REFLOW_WIDTH}px wide, past the edge: {narrow}"
    small = page.evaluate(_SMALL_TARGETS)
    assert small == [], f"{name} ({size.name}, {language}): touch targets under 44px: {small}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{size.name}-{language}.png"), full_page=True)


def csrf_of(client: httpx.Client) -> str:
    session = client.get("/api/v1/auth/session")
    assert session.status_code == 200, session.text
    token: str = session.json()["csrf_token"]
    return token


def sign_up_by_api(server: EmbeddedServer, language: str, *, company: str = "Page Co") -> tuple[httpx.Client, str]:
    """A new owner with their workspace, signed in on the returned client; and their email."""
    email = unique_email("pages")
    client = httpx.Client(base_url=server.base, timeout=15)
    answer = client.post(
        "/api/v1/auth/signup",
        json={
            "email": email,
            "password": PASSWORD,
            "display_name": "李娜" if language == "zh-CN" else "Lina Li",
            "company_name": company,
            "industry": "ecommerce",
            "locale": language,
            "timezone": "Asia/Shanghai",
        },
    )
    assert answer.status_code == 201, answer.text
    return client, email


def browser_cookies(client: httpx.Client, base_url: str) -> list[dict[str, Any]]:
    """The API client's session cookie, for a browser context: signed in on the pages too."""
    return [{"name": c.name, "value": c.value or "", "url": base_url} for c in client.cookies.jar]


def text_of(page: Any, selector: str) -> str:
    return re.sub(r"\s+", " ", page.inner_text(selector)).strip()


__all__ = [
    "DESKTOP",
    "LANGUAGES",
    "PASSWORD",
    "PHONE",
    "SIZES",
    "Size",
    "browser_cookies",
    "check_page",
    "csrf_of",
    "open_page",
    "sign_up_by_api",
    "text_of",
]
