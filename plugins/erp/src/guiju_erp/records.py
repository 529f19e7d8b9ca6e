"""Invoice and payment records as the plugin reads them back from the tenant's collections.

Records are written by people too (a payment typed in, an invoice cancelled by hand), so reading
never trusts them: an amount that cannot be read counts as zero and a malformed record is
reported, never a crash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from guiju_sdk import PluginContext

from guiju_erp.money import ZERO, amount_of, as_json_number, parse_date, to_decimal

Kind = Literal["receivable", "payable"]
KINDS: tuple[Kind, Kind] = ("receivable", "payable")
#: An invoice's payment statuses; ``cancelled`` is set by hand and takes the invoice out of every list.
STATUSES = ("unpaid", "partial", "paid", "overpaid", "cancelled")
#: The most records one read returns (the host's cap): reads are narrowed (by entity and status, by
#: invoice number, by day) so that none needs more.
READ_LIMIT = 500
#: The statuses of invoices still waiting for money.
OPEN_STATUSES = ("unpaid", "partial")


@dataclass(frozen=True)
class InvoiceLine:
    """A line of an invoice: which order line it bills, and its amounts."""

    line_id: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    tax_rate: Decimal
    tax: Decimal
    sku: str | None = None

    def as_values(self) -> dict[str, Any]:
        """The line as the invoice record stores it."""
        values: dict[str, Any] = {
            "line_id": self.line_id,
            "description": self.description,
            "quantity": as_json_number(self.quantity),
            "unit_price": as_json_number(self.unit_price),
            "amount": as_json_number(self.amount),
            "tax_rate": as_json_number(self.tax_rate),
            "tax": as_json_number(self.tax),
        }
        if self.sku:
            values["sku"] = self.sku
        return values


@dataclass(frozen=True)
class Invoice:
    """An invoice record, read back."""

    id: str
    values: Mapping[str, Any]

    def text(self, key: str) -> str:
        value = self.values.get(key)
        return "" if value is None else str(value)

    @property
    def number(self) -> str:
        return self.text("number")

    @property
    def kind(self) -> str:
        return self.text("kind")

    @property
    def entity(self) -> str:
        return self.text("entity")

    @property
    def counterparty(self) -> str:
        return self.text("counterparty")

    @property
    def currency(self) -> str:
        return self.text("currency")

    @property
    def status(self) -> str:
        return self.text("status") or "unpaid"

    @property
    def subtotal(self) -> Decimal:
        return amount_of(self.values.get("subtotal"))

    @property
    def tax(self) -> Decimal:
        return amount_of(self.values.get("tax"))

    @property
    def total(self) -> Decimal:
        return amount_of(self.values.get("total"))

    @property
    def paid_amount(self) -> Decimal:
        return amount_of(self.values.get("paid_amount"))

    @property
    def balance(self) -> Decimal:
        return self.total - self.paid_amount

    @property
    def issue_date(self) -> dt.date | None:
        return parse_date(self.values.get("issue_date"))

    @property
    def due_date(self) -> dt.date | None:
        return parse_date(self.values.get("due_date"))

    @property
    def odoo_id(self) -> int | None:
        value = self.values.get("odoo_id")
        number = to_decimal(value)
        return int(number) if number is not None and number == number.to_integral_value() and number > 0 else None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def lines(self) -> list[InvoiceLine]:
        """The invoice's lines; unreadable rows are left out."""
        raw = self.values.get("lines")
        if not isinstance(raw, list):
            return []
        lines = []
        for row in raw:
            if not isinstance(row, Mapping) or row.get("line_id") in (None, ""):
                continue
            lines.append(
                InvoiceLine(
                    line_id=str(row["line_id"]),
                    description=str(row.get("description") or ""),
                    quantity=to_decimal(row.get("quantity")) or ZERO,
                    unit_price=to_decimal(row.get("unit_price")) or ZERO,
                    amount=amount_of(row.get("amount")),
                    tax_rate=to_decimal(row.get("tax_rate")) or ZERO,
                    tax=amount_of(row.get("tax")),
                    sku=str(row["sku"]) if row.get("sku") else None,
                )
            )
        return lines

    def line_ids(self) -> list[str]:
        """The order lines this invoice bills."""
        return [line.line_id for line in self.lines()]

    def summary(self, *, created: bool = False) -> dict[str, Any]:
        """The invoice as actions report it."""
        return {
            "id": self.id,
            "number": self.number,
            "kind": self.kind,
            "entity": self.entity,
            "counterparty": self.counterparty,
            "currency": self.currency,
            "subtotal": as_json_number(self.subtotal),
            "tax": as_json_number(self.tax),
            "total": as_json_number(self.total),
            "issue_date": self.text("issue_date"),
            "due_date": self.text("due_date"),
            "status": self.status,
            "line_ids": self.line_ids(),
            "created": created,
        }


#: The JSON Schema of :meth:`Invoice.summary`.
INVOICE_SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The invoice record's id."},
        "number": {"type": "string"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "entity": {"type": "string"},
        "counterparty": {"type": "string"},
        "currency": {"type": "string"},
        "subtotal": {"type": "number"},
        "tax": {"type": "number"},
        "total": {"type": "number"},
        "issue_date": {"type": "string"},
        "due_date": {"type": "string"},
        "status": {"type": "string"},
        "line_ids": {"type": "array", "items": {"type": "string"}},
        "created": {"type": "boolean", "description": "True when this run created it, false when it existed."},
    },
    "required": ["id", "number", "kind", "entity", "counterparty", "currency", "total", "line_ids", "created"],
}


def as_invoice(record: Mapping[str, Any]) -> Invoice:
    """A record (``{"id", "values"}``) as an :class:`Invoice`."""
    values = record.get("values")
    return Invoice(str(record.get("id")), values if isinstance(values, Mapping) else {})


async def read_invoices(
    context: PluginContext, collection: str, where: Mapping[str, Any] | None = None
) -> list[Invoice]:
    """The invoices whose values equal ``where``'s, newest first."""
    records = await context.read_records(collection, where=where, limit=READ_LIMIT)
    return [as_invoice(record) for record in records]


async def read_open_invoices(context: PluginContext, collection: str, entities: list[str]) -> list[Invoice]:
    """The unpaid and partly paid invoices of ``entities``, read per entity and status."""
    found: list[Invoice] = []
    for entity in entities:
        for status in OPEN_STATUSES:
            found += await read_invoices(context, collection, {"entity": entity, "status": status})
    return found
