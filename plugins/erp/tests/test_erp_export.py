"""export_accounting: vouchers and the invoice register as CSV (UTF-8 with BOM) and XLSX."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import openpyxl
import pytest
from erp_testing import CONFIG, CheckedHarness, erp_context, sample_order
from guiju_erp import plugin
from guiju_sdk import ActionFailed
from guiju_sdk.testing import FakeContext, PluginHarness

VOUCHER_HEADER = [
    "凭证日期",
    "凭证字",
    "凭证号",
    "分录号",
    "摘要",
    "科目编码",
    "科目名称",
    "借方金额",
    "贷方金额",
    "币种",
    "往来单位",
    "发票号",
]
INVOICE_HEADER = [
    "发票号",
    "类型",
    "主体",
    "往来单位",
    "订单号",
    "开票日期",
    "到期日",
    "币种",
    "不含税金额",
    "税额",
    "价税合计",
    "已付金额",
    "未付余额",
    "状态",
]


async def books(harness: CheckedHarness, context: FakeContext | None = None) -> FakeContext:
    """March 2026: SO-1001 (HK sells, SZ and HK buy) and SO-1004 (SZ sells); April: SO-1005;
    and a cancelled March invoice."""
    context = context or erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    mainland_sale = {
        "id": "rec-so-1004",
        "number": "SO-1004",
        "customer": "华东客户有限公司",
        "entity": "SZ",
        "date": "2026-03-12",
        "lines": [{"line_id": "1", "description": "Widget", "quantity": 1, "unit_price": 100}],
    }
    await harness.run_action("generate_invoices", {"order": mainland_sale}, context)
    april = dict(mainland_sale, id="rec-so-1005", number="SO-1005", date="2026-04-01")
    await harness.run_action("generate_invoices", {"order": april}, context)
    cancelled = dict(mainland_sale, id="rec-so-1006", number="SO-1006", date="2026-03-20")
    await harness.run_action("generate_invoices", {"order": cancelled}, context)
    record = next(r for r in context.collections["invoices"] if r["values"]["order_number"] == "SO-1006")
    await context.write_record("invoices", {"status": "cancelled"}, record_id=record["id"])
    return context


def stored(context: FakeContext, file_id: str) -> tuple[str, str, bytes]:
    for file, content in context.files:
        if file.id == file_id:
            return file.name, file.content_type, content
    raise AssertionError(f"no file {file_id}")


async def test_vouchers_as_csv_balance_and_open_in_excel(harness: CheckedHarness) -> None:
    context = await books(harness)

    output = await harness.run_action(
        "export_accounting", {"entity": "SZ", "period": "2026-03", "format": "csv", "report": "vouchers"}, context
    )

    name, content_type, content = stored(context, output["file_id"])
    assert (name, output["name"]) == ("vouchers-SZ-2026-03.csv", "vouchers-SZ-2026-03.csv")
    assert content_type.startswith("text/csv")
    assert content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert rows[0] == VOUCHER_HEADER
    body = [dict(zip(VOUCHER_HEADER, row, strict=True)) for row in rows[1:]]
    assert (output["rows"], output["invoices"], output["size"]) == (6, 2, len(content))

    # Voucher 1: the purchase from the Dongguan supplier; voucher 2: the sale in Shenzhen.
    assert [(r["凭证号"], r["分录号"], r["科目编码"], r["借方金额"], r["贷方金额"]) for r in body] == [
        ("1", "1", "6401", "8550.00", "0.00"),
        ("1", "2", "22210101", "1111.50", "0.00"),
        ("1", "3", "2202", "0.00", "9661.50"),
        ("2", "1", "1122", "113.00", "0.00"),
        ("2", "2", "6001", "0.00", "100.00"),
        ("2", "3", "22210102", "0.00", "13.00"),
    ]
    assert body[0]["科目名称"] == "主营业务成本"
    assert body[5]["科目名称"] == "应交税费-应交增值税(销项税额)"
    assert body[0]["摘要"] == "采购 东莞小部件厂 SZ-AP-2026-00001"
    assert {r["凭证字"] for r in body} == {"记"}
    assert [r["凭证日期"] for r in body] == ["2026-03-10"] * 3 + ["2026-03-12"] * 3
    for voucher in ("1", "2"):
        entries = [r for r in body if r["凭证号"] == voucher]
        assert sum(Decimal(r["借方金额"]) for r in entries) == sum(Decimal(r["贷方金额"]) for r in entries)
    assert output["debit"] == output["credit"] == 9774.5


async def test_vouchers_as_xlsx_with_the_tenants_accounts(harness: CheckedHarness) -> None:
    config = {**CONFIG, "accounts": {"revenue": {"code": "600101", "name": "主营业务收入-出口"}}}
    context = await books(harness, erp_context(config))

    output = await harness.run_action("export_accounting", {"entity": "HK", "period": "2026-03"}, context)

    name, content_type, content = stored(context, output["file_id"])
    assert name == "vouchers-HK-2026-03.xlsx"
    assert content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == VOUCHER_HEADER
    body = [dict(zip(VOUCHER_HEADER, row, strict=True)) for row in rows[1:]]
    # HK charges no VAT: no tax entries.
    assert [(r["发票号"], r["科目编码"], r["科目名称"], r["借方金额"], r["贷方金额"]) for r in body] == [
        ("HK-INV-2026-00001", "1122", "应收账款", 1859.47, 0),
        ("HK-INV-2026-00001", "600101", "主营业务收入-出口", 0, 1859.47),
        ("HK-AP-2026-00001", "6401", "主营业务成本", 105, 0),
        ("HK-AP-2026-00001", "2202", "应付账款", 0, 105),
    ]
    assert body[0]["凭证日期"] == dt.datetime(2026, 3, 10)
    assert [r["币种"] for r in body] == ["USD", "USD", "HKD", "HKD"]
    assert sum(r["借方金额"] for r in body) == sum(r["贷方金额"] for r in body)
    assert output["rows"] == 4


async def test_the_invoice_register_in_both_formats(harness: CheckedHarness) -> None:
    context = await books(harness)
    for file_format in ("csv", "xlsx"):
        output = await harness.run_action(
            "export_accounting",
            {"entity": "SZ", "period": "2026-03", "format": file_format, "report": "invoices"},
            context,
        )
        _, _, content = stored(context, output["file_id"])
        if file_format == "csv":
            rows: list[list[Any]] = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
        else:
            sheet = openpyxl.load_workbook(io.BytesIO(content)).active
            assert sheet is not None
            rows = [list(row) for row in sheet.iter_rows(values_only=True)]
        assert rows[0] == INVOICE_HEADER
        body = [dict(zip(INVOICE_HEADER, row, strict=True)) for row in rows[1:]]
        assert [(r["发票号"], r["类型"], r["往来单位"], r["状态"]) for r in body] == [
            ("SZ-AP-2026-00001", "应付", "东莞小部件厂", "未付"),
            ("SZ-INV-2026-00001", "应收", "华东客户有限公司", "未付"),
        ]  # April's invoice and the cancelled one are left out
        assert sum(Decimal(str(r["价税合计"])) for r in body) == Decimal("9774.50")
        assert sum(Decimal(str(r["税额"])) for r in body) == Decimal("1124.50")
        assert output["rows"] == 2


async def test_an_empty_month_exports_the_header_only(harness: CheckedHarness) -> None:
    context = await books(harness)
    output = await harness.run_action(
        "export_accounting", {"entity": "HK", "period": "2025-12", "format": "csv"}, context
    )
    _, _, content = stored(context, output["file_id"])
    assert content.decode("utf-8-sig").splitlines() == [",".join(VOUCHER_HEADER)]
    assert (output["rows"], output["debit"], output["credit"]) == (0, 0, 0)


async def test_bad_export_input_lists_every_problem() -> None:
    # The host checks the input schema first; the action checks again, for every problem at once.
    harness = PluginHarness(plugin, name="erp")
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action(
            "export_accounting",
            {"entity": "TW", "period": "2026-13", "format": "pdf", "report": "ledger"},
            erp_context(),
        )
    message = str(failure.value)
    for expected in ("unknown entity 'TW'", "period must be a month YYYY-MM", "format must be csv or xlsx", "report"):
        assert expected in message
