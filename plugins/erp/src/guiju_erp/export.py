"""The action ``export_accounting``: an entity's invoices or vouchers of one month, as CSV or XLSX.

Vouchers (记账凭证) book each invoice in its own currency:

- a receivable invoice: Dr accounts receivable (total) / Cr revenue (subtotal) / Cr output VAT (tax);
- a payable invoice: Dr cost of sales (subtotal) / Dr input VAT (tax) / Cr accounts payable (total).

CSV files are UTF-8 with a byte-order mark, so Excel opens the Chinese headers correctly. The
column layouts are :data:`VOUCHER_COLUMNS` and :data:`INVOICE_COLUMNS` (docs/plugins/erp.md).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from guiju_sdk import ActionCall, ActionFailed

from guiju_erp.money import ZERO, as_json_number, as_text, parse_period
from guiju_erp.records import READ_LIMIT, Invoice, read_invoices
from guiju_erp.settings import Account, Settings, load_settings

VOUCHER_COLUMNS = (
    "凭证日期",  # voucher date: the invoice date
    "凭证字",  # voucher word
    "凭证号",  # voucher number, 1… within the entity and month
    "分录号",  # entry number within the voucher
    "摘要",  # summary
    "科目编码",  # account code
    "科目名称",  # account name
    "借方金额",  # debit
    "贷方金额",  # credit
    "币种",  # currency
    "往来单位",  # counterparty
    "发票号",  # invoice number
)
INVOICE_COLUMNS = (
    "发票号",  # invoice number
    "类型",  # kind: 应收 receivable, 应付 payable
    "主体",  # entity code
    "往来单位",  # counterparty
    "订单号",  # order number
    "开票日期",  # issue date
    "到期日",  # due date
    "币种",  # currency
    "不含税金额",  # subtotal
    "税额",  # tax
    "价税合计",  # total
    "已付金额",  # paid
    "未付余额",  # balance
    "状态",  # status
)
VOUCHER_WORD = "记"
KIND_NAMES = {"receivable": "应收", "payable": "应付"}
STATUS_NAMES = {"unpaid": "未付", "partial": "部分付款", "paid": "已付", "overpaid": "多付"}
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
#: Columns holding amounts (formatted as such in XLSX, with 2 decimals in CSV).
_AMOUNT_COLUMNS = {"借方金额", "贷方金额", "不含税金额", "税额", "价税合计", "已付金额", "未付余额"}

Row = list[Any]


def voucher_rows(invoices: Sequence[Invoice], settings: Settings) -> list[Row]:
    """One row per voucher entry; debits equal credits in every voucher."""
    accounts = settings.accounts
    rows: list[Row] = []
    for voucher_number, invoice in enumerate(invoices, start=1):
        entries: list[tuple[Account, Decimal, Decimal]]
        if invoice.kind == "receivable":
            summary = f"销售 {invoice.counterparty} {invoice.number}"
            entries = [
                (accounts["receivable"], invoice.total, ZERO),
                (accounts["revenue"], ZERO, invoice.subtotal),
                (accounts["output_tax"], ZERO, invoice.tax),
            ]
        else:
            summary = f"采购 {invoice.counterparty} {invoice.number}"
            entries = [
                (accounts["cost"], invoice.subtotal, ZERO),
                (accounts["input_tax"], invoice.tax, ZERO),
                (accounts["payable"], ZERO, invoice.total),
            ]
        entries = [entry for entry in entries if entry[1] or entry[2]]  # no tax line on a tax-free invoice
        for entry_number, (account, debit, credit) in enumerate(entries, start=1):
            rows.append(
                [
                    invoice.issue_date,
                    VOUCHER_WORD,
                    voucher_number,
                    entry_number,
                    summary,
                    account.code,
                    account.name,
                    debit,
                    credit,
                    invoice.currency,
                    invoice.counterparty,
                    invoice.number,
                ]
            )
    return rows


def invoice_rows(invoices: Sequence[Invoice]) -> list[Row]:
    """One row per invoice."""
    return [
        [
            invoice.number,
            KIND_NAMES.get(invoice.kind, invoice.kind),
            invoice.entity,
            invoice.counterparty,
            invoice.text("order_number"),
            invoice.issue_date,
            invoice.due_date,
            invoice.currency,
            invoice.subtotal,
            invoice.tax,
            invoice.total,
            invoice.paid_amount,
            invoice.balance,
            STATUS_NAMES.get(invoice.status, invoice.status),
        ]
        for invoice in invoices
    ]


def _csv_cell(value: Any) -> str:
    if isinstance(value, Decimal):
        return as_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return "" if value is None else str(value)


def to_csv(header: Sequence[str], rows: Sequence[Row]) -> bytes:
    """A CSV file in UTF-8 with a byte-order mark (Excel reads Chinese right only with it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue().encode("utf-8-sig")


def to_xlsx(header: Sequence[str], rows: Sequence[Row], title: str) -> bytes:
    """An XLSX workbook of one sheet: bold frozen header, amounts as numbers, dates as dates."""
    # Imported when used: openpyxl would slow the start of every process that loads the plugin.
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    sheet.append(list(header))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    amount_columns = {index for index, name in enumerate(header) if name in _AMOUNT_COLUMNS}
    for row in rows:
        sheet.append(row)
        for index, cell in enumerate(sheet[sheet.max_row]):
            if index in amount_columns:
                cell.number_format = "#,##0.00"
            elif isinstance(cell.value, dt.date | dt.datetime):
                cell.number_format = "yyyy-mm-dd"
    for index, name in enumerate(header, start=1):
        longest = max([len(str(name)) * 2, *(len(_csv_cell(row[index - 1])) for row in rows)])
        sheet.column_dimensions[get_column_letter(index)].width = min(60, longest + 2)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


async def export_accounting(call: ActionCall) -> dict[str, Any]:
    """The action ``export_accounting``."""
    context = call.context
    if context is None:
        raise ActionFailed("export_accounting needs a host with plugin API 1.3 or later")
    settings = load_settings(context)
    problems = []
    entity = str(call.input.get("entity") or "")
    if settings.entity(entity) is None:
        problems.append(f"unknown entity {entity!r}: the entities are {', '.join(settings.entities)}")
    period_text = str(call.input.get("period") or "")
    period = parse_period(period_text)
    if period is None:
        problems.append(f"period must be a month YYYY-MM, not {period_text!r}")
    file_format = call.input.get("format", "xlsx")
    if file_format not in CONTENT_TYPES:
        problems.append(f"format must be csv or xlsx, not {file_format!r}")
    report = call.input.get("report", "vouchers")
    if report not in ("vouchers", "invoices"):
        problems.append(f"report must be vouchers or invoices, not {report!r}")
    if problems:
        raise ActionFailed("Cannot export: " + "; ".join(problems))
    assert period is not None
    first, last = period

    invoices: list[Invoice] = []
    day = first
    while day <= last:  # day by day: the host returns at most READ_LIMIT records a read
        found = await read_invoices(
            context, settings.invoices_collection, {"entity": entity, "issue_date": day.isoformat()}
        )
        if len(found) >= READ_LIMIT:
            raise ActionFailed(f"Cannot export: {entity} has more than {READ_LIMIT} invoices on {day}")
        invoices += [i for i in found if not i.cancelled and i.kind in KIND_NAMES]
        day += dt.timedelta(days=1)
    invoices.sort(key=lambda invoice: (invoice.issue_date or first, invoice.kind != "receivable", invoice.number))
    header: Sequence[str]
    if report == "vouchers":
        header, rows, title = VOUCHER_COLUMNS, voucher_rows(invoices, settings), "记账凭证"
    else:
        header, rows, title = INVOICE_COLUMNS, invoice_rows(invoices), "发票"
    content = to_csv(header, rows) if file_format == "csv" else to_xlsx(header, rows, title)
    name = f"{report}-{entity}-{period_text}.{file_format}"
    stored = await context.store_file(name, content, CONTENT_TYPES[str(file_format)])
    output: dict[str, Any] = {
        "file_id": stored.id,
        "name": stored.name,
        "content_type": stored.content_type,
        "size": stored.size,
        "rows": len(rows),
        "invoices": len(invoices),
    }
    if report == "vouchers":
        output["debit"] = as_json_number(sum((row[7] for row in rows), ZERO))
        output["credit"] = as_json_number(sum((row[8] for row in rows), ZERO))
    return output


INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity": {"type": "string", "description": "Code of the entity whose books are exported."},
        "period": {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$", "description": "The month, YYYY-MM."},
        "format": {"type": "string", "enum": ["csv", "xlsx"], "default": "xlsx"},
        "report": {
            "type": "string",
            "enum": ["vouchers", "invoices"],
            "default": "vouchers",
            "description": "vouchers: journal entries (记账凭证); invoices: the invoice register.",
        },
    },
    "required": ["entity", "period"],
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file_id": {"type": "string"},
        "name": {"type": "string"},
        "content_type": {"type": "string"},
        "size": {"type": "integer"},
        "rows": {"type": "integer", "description": "Data rows in the file (the header not counted)."},
        "invoices": {"type": "integer", "description": "Invoices exported."},
        "debit": {"type": "number", "description": "Sum of the debits (vouchers only)."},
        "credit": {"type": "number", "description": "Sum of the credits (vouchers only)."},
    },
    "required": ["file_id", "name", "content_type", "size", "rows", "invoices"],
}
