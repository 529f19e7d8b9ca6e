"""The Odoo connector against a local server speaking Odoo's JSON-RPC, its faults included."""

from __future__ import annotations

from typing import Any

import pytest
from erp_odoo_fake import UID, FakeOdoo
from erp_testing import CONFIG, CheckedHarness, erp_context, forward, odoo_context, sample_order
from guiju_erp.odoo import OdooClient
from guiju_erp.settings import require_odoo
from guiju_sdk import ActionFailed
from guiju_sdk.testing import FakeContext


def invoice_records(context: FakeContext) -> dict[str, dict[str, Any]]:
    return {r["values"]["number"]: r["values"] for r in context.collections["invoices"]}


async def test_partners_are_created_then_updated_by_ref(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    partners = [
        {"ref": "C-GLOBEX", "name": "Globex GmbH", "email": "ap@globex.example", "vat": "DE123456789"},
        {"ref": "S-DG", "name": "东莞小部件厂", "is_company": True},
    ]
    first = await harness.run_action("odoo_upsert_partners", {"partners": partners}, context)
    partners[0]["email"] = "payables@globex.example"
    second = await harness.run_action("odoo_upsert_partners", {"partners": partners}, context)

    assert [p["created"] for p in first["partners"]] == [True, True]
    assert [p["created"] for p in second["partners"]] == [False, False]
    assert [p["odoo_id"] for p in first["partners"]] == [p["odoo_id"] for p in second["partners"]]
    (globex,) = odoo.find("res.partner", ref="C-GLOBEX")
    assert (globex["email"], globex["vat"]) == ("payables@globex.example", "DE123456789")
    assert len(odoo.records["res.partner"]) == 2
    assert [call[:2] for call in odoo.calls[-2:]] == [("res.partner", "search"), ("res.partner", "write")]
    # Every call was a JSON-RPC POST to /jsonrpc with the API key, never anything else.
    assert {(r.method, r.url) for r in context.requests} == {("POST", f"{odoo.url}/jsonrpc")}
    assert context.requests[0].json["params"] == {
        "service": "common",
        "method": "authenticate",
        "args": ["acme-prod", "finance@acme.example", context.secrets["odoo_api_key"], {}],
    }


async def test_a_sale_order_is_pushed_once(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_push_sale_order", {"order": sample_order()}, context)
    missing = str(failure.value)
    assert "line L2: no Odoo product (the line has no sku)" in missing
    assert "line L3" in missing and "line L1" not in missing  # W-1 is a product in Odoo
    assert odoo.records["sale.order"] == {} and odoo.records["res.partner"] == {}  # nothing half-made

    goods = odoo.find("product.product", default_code="GOODS")[0]["id"]
    context = odoo_context(odoo, odoo_default_product_id=goods)
    first = await harness.run_action("odoo_push_sale_order", {"order": sample_order()}, context)
    second = await harness.run_action("odoo_push_sale_order", {"order": sample_order()}, context)

    assert (first["created"], second["created"], first["odoo_id"]) == (True, False, second["odoo_id"])
    (order,) = odoo.records["sale.order"].values()
    (customer,) = odoo.find("res.partner", ref="C-GLOBEX")
    assert (order["client_order_ref"], order["partner_id"], order["date_order"]) == (
        "SO-1001",
        customer["id"],
        "2026-03-10 00:00:00",
    )
    widget = odoo.find("product.product", default_code="W-1")[0]["id"]
    assert [(line["product_id"], line["product_uom_qty"], line["price_unit"]) for line in order["order_line"]] == [
        (widget, 100.0, 12.345),
        (goods, 3.0, 199.99),
        (goods, 50.0, 0.5),
    ]
    assert all(line["tax_id"] == [[6, 0, []]] for line in order["order_line"])  # HK charges no VAT


async def test_invoices_are_pushed_posted_and_remembered(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)

    output = await harness.run_action("odoo_push_invoices", {"post": True}, context)

    assert [(i["number"], i["created"]) for i in output["invoices"]] == [
        ("HK-AP-2026-00001", True),
        ("HK-INV-2026-00001", True),
        ("SZ-AP-2026-00001", True),
    ]
    records = invoice_records(context)
    moves = {move["ref"]: move for move in odoo.records["account.move"].values()}
    assert set(moves) == set(records)
    for number, values in records.items():
        assert values["odoo_id"] == moves[number]["id"]
    receivable, mainland = moves["HK-INV-2026-00001"], moves["SZ-AP-2026-00001"]
    assert (receivable["move_type"], receivable["state"], receivable["name"]) == (
        "out_invoice",
        "posted",
        f"INV/2026/{receivable['id']:05d}",
    )
    assert (receivable["invoice_date"], receivable["invoice_date_due"], receivable["invoice_origin"]) == (
        "2026-03-10",
        "2026-04-09",
        "SO-1001",
    )
    assert receivable["currency_id"] == odoo.find("res.currency", name="USD")[0]["id"]
    assert mainland["move_type"] == "in_invoice"
    assert mainland["currency_id"] == odoo.find("res.currency", name="CNY")[0]["id"]
    assert [line["tax_ids"] for line in mainland["invoice_line_ids"]] == [[[6, 0, [2]]], [[6, 0, [2]]]]
    assert mainland["amount_total"] == records["SZ-AP-2026-00001"]["total"] == 9661.5  # same taxes, same total
    assert mainland["partner_id"] == odoo.find("res.partner", ref="S-DG")[0]["id"]
    assert len(odoo.find("res.partner", name="Kowloon Packaging Co")) == 1
    assert output["warnings"] == []

    # A rerun pushes nothing: the records remember their Odoo ids.
    creates = sum(1 for call in odoo.calls if call[1] == "create")
    again = await harness.run_action("odoo_push_invoices", {}, context)
    assert [i["created"] for i in again["invoices"]] == [False, False, False]
    assert sum(1 for call in odoo.calls if call[1] == "create") == creates

    # An id lost between Odoo's create and the record's write is found again by ref.
    record = next(r for r in context.collections["invoices"] if r["values"]["number"] == "SZ-AP-2026-00001")
    await context.write_record("invoices", {"odoo_id": None}, record_id=record["id"])
    found = await harness.run_action("odoo_push_invoices", {"numbers": ["SZ-AP-2026-00001"]}, context)
    assert found["invoices"] == [{"number": "SZ-AP-2026-00001", "odoo_id": mainland["id"], "created": False}]
    assert len(odoo.records["account.move"]) == 3
    assert invoice_records(context)["SZ-AP-2026-00001"]["odoo_id"] == mainland["id"]


async def test_payment_states_are_read_back(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    await harness.run_action("odoo_push_invoices", {"post": True}, context)
    records = invoice_records(context)
    odoo.pay(records["HK-INV-2026-00001"]["odoo_id"], 1000)
    odoo.pay(records["SZ-AP-2026-00001"]["odoo_id"], 9661.5)

    output = await harness.run_action("odoo_sync_payments", {}, context)

    by_number = {item["number"]: item for item in output["updated"]}
    assert (by_number["HK-INV-2026-00001"]["payment_state"], by_number["HK-INV-2026-00001"]["status"]) == (
        "partial",
        "partial",
    )
    records = invoice_records(context)
    assert (records["HK-INV-2026-00001"]["paid_amount"], records["HK-INV-2026-00001"]["status"]) == (1000, "partial")
    assert (records["SZ-AP-2026-00001"]["paid_amount"], records["SZ-AP-2026-00001"]["status"]) == (9661.5, "paid")
    assert records["HK-AP-2026-00001"]["status"] == "unpaid"
    assert records["SZ-AP-2026-00001"]["odoo_number"].startswith("BILL/2026/")

    again = await harness.run_action("odoo_sync_payments", {"entity": "HK"}, context)
    assert (again["updated"], again["unchanged"]) == ([], 2)


async def test_an_odoo_validation_error_fails_that_invoice_only(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    odoo.refuse_next_move = "The due date cannot be earlier than the invoice date."

    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_push_invoices", {}, context)

    assert failure.value.retryable is False
    message = str(failure.value)
    assert "Invoice HK-AP-2026-00001: Odoo refused it: The due date cannot be earlier than the invoice date." in message
    assert "pushed: HK-INV-2026-00001, SZ-AP-2026-00001" in message
    records = invoice_records(context)
    assert records["HK-AP-2026-00001"].get("odoo_id") is None
    assert all(records[n]["odoo_id"] for n in ("HK-INV-2026-00001", "SZ-AP-2026-00001"))

    retried = await harness.run_action("odoo_push_invoices", {}, context)
    assert [(i["number"], i["created"]) for i in retried["invoices"]] == [
        ("HK-AP-2026-00001", True),
        ("HK-INV-2026-00001", False),
        ("SZ-AP-2026-00001", False),
    ]


async def test_wrong_credentials_are_permanent_and_clear(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    context = odoo_context(odoo, api_key="revoked-key")
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_upsert_partners", {"partners": [{"name": "Globex GmbH"}]}, context)
    assert failure.value.retryable is False
    assert "refused the login 'finance@acme.example' on database 'acme-prod'" in str(failure.value)
    assert "Preferences › Account Security" in str(failure.value)
    assert "revoked-key" not in str(failure.value)
    assert odoo.records["res.partner"] == {}

    wrong_database = odoo_context(odoo, odoo_database="acme-test")
    with pytest.raises(ActionFailed, match="Odoo has no database 'acme-test': check odoo_database"):
        await harness.run_action("odoo_push_invoices", {}, wrong_database)


async def test_odoo_error_objects_map_to_permanent_failures(odoo: FakeOdoo) -> None:
    context = odoo_context(odoo)
    client = OdooClient(context, require_odoo(context))

    with pytest.raises(ActionFailed, match=r"Odoo failed \(builtins.ValueError\): Invalid field res.partner.nickname"):
        await client.execute("res.partner", "search", [[["nickname", "=", "x"]]], what="Searching")
    with pytest.raises(ActionFailed, match="Odoo refused it: Object x_shipment doesn't exist"):
        await client.execute("x_shipment", "search", [[]], what="Searching")
    with pytest.raises(ActionFailed, match=r"Odoo refused it: Record does not exist or has been deleted"):
        await client.execute("account.move", "read", [[424242]], {"fields": ["name"]}, what="Reading")
    move = odoo.add("account.move", {"move_type": "out_invoice", "invoice_line_ids": []})
    with pytest.raises(ActionFailed, match="Odoo refused it: You need to add a line before posting"):
        await client.execute("account.move", "action_post", [[move]], what="Posting")

    # An API key revoked after the login: execute_kw answers odoo.exceptions.AccessDenied.
    stale = OdooClient(context, require_odoo(odoo_context(odoo, api_key="revoked-key")))
    stale._uid = UID
    with pytest.raises(ActionFailed) as failure:
        await stale.execute("res.partner", "search", [[]], what="Searching")
    assert failure.value.retryable is False
    assert "Odoo refused the credentials of 'finance@acme.example'" in str(failure.value)


@pytest.mark.parametrize(
    ("mode", "retryable", "expected"),
    [
        ("502", True, "answered HTTP 502; trying again later"),
        ("429", True, "answered HTTP 429"),
        ("slow", True, "took longer than"),
        ("serialization", True, "Odoo was busy (could not serialize access"),
        ("garbage", False, "is not JSON (it starts b'<!DOCTYPE html>"),
        ("no_result", False, "has neither result nor error"),
    ],
)
async def test_transport_faults(
    harness: CheckedHarness, odoo: FakeOdoo, mode: str, retryable: bool, expected: str
) -> None:
    context = odoo_context(odoo, odoo_timeout_seconds=1)
    await harness.run_action("generate_invoices", {"order": sample_order()}, context)
    odoo.mode = mode
    odoo.slow_seconds = 1.5

    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_push_invoices", {}, context)

    assert failure.value.retryable is retryable
    assert expected in str(failure.value)
    if mode == "429":
        assert failure.value.retry_after == 7
    assert all(not record["values"].get("odoo_id") for record in context.collections["invoices"])


async def test_a_wrong_url_or_host_is_permanent(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_sync_payments", {}, odoo_context(odoo, odoo_url=f"{odoo.url}/web"))
    assert failure.value.retryable is False
    assert "answered HTTP 404" in str(failure.value) and "check odoo_url" in str(failure.value)

    unreachable = erp_context(
        {**CONFIG, "odoo_url": "https://odoo.acme.internal", "odoo_database": "d", "odoo_username": "u"},
        secrets={"odoo_api_key": "k"},
        hosts={"127.0.0.1"},
        http_handler=forward,
    )
    with pytest.raises(ActionFailed, match=r"Guiju may not reach https://odoo\.acme\.internal"):
        await harness.run_action("odoo_sync_payments", {}, unreachable)


async def test_odoo_must_be_configured(harness: CheckedHarness) -> None:
    with pytest.raises(ActionFailed, match="Odoo is not configured"):
        await harness.run_action("odoo_push_invoices", {}, erp_context())
    partial = erp_context({**CONFIG, "odoo_url": "https://acme.odoo.com"})
    with pytest.raises(ActionFailed) as failure:
        await harness.run_action("odoo_sync_payments", {}, partial)
    assert "odoo_database is not set" in str(failure.value) and "odoo_api_key is not set" in str(failure.value)


async def test_pushing_unknown_invoices_is_refused(harness: CheckedHarness, odoo: FakeOdoo) -> None:
    with pytest.raises(ActionFailed, match="there is no invoice HK-INV-2030-00001"):
        await harness.run_action("odoo_push_invoices", {"numbers": ["HK-INV-2030-00001"]}, odoo_context(odoo))
