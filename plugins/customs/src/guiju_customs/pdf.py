"""Writing a :class:`~guiju_customs.layouts.Layout` as a PDF, with the CJK font subset-embedded."""

from __future__ import annotations

from decimal import Decimal

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, TableCellFillMode, XPos, YPos
from fpdf.fonts import FontFace, TTFFont

from guiju_customs.fonts import Font
from guiju_customs.layouts import Box, Cell, ColumnKind, Layout

FAMILY = "cjk"
MARGIN = 10.0
LABEL_SIZE = 6.5
VALUE_SIZE = 8.5
TABLE_SIZE = 7.5
LINE_HEIGHT = 3.6
LABEL_HEIGHT = 3.2
GREY = (235, 235, 235)
DRAFT_RED = (200, 30, 30)


class _DocumentPdf(FPDF):
    """A page with the document's number and the page count in its footer."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(orientation="L" if layout.landscape else "P", unit="mm", format="A4")
        self.layout = layout

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FAMILY, size=LABEL_SIZE)
        self.cell(0, 4, f"{self.layout.title}  {self.layout.number}  —  {self.page_no()}/{{nb}}", align=Align.C)


def render_pdf(layout: Layout, font: Font) -> bytes:
    """The PDF of ``layout``; only the glyphs it uses are embedded from ``font``."""
    pdf = _DocumentPdf(layout)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=14)
    pdf.set_creator("Guiju customs")
    pdf.set_title(f"{layout.title} {layout.number}")
    pdf.add_font(FAMILY, fname=font.path, collection_font_number=font.face)
    # The embedded subset keeps the whole font's bounding box instead of recomputing it from every
    # glyph outline: that recomputation is most of the time a CFF font (Noto Sans SC) takes to embed.
    embedded = pdf.fonts[FAMILY]
    if isinstance(embedded, TTFFont):
        embedded.ttfont.recalcBBoxes = False
    pdf.add_page()
    _title(pdf, layout)
    _boxes(pdf, layout)
    _table(pdf, layout)
    _notes(pdf, layout)
    return bytes(pdf.output())


def _title(pdf: FPDF, layout: Layout) -> None:
    pdf.set_font(FAMILY, size=15)
    pdf.cell(0, 8, layout.title_zh, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FAMILY, size=10)
    pdf.cell(0, 5, layout.title_en, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if layout.draft:
        pdf.set_text_color(*DRAFT_RED)
        pdf.set_font(FAMILY, size=12)
        pdf.set_xy(pdf.w - MARGIN - 40, MARGIN)
        pdf.cell(40, 8, "草稿 DRAFT", border=1, align=Align.C)
        pdf.set_text_color(0, 0, 0)
        pdf.set_xy(MARGIN, MARGIN + 13)
    pdf.ln(2)


def _column_widths(layout: Layout, pdf: FPDF) -> list[float]:
    # The columns fill the page's width, keeping the layout's proportions.
    width = pdf.w - 2 * MARGIN
    total = sum(column.width for column in layout.columns)
    return [column.width * width / total for column in layout.columns]


def _boxes(pdf: FPDF, layout: Layout) -> None:
    widths = _column_widths(layout, pdf)
    for row in layout.boxes:
        spans: list[tuple[Box, float, float]] = []
        first = 0
        x = MARGIN
        for box in row:
            width = sum(widths[first : first + box.span])
            spans.append((box, x, width))
            x += width
            first += box.span
        pdf.set_font(FAMILY, size=VALUE_SIZE)
        height = LABEL_HEIGHT + 1.5 + max(LINE_HEIGHT * _line_count(pdf, box.value, w - 1.5) for box, _, w in spans)
        if pdf.get_y() + height > pdf.page_break_trigger:
            pdf.add_page()
        top = pdf.get_y()
        for box, left, width in spans:
            pdf.rect(left, top, width, height)
            pdf.set_xy(left + 0.75, top + 0.5)
            pdf.set_font(FAMILY, size=LABEL_SIZE)
            pdf.set_text_color(90, 90, 90)
            pdf.cell(width - 1.5, LABEL_HEIGHT, box.label.replace("\n", " "))
            pdf.set_text_color(0, 0, 0)
            pdf.set_font(FAMILY, size=VALUE_SIZE)
            pdf.set_xy(left + 0.75, top + LABEL_HEIGHT + 1)
            pdf.multi_cell(width - 1.5, LINE_HEIGHT, box.value, align=Align.L)
        pdf.set_xy(MARGIN, top + height)
    pdf.ln(3)


def _line_count(pdf: FPDF, text: str, width: float) -> int:
    lines = pdf.multi_cell(width, LINE_HEIGHT, text, dry_run=True, output=MethodReturnValue.LINES)
    return max(1, len(lines) if isinstance(lines, list) else 1)


def cell_text(value: Cell, kind: ColumnKind, exponent: int) -> str:
    """How a table cell is printed."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if kind is ColumnKind.MONEY:
        return f"{value:,.{exponent}f}"
    if kind is ColumnKind.WEIGHT:
        return f"{value:,.3f}"
    if kind in (ColumnKind.PRICE, ColumnKind.QUANTITY) and isinstance(value, Decimal):
        # As given, at least the currency's decimals for prices: 12.5 → 12.50, 0.125 stays.
        if kind is ColumnKind.PRICE and -value.as_tuple().exponent < exponent:  # type: ignore[operator]
            return f"{value:,.{exponent}f}"
        return f"{value:,f}"
    return str(value)


def _table(pdf: FPDF, layout: Layout) -> None:
    widths = _column_widths(layout, pdf)
    aligns = tuple(Align.L if column.kind is ColumnKind.TEXT else Align.R for column in layout.columns)
    pdf.set_font(FAMILY, size=TABLE_SIZE)
    heading_style = FontFace(fill_color=GREY)
    with pdf.table(
        col_widths=widths,
        width=sum(widths),
        align=Align.L,
        text_align=aligns,
        line_height=LINE_HEIGHT,
        headings_style=heading_style,
        cell_fill_mode=TableCellFillMode.NONE,
        padding=0.8,
        repeat_headings=1,
    ) as table:
        heading = table.row()
        for column in layout.columns:
            heading.cell(column.title, align=Align.C)
        for values in layout.rows:
            row = table.row()
            for column, value in zip(layout.columns, values, strict=True):
                row.cell(cell_text(value, column.kind, layout.exponent))
        totals = table.row(style=FontFace(fill_color=GREY))
        for column, value in zip(layout.columns, layout.totals, strict=True):
            totals.cell(cell_text(value, column.kind, layout.exponent))


def _notes(pdf: FPDF, layout: Layout) -> None:
    pdf.ln(3)
    pdf.set_font(FAMILY, size=VALUE_SIZE)
    for note in layout.notes:
        pdf.multi_cell(0, LINE_HEIGHT + 0.8, note, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
