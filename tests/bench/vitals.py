"""Core Web Vitals of a page on a slow phone network, in Debian's chromium driven by Playwright.

The conditions are the design brief's slow 4G: 1.6 Mbps down, 750 Kbps up, 150 ms round trip
(Chrome DevTools' network emulation), the CPU slowed four times, a 360x740 touch screen, nothing
cached. In the page, PerformanceObservers record:

- **LCP**: the last ``largest-contentful-paint`` entry before the first input;
- **CLS**: the largest session window of ``layout-shift`` entries not caused by input (gaps under
  1 s, windows up to 5 s), over the page's whole life;
- **INP**: the longest ``event`` entry of an interaction (``durationThreshold`` 16 ms, so a faster
  interaction is reported as under 16 ms) after a real click.

Timings, not bytes: the ``pages`` bench prints them against their targets; tests do not assert them.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DOWN_BYTES_PER_SECOND = 1_600_000 / 8
UP_BYTES_PER_SECOND = 750_000 / 8
RTT_MS = 150
CPU_SLOWDOWN = 4
VIEWPORT = {"width": 360, "height": 740}
TARGET_LCP_MS = 2500.0
TARGET_INP_MS = 200.0
TARGET_CLS = 0.1
EVENT_THRESHOLD_MS = 16
#: Time for late entries (the LCP after the last image, an interaction's paint) to be delivered.
SETTLE_MS = 1000
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

OBSERVERS = f"""
(() => {{
  const v = window.__vitals = {{lcp: null, cls: 0, inp: null, interactions: 0}};
  let inputSeen = false;
  new PerformanceObserver(list => {{
    if (inputSeen) return;
    for (const e of list.getEntries()) v.lcp = e.startTime;
  }}).observe({{type: 'largest-contentful-paint', buffered: true}});
  let windowValue = 0, windowStart = 0, previous = 0;
  new PerformanceObserver(list => {{
    for (const e of list.getEntries()) {{
      if (e.hadRecentInput) continue;
      if (windowValue && e.startTime - previous < 1000 && e.startTime - windowStart < 5000) {{
        windowValue += e.value;
      }} else {{
        windowValue = e.value; windowStart = e.startTime;
      }}
      previous = e.startTime;
      v.cls = Math.max(v.cls, windowValue);
    }}
  }}).observe({{type: 'layout-shift', buffered: true}});
  const seen = new Set();
  new PerformanceObserver(list => {{
    for (const e of list.getEntries()) {{
      if (!e.interactionId) continue;
      seen.add(e.interactionId);
      v.interactions = seen.size;
      v.inp = Math.max(v.inp || 0, e.duration);
    }}
  }}).observe({{type: 'event', durationThreshold: {EVENT_THRESHOLD_MS}, buffered: true}});
  addEventListener('pointerdown', () => {{ inputSeen = true; }}, {{capture: true}});
  addEventListener('keydown', () => {{ inputSeen = true; }}, {{capture: true}});
}})();
"""

# Bytes the page transferred (HTML and every file it loaded), and those of its scripts and styles.
TRANSFERRED = """
() => {
  const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
  const sum = entries => entries.reduce((total, e) => total + e.transferSize, 0);
  return [sum(all), sum(all.filter(e => e.initiatorType === 'script' || e.initiatorType === 'link'))];
}
"""


@dataclass(frozen=True)
class Vitals:
    lcp_ms: float
    cls: float
    inp_ms: float | None  # None: no interaction reached the 16 ms threshold
    interactions: int
    transferred_bytes: int
    assets_bytes: int


def chromium() -> str | None:
    return shutil.which("chromium")


class SlowPhone:
    """A headless chromium whose pages are opened on the slow network with a slow CPU, cold."""

    def __init__(self, base_url: str, cookies: list[dict[str, Any]]) -> None:
        self.base_url = base_url
        self.cookies = cookies
        self._playwright: Any = None
        self._browser: Any = None

    def __enter__(self) -> SlowPhone:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def measure(self, path: str, interact: Callable[[Any], None] | None = None) -> Vitals:
        """Open ``path`` in a fresh context (nothing cached), let it settle, then ``interact``."""
        context = self._browser.new_context(
            base_url=self.base_url,
            viewport=VIEWPORT,
            is_mobile=True,
            has_touch=True,
            device_scale_factor=2,
            locale="en",  # the bench's owner reads English
        )
        try:
            context.add_cookies(self.cookies)
            context.add_init_script(OBSERVERS)
            page = context.new_page()
            page.set_default_timeout(60_000)
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": RTT_MS,
                    "downloadThroughput": DOWN_BYTES_PER_SECOND,
                    "uploadThroughput": UP_BYTES_PER_SECOND,
                    "connectionType": "cellular4g",
                },
            )
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
            answer = page.goto(path, wait_until="load")
            if answer is None or answer.status != 200:
                raise RuntimeError(f"{path} answered {answer.status if answer else 'nothing'}")
            page.wait_for_timeout(SETTLE_MS)
            transferred, assets = page.evaluate(TRANSFERRED)
            if interact is not None:
                interact(page)
                page.wait_for_timeout(SETTLE_MS)
            found = page.evaluate("window.__vitals")
            if found["lcp"] is None:
                raise RuntimeError(f"{path}: no largest-contentful-paint entry")
            return Vitals(
                lcp_ms=float(found["lcp"]),
                cls=float(found["cls"]),
                inp_ms=None if found["inp"] is None else float(found["inp"]),
                interactions=int(found["interactions"]),
                transferred_bytes=int(transferred),
                assets_bytes=int(assets),
            )
        finally:
            context.close()


def inp_text(inp_ms: float | None) -> str:
    return f"<{EVENT_THRESHOLD_MS}" if inp_ms is None else f"{inp_ms:.0f}"


def median_vitals(measured: list[Vitals]) -> Vitals:
    """The median of each figure over rounds (an INP under the threshold counts as 0)."""
    inps = [v.inp_ms or 0.0 for v in measured]
    inp = statistics.median(inps)
    return Vitals(
        lcp_ms=statistics.median(v.lcp_ms for v in measured),
        cls=statistics.median(v.cls for v in measured),
        inp_ms=inp if inp >= EVENT_THRESHOLD_MS else None,
        interactions=min(v.interactions for v in measured),
        transferred_bytes=int(statistics.median(v.transferred_bytes for v in measured)),
        assets_bytes=int(statistics.median(v.assets_bytes for v in measured)),
    )


def met(vitals: Vitals) -> bool:
    inp_ok = vitals.inp_ms is None or vitals.inp_ms <= TARGET_INP_MS
    return vitals.lcp_ms <= TARGET_LCP_MS and vitals.cls <= TARGET_CLS and inp_ok
