"""Writing :class:`~guiju_customs.layouts.Layout`\\ s as PDFs, with the CJK font subset-embedded.

A document set is written in one go (:func:`render_pdfs`): the font is cut down once to the
characters the whole set prints, and each PDF embeds that small font (fpdf2 subsets it again to
the glyphs the PDF itself uses). Reading the full CJK font into each PDF instead would parse its
tens of thousands of glyphs once per document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, XPos, YPos
from fpdf.fonts import TTFFont
from fpdf.util import Padding

from guiju_customs.fonts import Font, subset_font_file
from guiju_customs.layouts import Box, Cell, ColumnKind, Layout

FAMILY = "cjk"
MARGIN = 10.0
LABEL_SIZE = 6.5
VALUE_SIZE = 8.5
TABLE_SIZE = 7.5
LINE_HEIGHT = 3.6
LABEL_HEIGHT = 3.2
CELL_PADDING = 0.8
_PADDING = Padding(CELL_PADDING, CELL_PADDING, CELL_PADDING, CELL_PADDING)
GREY = (235, 235, 235)
DRAFT_RED = (200, 30, 30)
DRAFT_STAMP = "草稿 DRAFT"
#: What a footer prints besides the title and number: the page numbers and their separators.
FOOTER_CHARACTERS = "0123456789/— "


@dataclass(frozen=True)
class _TableTexts:
    """The line table's cells as printed: the rows and the totals row."""

    rows: tuple[tuple[str, ...], ...]
    totals: tuple[str, ...]


class _DocumentPdf(FPDF):
    """A page with the document's number and the page count in its footer."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(orientation="L" if layout.landscape else "P", unit="mm", format="A4")
        self.layout = layout

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FAMILY, size=LABEL_SIZE)
        self.cell(0, 4, _footer_text(self.layout, f"{self.page_no()}/{{nb}}"), align=Align.C)


def _footer_text(layout: Layout, pages: str) -> str:
    return f"{layout.title}  {layout.number}  —  {pages}"


def render_pdfs(layouts: Sequence[Layout], font: Font) -> list[bytes]:
    """The PDF of each of ``layouts``; only the glyphs a PDF uses are embedded from ``font``."""
    tables = [_table_texts(layout) for layout in layouts]
    characters: set[str] = set(FOOTER_CHARACTERS)
    for layout, table in zip(layouts, tables, strict=True):
        characters.update(_characters(layout, table))
    with subset_font_file(font, characters) as font_file:
        return [_render(layout, table, font_file) for layout, table in zip(layouts, tables, strict=True)]


def render_pdf(layout: Layout, font: Font) -> bytes:
    """The PDF of ``layout``; only the glyphs it uses are embedded from ``font``."""
    return render_pdfs([layout], font)[0]


def _characters(layout: Layout, table: _TableTexts) -> set[str]:
    texts = [layout.title_zh, layout.title_en, _footer_text(layout, ""), *layout.notes]
    if layout.draft:
        texts.append(DRAFT_STAMP)
    texts.extend(box.label + box.value for row in layout.boxes for box in row)
    texts.extend(column.title for column in layout.columns)
    texts.extend("".join(row) for row in table.rows)
    texts.extend(table.totals)
    return set("".join(texts))


def _render(layout: Layout, table: _TableTexts, font_file: Path) -> bytes:
    pdf = _DocumentPdf(layout)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=14)
    pdf.set_creator("Guiju customs")
    pdf.set_title(f"{layout.title} {layout.number}")
    pdf.add_font(FAMILY, fname=font_file)
    # The embedded subset keeps the font's bounding box instead of recomputing it from every glyph
    # outline, which is most of the time a CFF font (Noto Sans SC) takes to embed.
    embedded = pdf.fonts[FAMILY]
    if isinstance(embedded, TTFFont):
        embedded.ttfont.recalcBBoxes = False
    pdf.add_page()
    _title(pdf, layout)
    _boxes(pdf, layout)
    _table(pdf, layout, table)
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
        pdf.cell(40, 8, DRAFT_STAMP, border=1, align=Align.C)
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


def _table_texts(layout: Layout) -> _TableTexts:
    kinds = [column.kind for column in layout.columns]

    def texts(values: Sequence[Cell]) -> tuple[str, ...]:
        return tuple(cell_text(value, kind, layout.exponent) for value, kind in zip(values, kinds, strict=True))

    return _TableTexts(tuple(texts(row) for row in layout.rows), texts(layout.totals))


class _TableDrawing:
    """The line table, drawn row by row: its heading opens every page the table runs onto.

    fpdf2's ``table()`` lays every cell out twice through ``multi_cell``, most of the time a long
    document takes; here a cell is one text per line, and only a text wider than its column (or
    holding a line break) goes through fpdf2's line breaking.
    """

    def __init__(self, pdf: FPDF, layout: Layout) -> None:
        self.pdf = pdf
        self.widths = _column_widths(layout, pdf)
        self.lefts = [MARGIN + sum(self.widths[:index]) for index in range(len(self.widths))]
        self.table_width = sum(self.widths)
        self.aligns = [Align.L if column.kind is ColumnKind.TEXT else Align.R for column in layout.columns]
        pdf.set_font(FAMILY, size=TABLE_SIZE)
        font = pdf.current_font
        if not isinstance(font, TTFFont):
            raise TypeError("the table is printed in the embedded CJK font")
        self.font = font
        self.size_pt = pdf.font_size_pt
        # fpdf2 puts a line's baseline 0.3 font sizes below the middle of the line.
        self.baseline = LINE_HEIGHT / 2 + 0.3 * pdf.font_size
        # Laid out once: the heading is drawn again on every page.
        self.heading = self.laid_out([column.title for column in layout.columns])

    def width_of(self, text: str) -> float:
        """The printed width of ``text`` in millimetres."""
        return self.font.get_text_width(text, self.size_pt, None)[1] / self.pdf.k

    def lines_of(self, text: str, width: float) -> list[tuple[str, float]]:
        """``text`` broken into the lines that fit ``width``, each with its printed width."""
        room = width - 2 * CELL_PADDING
        if "\n" not in text:
            text_width = self.width_of(text)
            if text_width <= room:
                return [(text, text_width)]
        # Broken as fpdf2's tables break a cell: the padding, not the cell margin, inside the width.
        wrapped = self.pdf.multi_cell(
            width, LINE_HEIGHT, text, dry_run=True, output=MethodReturnValue.LINES, padding=_PADDING
        )
        lines = wrapped if isinstance(wrapped, list) else [text]
        return [(line, self.width_of(line)) for line in lines]

    def laid_out(self, cells: Sequence[str]) -> tuple[list[list[tuple[str, float]]], float]:
        """Each cell's lines, and the row's height."""
        lines = [self.lines_of(text, width) if text else [] for text, width in zip(cells, self.widths, strict=True)]
        return lines, max(1, *(len(cell) for cell in lines)) * LINE_HEIGHT + 2 * CELL_PADDING

    def row(self, cells: Sequence[str], aligns: Sequence[Align], *, shaded: bool) -> None:
        """One row; a row that does not fit the page opens the next page, under the heading."""
        laid_out, height = self.laid_out(cells)
        if self.pdf.get_y() + height > self.pdf.page_break_trigger:
            self.pdf.add_page()
            self.heading_row()
        self.draw(laid_out, height, aligns, shaded=shaded)

    def heading_row(self) -> None:
        """The column titles, centred on grey."""
        self.draw(*self.heading, [Align.C] * len(self.widths), shaded=True)

    def draw(
        self, laid_out: Sequence[Sequence[tuple[str, float]]], height: float, aligns: Sequence[Align], *, shaded: bool
    ) -> None:
        """A row of cells at the current position."""
        pdf = self.pdf
        top = pdf.get_y()
        pdf.rect(MARGIN, top, self.table_width, height, style="DF" if shaded else "D")
        for left in self.lefts[1:]:
            pdf.line(left, top, left, top + height)
        for lines, left, width, align in zip(laid_out, self.lefts, self.widths, aligns, strict=True):
            # Vertically centred in the row, as fpdf2's tables print.
            baseline = top + (height - len(lines) * LINE_HEIGHT) / 2 + self.baseline
            for line, line_width in lines:
                if align is Align.R:
                    x = left + width - CELL_PADDING - line_width
                elif align is Align.C:
                    x = left + (width - line_width) / 2
                else:
                    x = left + CELL_PADDING
                pdf.text(x, baseline, line)
                baseline += LINE_HEIGHT
        pdf.set_y(top + height)


def _table(pdf: FPDF, layout: Layout, texts: _TableTexts) -> None:
    drawing = _TableDrawing(pdf, layout)
    pdf.set_fill_color(*GREY)
    first_row = texts.rows[0] if texts.rows else texts.totals
    # The heading never ends a page alone: with its first row it starts the next page instead.
    if pdf.get_y() + drawing.heading[1] + drawing.laid_out(first_row)[1] > pdf.page_break_trigger:
        pdf.add_page()
    drawing.heading_row()
    for row in texts.rows:
        drawing.row(row, drawing.aligns, shaded=False)
    drawing.row(texts.totals, drawing.aligns, shaded=True)


def _notes(pdf: FPDF, layout: Layout) -> None:
    pdf.ln(3)
    pdf.set_font(FAMILY, size=VALUE_SIZE)
    for note in layout.notes:
        pdf.multi_cell(0, LINE_HEIGHT + 0.8, note, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
