"""The action ``generate_invoices``: an order's receivable and payable invoices, each exactly once.

From one order, the selling entity invoices the customer (one receivable invoice) and each supplier
invoices the entity that buys from it (one payable invoice per buying entity and supplier). Every
invoice has a ``source_key`` — order, kind, entity and counterparty, plus ``#2``, ``#3``… for
supplementary invoices — that the invoices collection keeps unique, and it remembers the order
lines it bills. So a rerun, a retry or a concurrent run never bills a line twice: lines already
billed are skipped, a line added to the order later gets a supplementary invoice, and when a
concurrent run wrote an invoice first, its record is read back and reported.

Everything is checked before the first write: a bad order fails with every problem listed and
leaves no invoice behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from guiju_sdk import ActionCall, ActionFailed, PluginContext, RecordRejected

from guiju_erp.money import ZERO, as_json_number, cents, is_currency, parse_date, to_decimal
from guiju_erp.records import INVOICE_SUMMARY_SCHEMA, Invoice, InvoiceLine, Kind, as_invoice, read_invoices
from guiju_erp.settings import Entity, Settings, load_settings

#: How many times one invoice is tried when concurrent runs keep taking its source key first.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Party:
    """A customer or a supplier, as the order names it."""

    name: str
    ref: str | None = None
    payment_terms_days: int | None = None

    @property
    def key(self) -> str:
        """What identifies the party in source keys: its reference, else its name folded."""
        if self.ref:
            return f"ref:{self.ref}"
        return "name:" + re.sub(r"\s+", " ", self.name).strip().casefold()


@dataclass(frozen=True)
class OrderLine:
    """A line of the order, checked."""

    line_id: str
    description: str
    sku: str | None
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    supplier: Party | None
    unit_cost: Decimal | None
    purchase_tax_rate: Decimal | None
    purchasing_entity: str
    cost_currency: str


@dataclass(frozen=True)
class Order:
    """An order, checked: everything needed to invoice it."""

    id: str
    number: str
    customer: Party
    entity: Entity
    currency: str
    date: dt.date
    lines: tuple[OrderLine, ...]


@dataclass
class InvoiceGroup:
    """The lines one party invoices another for, in one currency: one invoice (and its supplements)."""

    kind: Kind
    entity: Entity
    counterparty: Party
    currency: str
    payment_terms_days: int
    lines: list[InvoiceLine] = field(default_factory=list)

    def base_key(self, order: Order) -> str:
        return f"order:{order.id}:{self.kind}:{self.entity.code}:{self.counterparty.key}"


def source_key(base: str, index: int) -> str:
    """The source key of the ``index``-th invoice of a group: the first has the base key itself."""
    return base if index == 1 else f"{base}#{index}"


# --- reading and checking the order -------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def _party(value: Any, what: str, problems: list[str]) -> Party | None:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        problems.append(f"{what} is missing (a name, or an object with name and optional ref)")
        return None
    name = _text(value.get("name"))
    if name is None:
        problems.append(f"{what} has no name")
        return None
    terms = value.get("payment_terms_days")
    if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= 3650):
        problems.append(f"{what}: payment_terms_days must be a whole number of days from 0 to 3650, not {terms!r}")
        terms = None
    return Party(name=name, ref=_text(value.get("ref")), payment_terms_days=terms)


def _rate(value: Any, default: Decimal, what: str, problems: list[str]) -> Decimal:
    if value is None:
        return default
    rate = to_decimal(value)
    if rate is None or not Decimal(0) <= rate < 1:
        problems.append(f"{what} must be a fraction from 0 up to 1 (0.13 for 13%), not {value!r}")
        return default
    return rate


def _lines_value(value: Any) -> Any:
    # An order collection may keep its lines as JSON text rather than line items.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_order(raw: Mapping[str, Any], settings: Settings, record_id: str | None = None) -> Order:
    """The order checked against the settings; :class:`ActionFailed` listing every problem."""
    problems: list[str] = []
    order_id = record_id or _text(raw.get("id"))
    if order_id is None:
        problems.append("order id is missing")
    number = _text(raw.get("number"))
    if number is None:
        problems.append("order number is missing")
    customer = _party(raw.get("customer"), "customer", problems)
    entity_code = _text(raw.get("entity"))
    entity = settings.entity(entity_code) if entity_code else None
    if entity_code is None:
        problems.append("entity (the selling entity's code) is missing")
    elif entity is None:
        problems.append(f"unknown selling entity {entity_code!r}: the entities are {', '.join(settings.entities)}")
    currency = raw.get("currency") or (entity.currency if entity else None)
    if currency is not None and not is_currency(currency):
        problems.append(f"currency must be a three-letter ISO 4217 code, not {currency!r}")
        currency = None
    order_date = parse_date(raw.get("date"))
    if order_date is None:
        problems.append(f"date (the order date, YYYY-MM-DD) is missing or invalid: {raw.get('date')!r}")

    lines: list[OrderLine] = []
    raw_lines = _lines_value(raw.get("lines"))
    if not isinstance(raw_lines, list) or not raw_lines:
        problems.append("lines: the order has no lines")
        raw_lines = []
    seen: set[str] = set()
    default_rate = entity.tax_rate if entity else ZERO
    for index, raw_line in enumerate(raw_lines, start=1):
        line = _order_line(raw_line, index, settings, entity, currency, default_rate, seen, problems)
        if line is not None:
            lines.append(line)
    _check_cost_currencies(lines, problems)
    if problems:
        raise ActionFailed(f"The order {number or order_id or ''} cannot be invoiced: " + "; ".join(problems))
    assert order_id and number and customer and entity and currency and order_date
    return Order(order_id, number, customer, entity, str(currency), order_date, tuple(lines))


def _order_line(
    raw: Any,
    index: int,
    settings: Settings,
    entity: Entity | None,
    currency: Any,
    default_rate: Decimal,
    seen: set[str],
    problems: list[str],
) -> OrderLine | None:
    where = f"line {index}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} is not an object")
        return None
    before = len(problems)
    line_id = _text(raw.get("line_id"))
    if line_id is None:
        problems.append(f"{where}: line_id is missing (each line needs an id that never changes)")
    else:
        where = f"line {line_id}"
        if line_id in seen:
            problems.append(f"{where}: line_id is used twice")
        seen.add(line_id)
    quantity = to_decimal(raw.get("quantity"))
    if quantity is None or quantity <= 0:
        problems.append(f"{where}: quantity must be a number above 0, not {raw.get('quantity')!r}")
    unit_price = to_decimal(raw.get("unit_price"))
    if unit_price is None or unit_price < 0:
        problems.append(f"{where}: unit_price must be a number of 0 or more, not {raw.get('unit_price')!r}")
    tax_rate = _rate(raw.get("tax_rate"), default_rate, f"{where}: tax_rate", problems)
    line_currency = raw.get("currency")
    if line_currency not in (None, "") and currency is not None and line_currency != currency:
        problems.append(f"{where}: mixed currencies: the line is in {line_currency}, the order in {currency}")
    supplier = None
    unit_cost = None
    purchase_rate = None
    buyer_code = _text(raw.get("purchasing_entity")) or (entity.code if entity else "")
    buyer = settings.entity(buyer_code) if buyer_code else None
    cost_currency = raw.get("cost_currency") or currency or ""
    if raw.get("supplier") not in (None, ""):
        supplier = _party(raw.get("supplier"), f"{where}: supplier", problems)
        unit_cost = to_decimal(raw.get("unit_cost"))
        if unit_cost is None or unit_cost < 0:
            problems.append(f"{where}: unit_cost must be a number of 0 or more, not {raw.get('unit_cost')!r}")
        if buyer is None and buyer_code:
            problems.append(
                f"{where}: unknown purchasing entity {buyer_code!r}: the entities are {', '.join(settings.entities)}"
            )
        buyer_rate = buyer.tax_rate if buyer else ZERO
        purchase_rate = _rate(raw.get("purchase_tax_rate"), buyer_rate, f"{where}: purchase_tax_rate", problems)
        if not is_currency(cost_currency):
            problems.append(f"{where}: cost_currency must be a three-letter ISO 4217 code, not {cost_currency!r}")
    if len(problems) > before:
        return None
    assert line_id is not None and quantity is not None and unit_price is not None
    return OrderLine(
        line_id=line_id,
        description=str(raw.get("description") or "").strip(),
        sku=_text(raw.get("sku")),
        quantity=quantity,
        unit_price=unit_price,
        tax_rate=tax_rate,
        supplier=supplier,
        unit_cost=unit_cost,
        purchase_tax_rate=purchase_rate,
        purchasing_entity=buyer_code,
        cost_currency=str(cost_currency),
    )


def _check_cost_currencies(lines: list[OrderLine], problems: list[str]) -> None:
    """One supplier's invoice to one entity is in one currency."""
    currencies: dict[tuple[str, str], tuple[str, str]] = {}
    for line in lines:
        if line.supplier is None:
            continue
        group = (line.purchasing_entity, line.supplier.key)
        if group in currencies and currencies[group][0] != line.cost_currency:
            first_currency, first_line = currencies[group]
            problems.append(
                f"line {line.line_id}: mixed currencies: supplier {line.supplier.name} bills it in "
                f"{line.cost_currency} but line {first_line} in {first_currency}"
            )
        currencies.setdefault(group, (line.cost_currency, line.line_id))


# --- planning the invoices -----------------------------------------------------------------------


def invoice_line(line: OrderLine, price: Decimal, rate: Decimal) -> InvoiceLine:
    """An order line billed at ``price`` a unit with tax at ``rate``: amount and tax rounded per line."""
    amount = cents(line.quantity * price)
    return InvoiceLine(
        line_id=line.line_id,
        description=line.description,
        quantity=line.quantity,
        unit_price=price,
        amount=amount,
        tax_rate=rate,
        tax=cents(amount * rate),
        sku=line.sku,
    )


def plan_invoices(order: Order, settings: Settings) -> list[InvoiceGroup]:
    """The invoices the order calls for: the customer's, then one per (buying entity, supplier)."""
    receivable = InvoiceGroup(
        kind="receivable",
        entity=order.entity,
        counterparty=order.customer,
        currency=order.currency,
        payment_terms_days=order.entity.payment_terms_days,
    )
    payables: dict[tuple[str, str], InvoiceGroup] = {}
    for line in order.lines:
        receivable.lines.append(invoice_line(line, line.unit_price, line.tax_rate))
        if line.supplier is None or line.unit_cost is None or line.purchase_tax_rate is None:
            continue
        buyer = settings.entities[line.purchasing_entity]
        group = payables.get((buyer.code, line.supplier.key))
        if group is None:
            terms = line.supplier.payment_terms_days
            group = InvoiceGroup(
                kind="payable",
                entity=buyer,
                counterparty=line.supplier,
                currency=line.cost_currency,
                payment_terms_days=buyer.payment_terms_days if terms is None else terms,
            )
            payables[(buyer.code, line.supplier.key)] = group
        group.lines.append(invoice_line(line, line.unit_cost, line.purchase_tax_rate))
    return [receivable, *payables.values()]


def invoice_values(
    order: Order, group: InvoiceGroup, lines: list[InvoiceLine], key: str, number: str, issue_date: dt.date
) -> dict[str, Any]:
    """The invoice record's values."""
    subtotal = sum((line.amount for line in lines), ZERO)
    tax = sum((line.tax for line in lines), ZERO)
    values: dict[str, Any] = {
        "source_key": key,
        "number": number,
        "kind": group.kind,
        "entity": group.entity.code,
        "entity_name": group.entity.name,
        "counterparty": group.counterparty.name,
        "order_id": order.id,
        "order_number": order.number,
        "currency": group.currency,
        "lines": [line.as_values() for line in lines],
        "subtotal": as_json_number(subtotal),
        "tax": as_json_number(tax),
        "total": as_json_number(subtotal + tax),
        "issue_date": issue_date.isoformat(),
        "due_date": (issue_date + dt.timedelta(days=group.payment_terms_days)).isoformat(),
        "status": "unpaid",
        "paid_amount": 0,
    }
    if group.counterparty.ref:
        values["counterparty_ref"] = group.counterparty.ref
    return values


def invoice_number(group: InvoiceGroup, year: int, sequence_number: int) -> str:
    """``PREFIX-YEAR-00001``, in the entity's sequence of that kind."""
    prefix = group.entity.receivable_prefix if group.kind == "receivable" else group.entity.payable_prefix
    return f"{prefix}-{year}-{sequence_number:05d}"


# --- writing, once --------------------------------------------------------------------------------


def _is_duplicate_key(exc: RecordRejected) -> bool:
    return any("source_key" in str(problem.get("pointer", "")) for problem in exc.problems) or (
        not exc.problems and "source_key" in str(exc)
    )


class InvoiceWriter:
    """Writes an order's invoices, each once, remembering what exists."""

    def __init__(self, context: PluginContext, settings: Settings, order: Order, issue_date: dt.date) -> None:
        self.context = context
        self.collection = settings.invoices_collection
        self.order = order
        self.issue_date = issue_date
        self.known: dict[str, Invoice] = {}
        self.created: set[str] = set()
        self.billed: dict[str, dict[str, Invoice]] = {"receivable": {}, "payable": {}}
        self.warnings: list[str] = []

    def remember(self, invoice: Invoice) -> None:
        """Note an invoice of the order, and the lines it bills (unless it is cancelled)."""
        self.known.setdefault(invoice.id, invoice)
        if invoice.kind in self.billed and not invoice.cancelled:
            for line_id in invoice.line_ids():
                self.billed[invoice.kind].setdefault(line_id, invoice)

    async def load_existing(self) -> None:
        """Read the invoices the order already has."""
        for invoice in await read_invoices(self.context, self.collection, {"order_id": self.order.id}):
            self.remember(invoice)

    async def _by_source_key(self, key: str) -> Invoice | None:
        records = await self.context.read_records(self.collection, where={"source_key": key}, limit=1)
        return as_invoice(records[0]) if records else None

    def _pending(self, group: InvoiceGroup) -> list[InvoiceLine]:
        pending = []
        for line in group.lines:
            billed = self.billed[group.kind].get(line.line_id)
            if billed is None:
                pending.append(line)
            elif billed.counterparty != group.counterparty.name or billed.entity != group.entity.code:
                self.warnings.append(
                    f"line {line.line_id} is already on {billed.kind} invoice {billed.number} "
                    f"({billed.entity} / {billed.counterparty}); the order now names "
                    f"{group.entity.code} / {group.counterparty.name}: correct that invoice by hand"
                )
        return pending

    async def issue(self, group: InvoiceGroup) -> None:
        """Write the group's invoice for the lines not billed yet (none when all are)."""
        pending = self._pending(group)
        base = group.base_key(self.order)
        index = 1
        for _attempt in range(MAX_ATTEMPTS):
            if not pending:
                return
            key = source_key(base, index)
            existing = await self._by_source_key(key)
            if existing is not None:
                self.remember(existing)
                # A cancelled invoice bills nothing: its lines go on the next supplementary invoice.
                billed = set() if existing.cancelled else set(existing.line_ids())
                pending = [line for line in pending if line.line_id not in billed]
                index += 1
                continue
            if await self._write(group, pending, key):
                return
            # A concurrent run took the key first: read its invoice back on the next turn.
        raise ActionFailed(
            f"Could not write the {group.kind} invoice for {group.counterparty.name}: the invoices "
            "collection kept refusing its source key; try again",
            retryable=True,
            retry_after=5,
        )

    async def _write(self, group: InvoiceGroup, lines: list[InvoiceLine], key: str) -> bool:
        year = self.issue_date.year
        sequence = f"{group.kind}:{group.entity.code}:{year}"
        # Numbered by source key: a retry or a concurrent run gets this same number back, so no gap.
        number = invoice_number(group, year, await self.context.next_number(sequence, key=key))
        values = invoice_values(self.order, group, lines, key, number, self.issue_date)
        try:
            record = await self.context.write_record(self.collection, values)
        except RecordRejected as exc:
            if _is_duplicate_key(exc):
                return False
            details = "; ".join(f"{p.get('pointer', '')}: {p.get('message', '')}" for p in exc.problems)
            raise ActionFailed(
                f"The collection {self.collection!r} refused invoice {number}: {details or exc}. "
                "Check that it has the fields the erp plugin documents."
            ) from exc
        invoice = as_invoice(record)
        self.remember(invoice)
        self.created.add(invoice.id)
        await self.context.emit_event("invoice_created", invoice_event(invoice))
        return True


def invoice_event(invoice: Invoice) -> dict[str, Any]:
    """The payload of the ``invoice_created`` event."""
    summary = invoice.summary(created=True)
    summary.pop("created")
    return {**summary, "order_id": invoice.text("order_id"), "order_number": invoice.text("order_number")}


async def order_from_input(context: PluginContext, data: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """The order's values from an action's input (given, or read from its record) and its record id."""
    order = data.get("order")
    if isinstance(order, Mapping):
        return order, None
    collection, record_id = data.get("collection"), data.get("record_id")
    if not isinstance(collection, str) or not isinstance(record_id, str):
        raise ActionFailed("Give either order (the order's values) or collection and record_id (the order record)")
    record = await context.read_record(collection, record_id)
    if record is None:
        raise ActionFailed(f"There is no order record {record_id} in the collection {collection!r}")
    values = record.get("values")
    return (values if isinstance(values, Mapping) else {}), str(record.get("id") or record_id)


async def generate_invoices(call: ActionCall) -> dict[str, Any]:
    """The action ``generate_invoices``."""
    context = call.context
    if context is None:
        raise ActionFailed("generate_invoices needs a host with plugin API 1.3 or later")
    settings = load_settings(context)
    raw, record_id = await order_from_input(context, call.input)
    order = parse_order(raw, settings, record_id)
    issue_date = order.date
    if call.input.get("issue_date") is not None:
        given = parse_date(call.input["issue_date"])
        if given is None:
            raise ActionFailed(f"issue_date must be a date YYYY-MM-DD, not {call.input['issue_date']!r}")
        issue_date = given
    groups = plan_invoices(order, settings)

    writer = InvoiceWriter(context, settings, order, issue_date)
    await writer.load_existing()
    for group in groups:
        await writer.issue(group)
    invoices = sorted(writer.known.values(), key=lambda invoice: (invoice.kind != "receivable", invoice.number))
    return {
        "order_id": order.id,
        "order_number": order.number,
        "invoices": [invoice.summary(created=invoice.id in writer.created) for invoice in invoices],
        "created": len(writer.created),
        "existing": len(invoices) - len(writer.created),
        "warnings": writer.warnings,
    }


_NUMBER_OR_TEXT: dict[str, Any] = {"type": ["number", "string", "null"]}
_PARTY: dict[str, Any] = {
    "oneOf": [
        {"type": ["string", "null"]},
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "ref": {"type": ["string", "integer", "null"], "description": "A stable reference (e.g. a code)."},
                "payment_terms_days": {"type": "integer", "minimum": 0},
            },
            "required": ["name"],
        },
    ]
}
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The order's values (as an order record holds them).",
    "properties": {
        "id": {"type": ["string", "integer", "null"], "description": "The order's id (its record id)."},
        "number": {"type": ["string", "integer", "null"], "description": "The order number people see."},
        "customer": _PARTY,
        "entity": {"type": ["string", "null"], "description": "Code of the selling entity."},
        "currency": {"type": ["string", "null"], "description": "Sales currency (default: the selling entity's)."},
        "date": {"type": ["string", "null"], "description": "Order date, YYYY-MM-DD; the invoices' date by default."},
        "lines": {
            "type": ["array", "string", "null"],
            "description": "The lines (or their JSON text).",
            "items": {
                "type": "object",
                "properties": {
                    "line_id": {"type": ["string", "integer", "null"], "description": "Stable id of the line."},
                    "description": {"type": ["string", "null"]},
                    "sku": {"type": ["string", "null"], "description": "Product code (Odoo Internal Reference)."},
                    "quantity": _NUMBER_OR_TEXT,
                    "unit_price": _NUMBER_OR_TEXT,
                    "tax_rate": {"type": ["number", "string", "null"], "description": "0.13 for 13%."},
                    "currency": {"type": ["string", "null"]},
                    "supplier": _PARTY,
                    "unit_cost": {"type": ["number", "string", "null"]},
                    "purchase_tax_rate": {"type": ["number", "string", "null"]},
                    "purchasing_entity": {"type": ["string", "null"], "description": "Buying entity's code."},
                    "cost_currency": {"type": ["string", "null"], "description": "The supplier's currency."},
                },
            },
        },
    },
}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order": ORDER_SCHEMA,
        "collection": {"type": "string", "description": "Key of the orders collection (with record_id)."},
        "record_id": {"type": "string", "description": "Id of the order record to read."},
        "issue_date": {"type": "string", "description": "Date of the invoices, YYYY-MM-DD (default: order date)."},
    },
    "oneOf": [{"required": ["order"]}, {"required": ["collection", "record_id"]}],
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "order_number": {"type": "string"},
        "invoices": {"type": "array", "items": INVOICE_SUMMARY_SCHEMA},
        "created": {"type": "integer", "description": "How many invoices this run created."},
        "existing": {"type": "integer", "description": "How many existed already."},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["order_id", "order_number", "invoices", "created", "existing", "warnings"],
}
