"""generate_invoices: numbers per entity sequence, totals and tax, and each order line billed once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from erp_testing import CONFIG, ENTITIES, CheckedHarness, erp_context, sample_order
from guiju_sdk import ActionFailed, RecordRejected
from guiju_sdk.testing import FakeContext
from jsonschema import Draft202012Validator


def by_number(context: FakeContext) -> dict[str, dict[str, Any]]:
    return {record["values"]["number"]: record["values"] for record in context.collections["invoices"]}


async def test_an_order_gets_its_receivable_and_payable_invoices(harness: CheckedHarness) -> None:
    context = erp_context()
    output = await harness.run_action("generate_invoices", {"order": sample_order()}, context)

    assert (output["created"], output["existing"], output["warnings"]) == (3, 0, [])
    invoices = by_number(context)
    assert sorted(invoices) == ["HK-AP-2026-00001", "HK-INV-2026-00001", "SZ-AP-2026-00001"]

    receivable = invoices["HK-INV-2026-00001"]
    assert receivable["kind"] == "receivable"
    assert (receivable["entity"], receivable["counterparty"], receivable["currency"]) == ("HK", "Globex GmbH", "USD")
    assert [line["amount"] for line in receivable["lines"]] == [1234.5, 599.97, 25]
    assert (receivable["subtotal"], receivable["tax"], receivable["total"]) == (1859.47, 0, 1859.47)
    assert (receivable["issue_date"], receivable["due_date"]) == ("2026-03-10", "2026-04-09")
    assert (receivable["status"], receivable["paid_amount"], receivable["order_number"]) == ("unpaid", 0, "SO-1001")
    assert receivable["counterparty_ref"] == "C-GLOBEX"

    # The mainland company buys L1 and L2 from one supplier: one payable invoice, 13% input VAT.
    mainland = invoices["SZ-AP-2026-00001"]
    assert (mainland["kind"], mainland["entity"], mainland["counterparty"]) == ("payable", "SZ", "东莞小部件厂")
    assert [line["line_id"] for line in mainland["lines"]] == ["L1", "L2"]
    assert [(line["amount"], line["tax"]) for line in mainland["lines"]] == [(6150, 799.5), (2400, 312)]
    assert (mainland["currency"], mainland["subtotal"], mainland["tax"], mainland["total"]) == (
        "CNY",
        8550,
        1111.5,
        9661.5,
    )
    assert mainland["due_date"] == "2026-05-09"  # SZ pays in 60 days

    packaging = invoices["HK-AP-2026-00001"]
    assert (packaging["counterparty"], packaging["currency"], packaging["total"]) == (
        "Kowloon Packaging Co",
        "HKD",
        105,
    )

    assert [item["number"] for item in output["invoices"]] == [
        "HK-INV-2026-00001",
        "HK-AP-2026-00001",
        "SZ-AP-2026-00001",
    ]
    assert all(item["created"] for item in output["invoices"])
    assert [event["type"] for event in context.events] == ["plugin.erp.invoice_created"] * 3
    assert {event["payload"]["number"] for event in context.events} == set(invoices)
    created_schema = Draft202012Validator(harness.registrations.triggers["invoice_created"].payload_schema or {})
    assert all(created_schema.is_valid(event["payload"]) for event in context.events)
    assert context.events[0]["payload"]["order_number"] == "SO-1001"


async def test_each_entity_numbers_in_its_own_sequence_per_year(harness: CheckedHarness) -> None:
    context = erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    second = sample_order(id="rec-so-1002", number="SO-1002", date="2026-03-11")
    await harness.run_action("generate_invoices", {"order": second}, context)
    next_year = sample_order(id="rec-so-1003", number="SO-1003", date="2027-01-02")
    await harness.run_action("generate_invoices", {"order": next_year}, context)
    mainland_sale = {
        "id": "rec-so-1004",
        "number": "SO-1004",
        "customer": "华东客户有限公司",
        "entity": "SZ",
        "date": "2026-03-12",
        "lines": [{"line_id": "1", "description": "Widget", "quantity": 1, "unit_price": 100}],
    }
    await harness.run_action("generate_invoices", {"order": mainland_sale}, context)

    numbers = sorted(by_number(context))
    assert numbers == [
        "HK-AP-2026-00001",
        "HK-AP-2026-00002",
        "HK-AP-2027-00001",
        "HK-INV-2026-00001",
        "HK-INV-2026-00002",
        "HK-INV-2027-00001",
        "SZ-AP-2026-00001",
        "SZ-AP-2026-00002",
        "SZ-AP-2027-00001",
        "SZ-INV-2026-00001",
    ]
    sz_sale = by_number(context)["SZ-INV-2026-00001"]
    assert (sz_sale["currency"], sz_sale["subtotal"], sz_sale["tax"], sz_sale["total"]) == ("CNY", 100, 13, 113)


async def test_amounts_and_tax_round_half_up_per_line(harness: CheckedHarness) -> None:
    context = erp_context()
    order = {
        "id": "o-round",
        "number": "SO-R",
        "customer": "Rounding Ltd",
        "entity": "SZ",
        "date": "2026-03-01",
        "lines": [
            {"line_id": "a", "quantity": 3, "unit_price": "0.335"},  # 1.005 → 1.01; tax 0.1313 → 0.13
            {"line_id": "b", "quantity": 1, "unit_price": 0.5},  # tax 0.065 → 0.07 (half up, not to even)
            {"line_id": "c", "quantity": "2.5", "unit_price": "10.01", "tax_rate": 0.06},  # 25.025 → 25.03; 1.5018
        ],
    }
    await harness.run_action("generate_invoices", {"order": order}, context)

    (invoice,) = by_number(context).values()
    assert [(line["amount"], line["tax"]) for line in invoice["lines"]] == [(1.01, 0.13), (0.5, 0.07), (25.03, 1.5)]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (26.54, 1.7, 28.24)


async def test_a_rerun_creates_nothing_and_reports_what_exists(harness: CheckedHarness) -> None:
    context = erp_context()
    first = await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    sequences = dict(context.sequences)
    again = await harness.run_action("generate_invoices", {"order": sample_order()}, context)

    assert (again["created"], again["existing"]) == (0, 3)
    assert [(i["id"], i["number"]) for i in again["invoices"]] == [(i["id"], i["number"]) for i in first["invoices"]]
    assert not any(item["created"] for item in again["invoices"])
    assert len(context.collections["invoices"]) == 3
    assert context.sequences == sequences  # no number spent
    assert len(context.events) == 3


async def test_a_line_added_later_gets_a_supplementary_invoice(harness: CheckedHarness) -> None:
    context = erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    order = sample_order()
    order["lines"].append(
        {
            "line_id": "L4",
            "description": "Spare parts",
            "quantity": 10,
            "unit_price": 3,
            "supplier": {"name": "东莞小部件厂", "ref": "S-DG"},
            "unit_cost": 15,
            "cost_currency": "CNY",
            "purchasing_entity": "SZ",
        }
    )
    output = await harness.run_action("generate_invoices", {"order": order}, context)

    created = [item for item in output["invoices"] if item["created"]]
    assert [(item["number"], item["line_ids"]) for item in created] == [
        ("HK-INV-2026-00002", ["L4"]),
        ("SZ-AP-2026-00002", ["L4"]),
    ]
    assert (output["created"], output["existing"]) == (2, 3)
    invoices = by_number(context)
    assert invoices["HK-INV-2026-00002"]["total"] == 30
    assert invoices["SZ-AP-2026-00002"]["total"] == 169.5  # 150 + 13% VAT
    assert invoices["HK-INV-2026-00002"]["source_key"] == invoices["HK-INV-2026-00001"]["source_key"] + "#2"
    # Every order line is billed exactly once per side.
    receivable_lines = [line["line_id"] for v in invoices.values() if v["kind"] == "receivable" for line in v["lines"]]
    assert sorted(receivable_lines) == ["L1", "L2", "L3", "L4"]


async def test_the_lines_of_a_cancelled_invoice_are_billed_again(harness: CheckedHarness) -> None:
    context = erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    receivable = next(r for r in context.collections["invoices"] if r["values"]["number"] == "HK-INV-2026-00001")
    await context.write_record("invoices", {"status": "cancelled"}, record_id=receivable["id"])

    output = await harness.run_action("generate_invoices", {"order": sample_order()}, context)

    created = [item for item in output["invoices"] if item["created"]]
    assert [(item["number"], item["line_ids"]) for item in created] == [("HK-INV-2026-00002", ["L1", "L2", "L3"])]


async def test_a_line_moved_to_another_supplier_is_not_billed_twice(harness: CheckedHarness) -> None:
    context = erp_context()
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    order = sample_order()
    order["lines"][2]["supplier"] = "New Packaging Ltd"
    output = await harness.run_action("generate_invoices", {"order": order}, context)

    assert output["created"] == 0
    assert len(output["warnings"]) == 1
    assert "L3" in output["warnings"][0] and "HK-AP-2026-00001" in output["warnings"][0]


@dataclass
class InterleavingContext(FakeContext):
    """A context whose every call lets the other runs go first, as real I/O would."""

    rejected: int = 0

    async def read_records(
        self, collection: str, *, where: Mapping[str, Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return await super().read_records(collection, where=where, limit=limit)

    async def next_number(self, sequence: str, *, key: str | None = None) -> int:
        await asyncio.sleep(0)
        return await super().next_number(sequence, key=key)

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        try:
            return await super().write_record(collection, values, record_id=record_id)
        except RecordRejected:
            self.rejected += 1
            raise


async def test_concurrent_runs_write_each_invoice_once(harness: CheckedHarness) -> None:
    context = InterleavingContext(
        plugin="erp",
        config=CONFIG,
        unique_fields={"invoices": ("source_key",)},
        collections={"invoices": [], "payments": []},
    )
    outputs = await asyncio.gather(
        *(harness.run_action("generate_invoices", {"order": sample_order()}, context) for _ in range(3))
    )

    assert context.rejected > 0  # the runs did race for the same source keys
    assert sorted(by_number(context)) == ["HK-AP-2026-00001", "HK-INV-2026-00001", "SZ-AP-2026-00001"]
    assert sum(output["created"] for output in outputs) == 3
    ids = {record["id"] for record in context.collections["invoices"]}
    for output in outputs:
        assert {item["id"] for item in output["invoices"]} == ids
    assert context.sequences == {"receivable:HK:2026": 1, "payable:SZ:2026": 1, "payable:HK:2026": 1}


async def test_the_order_can_be_read_from_its_record(harness: CheckedHarness) -> None:
    context = erp_context()
    values = sample_order()
    values.pop("id")
    context.collections["orders"].append({"id": "order-record-9", "values": values})

    output = await harness.run_action(
        "generate_invoices", {"collection": "orders", "record_id": "order-record-9"}, context
    )

    assert output["order_id"] == "order-record-9"
    assert {record["values"]["order_id"] for record in context.collections["invoices"]} == {"order-record-9"}

    with pytest.raises(ActionFailed, match="no order record nope"):
        await harness.run_action("generate_invoices", {"collection": "orders", "record_id": "nope"}, context)


async def test_a_bad_order_record_fails_with_every_problem_and_writes_nothing(harness: CheckedHarness) -> None:
    context = erp_context()
    order = sample_order(entity="XX")
    del order["customer"]
    order["lines"][0]["quantity"] = -5
    order["lines"][1]["currency"] = "EUR"
    order["lines"][1]["unit_cost"] = None
    order["lines"][2]["line_id"] = "L1"
    order["lines"][2]["purchasing_entity"] = "TW"
    order["lines"].append({"description": "no id", "quantity": 1, "unit_price": "abc"})

    context.collections["orders"].append({"id": "bad-order", "values": order})

    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("generate_invoices", {"collection": "orders", "record_id": "bad-order"}, context)

    message = str(failure.value)
    assert failure.value.retryable is False
    for expected in (
        "customer is missing",
        "unknown selling entity 'XX'",
        "line L1: quantity must be a number above 0",
        "line L2: mixed currencies: the line is in EUR",
        "line L2: unit_cost must be a number of 0 or more",
        "line L1: line_id is used twice",
        "unknown purchasing entity 'TW'",
        "line 4: line_id is missing",
        "line 4: unit_price must be a number of 0 or more, not 'abc'",
    ):
        assert expected in message
    assert context.collections["invoices"] == []
    assert context.sequences == {}


async def test_missing_values_mapped_as_null_are_reported_by_the_plugin(harness: CheckedHarness) -> None:
    # An automation maps empty record fields to null: the plugin, not the schema, says what is missing.
    order = sample_order(customer=None, number=None, date=None)
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("generate_invoices", {"order": order}, erp_context())
    message = str(failure.value)
    assert "order number is missing" in message
    assert "customer is missing" in message
    assert "date (the order date, YYYY-MM-DD) is missing or invalid" in message


async def test_one_supplier_cannot_bill_one_entity_in_two_currencies(harness: CheckedHarness) -> None:
    order = sample_order()
    order["lines"][1]["cost_currency"] = "USD"
    with pytest.raises(ActionFailed, match="line L2: mixed currencies: supplier 东莞小部件厂 bills it in USD"):
        await harness.run_action("generate_invoices", {"order": order}, erp_context())


async def test_wrong_settings_are_listed(harness: CheckedHarness) -> None:
    entities = [
        ENTITIES[0],
        dict(ENTITIES[1], payable_prefix="HK-AP"),
        dict(ENTITIES[0], code="MO", currency="usd", tax_rate=13),
        dict(ENTITIES[0]),
    ]
    context = erp_context({"entities": entities})
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    message = str(failure.value)
    assert "entity MO: currency must be a three-letter ISO 4217 code" in message
    assert "entity MO: tax_rate must be a fraction" in message
    assert "entity HK is listed twice" in message
    assert "payable prefix of entity SZ is 'HK-AP', already the payable prefix of entity HK" in message


@dataclass
class StrictCollectionContext(FakeContext):
    """An invoices collection that lacks a field the plugin writes."""

    async def write_record(
        self, collection: str, values: Mapping[str, Any], *, record_id: str | None = None
    ) -> dict[str, Any]:
        if "entity_name" in values:
            raise RecordRejected(
                "invoices: values refused", [{"pointer": "/values/entity_name", "message": "unknown field"}]
            )
        return await super().write_record(collection, values, record_id=record_id)


async def test_a_collection_missing_fields_is_a_clear_permanent_failure(harness: CheckedHarness) -> None:
    context = StrictCollectionContext(plugin="erp", config=CONFIG, collections={"invoices": [], "payments": []})
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    assert failure.value.retryable is False
    assert "/values/entity_name: unknown field" in str(failure.value)
    assert "fields the erp plugin documents" in str(failure.value)
