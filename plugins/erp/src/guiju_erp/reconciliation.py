"""Reconciliation: invoices against the payments recorded, and the ``invoice_overdue`` trigger.

Payments are records of the payments collection (``invoice_number``, ``amount``, ``currency``,
``date``, ``reference``). Every payment recorded counts; ``as_of`` only decides which invoices are
overdue. A payment that cannot be applied (no such invoice, another currency, an unreadable amount)
is listed rather than guessed at: among the newest payments, which is where new problems are.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from guiju_sdk import ActionCall, ActionFailed, PluginContext

from guiju_erp.money import ZERO, as_json_number, cents, parse_date, to_decimal
from guiju_erp.records import READ_LIMIT, Invoice, read_invoices, read_open_invoices
from guiju_erp.settings import Settings, load_settings, settings_problems

#: The invoice field that remembers the due date an overdue event was reported for.
OVERDUE_REPORTED = "overdue_reported"


def payment_status(total: Decimal, paid: Decimal) -> str:
    """``unpaid``, ``partial``, ``paid`` or ``overpaid``."""
    if paid <= 0:
        return "unpaid"
    if paid < total:
        return "partial"
    return "paid" if paid == total else "overpaid"


def _entry(invoice: Invoice, as_of: dt.date) -> dict[str, Any]:
    due = invoice.due_date
    return {
        "id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind,
        "entity": invoice.entity,
        "counterparty": invoice.counterparty,
        "currency": invoice.currency,
        "total": as_json_number(invoice.total),
        "paid_amount": as_json_number(invoice.paid_amount),
        "balance": as_json_number(invoice.balance),
        "due_date": due.isoformat() if due else "",
        "days_overdue": max(0, (as_of - due).days) if due else 0,
    }


def _apply_payments(
    by_number: Mapping[str, Invoice], payments: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Decimal], list[dict[str, Any]]]:
    """The amount paid on each invoice (by number) and the payments that could not be applied."""
    paid: dict[str, Decimal] = defaultdict(lambda: ZERO)
    unmatched: list[dict[str, Any]] = []
    for record in payments:
        values = record.get("values") if isinstance(record.get("values"), Mapping) else {}
        assert isinstance(values, Mapping)
        number = str(values.get("invoice_number") or "").strip()
        amount = to_decimal(values.get("amount"))
        currency = str(values.get("currency") or "").strip().upper()
        invoice = by_number.get(number)
        reason = None
        if not number:
            reason = "the payment names no invoice_number"
        elif invoice is None:
            reason = f"there is no invoice {number}"
        elif invoice.cancelled:
            reason = f"invoice {number} is cancelled"
        elif amount is None:
            reason = f"the amount {values.get('amount')!r} is not a number"
        elif currency and currency != invoice.currency:
            reason = f"the payment is in {currency}, invoice {number} in {invoice.currency}"
        if reason is not None or invoice is None or amount is None:
            unmatched.append(
                {
                    "id": str(record.get("id")),
                    "invoice_number": number,
                    "reference": str(values.get("reference") or ""),
                    "amount": as_json_number(amount) if amount is not None else 0,
                    "currency": currency,
                    "reason": reason or "",
                }
            )
            continue
        paid[number] += cents(amount)
    return paid, unmatched


def _payment_number(record: Mapping[str, Any]) -> str:
    values = record.get("values")
    return str(values.get("invoice_number") or "").strip() if isinstance(values, Mapping) else ""


async def reconcile(call: ActionCall) -> dict[str, Any]:
    """The action ``reconcile``."""
    context = call.context
    if context is None:
        raise ActionFailed("reconcile needs a host with plugin API 1.3 or later")
    settings = load_settings(context)
    as_of = settings.today()
    if call.input.get("as_of") is not None:
        given = parse_date(call.input["as_of"])
        if given is None:
            raise ActionFailed(f"as_of must be a date YYYY-MM-DD, not {call.input['as_of']!r}")
        as_of = given
    entity = call.input.get("entity")
    if entity is not None and settings.entity(str(entity)) is None:
        raise ActionFailed(f"unknown entity {entity!r}: the entities are {', '.join(settings.entities)}")
    entities = [str(entity)] if entity is not None else list(settings.entities)
    invoices_collection, payments_collection = settings.invoices_collection, settings.payments_collection

    # What to reconcile: the open invoices, and any other invoice a recent payment names (a paid
    # invoice paid again is now overpaid). Every read stays narrow, as the host caps each one.
    invoices = await read_open_invoices(context, invoices_collection, entities)
    by_number = {invoice.number: invoice for invoice in invoices}
    recent = await context.read_records(payments_collection, limit=READ_LIMIT)
    for number in sorted({_payment_number(record) for record in recent} - set(by_number) - {""}):
        found = await read_invoices(context, invoices_collection, {"number": number})
        if found:
            by_number[number] = found[0]
    _, unmatched = _apply_payments(by_number, recent)
    # Another entity's invoice is that entity's business, not an unmatched payment.
    unmatched = [
        payment
        for payment in unmatched
        if payment["invoice_number"] not in by_number or by_number[payment["invoice_number"]].entity in entities
    ]
    candidates = [invoice for invoice in by_number.values() if invoice.entity in entities and not invoice.cancelled]

    updated = 0
    outstanding: list[dict[str, Any]] = []
    overdue: list[dict[str, Any]] = []
    overpaid: list[dict[str, Any]] = []
    totals: dict[tuple[str, str, str], dict[str, Decimal]] = defaultdict(lambda: {"outstanding": ZERO, "overdue": ZERO})
    for invoice in sorted(candidates, key=lambda i: (i.entity, i.kind, i.number)):
        payments = await context.read_records(
            payments_collection, where={"invoice_number": invoice.number}, limit=READ_LIMIT
        )
        paid, _ = _apply_payments({invoice.number: invoice}, payments)
        amount = paid.get(invoice.number, ZERO)
        status = payment_status(invoice.total, amount)
        if amount != invoice.paid_amount or status != invoice.status:
            changes = {"paid_amount": as_json_number(amount), "status": status}
            await context.write_record(settings.invoices_collection, changes, record_id=invoice.id)
            invoice = Invoice(invoice.id, {**invoice.values, **changes})
            updated += 1
        entry = _entry(invoice, as_of)
        if status == "overpaid":
            overpaid.append(entry)
        if invoice.balance <= 0:
            continue
        outstanding.append(entry)
        key = (invoice.entity, invoice.kind, invoice.currency)
        totals[key]["outstanding"] += invoice.balance
        due = invoice.due_date
        if due is not None and due < as_of:
            overdue.append(entry)
            totals[key]["overdue"] += invoice.balance
    return {
        "as_of": as_of.isoformat(),
        "entities": entities,
        "updated": updated,
        "outstanding": outstanding,
        "overdue": overdue,
        "overpaid": overpaid,
        "unmatched_payments": unmatched,
        "totals": [
            {
                "entity": key[0],
                "kind": key[1],
                "currency": key[2],
                "outstanding": as_json_number(sums["outstanding"]),
                "overdue": as_json_number(sums["overdue"]),
            }
            for key, sums in sorted(totals.items())
        ],
    }


def overdue_payload(invoice: Invoice, as_of: dt.date) -> dict[str, Any]:
    """The payload of an ``invoice_overdue`` event."""
    entry = _entry(invoice, as_of)
    return {
        "invoice_id": entry.pop("id"),
        **entry,
        "order_number": invoice.text("order_number"),
        "issue_date": invoice.text("issue_date"),
        "as_of": as_of.isoformat(),
    }


async def poll_overdue(context: PluginContext) -> list[dict[str, Any]]:
    """The trigger ``invoice_overdue``: one event per invoice that became overdue since the last poll.

    The due date reported is written on the invoice (``overdue_reported``) before its event is
    returned, so each invoice fires once — again only if its due date is moved and passes again.
    """
    settings, problems = settings_problems(context.config)
    if settings is None:
        context.log.warning("invoice_overdue not polled: the settings need fixing: %s", "; ".join(problems))
        return []
    return await _newly_overdue(context, settings, settings.today())


async def _newly_overdue(context: PluginContext, settings: Settings, today: dt.date) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for invoice in await read_open_invoices(context, settings.invoices_collection, list(settings.entities)):
        due = invoice.due_date
        if due is None or due >= today or invoice.balance <= 0:
            continue
        if invoice.text(OVERDUE_REPORTED) == due.isoformat():
            continue
        try:
            await context.write_record(
                settings.invoices_collection, {OVERDUE_REPORTED: due.isoformat()}, record_id=invoice.id
            )
        except Exception:
            # Not remembered, so not reported: the next poll tries again. What was remembered is
            # returned, so no invoice is marked reported without its event.
            context.log.exception("invoice_overdue: could not mark invoice %s as reported", invoice.number)
            return events
        events.append(overdue_payload(invoice, today))
    return events


_ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "number": {"type": "string"},
        "kind": {"type": "string", "enum": ["receivable", "payable"]},
        "entity": {"type": "string"},
        "counterparty": {"type": "string"},
        "currency": {"type": "string"},
        "total": {"type": "number"},
        "paid_amount": {"type": "number"},
        "balance": {"type": "number", "description": "Still to pay (negative when overpaid)."},
        "due_date": {"type": "string"},
        "days_overdue": {"type": "integer"},
    },
    "required": ["id", "number", "kind", "entity", "currency", "total", "paid_amount", "balance"],
}
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity": {"type": "string", "description": "Code of the entity to reconcile (default: every entity)."},
        "as_of": {"type": "string", "description": "Overdue as of this date, YYYY-MM-DD (default: today)."},
    },
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "as_of": {"type": "string"},
        "entities": {"type": "array", "items": {"type": "string"}},
        "updated": {"type": "integer", "description": "Invoices whose paid amount or status changed."},
        "outstanding": {"type": "array", "items": _ENTRY_SCHEMA},
        "overdue": {"type": "array", "items": _ENTRY_SCHEMA},
        "overpaid": {"type": "array", "items": _ENTRY_SCHEMA},
        "unmatched_payments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "invoice_number": {"type": "string"},
                    "reference": {"type": "string"},
                    "amount": {"type": "number"},
                    "currency": {"type": "string"},
                    "reason": {"type": "string"},
                },
                "required": ["id", "invoice_number", "reason"],
            },
        },
        "totals": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "entity": {"type": "string"},
                    "kind": {"type": "string"},
                    "currency": {"type": "string"},
                    "outstanding": {"type": "number"},
                    "overdue": {"type": "number"},
                },
                "required": ["entity", "kind", "currency", "outstanding", "overdue"],
            },
        },
    },
    "required": ["as_of", "entities", "updated", "outstanding", "overdue", "overpaid", "unmatched_payments", "totals"],
}
PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_id": {"type": "string", "description": "The invoice record's id."},
        "number": {"type": "string"},
        "kind": {"type": "string", "enum": ["receivable", "payable"]},
        "entity": {"type": "string"},
        "counterparty": {"type": "string"},
        "order_number": {"type": "string"},
        "currency": {"type": "string"},
        "total": {"type": "number"},
        "paid_amount": {"type": "number"},
        "balance": {"type": "number", "description": "What is still to pay."},
        "issue_date": {"type": "string"},
        "due_date": {"type": "string"},
        "days_overdue": {"type": "integer"},
        "as_of": {"type": "string", "description": "The day the invoice was found overdue."},
    },
    "required": ["invoice_id", "number", "kind", "entity", "currency", "balance", "due_date", "days_overdue"],
}
