"""Every check made before a document is generated, with every problem listed at once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from customs_samples import ORDER, USCC, order
from guiju_customs.hs import headings, hs_code_problem
from guiju_customs.order import KINDS, OrderInvalid, country_code, read_order, uscc_problem


def problems(
    values: dict[str, object], kinds: tuple[str, ...] = KINDS, config: dict[str, str] | None = None
) -> dict[str, str]:
    with pytest.raises(OrderInvalid) as raised:
        read_order(values, config or {}, kinds)
    # The message lists them all too, for the automation's run log.
    for problem in raised.value.problems:
        assert problem.pointer in str(raised.value)
    return {problem.pointer: problem.message for problem in raised.value.problems}


def test_the_sample_order_is_valid_for_every_kind() -> None:
    checked = read_order(ORDER, {}, KINDS)
    assert checked.total_amount == Decimal("4795.00")
    assert checked.insurance == Decimal("12.50")  # a money value of the records API, in cents
    assert checked.transport_mode == "2"
    assert checked.lines[1].hs_code == "8509400000"  # dots of a written HS code are dropped
    assert checked.net_weight == Decimal("1240.500")
    assert checked.gross_weight == Decimal("1398.000")
    assert checked.destination_country == checked.trade_country == "DE"


def test_every_problem_is_listed_at_once_with_its_pointer() -> None:
    values = order(
        consignor_address="",
        consignor_uscc="91350100M000100Y44",
        consignee_name="",
        consignee_name_zh="",
        consignee_country="Germany",
        packages=0,
        total_amount="9999.00",
        gross_weight_kg="1000",
        net_weight_kg="1100",
    )
    values["lines"][0].update(hs_code="85165A0000", amount="4500.00", net_weight_kg=1400, gross_weight_kg=1350)
    values["lines"][1].update(hs_code="7700000000", currency="EUR", origin_country="XX")
    values["lines"].append({"hs_code": "85165000", "name_en": "Oven", "quantity": 0, "unit": "台", "unit_price": 1})
    found = problems(values)
    assert set(found) == {
        "/consignor_address",
        "/consignor_uscc",
        "/consignee_name",
        "/consignee_country",
        "/packages",
        "/total_amount",
        "/net_weight_kg",
        "/lines/0/hs_code",
        "/lines/0/amount",
        "/lines/0/net_weight_kg",
        "/lines/1/hs_code",
        "/lines/1/currency",
        "/lines/1/origin_country",
        "/lines/2/hs_code",
        "/lines/2/name_zh",
        "/lines/2/quantity",
    }
    assert "check character" in found["/consignor_uscc"]
    assert "digits only" in found["/lines/0/hs_code"]
    assert "45.50 = 4550.00, not 4500.00" in found["/lines/0/amount"]
    assert "no heading 7700" in found["/lines/1/hs_code"]
    assert "one currency throughout" in found["/lines/1/currency"]
    assert "10" in found["/lines/2/hs_code"]
    assert "more than the gross weight" in found["/lines/0/net_weight_kg"]
    assert "more than the gross weight" in found["/net_weight_kg"]
    assert "not the sum of the line amounts" in found["/total_amount"]


def test_an_invoice_accepts_a_six_digit_code_and_no_credit_code_the_declaration_does_not() -> None:
    values = order(consignor_uscc="")
    values["lines"][0]["hs_code"] = "851650"
    assert read_order(values, {}, ("commercial_invoice", "proforma_invoice")).lines[0].hs_code == "851650"
    found = problems(values, ("export_declaration",))
    assert set(found) == {"/consignor_uscc", "/lines/0/hs_code"}


def test_the_exporter_settings_fill_in_the_consignor() -> None:
    values = order(consignor_name_zh="", consignor_name_en="", consignor_address="", consignor_uscc="")
    config = {"exporter_name_zh": "深圳市远航贸易有限公司", "exporter_address": "深圳市南山区", "exporter_uscc": USCC}
    checked = read_order(values, config, KINDS)
    assert (checked.consignor.name_zh, checked.consignor.uscc) == ("深圳市远航贸易有限公司", USCC)


def test_currency_must_be_iso_4217_and_amounts_not_finer_than_its_unit() -> None:
    assert set(problems(order(currency="USDX"))) == {"/currency"}
    assert "finer" in problems(order(freight="350.001"))["/freight"]
    assert "one currency" in problems(order(insurance={"amount": 1250, "currency": "EUR"}))["/insurance"]
    yen = order(currency="JPY", freight="350", insurance="13", total_amount="4795")
    yen["lines"][0].update(unit_price="45.5", amount="4550")
    yen["lines"][1].update(unit_price="12.25", amount="245")  # 20 × 12.25 = 245 yen exactly
    assert read_order(yen, {}, KINDS).total_amount == Decimal(4795)
    yen["total_amount"] = "4796"
    assert "not the sum" in problems(yen)["/total_amount"]


def test_amounts_are_decimal_to_the_cent_whatever_the_json_number() -> None:
    values = order(total_amount=None)
    values["lines"] = [dict(ORDER["lines"][0], quantity=3, unit_price=0.1, amount=0.3)]
    checked = read_order(values, {}, ("commercial_invoice",))
    assert checked.lines[0].amount == Decimal("0.30")  # float 0.1 × 3 would be 0.30000000000000004
    values["lines"][0]["amount"] = 0.31
    assert "= 0.30, not 0.31" in problems(values, ("commercial_invoice",))["/lines/0/amount"]


def test_the_declaration_needs_its_own_boxes() -> None:
    values = order(incoterm="DAP", transport_mode="", trade_mode="110")
    values["lines"][0]["name_zh"] = ""
    found = problems(values, ("export_declaration",))
    assert set(found) == {"/incoterm", "/transport_mode", "/trade_mode", "/lines/0/name_zh"}
    cif = order(freight=None, insurance=None)
    assert set(problems(cif, ("export_declaration",))) == {"/freight", "/insurance"}
    assert read_order(order(incoterm="DAP", freight=None, insurance=None), {}, ("commercial_invoice",))


def test_shipping_documents_need_packages_and_weights() -> None:
    values = order(packages=None)
    for line in values["lines"]:
        line.pop("gross_weight_kg")
    assert set(problems(values, ("packing_list",))) == {"/packages", "/gross_weight_kg"}
    assert read_order(values, {}, ("proforma_invoice",)).gross_weight is None


def test_an_order_without_lines_or_number_is_refused() -> None:
    assert set(problems({"lines": []})) >= {"/order_number", "/lines", "/currency", "/consignee_address"}


def test_unified_social_credit_codes() -> None:
    assert uscc_problem(USCC) is None
    assert uscc_problem("91110000600037341L") is None  # another real-format code with a correct check
    assert "18 characters" in (uscc_problem("9135010") or "")
    assert "check character" in (uscc_problem("91350100M000100Y40") or "")
    assert "upper-case letters" in (uscc_problem("91350100M000100O43") or "")


def test_hs_codes_and_the_shipped_hs_2022_headings() -> None:
    table = headings()
    assert len(table) == 1228
    assert {"2404", "3827", "8485", "8524", "8549", "8806", "8807"} <= set(table)  # new in 2022
    assert not {"8107", "8803", "8469", "0503"} & set(table)  # deleted in 2022 or before
    assert table["8516"].description_zh.startswith("电热水器")
    assert hs_code_problem("8516500000", china=True) is None
    assert hs_code_problem("851650", china=False) is None
    assert hs_code_problem("85165", china=False) is not None
    assert hs_code_problem("8516500000", china=False) is None
    assert hs_code_problem("85165000", china=True) is not None
    assert "no heading 9999" in (hs_code_problem("9999000000", china=True) or "")


def test_country_codes_are_iso_3166() -> None:
    assert country_code("de") == "DE"
    assert country_code("DEU") == "DE"
    assert country_code("XX") is None
    assert country_code("Germany") is None
