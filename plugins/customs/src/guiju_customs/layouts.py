"""What each document kind shows, independent of the file format: header boxes, a line table, totals.

The PDF and XLSX writers (:mod:`guiju_customs.pdf`, :mod:`guiju_customs.xlsx`) both draw a
:class:`Layout`, so the two files of one document always hold the same values.
"""

from __future__ import annotations

import datetime as dt
import gettext
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from functools import cache

import pycountry

from guiju_customs.order import (
    COMMERCIAL_INVOICE,
    DECLARATION_TERMS,
    EXPORT_DECLARATION,
    PACKING_LIST,
    PROFORMA_INVOICE,
    TRADE_MODES,
    TRANSPORT_MODES,
    Order,
)

#: A table cell: text, or a number the XLSX keeps as a number.
Cell = str | Decimal | int | None


class ColumnKind(Enum):
    """How a column's numbers are written."""

    TEXT = "text"
    INTEGER = "integer"
    QUANTITY = "quantity"
    MONEY = "money"
    PRICE = "price"
    WEIGHT = "weight"


@dataclass(frozen=True)
class Column:
    """A column of the line table; ``width`` in millimetres on the PDF page."""

    title: str
    width: float
    kind: ColumnKind = ColumnKind.TEXT


@dataclass(frozen=True)
class Box:
    """A labelled header box spanning ``span`` columns of the line table."""

    label: str
    value: str
    span: int


@dataclass(frozen=True)
class Layout:
    """One document, ready to be written as PDF or XLSX."""

    kind: str
    title_zh: str
    title_en: str
    number: str
    boxes: tuple[tuple[Box, ...], ...]
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    totals: tuple[Cell, ...]
    notes: tuple[str, ...]
    exponent: int
    landscape: bool = False
    draft: bool = False

    @property
    def title(self) -> str:
        return f"{self.title_zh} {self.title_en}".strip()


TITLES = {
    COMMERCIAL_INVOICE: ("商业发票", "COMMERCIAL INVOICE"),
    PACKING_LIST: ("装箱单", "PACKING LIST"),
    PROFORMA_INVOICE: ("形式发票", "PROFORMA INVOICE"),
    EXPORT_DECLARATION: ("中华人民共和国海关出口货物报关单", "(草稿 DRAFT)"),
}
#: The document kinds' labels, as automations and tenants see them.
LABELS = {
    COMMERCIAL_INVOICE: {"zh-CN": "商业发票", "en": "Commercial invoice"},
    PACKING_LIST: {"zh-CN": "装箱单", "en": "Packing list"},
    PROFORMA_INVOICE: {"zh-CN": "形式发票", "en": "Proforma invoice"},
    EXPORT_DECLARATION: {"zh-CN": "出口货物报关单草稿", "en": "China export customs declaration (draft)"},
}


def build_layout(kind: str, order: Order) -> Layout:
    """The layout of document ``kind`` for ``order``."""
    if kind == EXPORT_DECLARATION:
        return _declaration(order)
    if kind == PACKING_LIST:
        return _packing_list(order)
    return _invoice(order, proforma=kind == PROFORMA_INVOICE)


def _date(value: dt.date | None) -> str:
    return value.isoformat() if value else ""


def _decimal_text(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = f"{value:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@cache
def _chinese_country_names() -> gettext.NullTranslations:
    return gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["zh_CN"], fallback=True)


def country_en(code: str) -> str:
    """The English short name of an ISO 3166-1 alpha-2 code."""
    found = pycountry.countries.get(alpha_2=code) if code else None
    return str(found.name) if found is not None else code


def country_zh(code: str) -> str:
    """The Chinese name and alpha-3 code (as China Customs writes countries): ``德国 DEU``."""
    found = pycountry.countries.get(alpha_2=code) if code else None
    if found is None:
        return code
    return f"{_chinese_country_names().gettext(str(found.name))} {found.alpha_3}"


def _party(name: str, address: str, country: str = "", code: str = "") -> str:
    parts = [name, address]
    if country:
        parts.append(country_en(country))
    if code:
        parts.append(f"USCC 统一社会信用代码: {code}")
    return "\n".join(part for part in parts if part)


def _terms(order: Order) -> str:
    return f"{order.incoterm} {order.incoterm_place}".strip()


def _invoice(order: Order, *, proforma: bool) -> Layout:
    kind = PROFORMA_INVOICE if proforma else COMMERCIAL_INVOICE
    title_zh, title_en = TITLES[kind]
    currency = order.currency
    columns = (
        Column("No.\n序号", 10, ColumnKind.INTEGER),
        Column("HS code\n商品编码", 24),
        Column("Description of goods\n货物描述", 64),
        Column("Quantity\n数量", 20, ColumnKind.QUANTITY),
        Column("Unit\n单位", 14),
        Column(f"Unit price\n单价 ({currency})", 24, ColumnKind.PRICE),
        Column(f"Amount\n金额 ({currency})", 30, ColumnKind.MONEY),
    )
    rows = tuple(
        (line.number, line.hs_code, line.name, line.quantity, line.unit, line.unit_price, line.amount)
        for line in order.lines
    )
    number_label = "Proforma invoice No.\n形式发票号" if proforma else "Invoice No.\n发票号"
    boxes: list[tuple[Box, ...]] = [
        (
            Box("Seller / Exporter 卖方", _party(order.consignor.name, order.consignor.address), 3),
            Box(number_label, order.invoice_number, 2),
            Box("Date 日期", _date(order.order_date), 2),
        ),
        (
            Box(
                "Buyer / Consignee 买方",
                _party(order.consignee.name, order.consignee.address, order.consignee.country),
                3,
            ),
            Box("Contract No. 合同号", order.contract_number, 2),
            Box("Terms of delivery 交货条件", _terms(order), 2),
        ),
        (
            Box("From 起运港", order.departure_port, 2),
            Box("To 目的港", order.destination_port, 1),
            Box("Country of origin 原产国", country_en(order.origin_country), 2),
            Box("Destination 目的国", country_en(order.destination_country), 2),
        ),
        (
            Box("Shipping marks 唛头", order.marks, 3),
            Box("Currency 币制", currency, 2),
            Box("Payment terms 付款方式", order.payment_terms, 2),
        ),
    ]
    if proforma:
        boxes.append((Box("Valid until 有效期至", _date(order.valid_until), 7),))
    notes = [f"Total amount 总金额: {currency} {order.money(order.total_amount)}"]
    if order.freight is not None:
        notes.append(f"Freight 运费: {currency} {order.money(order.freight)}")
    if order.insurance is not None:
        notes.append(f"Insurance 保费: {currency} {order.money(order.insurance)}")
    if order.remarks:
        notes.append(f"Remarks 备注: {order.remarks}")
    if proforma:
        notes.append(
            "This proforma invoice is issued for quotation and import licensing; it is not a demand for payment."
        )
    else:
        notes.append("We certify that this invoice is true and correct. 兹证明本发票内容真实无误。")
    notes.append(f"For and on behalf of 出口商签章: {order.consignor.name}")
    return Layout(
        kind=kind,
        title_zh=title_zh,
        title_en=title_en,
        number=order.invoice_number,
        boxes=tuple(boxes),
        columns=columns,
        rows=rows,
        totals=("Total 合计", None, None, None, None, None, order.total_amount),
        notes=tuple(notes),
        exponent=order.exponent,
    )


def _packing_list(order: Order) -> Layout:
    title_zh, title_en = TITLES[PACKING_LIST]
    columns = (
        Column("No.\n序号", 10, ColumnKind.INTEGER),
        Column("Description of goods\n货物描述", 70),
        Column("Quantity\n数量", 20, ColumnKind.QUANTITY),
        Column("Unit\n单位", 14),
        Column("Packages\n件数", 18, ColumnKind.INTEGER),
        Column("N.W. (kg)\n净重（千克）", 26, ColumnKind.WEIGHT),
        Column("G.W. (kg)\n毛重（千克）", 28, ColumnKind.WEIGHT),
    )
    rows = tuple(
        (line.number, line.name, line.quantity, line.unit, line.packages, line.net_weight, line.gross_weight)
        for line in order.lines
    )
    packages = f"{order.packages} {order.package_kind}".strip() if order.packages is not None else ""
    boxes = (
        (
            Box("Shipper / Exporter 发货人", _party(order.consignor.name, order.consignor.address), 3),
            Box("Invoice No. 发票号", order.invoice_number, 2),
            Box("Date 日期", _date(order.order_date), 2),
        ),
        (
            Box(
                "Consignee 收货人",
                _party(order.consignee.name, order.consignee.address, order.consignee.country),
                3,
            ),
            Box("Contract No. 合同号", order.contract_number, 2),
            Box("Shipping marks 唛头", order.marks, 2),
        ),
        (
            Box("From 起运港", order.departure_port, 2),
            Box("To 目的港", order.destination_port, 1),
            Box("Packages 总件数", packages, 2),
            Box("Vessel / Flight 运输工具", order.transport_name, 2),
        ),
    )
    notes = [
        f"Total packages 总件数: {packages}",
        f"Total net weight 总净重: {_decimal_text(order.net_weight)} kg",
        f"Total gross weight 总毛重: {_decimal_text(order.gross_weight)} kg",
        f"For and on behalf of 出口商签章: {order.consignor.name}",
    ]
    return Layout(
        kind=PACKING_LIST,
        title_zh=title_zh,
        title_en=title_en,
        number=order.invoice_number,
        boxes=boxes,
        columns=columns,
        rows=rows,
        totals=("Total 合计", None, None, None, order.packages, order.net_weight, order.gross_weight),
        notes=tuple(notes),
        exponent=order.exponent,
    )


def _declaration(order: Order) -> Layout:
    title_zh, title_en = TITLES[EXPORT_DECLARATION]
    currency = order.currency
    columns = (
        Column("项号", 9, ColumnKind.INTEGER),
        Column("商品编号", 22),
        Column("商品名称", 30),
        Column("规格型号（申报要素）", 50),
        Column("数量", 17, ColumnKind.QUANTITY),
        Column("单位", 11),
        Column("单价", 19, ColumnKind.PRICE),
        Column("总价", 24, ColumnKind.MONEY),
        Column("币制", 11),
        Column("原产国（地区）", 20),
        Column("最终目的国（地区）", 21),
        Column("境内货源地", 18),
        Column("征免", 16),
    )
    rows = tuple(
        (
            line.number,
            line.hs_code,
            line.name_zh,
            line.declared_elements,
            line.quantity,
            line.unit,
            line.unit_price,
            line.amount,
            currency,
            country_zh(line.origin_country),
            country_zh(line.destination_country),
            line.source_region,
            "照章征税",
        )
        for line in order.lines
    )
    trade_mode = f"{TRADE_MODES.get(order.trade_mode, '')} {order.trade_mode}".strip()
    transport = f"{TRANSPORT_MODES.get(order.transport_mode, '')} {order.transport_mode}".strip()
    terms = f"{order.incoterm} {DECLARATION_TERMS.get(order.incoterm, '')}".strip()

    def amount(value: Decimal | None) -> str:
        return f"{currency} {order.money(value)}" if value is not None else ""

    consignor = "\n".join(p for p in (order.consignor.name_zh, order.consignor.uscc) if p)
    consignee = "\n".join(p for p in (order.consignee.name, order.consignee.address) if p)
    boxes = (
        (
            Box("预录入编号", "", 3),
            Box("海关编号", "", 3),
            Box("合同协议号", order.contract_number, 4),
            Box("申报单位", order.customs_broker, 3),
        ),
        (
            Box("境内发货人", consignor, 3),
            Box("出境关别", order.exit_customs, 3),
            Box("出口日期", _date(order.export_date), 2),
            Box("申报日期", _date(order.declaration_date), 3),
            Box("备案号", "", 2),
        ),
        (
            Box("境外收货人", consignee, 3),
            Box("运输方式", transport, 3),
            Box("运输工具名称及航次号", order.transport_name, 4),
            Box("提运单号", order.bill_of_lading, 3),
        ),
        (
            Box("生产销售单位", order.consignor.name_zh, 3),
            Box("监管方式（贸易方式）", trade_mode, 3),
            Box("征免性质", "一般征税" if order.trade_mode == "0110" else "", 4),
            Box("许可证号", "", 3),
        ),
        (
            Box("贸易国（地区）", country_zh(order.trade_country), 3),
            Box("运抵国（地区）", country_zh(order.destination_country), 3),
            Box("指运港", order.destination_port, 4),
            Box("离境口岸", order.departure_port, 3),
        ),
        (
            Box("包装种类", order.package_kind, 3),
            Box("件数", str(order.packages or ""), 1),
            Box("毛重（千克）", _decimal_text(order.gross_weight), 2),
            Box("净重（千克）", _decimal_text(order.net_weight), 2),
            Box("成交方式", terms, 1),
            Box("运费", amount(order.freight), 1),
            Box("保费", amount(order.insurance), 1),
            Box("杂费", "", 2),
        ),
        (Box("随附单证及编号", "", 13),),
        (Box("标记唛码及备注", "\n".join(p for p in (order.marks, order.remarks) if p), 13),),
    )
    notes = (
        f"总价合计: {currency} {order.money(order.total_amount)}",
        f"报关人员: ____________    申报单位: {order.customs_broker}",
        "兹申明对以上内容承担如实申报、依法纳税之法律责任。",
        "草稿：供核对，不作为正式申报。 DRAFT for checking only; not a filed declaration.",
    )
    return Layout(
        kind=EXPORT_DECLARATION,
        title_zh=title_zh,
        title_en=title_en,
        number=order.contract_number,
        boxes=boxes,
        columns=columns,
        rows=rows,
        totals=("合计", None, None, None, None, None, None, order.total_amount, currency, None, None, None, None),
        notes=notes,
        exponent=order.exponent,
        landscape=True,
        draft=True,
    )
