"""The safe expression language: examples of every construct, its limits, and properties."""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.expressions import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_SOURCE_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
    evaluate,
)

NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
CONTEXT: dict[str, Any] = {
    "data": {"amount": 6000, "items": [1, 2, 3], "note": "Urgent order", "ok": True, "nested": {"x": {"y": 7}}},
    "record": {"status": "open", "country": "US", "shipped_on": "2024-04-30", "rate": 0.25},
    "event": {"fields": ["status", "amount"]},
    "now": NOW,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literals
        ("42", 42),
        ("3.5", 3.5),
        ("1e3", 1000.0),
        ("'single'", "single"),
        ('"double"', "double"),
        (r"'it\'s'", "it's"),
        (r'"tab\there\u0041"', "tab\thereA"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 'a', null]", [1, "a", None]),
        ("[]", []),
        ("[1, 2,]", [1, 2]),
        # names
        ("data.amount", 6000),
        ("data.nested.x.y", 7),
        ("data.missing", None),
        ("data.missing.deeper", None),
        ("nothing.here", None),
        ("data.amount.digits", None),
        # arithmetic and precedence
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("7 / 2", 3.5),
        ("-7 % 3", 2),
        ("-(2 + 3)", -5),
        ("+4", 4),
        ("3 - -2", 5),
        ("'ab' + 'cd'", "abcd"),
        ("[1] + [2]", [1, 2]),
        ("data.amount * 2", 12000),
        ("data.missing + 1", None),
        # comparisons
        ("data.amount >= 5000", True),
        ("data.amount < 5000", False),
        ("record.status == 'open'", True),
        ("record.status != 'open'", False),
        ("'a' < 'b'", True),
        ("1 == 1.0", True),
        ("true == 1", False),
        ("[1, 2] == [1, 2]", True),
        ("data.missing == null", True),
        ("data.missing != null", False),
        ("data.missing < 1", False),
        ("data.missing >= 1", False),
        ("null > null", False),
        # logic (both spellings); results are booleans
        ("true and false", False),
        ("true && true", True),
        ("false or true", True),
        ("false || false", False),
        ("not true", False),
        ("!false", True),
        ("not data.missing", True),
        ("data.amount and record.status", True),
        ("'' or 0", False),
        ("not 1 == 2", True),
        ("1 < 2 and 2 < 3 or false", True),
        ("record.amount >= 5000 and record.country != 'CN'", False),
        ("data.amount >= 5000 and record.country != 'CN'", True),
        # membership
        ("record.status in ['open', 'closed']", True),
        ("record.status not in ['open', 'closed']", False),
        ("'Urgent' in data.note", True),
        ("'status' in event.fields", True),
        ("'x' in data.nested", True),
        ("1 in data.missing", False),
        ("1 not in data.missing", False),
        ("data.missing in [null]", True),
        # functions
        ("len(data.items)", 3),
        ("len('abc')", 3),
        ("len(data.missing)", None),
        ("lower('ABC')", "abc"),
        ("upper(record.country)", "US"),
        ("contains(data.note, 'order')", True),
        ("contains(data.items, 2)", True),
        ("startswith(data.note, 'Urg')", True),
        ("endswith(data.note, 'Urg')", False),
        ("startswith(data.missing, 'x')", False),
        ("round(2.5)", 3),
        ("round(-2.5)", -3),
        ("round(1.005, 2)", 1.01),
        ("round(1234, -2)", 1200),
        ("abs(-3)", 3),
        ("min(3, 1, 2)", 1),
        ("max([3, 9, 2])", 9),
        ("max(data.missing, 4)", 4),
        ("min([])", None),
        ("now()", NOW),
        ("today()", date(2024, 5, 1)),
        # dates stored as ISO text compare with dates
        ("record.shipped_on < today()", True),
        ("record.shipped_on == '2024-04-30'", True),
        ("now() > today()", False),
    ],
)
def test_examples(source: str, expected: Any) -> None:
    result = evaluate(source, CONTEXT)
    assert result == expected
    assert type(result) is type(expected)


def test_names_lists_every_path_read() -> None:
    expression = compile_expression("data.amount > 5 and record.status in ['a'] or len(data.items) > max(record.x, 1)")
    assert expression.names == frozenset({"data.amount", "record.status", "data.items", "record.x"})
    assert compile_expression("1 + 2").names == frozenset()


def test_compile_is_cached() -> None:
    assert compile_expression("data.a == 1") is compile_expression("data.a == 1")


def test_today_prefers_an_explicit_context_value() -> None:
    assert evaluate("today()", {"today": date(2024, 1, 2), "now": NOW}) == date(2024, 1, 2)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("'a' < 1", "cannot compare text with number using '<'"),
        ("'a' - 1", "cannot apply '-' to text and number"),
        ("'a' + 1", "cannot apply '+' to text and number"),
        ("'a' * 3", "cannot apply '*' to text and number"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("-'a'", "cannot negate text"),
        ("len(5)", "len() needs text or a list"),
        ("lower(1)", "lower() needs text"),
        ("1 in 5", "'in' needs a list or text"),
        ("1 in 'abc'", "cannot look for number in text"),
        ("round('x')", "round() needs a number"),
        ("round(1.5, 1.5)", "second argument"),
        ("record.shipped_on < 3", "cannot compare"),
        ("'not a date' < today()", "is not an ISO date"),
        ("now()", "no 'now'"),
    ],
)
def test_type_errors_are_expression_errors(source: str, message: str) -> None:
    context = {k: v for k, v in CONTEXT.items() if not (source == "now()" and k == "now")}
    with pytest.raises(ExpressionError, match=re.escape(message)):
        evaluate(source, context)


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("1 +", 4),
        ("data.amount >", 14),
        ("a b", 3),
        ("x @ 1", 3),
        ("(1 + 2", 7),
        ("1 < 2 < 3", 7),
        ("'unterminated", 1),
        ("data.", 6),
        ("f(", 3),
    ],
)
def test_syntax_errors_name_the_column(source: str, position: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.position == position
    assert f"column {position}" in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("unknown(1)", "unknown function 'unknown'"),
        ("len()", "len() takes 1 argument"),
        ("contains('a')", "contains() takes 2 argument"),
        ("now(1)", "now() takes no arguments"),
        (r"'bad \q escape'", "unknown escape"),
    ],
)
def test_compile_errors(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(source)


def test_limits() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression("1" + " + 1" * MAX_SOURCE_LENGTH)
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_expression("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_expression("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, {}) == 1
    # Brackets inside text do not count.
    assert evaluate("'" + "(" * (MAX_DEPTH + 1) + "'", {}) == "(" * (MAX_DEPTH + 1)
    with pytest.raises(ExpressionError, match="too deeply nested"):
        compile_expression("-" * 400 + "1")
    # A long flat chain of conditions is fine.
    chain = " or ".join(f"data.amount == {n}" for n in range(80))
    assert evaluate(chain, CONTEXT) is False
    with pytest.raises(ExpressionError, match="at most"):
        compile_expression("[" + ",".join(["1"] * (MAX_LIST_ITEMS + 1)) + "]")
    assert evaluate("[" + ",".join(["1"] * MAX_LIST_ITEMS) + "]", {}) == [1] * MAX_LIST_ITEMS


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "().__class__",
        "data.__class__",
        "data.__class__.__mro__",
        "_private",
        "eval('1')",
        "exec('1')",
        "open('/etc/passwd')",
        "getattr(data, 'x')",
        "data['x']",
        "lambda: 1",
        "data.items.append(1)",
        "'a'.upper()",
        "[x for x in data.items]",
        "1 if true else 2",
    ],
)
def test_escapes_to_python_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(source, CONTEXT)


class _Spy(dict[str, Any]):
    """A mapping whose attribute access is recorded: the language must only ever use keys."""

    touched: list[str]

    def __getattribute__(self, name: str) -> Any:
        if name not in {"get", "__class__", "__len__", "__contains__", "__getitem__", "__iter__", "keys"}:
            object.__getattribute__(self, "touched").append(name)
        return super().__getattribute__(name)


def test_names_read_mapping_keys_never_attributes() -> None:
    spy = _Spy(amount=5)
    spy.touched = []
    assert evaluate("data.amount", {"data": spy}) == 5
    assert evaluate("data.values", {"data": spy}) is None
    assert evaluate("data.copy", {"data": spy}) is None
    assert object.__getattribute__(spy, "touched") == []

    class HasAttribute:
        amount = 99

    # An object that is not a mapping is opaque: its attributes are never read.
    assert evaluate("data.amount", {"data": HasAttribute()}) is None


# ---------------------------------------------------------------- properties

_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "%": operator.mod,
    "/": operator.truediv,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
ints = st.integers(min_value=-(10**12), max_value=10**12)


@given(a=ints, b=ints, c=ints, op1=st.sampled_from(sorted(_ARITH)), op2=st.sampled_from(sorted(_ARITH)))
def test_arithmetic_matches_python(a: int, b: int, c: int, op1: str, op2: str) -> None:
    source = f"{a} {op1} ({b}) {op2} {c}"
    python_source_result: Any
    try:
        # Python's own precedence for the same operators, spelled with operator functions.
        python_source_result = _python_arith(a, op1, b, op2, c)
    except ZeroDivisionError:
        with pytest.raises(ExpressionError, match="division by zero"):
            evaluate(source, {})
        return
    assert evaluate(source, {}) == python_source_result


def _python_arith(a: int, op1: str, b: int, op2: str, c: int) -> Any:
    high = {"*", "/", "%"}
    if op2 in high and op1 not in high:
        return _ARITH[op1](a, _ARITH[op2](b, c))
    return _ARITH[op2](_ARITH[op1](a, b), c)


@given(a=ints, b=ints, op=st.sampled_from(sorted(_COMPARE)))
def test_comparisons_match_python(a: int, b: int, op: str) -> None:
    assert evaluate(f"x.a {op} x.b", {"x": {"a": a, "b": b}}) is _COMPARE[op](a, b)
    assert evaluate(f"{a} {op} {b}", {}) is _COMPARE[op](a, b)


@given(a=st.booleans(), b=st.booleans(), c=st.booleans())
def test_logic_matches_python(a: bool, b: bool, c: bool) -> None:
    ctx = {"v": {"a": a, "b": b, "c": c}}
    assert evaluate("v.a or v.b and not v.c", ctx) is (a or (b and not c))
    assert evaluate("!(v.a || v.b) && v.c", ctx) is ((not (a or b)) and c)


@given(needle=ints, haystack=st.lists(ints, max_size=10))
def test_membership_matches_python(needle: int, haystack: list[int]) -> None:
    ctx = {"d": {"n": needle, "h": haystack}}
    assert evaluate("d.n in d.h", ctx) is (needle in haystack)
    assert evaluate("d.n not in d.h", ctx) is (needle not in haystack)


@settings(max_examples=300)
@given(source=st.text(max_size=60))
def test_garbage_raises_only_expression_errors(source: str) -> None:
    try:
        expression = compile_expression(source)
    except ExpressionError:
        return
    assert isinstance(expression, Expression)
    with contextlib.suppress(ExpressionError):
        expression.evaluate(CONTEXT)


_TOKENS = st.sampled_from(
    [
        "data.amount", "record.status", "1", "0", "2.5", "'x'", '"y"', "null", "true", "[", "]", "(", ")",
        ",", "+", "-", "*", "/", "%", "==", "!=", "<", ">=", "and", "or", "not", "in", "!", "&&", "||",
        "len(", "round(", "max(", "now()", "today()", "data.items", "data.nested", ".", "__class__",
    ]
)  # fmt: skip


@settings(max_examples=300)
@given(tokens=st.lists(_TOKENS, max_size=12))
def test_token_soup_raises_only_expression_errors(tokens: list[str]) -> None:
    source = " ".join(tokens)
    with contextlib.suppress(ExpressionError):
        evaluate(source, CONTEXT)
