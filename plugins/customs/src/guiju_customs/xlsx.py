"""Writing a :class:`~guiju_customs.layouts.Layout` as a formatted XLSX workbook.

Header boxes are merged cells (a grey label above its value), the line table has a frozen heading,
numbers stay numbers with number formats, and the totals row holds the computed totals.
"""

from __future__ import annotations

import io
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from openpyxl.styles import Alignment, Border, Font, NamedStyle, PatternFill, Side  # type: ignore[import-untyped, unused-ignore]
from openpyxl.utils import get_column_letter  # type: ignore[import-untyped, unused-ignore]
from openpyxl.worksheet.properties import PageSetupProperties  # type: ignore[import-untyped, unused-ignore]
from openpyxl.worksheet.worksheet import Worksheet  # type: ignore[import-untyped, unused-ignore]

from guiju_customs.layouts import ColumnKind, Layout

_THIN = Side(style="thin", color="808080")
_BORDER = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)
_GREY = PatternFill("solid", fgColor="EBEBEB")
_LABEL_FONT = Font(size=8, color="5A5A5A")
_BOLD = Font(bold=True)
_TITLE_FONT = Font(size=15, bold=True)
_WRAP = Alignment(wrap_text=True, vertical="top")
_CENTRE = Alignment(horizontal="center", vertical="center", wrap_text=True)
_NOTE = Alignment(wrap_text=True)
#: The cell styles, by name. A cell takes a named style by its name: openpyxl then copies the
#: style's indexes, where assigning a font, border or alignment object would hash it for every cell.
_STYLES: dict[str, dict[str, Any]] = {
    "Customs title": {"font": _TITLE_FONT, "alignment": _CENTRE},
    "Customs subtitle": {"font": _BOLD, "alignment": _CENTRE},
    "Customs label": {"font": _LABEL_FONT, "fill": _GREY, "alignment": _WRAP},
    "Customs value": {"alignment": _WRAP},
    "Customs heading": {"font": _BOLD, "fill": _GREY, "alignment": _CENTRE},
    "Customs line": {"alignment": _WRAP},
    "Customs total": {"font": _BOLD, "fill": _GREY},
    "Customs note": {"alignment": _NOTE},
}
#: Millimetres on the PDF page to Excel's character widths.
MM_PER_CHARACTER = 1.9


def number_format(kind: ColumnKind, exponent: int) -> str | None:
    """The Excel number format of a column's numbers."""
    decimals = "." + "0" * exponent if exponent else ""
    formats = {
        ColumnKind.INTEGER: "0",
        ColumnKind.QUANTITY: "#,##0.###",
        ColumnKind.MONEY: f"#,##0{decimals}",
        ColumnKind.PRICE: f"#,##0{decimals}##",
        ColumnKind.WEIGHT: "#,##0.000",
    }
    return formats.get(kind)


def render_xlsx(layout: Layout) -> bytes:
    """The XLSX workbook of ``layout``: one sheet."""
    workbook = openpyxl.Workbook()
    sheet: Any = workbook.active
    if not isinstance(sheet, Worksheet):
        raise TypeError("a new workbook starts with one worksheet")
    sheet.title = layout.title_zh[:31]
    for name, style in _STYLES.items():
        workbook.add_named_style(NamedStyle(name, border=_BORDER, **style))
    formats = [number_format(column.kind, layout.exponent) for column in layout.columns]
    # Numbers take a style per number format (named after it), in the lines and in the totals row.
    line_styles: list[str] = []
    total_styles: list[str] = []
    for format in formats:
        line_styles.append(f"Customs number {format}" if format else "Customs line")
        total_styles.append(f"Customs total {format}" if format else "Customs total")
        if format and line_styles[-1] not in workbook.named_styles:
            workbook.add_named_style(NamedStyle(line_styles[-1], border=_BORDER, number_format=format))
            workbook.add_named_style(
                NamedStyle(total_styles[-1], border=_BORDER, number_format=format, **_STYLES["Customs total"])
            )

    last_column = len(layout.columns)
    for index, column in enumerate(layout.columns, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = max(6.0, column.width / MM_PER_CHARACTER)

    _merged(sheet, 1, 1, last_column, layout.title_zh, "Customs title")
    _merged(sheet, 2, 1, last_column, layout.title_en, "Customs subtitle")
    row = 4
    for boxes in layout.boxes:
        first = 1
        lines = 1
        for box in boxes:
            end = first + box.span - 1
            _merged(sheet, row, first, end, box.label, "Customs label")
            _merged(sheet, row + 1, first, end, box.value, "Customs value")
            lines = max(lines, box.value.count("\n") + 1)
            first = end + 1
        sheet.row_dimensions[row + 1].height = 15 * lines
        row += 2

    row += 1
    heading_row = row
    for index, column in enumerate(layout.columns, start=1):
        sheet.cell(row=row, column=index, value=column.title).style = "Customs heading"
    sheet.row_dimensions[row].height = 30
    for values in layout.rows:
        row += 1
        for index, value in enumerate(values, start=1):
            # Text in a number column (none today) keeps the wrapping text style.
            _set(sheet, row, index, value).style = "Customs line" if isinstance(value, str) else line_styles[index - 1]
    row += 1
    for index, value in enumerate(layout.totals, start=1):
        _set(sheet, row, index, value).style = "Customs total" if isinstance(value, str) else total_styles[index - 1]
    row += 1
    for note in layout.notes:
        row += 1
        _merged(sheet, row, 1, last_column, note, "Customs note")

    sheet.freeze_panes = f"A{heading_row + 1}"
    sheet.print_title_rows = f"{heading_row}:{heading_row}"
    sheet.page_setup.orientation = "landscape" if layout.landscape else "portrait"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    workbook.properties.title = f"{layout.title} {layout.number}"
    workbook.properties.creator = "Guiju customs"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _merged(sheet: Any, row: int, first: int, last: int, value: str, style: str) -> None:
    # Merged while its cells are still blank, then styled: merging styled cells recombines each
    # edge cell's border.
    if last > first:
        sheet.merge_cells(start_row=row, start_column=first, end_row=row, end_column=last)
    _set(sheet, row, first, value).style = style
    for column in range(first + 1, last + 1):
        sheet.cell(row=row, column=column).style = style


def _set(sheet: Any, row: int, column: int, value: Any) -> Any:
    """Write ``value``; text is always text: openpyxl would take "=..." from a record for a formula."""
    cell = sheet.cell(row=row, column=column, value=value)
    if isinstance(value, str) and value.startswith("="):
        cell.data_type = "s"
    return cell
