"""Field definitions, value coercion and type conversion of collections (a pure module)."""

from __future__ import annotations

from typing import Any

import pytest

from services.records.fields import (
    FieldDef,
    FieldType,
    FieldValueError,
    coerce_value,
    convert_value,
    validate_field_defs,
    validate_value,
    value_to_text,
)


def fd(key: str = "f", type: str = "text", **kw: Any) -> FieldDef:
    return FieldDef(key=key, label=key.title(), type=type, **kw)


def codes(defs: list[FieldDef]) -> set[tuple[str, str]]:
    return {(p.pointer, p.code) for p in validate_field_defs(defs)}


def test_valid_definitions_of_every_type_have_no_problem() -> None:
    defs = [
        fd("name", required=True, unique=True, pattern=r"[A-Z]-\d+", min=3, max=20),
        fd("notes", "long_text"),
        fd("qty", "number", min=0, max=1000, default=1),
        fd("price", "money", currency="CNY", default={"amount": 100, "currency": "CNY"}),
        fd("due", "date"),
        fd("at", "datetime"),
        fd("paid", "boolean", default=False),
        fd("status", "select", options=["open", "done"], default="open"),
        fd("tags", "multi_select", options=["red", "blue"]),
        fd("mail", "email"),
        fd("tel", "phone", region="CN"),
        fd("owner", "user"),
        fd("company", "entity"),
        fd("photo", "file"),
        fd("supplier", "relation", target_collection="suppliers"),
        fd("lines", "line_items", fields=[fd("sku"), fd("qty", "number"), fd("unit_price", "money", currency="USD")]),
    ]
    assert validate_field_defs(defs) == []
    assert {d.type for d in defs} == {t.value for t in FieldType}


def test_every_definition_problem_is_listed_at_once() -> None:
    found = codes(
        [
            fd("Bad Key"),
            fd("dup"),
            fd("dup", "number", min=5, max=1),
            fd("pat", pattern="(unclosed"),
            fd("choice", "select"),
            fd("kind", "nonsense"),
            fd("amount", "number", default="ten"),
            fd("rel", "relation"),
            fd("lines", "line_items"),
            fd("when", "date", min=1),
            fd("id"),
            fd("opts", "select", options=["a", "a", "b;c"]),
            fd("nested", "line_items", fields=[fd("inner", "line_items", fields=[fd("x")])]),
            fd("money", "money", currency="yuan"),
            fd("flag", "boolean", unique=True),
        ]
    )
    assert found >= {
        ("/fields/0/key", "invalid_key"),
        ("/fields/2/key", "duplicate_key"),
        ("/fields/2/min", "min_above_max"),
        ("/fields/3/pattern", "invalid_pattern"),
        ("/fields/4/options", "options_required"),
        ("/fields/5/type", "unknown_type"),
        ("/fields/6/default", "invalid_default"),
        ("/fields/7/target_collection", "target_required"),
        ("/fields/8/fields", "sub_fields_required"),
        ("/fields/9/min", "bounds_not_supported"),
        ("/fields/10/key", "reserved_key"),
        ("/fields/11/options/1", "duplicate_option"),
        ("/fields/11/options/2", "invalid_option"),
        ("/fields/12/fields/0/type", "type_not_allowed_in_line_items"),
        ("/fields/13/currency", "invalid_currency"),
        ("/fields/14/unique", "unique_not_supported"),
    }


def test_default_must_be_an_option() -> None:
    assert ("/fields/0/default", "invalid_default") in codes([fd("s", "select", options=["a"], default="b")])


@pytest.mark.parametrize(
    ("definition", "raw", "stored"),
    [
        (fd(), "  hello ", "hello"),
        (fd(type="long_text"), "  keep\n spaces ", "  keep\n spaces "),
        (fd(type="number"), 2.0, 2),
        (fd(type="number"), 2.5, 2.5),
        (fd(type="money"), {"amount": 1250, "currency": "CNY"}, {"amount": 1250, "currency": "CNY"}),
        (fd(type="money", currency="USD"), {"amount": 5}, {"amount": 5, "currency": "USD"}),
        (fd(type="date"), "2026-03-01", "2026-03-01"),
        (fd(type="datetime"), "2026-03-01T09:30:00+08:00", "2026-03-01T01:30:00Z"),
        (fd(type="boolean"), True, True),
        (fd(type="select", options=["a", "b"]), "b", "b"),
        (fd(type="multi_select", options=["a", "b"]), ["b", "a", "b"], ["b", "a"]),
        (fd(type="email"), "Li.Wei@Example.COM", "Li.Wei@example.com"),
        (fd(type="phone"), "138 0013 8000", "+8613800138000"),
        (fd(type="phone", region="US"), "(201) 555-0123", "+12015550123"),
        (fd(type="user"), "0192f0c4-7a3b-7cde-8f00-000000000001", "0192f0c4-7a3b-7cde-8f00-000000000001"),
        (
            fd(type="line_items", fields=[fd("sku"), fd("qty", "number", default=1)]),
            [{"sku": "T-1"}, {"sku": "T-2", "qty": 3}],
            [{"sku": "T-1", "qty": 1}, {"sku": "T-2", "qty": 3}],
        ),
        (fd(required=False), None, None),
    ],
)
def test_values_are_stored_in_canonical_form(definition: FieldDef, raw: Any, stored: Any) -> None:
    assert coerce_value(definition, raw) == stored


@pytest.mark.parametrize(
    ("definition", "raw", "code"),
    [
        (fd(required=True), None, "required"),
        (fd(required=True), "   ", "required"),
        (fd(), 12, "wrong_type"),
        (fd(pattern=r"[A-Z]+"), "abc", "pattern_mismatch"),
        (fd(max=3), "abcd", "above_max"),
        (fd(type="number"), "12", "wrong_type"),
        (fd(type="number"), True, "wrong_type"),
        (fd(type="number", min=0), -1, "below_min"),
        (fd(type="number"), 2**60, "out_of_range"),
        (fd(type="money"), 12.5, "wrong_type"),
        (fd(type="money"), {"amount": 1.5, "currency": "CNY"}, "wrong_type"),
        (fd(type="money", currency="CNY"), {"amount": 1, "currency": "USD"}, "wrong_currency"),
        (fd(type="money"), {"amount": 1}, "invalid_currency"),
        (fd(type="date"), "2026-02-30", "invalid_date"),
        (fd(type="datetime"), "2026-03-01T09:30:00", "timezone_required"),
        (fd(type="boolean"), "yes", "wrong_type"),
        (fd(type="select", options=["a"]), "z", "not_an_option"),
        (fd(type="multi_select", options=["a"]), ["a", "z"], "not_an_option"),
        (fd(type="multi_select", options=["a"]), "a", "wrong_type"),
        (fd(type="email"), "not-an-email", "invalid_email"),
        (fd(type="phone"), "12345", "invalid_phone"),
        (fd(type="entity"), "not-a-uuid", "invalid_id"),
        (fd(type="line_items", fields=[fd("qty", "number")]), [{"qty": "x"}], "wrong_type"),
        (fd(type="line_items", fields=[fd("qty", "number")]), [{"sku": 1}], "unknown_field"),
    ],
)
def test_wrong_values_are_refused_with_a_stable_code(definition: FieldDef, raw: Any, code: str) -> None:
    with pytest.raises(FieldValueError) as caught:
        coerce_value(definition, raw)
    assert caught.value.code == code


def test_line_item_problems_point_at_the_line_and_sub_field() -> None:
    with pytest.raises(FieldValueError) as caught:
        coerce_value(
            fd(type="line_items", fields=[fd("sku"), fd("qty", "number")]), [{"sku": "a", "qty": 1}, {"qty": "x"}]
        )
    assert caught.value.pointer == "/1/qty"


@pytest.mark.parametrize(
    ("definition", "cell", "stored"),
    [
        (fd(type="number"), "1,234.50", 1234.5),
        (fd(type="money", currency="CNY"), "12.50", {"amount": 1250, "currency": "CNY"}),
        (fd(type="money"), "USD 3", {"amount": 300, "currency": "USD"}),
        (fd(type="money"), "1000 JPY", {"amount": 1000, "currency": "JPY"}),
        (fd(type="boolean"), "是", True),
        (fd(type="boolean"), "no", False),
        (fd(type="multi_select", options=["a", "b"]), "a; b", ["a", "b"]),
        (fd(type="line_items", fields=[fd("sku")]), '[{"sku":"x"}]', [{"sku": "x"}]),
        (fd(type="text"), "", None),
    ],
)
def test_spreadsheet_cells_are_read(definition: FieldDef, cell: Any, stored: Any) -> None:
    assert coerce_value(definition, cell, from_text=True) == stored


def test_money_with_more_decimals_than_the_currency_is_refused() -> None:
    with pytest.raises(FieldValueError) as caught:
        coerce_value(fd(type="money", currency="CNY"), "1.234", from_text=True)
    assert caught.value.code == "too_precise"


@pytest.mark.parametrize(
    ("definition", "stored"),
    [
        (fd(type="money"), {"amount": 123456, "currency": "CNY"}),
        (fd(type="money"), {"amount": -5, "currency": "KWD"}),
        (fd(type="number"), 3.25),
        (fd(type="date"), "2026-01-31"),
        (fd(type="datetime"), "2026-01-31T23:00:00Z"),
        (fd(type="boolean"), False),
        (fd(type="multi_select", options=["红", "蓝"]), ["红", "蓝"]),
        (
            fd(type="line_items", fields=[fd("sku"), fd("p", "money", currency="CNY")]),
            [{"sku": "s", "p": {"amount": 1, "currency": "CNY"}}],
        ),
        (fd(type="phone"), "+8613800138000"),
    ],
)
def test_text_form_reads_back_to_the_same_value(definition: FieldDef, stored: Any) -> None:
    assert coerce_value(definition, value_to_text(definition, stored), from_text=True) == stored


@pytest.mark.parametrize(
    ("old", "new", "value", "converted"),
    [
        (fd(type="text"), fd(type="number"), "42", 42),
        (fd(type="number"), fd(type="text"), 3.5, "3.5"),
        (fd(type="number"), fd(type="money", currency="CNY"), 12.5, {"amount": 1250, "currency": "CNY"}),
        (fd(type="money"), fd(type="number"), {"amount": 1250, "currency": "CNY"}, 12.5),
        (fd(type="select", options=["a"]), fd(type="multi_select", options=["a"]), "a", ["a"]),
        (fd(type="multi_select", options=["a"]), fd(type="select", options=["a"]), ["a"], "a"),
        (fd(type="date"), fd(type="datetime"), "2026-05-01", "2026-05-01T00:00:00Z"),
        (fd(type="datetime"), fd(type="date"), "2026-05-01T22:00:00Z", "2026-05-01"),
        (fd(type="text"), fd(type="boolean"), "yes", True),
        (fd(type="money"), fd(type="text"), {"amount": 1250, "currency": "CNY"}, "12.50 CNY"),
        (fd(type="text"), fd(type="select", options=["open"]), "open", "open"),
        (fd(type="number"), fd(type="number"), None, None),
    ],
)
def test_type_changes_convert_values(old: FieldDef, new: FieldDef, value: Any, converted: Any) -> None:
    assert convert_value(old, new, value) == converted


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        (fd(type="text"), fd(type="number"), "forty-two"),
        (fd(type="text"), fd(type="date"), "soon"),
        (fd(type="multi_select", options=["a", "b"]), fd(type="select", options=["a", "b"]), ["a", "b"]),
        (fd(type="number"), fd(type="money"), 5),
        (fd(type="text"), fd(type="line_items", fields=[fd("x")]), "x"),
        (fd(type="select", options=["a", "b"]), fd(type="select", options=["a"]), "b"),
    ],
)
def test_type_changes_refuse_values_that_do_not_fit(old: FieldDef, new: FieldDef, value: Any) -> None:
    with pytest.raises(FieldValueError):
        convert_value(old, new, value)


def test_validate_value_for_bare_types() -> None:
    assert validate_value("number", 3) == 3
    assert validate_value("select", "x", options=["x"]) == "x"
    for type_name, raw in (("number", "3"), ("nonsense", 1), ("select", "y")):
        with pytest.raises(FieldValueError):
            validate_value(type_name, raw, options=["x"])
