"""Writing a :class:`~guiju_customs.layouts.Layout` as a formatted XLSX workbook.

Header boxes are merged cells (a grey label above its value), the line table has a frozen heading,
numbers stay numbers with number formats, and the totals row holds the computed totals.
"""

from __future__ import annotations

import io
from typing import Any

import openpyxl  # type: ignore[import-untyped, unused-ignore]
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side  # type: ignore[import-untyped, unused-ignore]
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
    last_column = len(layout.columns)
    for index, column in enumerate(layout.columns, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = max(6.0, column.width / MM_PER_CHARACTER)

    _merged(sheet, 1, 1, last_column, layout.title_zh, _TITLE_FONT, _CENTRE)
    _merged(sheet, 2, 1, last_column, layout.title_en, _BOLD, _CENTRE)
    row = 4
    for boxes in layout.boxes:
        first = 1
        lines = 1
        for box in boxes:
            end = first + box.span - 1
            _merged(sheet, row, first, end, box.label, _LABEL_FONT, _WRAP, fill=_GREY)
            _merged(sheet, row + 1, first, end, box.value, None, _WRAP)
            lines = max(lines, box.value.count("\n") + 1)
            first = end + 1
        sheet.row_dimensions[row + 1].height = 15 * lines
        row += 2

    row += 1
    heading_row = row
    for index, column in enumerate(layout.columns, start=1):
        cell = sheet.cell(row=row, column=index, value=column.title)
        cell.font, cell.fill, cell.border, cell.alignment = _BOLD, _GREY, _BORDER, _CENTRE
    sheet.row_dimensions[row].height = 30
    formats = [number_format(column.kind, layout.exponent) for column in layout.columns]
    for values in layout.rows:
        row += 1
        for index, value in enumerate(values, start=1):
            cell = _set(sheet, row, index, value)
            cell.border = _BORDER
            if formats[index - 1] and not isinstance(value, str):
                cell.number_format = formats[index - 1]
            else:
                cell.alignment = _WRAP
    row += 1
    for index, value in enumerate(layout.totals, start=1):
        cell = _set(sheet, row, index, value)
        cell.font, cell.fill, cell.border = _BOLD, _GREY, _BORDER
        if formats[index - 1] and value is not None and not isinstance(value, str):
            cell.number_format = formats[index - 1]
    row += 1
    for note in layout.notes:
        row += 1
        _merged(sheet, row, 1, last_column, note, None, Alignment(wrap_text=True))

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


def _merged(
    sheet: Any, row: int, first: int, last: int, value: str, font: Any, alignment: Any, *, fill: Any = None
) -> None:
    cell = _set(sheet, row, first, value)
    if font is not None:
        cell.font = font
    cell.alignment = alignment
    if fill is not None:
        cell.fill = fill
    for column in range(first, last + 1):
        sheet.cell(row=row, column=column).border = _BORDER
    if last > first:
        sheet.merge_cells(start_row=row, start_column=first, end_row=row, end_column=last)


def _set(sheet: Any, row: int, column: int, value: Any) -> Any:
    """Write ``value``; text is always text: openpyxl would take "=..." from a record for a formula."""
    cell = sheet.cell(row=row, column=column, value=value)
    if isinstance(value, str) and value.startswith("="):
        cell.data_type = "s"
    return cell
