"""reconcile and the invoice_overdue trigger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from erp_testing import CONFIG, CheckedHarness, erp_context, sample_order
from guiju_sdk import ActionFailed
from guiju_sdk.testing import FakeContext


def payment(number: str, amount: Any, currency: str, reference: str, date: str = "2026-04-01") -> dict[str, Any]:
    values = {"invoice_number": number, "amount": amount, "currency": currency, "date": date, "reference": reference}
    return {"id": f"pay-{reference}", "values": values}


def invoice(context: FakeContext, number: str) -> dict[str, Any]:
    return next(r["values"] for r in context.collections["invoices"] if r["values"]["number"] == number)


async def invoiced_context(harness: CheckedHarness, order_date: str = "2026-03-10") -> FakeContext:
    context = erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order(date=order_date)}, context)
    return context


async def test_reconcile_applies_payments_and_lists_what_is_open(harness: CheckedHarness) -> None:
    context = await invoiced_context(harness)
    context.collections["payments"] += [
        payment("HK-INV-2026-00001", 1000, "USD", "TT-1"),
        payment("HK-INV-2026-00001", "859.47", "USD", "TT-2"),
        payment("HK-AP-2026-00001", 200, "HKD", "HK-CHQ-7"),
        payment("SZ-AP-2026-00001", 5000, "", "BANK-1"),  # no currency: the invoice's
        payment("HK-INV-2026-09999", 10, "USD", "TT-3"),
        payment("SZ-AP-2026-00001", 100, "USD", "TT-4"),
        payment("SZ-AP-2026-00001", "n/a", "CNY", "BANK-2"),
    ]

    output = await harness.run_action("reconcile", {"as_of": "2026-05-20"}, context)

    assert output["updated"] == 3
    assert (invoice(context, "HK-INV-2026-00001")["status"], invoice(context, "HK-INV-2026-00001")["paid_amount"]) == (
        "paid",
        1859.47,
    )
    assert invoice(context, "HK-AP-2026-00001")["status"] == "overpaid"
    assert (invoice(context, "SZ-AP-2026-00001")["status"], invoice(context, "SZ-AP-2026-00001")["paid_amount"]) == (
        "partial",
        5000,
    )
    assert [(e["number"], e["balance"]) for e in output["outstanding"]] == [("SZ-AP-2026-00001", 4661.5)]
    assert [(e["number"], e["days_overdue"]) for e in output["overdue"]] == [("SZ-AP-2026-00001", 11)]
    assert [(e["number"], e["balance"]) for e in output["overpaid"]] == [("HK-AP-2026-00001", -95)]
    reasons = {p["reference"]: p["reason"] for p in output["unmatched_payments"]}
    assert reasons == {
        "TT-3": "there is no invoice HK-INV-2026-09999",
        "TT-4": "the payment is in USD, invoice SZ-AP-2026-00001 in CNY",
        "BANK-2": "the amount 'n/a' is not a number",
    }
    assert output["totals"] == [
        {"entity": "SZ", "kind": "payable", "currency": "CNY", "outstanding": 4661.5, "overdue": 4661.5}
    ]

    again = await harness.run_action("reconcile", {"as_of": "2026-05-20"}, context)
    assert again["updated"] == 0
    assert again["outstanding"] == output["outstanding"]


async def test_reconcile_one_entity_as_of_a_date(harness: CheckedHarness) -> None:
    context = await invoiced_context(harness)
    context.collections["payments"] += [
        payment("HK-INV-2026-00001", 500, "USD", "TT-1"),
        payment("SZ-AP-2026-00001", 100, "USD", "TT-4"),  # another entity's problem
        payment("XX-1", 1, "USD", "TT-9"),
    ]

    output = await harness.run_action("reconcile", {"entity": "HK", "as_of": "2026-04-10"}, context)

    assert output["entities"] == ["HK"]
    assert [(e["number"], e["balance"], e["days_overdue"]) for e in output["overdue"]] == [
        ("HK-AP-2026-00001", 105, 1),
        ("HK-INV-2026-00001", 1359.47, 1),
    ]
    assert [p["reference"] for p in output["unmatched_payments"]] == ["TT-9"]
    assert invoice(context, "SZ-AP-2026-00001")["status"] == "unpaid"  # not reconciled: not asked
    assert invoice(context, "HK-INV-2026-00001")["status"] == "partial"


async def test_reconcile_refuses_bad_input(harness: CheckedHarness) -> None:
    with pytest.raises(ActionFailed, match="unknown entity 'TW'"):
        await harness.run_action("reconcile", {"entity": "TW"}, erp_context())
    with pytest.raises(ActionFailed, match="as_of must be a date"):
        await harness.run_action("reconcile", {"as_of": "next week"}, erp_context())


def today() -> dt.date:
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()


async def test_the_overdue_trigger_fires_once_per_invoice(harness: CheckedHarness) -> None:
    # Invoiced 40 days ago: HK's invoices (30 days) are overdue, SZ's (60 days) are not.
    ordered = today() - dt.timedelta(days=40)
    context = await invoiced_context(harness, ordered.isoformat())

    events = await harness.poll_trigger("invoice_overdue", context)

    assert sorted((e["number"], e["days_overdue"]) for e in events) == [
        (f"HK-AP-{ordered.year}-00001", 10),
        (f"HK-INV-{ordered.year}-00001", 10),
    ]
    receivable = next(e for e in events if e["kind"] == "receivable")
    assert (receivable["balance"], receivable["currency"], receivable["order_number"]) == (1859.47, "USD", "SO-1001")
    assert receivable["as_of"] == today().isoformat()
    for record in context.collections["invoices"]:
        values = record["values"]
        expected = values["due_date"] if values["entity"] == "HK" else None
        assert values.get("overdue_reported") == expected

    assert await harness.poll_trigger("invoice_overdue", context) == []

    # A due date moved and passed again fires again, once.
    mainland = next(r for r in context.collections["invoices"] if r["values"]["entity"] == "SZ")
    yesterday = (today() - dt.timedelta(days=1)).isoformat()
    await context.write_record("invoices", {"due_date": yesterday}, record_id=mainland["id"])
    again = await harness.poll_trigger("invoice_overdue", context)
    assert [(e["invoice_id"], e["days_overdue"]) for e in again] == [(mainland["id"], 1)]
    assert await harness.poll_trigger("invoice_overdue", context) == []


async def test_paid_invoices_do_not_fire(harness: CheckedHarness) -> None:
    context = await invoiced_context(harness, (today() - dt.timedelta(days=40)).isoformat())
    numbers = [r["values"]["number"] for r in context.collections["invoices"] if r["values"]["entity"] == "HK"]
    currency = {"HK-INV": "USD", "HK-AP-": "HKD"}
    context.collections["payments"] += [
        payment(number, invoice(context, number)["total"], currency[number[:6]], f"P{index}")
        for index, number in enumerate(numbers)
    ]
    await harness.run_action("reconcile", {}, context)

    assert await harness.poll_trigger("invoice_overdue", context) == []


@dataclass
class FailingWrites(FakeContext):
    """The collection stops taking writes after ``writes`` of them."""

    writes: int = 1

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        if self.writes <= 0:
            raise ConnectionError("records service unavailable")
        self.writes -= 1
        return await super().write_record(collection, values, record_id=record_id)


async def test_an_invoice_not_marked_reported_is_reported_by_the_next_poll(harness: CheckedHarness) -> None:
    context = await invoiced_context(harness, (today() - dt.timedelta(days=40)).isoformat())
    failing = FailingWrites(plugin="erp", config=CONFIG, collections=context.collections, writes=1)

    first = await harness.poll_trigger("invoice_overdue", failing)
    second = await harness.poll_trigger("invoice_overdue", context)

    assert len(first) == 1 and len(second) == 1
    assert {first[0]["invoice_id"], second[0]["invoice_id"]} == {
        r["id"] for r in context.collections["invoices"] if r["values"]["entity"] == "HK"
    }


async def test_the_trigger_waits_for_valid_settings(harness: CheckedHarness) -> None:
    context = erp_context({"entities": []})
    assert await harness.poll_trigger("invoice_overdue", context) == []


async def test_a_paid_invoice_paid_again_becomes_overpaid(harness: CheckedHarness) -> None:
    context = await invoiced_context(harness)
    context.collections["payments"].append(payment("HK-AP-2026-00001", 105, "HKD", "CHQ-1"))
    await harness.run_action("reconcile", {"as_of": "2026-04-01"}, context)
    assert invoice(context, "HK-AP-2026-00001")["status"] == "paid"

    # The paid invoice is no longer open; the newest payments still find it.
    context.collections["payments"].append(payment("HK-AP-2026-00001", 105, "HKD", "CHQ-1-again"))
    output = await harness.run_action("reconcile", {"as_of": "2026-04-01"}, context)

    assert (invoice(context, "HK-AP-2026-00001")["status"], invoice(context, "HK-AP-2026-00001")["paid_amount"]) == (
        "overpaid",
        210,
    )
    assert [(e["number"], e["balance"]) for e in output["overpaid"]] == [("HK-AP-2026-00001", -105)]
    assert output["updated"] == 1
