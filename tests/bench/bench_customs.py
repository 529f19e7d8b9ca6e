"""The customs plugin's document set against the floor of writing the same spreadsheets directly.

Ours: an order of 200 lines checked (every validation rule) and its whole document set made in
memory, as the action ``generate_documents`` makes it before storing anything: the commercial
invoice, packing list, proforma invoice and export declaration draft, each as PDF (the CJK font
subset-embedded) and as formatted XLSX. The floor: the same four spreadsheets' cells (titles, header
boxes, line table, totals, notes) written by the simplest direct openpyxl workbook, with no styles,
merges or number formats, and saved. Target: ours takes at most 3 times the floor.

Time: the median over rounds (the two alternate, so neither always runs first, on a small shared
machine). Memory: the peak of Python allocations (tracemalloc) during one more run of each,
measured apart so that tracing does not slow the timed runs.
"""

from __future__ import annotations

import io
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import openpyxl
from guiju_customs.documents import render_set
from guiju_customs.fonts import Font, find_font
from guiju_customs.layouts import Layout, build_layout
from guiju_customs.order import KINDS, Order, read_order
from guiju_customs.pdf import render_pdfs
from guiju_customs.xlsx import render_xlsx

from tests.bench.harness import round_order

LINES = 200
ROUNDS = 7
TARGET_RATIO = 3.0


def order_values(lines: int = LINES) -> dict[str, Any]:
    """An export order of ``lines`` lines whose amounts add up."""
    rows = []
    for number in range(1, lines + 1):
        rows.append(
            {
                "hs_code": "8516500000" if number % 2 else "6109100000",
                "name_zh": f"商品{number}号 微波炉" if number % 2 else f"商品{number}号 针织T恤衫",
                "name_en": f"Article {number}",
                "declared_elements": f"1|0|用途{number}|远航牌|型号-{number}",
                "quantity": number % 17 + 1,
                "unit": "台" if number % 2 else "件",
                "unit_price": f"{number % 50 + 1}.{number % 100:02d}",
                "net_weight_kg": "1.5",
                "gross_weight_kg": "1.75",
                "packages": 1,
                "source_region": "深圳特区",
            }
        )
    return {
        "order_number": "SO-BENCH-200",
        "order_date": "2026-03-02",
        "consignor_name_zh": "深圳市远航贸易有限公司",
        "consignor_name_en": "Shenzhen Yuanhang Trading Co., Ltd.",
        "consignor_address": "深圳市南山区科技园南区 A 栋 1201",
        "consignor_uscc": "91350100M000100Y43",
        "consignee_name": "Rheinland Haushaltswaren GmbH",
        "consignee_name_zh": "莱茵家居用品有限公司",
        "consignee_address": "Hafenstraße 12, 20457 Hamburg",
        "consignee_country": "DE",
        "currency": "USD",
        "incoterm": "FOB",
        "incoterm_place": "Shenzhen",
        "transport_mode": "2",
        "departure_port": "盐田 Yantian",
        "destination_port": "Hamburg",
        "packages": lines,
        "package_kind": "纸制或纤维板制盒/箱",
        "lines": rows,
    }


def ours(values: dict[str, Any], font: Font) -> int:
    """The plugin's work: check the order, make all eight files (as the action does); their total size."""
    order = read_order(values, {}, KINDS)
    return sum(len(document.content) for document in render_set(order, KINDS, font))


def plain_workbook(layout: Layout) -> bytes:
    """The floor: the layout's cells in a bare openpyxl workbook."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([layout.title_zh])
    sheet.append([layout.title_en])
    for boxes in layout.boxes:
        sheet.append([box.label for box in boxes])
        sheet.append([box.value for box in boxes])
    sheet.append([column.title for column in layout.columns])
    for row in layout.rows:
        sheet.append(list(row))
    sheet.append(list(layout.totals))
    for note in layout.notes:
        sheet.append([note])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def floor(layouts: list[Layout]) -> int:
    return sum(len(plain_workbook(layout)) for layout in layouts)


def _seconds(work: Callable[[], int]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _peak_mib(work: Callable[[], int]) -> float:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run() -> None:
    values = order_values()
    font = find_font({})
    order: Order = read_order(values, {}, KINDS)
    layouts = [build_layout(kind, order) for kind in KINDS]
    print(f"order of {LINES} lines; 4 kinds × (PDF + XLSX); PDF font {font.path.name}")

    def our_set() -> int:
        return ours(values, font)

    def floor_set() -> int:
        return floor(layouts)

    # Warm up (imports, the font's first read, caches) before anything is measured.
    our_set()
    floor_set()
    print(f"{'round':<8}{'ours s':>12}{'floor s':>12}{'ratio':>8}", flush=True)
    times: dict[str, list[float]] = {"floor": [], "ours": []}
    our_times, floor_times = times["ours"], times["floor"]
    for number in range(1, ROUNDS + 1):
        for name, one_set in round_order(number, [("floor", floor_set), ("ours", our_set)]):
            times[name].append(_seconds(one_set))
        print(
            f"{number:<8}{our_times[-1]:>12.3f}{floor_times[-1]:>12.3f}{our_times[-1] / floor_times[-1]:>8.2f}",
            flush=True,
        )
    ours_median, floor_median = statistics.median(our_times), statistics.median(floor_times)
    ratio = ours_median / floor_median
    print(f"{'median':<8}{ours_median:>12.3f}{floor_median:>12.3f}{ratio:>8.2f}")

    # For information: where our time goes.
    pdf_seconds = statistics.median(_seconds(lambda: sum(map(len, render_pdfs(layouts, font)))) for _ in range(3))
    xlsx_seconds = statistics.median(
        _seconds(lambda: sum(len(render_xlsx(layout)) for layout in layouts)) for _ in range(3)
    )
    print(
        f"of ours: the 4 PDFs (one font subset for all) {pdf_seconds:.3f} s, "
        f"the 4 formatted XLSX {xlsx_seconds:.3f} s (medians of 3)"
    )

    our_peak, floor_peak = _peak_mib(our_set), _peak_mib(floor_set)
    print(f"peak Python memory: ours {our_peak:.1f} MiB, floor {floor_peak:.1f} MiB ({our_peak / floor_peak:.2f}×)")
    verdict = "met" if ratio <= TARGET_RATIO else "not met"
    print(f"time ratio ours/floor: {ratio:.2f} (target ≤ {TARGET_RATIO:.1f}): {verdict}")
