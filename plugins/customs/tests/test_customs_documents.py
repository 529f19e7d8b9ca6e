"""Each document kind in each format: PDF text and pixels, XLSX cells and totals."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import openpyxl
import pypdfium2
import pytest
from customs_samples import CONSIGNEE_ZH, CONSIGNOR_ZH, ORDER, USCC, large_order, order
from guiju_customs import plugin
from guiju_customs.order import KINDS
from guiju_sdk import Document
from guiju_sdk.testing import FakeContext, PluginHarness
from PIL import Image

harness = PluginHarness(plugin, name="customs")


def pdf_text(content: bytes) -> str:
    document = pypdfium2.PdfDocument(content)
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in document)
    finally:
        document.close()


def first_page_image(content: bytes) -> Image.Image:
    document = pypdfium2.PdfDocument(content)
    try:
        return document[0].render(scale=1.5).to_pil().convert("L")
    finally:
        document.close()


def dark_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    return sum(image.crop(box).histogram()[:128])


async def generate(kind: str, format: str, values: dict[str, object] = ORDER) -> Document:
    return await harness.generate_document(kind, values, format, FakeContext(plugin="customs"))


def test_the_plugin_registers_what_the_host_accepts() -> None:
    assert harness.registrations.problems == []
    info = harness.info()
    assert (info.name, info.version, info.category) == ("customs", "1.0.0", "customs")
    assert set(info.scopes) == {"records:read", "records:write", "files:write", "events:emit"}
    assert set(harness.registrations.document_kinds) == set(KINDS)
    assert all(k.formats == ("pdf", "xlsx") for k in harness.registrations.document_kinds.values())
    trigger = harness.registrations.triggers["documents_generated"]
    assert trigger.poll is None


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_as_pdf_embeds_a_subset_cjk_font_and_reads_back(kind: str) -> None:
    document = await generate(kind, "pdf")
    assert document.content_type == "application/pdf"
    assert document.filename == f"{kind}-SO-2026-0042.pdf"
    assert document.content.startswith(b"%PDF-")
    # The font is embedded as a subset (a six-letter tag before its name), not the 8 MB font.
    assert re.search(rb"/BaseFont /[A-Z]{6}\+NotoSansSC", document.content)
    assert b"/FontFile3" in document.content or b"/FontFile2" in document.content
    assert len(document.content) < 300_000
    text = pdf_text(document.content)
    assert CONSIGNOR_ZH in text
    assert CONSIGNEE_ZH in text
    assert "SO-2026-0042" in text


async def test_the_declaration_pdf_prints_its_boxes_and_lines_in_chinese() -> None:
    text = pdf_text((await generate("export_declaration", "pdf")).content)
    for expected in (
        "中华人民共和国海关出口货物报关单",
        "境内发货人",
        "境外收货人",
        USCC,
        "监管方式（贸易方式）",
        "一般贸易 0110",
        "水路运输 2",
        "出境关别",
        "大鹏海关 5316",
        "运抵国（地区）",
        "德国 DEU",
        "指运港",
        "离境口岸",
        "成交方式",
        "CIF 1",
        "USD 350.00",
        "USD 12.50",
        "8516500000",
        "8509400000",
        "微波炉",
        "1|0|加热食品|远航牌|MW-20",
        "纸制或纤维板制盒/箱",
        "1,398",
        "1,240.5",
        "4,795.00",
        "草稿",
    ):
        assert expected in text, expected


async def test_the_invoice_pdf_prints_english_and_chinese_with_amounts() -> None:
    text = pdf_text((await generate("commercial_invoice", "pdf")).content)
    for expected in ("COMMERCIAL INVOICE", "商业发票", "Microwave oven 微波炉", "45.50", "4,550.00", "CIF Hamburg"):
        assert expected in text, expected
    proforma = pdf_text((await generate("proforma_invoice", "pdf")).content)
    assert "PROFORMA INVOICE" in proforma
    assert "形式发票" in proforma
    packing = pdf_text((await generate("packing_list", "pdf")).content)
    for expected in ("PACKING LIST", "1,200.000", "1,398.000", "RH/HAMBURG/C1-12"):
        assert expected in packing, expected


@pytest.mark.parametrize("kind", ["export_declaration", "commercial_invoice"])
async def test_the_first_page_renders_visible_text(kind: str) -> None:
    image = first_page_image((await generate(kind, "pdf")).content)
    width, height = image.size
    # The title, the header boxes' text and the table: ink in the upper half; the lower part is paper.
    title_band = (int(width * 0.25), int(height * 0.03), int(width * 0.75), int(height * 0.09))
    assert dark_pixels(image, title_band) > 300
    assert dark_pixels(image, (0, int(height * 0.1), width, int(height * 0.45))) > 3000
    assert dark_pixels(image, (0, int(height * 0.8), width, int(height * 0.95))) < 50


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_as_xlsx_keeps_numbers_and_totals(kind: str) -> None:
    document = await generate(kind, "xlsx")
    assert document.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert document.filename == f"{kind}-SO-2026-0042.xlsx"
    sheet = openpyxl.load_workbook(io.BytesIO(document.content)).active
    cells = {cell.value: cell for row in sheet.iter_rows() for cell in row if cell.value is not None}
    assert CONSIGNOR_ZH in " ".join(str(value) for value in cells)
    assert sheet.freeze_panes is not None
    assert sheet.merged_cells.ranges
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    total_row = next(row for row in rows if row[0] in ("Total 合计", "合计"))
    if kind == "packing_list":
        assert total_row[4:7] == [12, Decimal("1240.5"), Decimal("1398")] or total_row[4:7] == [12, 1240.5, 1398]
    else:
        amount_column = 7 if kind == "export_declaration" else 6
        lines = [row for row in rows if isinstance(row[0], int)]
        assert [row[amount_column] for row in lines] == [4550, 245]
        assert total_row[amount_column] == sum(row[amount_column] for row in lines) == 4795
        money_cell = sheet.cell(row=rows.index(total_row) + 1, column=amount_column + 1)
        assert money_cell.number_format == "#,##0.00"


async def test_xlsx_text_from_the_record_is_never_a_formula() -> None:
    values = order()
    values["lines"][0]["name_en"] = '=HYPERLINK("http://evil.example","x")'
    sheet = openpyxl.load_workbook(io.BytesIO((await generate("commercial_invoice", "xlsx", values)).content)).active
    cells = [
        cell for row in sheet.iter_rows() for cell in row if isinstance(cell.value, str) and "HYPERLINK" in cell.value
    ]
    assert cells
    assert all(cell.data_type == "s" for cell in cells)


async def test_a_200_line_declaration_runs_over_pages_with_every_line() -> None:
    values = large_order(200)
    content = (await generate("export_declaration", "pdf", values)).content
    document = pypdfium2.PdfDocument(content)
    try:
        assert len(document) > 3
    finally:
        document.close()
    text = pdf_text(content)
    assert "商品200号" in text
    assert text.count("商品编号") == len(pypdfium2.PdfDocument(content))  # the heading repeats on every page


async def test_a_long_description_wraps_inside_its_cell() -> None:
    values = order()
    words = [f"part{number:02d}" for number in range(1, 31)]
    values["lines"][0]["name_en"] = " ".join(words)
    values["lines"][0]["name_zh"] = "带有很长的中文说明文字的微波炉" * 4
    content = (await generate("commercial_invoice", "pdf", values)).content
    document = pypdfium2.PdfDocument(content)
    try:
        page = document[0]
        text_page = page.get_textpage()
        # Every word is printed, and inside the description column (21 % to 52 % of the page's width).
        width = page.get_width()
        for word in (words[0], words[14], words[-1]):
            found = text_page.search(word)
            match = found.get_next()
            assert match is not None, word
            left = text_page.get_charbox(match[0])[0]
            right = text_page.get_charbox(match[0] + match[1] - 1)[2]
            assert 0.21 * width < left and right < 0.525 * width, word
            found.close()
    finally:
        document.close()
    assert "带有很长的中文说明文字的微波炉" in pdf_text(content)


async def test_the_set_makes_each_kind_as_pdf_and_xlsx_with_the_font_cut_once() -> None:
    from guiju_customs.documents import render_set
    from guiju_customs.fonts import find_font
    from guiju_customs.order import read_order

    documents = render_set(read_order(ORDER, {}, KINDS), KINDS, find_font({}), {kind: 3 for kind in KINDS})
    assert [document.filename for document in documents] == [
        f"{kind}-SO-2026-0042-v3.{format}" for kind in KINDS for format in ("pdf", "xlsx")
    ]
    for document in documents[::2]:
        assert re.search(rb"/BaseFont /[A-Z]{6}\+NotoSansSC", document.content)
        assert CONSIGNOR_ZH in pdf_text(document.content)
