"""A decision's condition in people's words, for the flowchart's edges: ``record.amount > 5000``
becomes "金额 > 5000" / "Amount > 5000".

The condition is read with the expression language's own parser (:func:`services.expressions.syntax_tree`,
the grammar the engine evaluates), then worded node by node: a field by its label (the linked
collection's, the run's data fields', a form step's), ``==`` as "等于"/"is", ``and``/``or`` as
words, strings in quotes, ``today()`` as "今天"/"today", an amount of a money field in its currency.
What cannot be read (a syntax error) is shown as written, without its ``data.``/``record.`` prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from babel import numbers as babel_numbers
from lark import Token, Tree

from services.expressions import ExpressionError, string_value, syntax_tree
from services.sops.definition import Definition, FormStep
from services.web.i18n import N_, babel_name, translate

ROOTS = ("data", "record")
_PREFIX = re.compile(r"\b(?:data|record)\.")

# How tightly each rule binds: a part that binds more loosely than its place is put in brackets.
_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)
_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "in_", "not_in"}
_SYMBOLS = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥", "add": "+", "sub": "−", "mul": "×", "div": "÷", "mod": "%"}
_ARITHMETIC = {"add": _SUM, "sub": _SUM, "mul": _PRODUCT, "div": _PRODUCT, "mod": _PRODUCT}

IS = N_("{left} is {right}")
IS_NOT = N_("{left} is not {right}")
IS_EMPTY = N_("{left} is empty")
IS_NOT_EMPTY = N_("{left} is not empty")
IS_YES = N_("{left}: yes")
IS_NO = N_("{left}: no")
ONE_OF = N_("{left} is one of {right}")
NOT_ONE_OF = N_("{left} is not one of {right}")
CONTAINS = N_("{left} contains {right}")
NOT_CONTAINS = N_("{left} does not contain {right}")
STARTS_WITH = N_("{left} starts with {right}")
ENDS_WITH = N_("{left} ends with {right}")
AND = N_("{left} and {right}")
OR = N_("{left} or {right}")
NOT = N_("not {operand}")
COUNT_OF = N_("number of {value}")
YES, NO, EMPTY = N_("yes"), N_("no"), N_("empty")
TODAY, NOW = N_("today"), N_("now")
LIST_SEPARATOR = N_(", ")


@dataclass(frozen=True)
class FieldWords:
    """How a field is named for people, and a money field's currency (its amounts are worded as money)."""

    label: str
    currency: str | None = None


class _CollectionField(Protocol):
    key: str
    label: str
    type: str
    currency: str | None


def field_words(definition: Definition, collection_fields: Iterable[_CollectionField] = ()) -> dict[str, FieldWords]:
    """``data.x``/``record.x`` → its words: the collection's fields, the run's data fields and the
    fields of form steps (the first label found wins: the collection's own, then the definition's)."""
    found: dict[str, FieldWords] = {}
    for field in collection_fields:
        currency = field.currency if field.type == "money" else None
        found.setdefault(f"record.{field.key}", FieldWords(field.label, currency))
    for data in definition.data:
        if data.label:
            found.setdefault(f"data.{data.key}", FieldWords(data.label))
    for step in definition.steps:
        if isinstance(step, FormStep):
            for form_field in step.fields:
                found.setdefault(f"{form_field.target}.{form_field.key}", FieldWords(form_field.label))
    return found


def plain_condition(expression: str) -> str:
    """A condition as written, a little plainer: no ``data.``/``record.`` prefixes, single ``=``."""
    return _PREFIX.sub("", expression).replace("==", "=").strip()


def condition_label(expression: str, locale: str, fields: Mapping[str, FieldWords] | None = None) -> str:
    """``expression`` (a decision's condition) in ``locale``'s words, fields named by ``fields``."""
    try:
        tree = syntax_tree(expression)
    except ExpressionError:
        return plain_condition(expression)
    text, _binds = _Wording(locale, fields or {}).say(tree)
    return text


class _Wording:
    def __init__(self, locale: str, fields: Mapping[str, FieldWords]) -> None:
        self.locale = locale
        self.fields = fields

    def words(self, message: str, **params: object) -> str:
        return translate(message, self.locale, **params)

    def say(self, node: Tree[Token] | Token) -> tuple[str, int]:
        """The words for ``node`` and how tightly they bind."""
        if isinstance(node, Token):  # pragma: no cover - every terminal sits under an aliased rule
            return str(node), _ATOM
        rule = str(node.data)
        if rule in _COMPARISONS:
            return self.comparison(rule, node.children[0], node.children[1]), _COMPARE
        if rule in ("and_", "or_"):
            binds = _AND if rule == "and_" else _OR
            left, right = (self.part(child, binds) for child in node.children)
            return self.words(AND if rule == "and_" else OR, left=left, right=right), binds
        if rule == "not_":
            return self.words(NOT, operand=self.part(node.children[0], _ATOM)), _NOT
        if rule in _ARITHMETIC:
            binds = _ARITHMETIC[rule]
            left = self.part(node.children[0], binds)
            right = self.part(node.children[1], binds + 1)
            return f"{left} {_SYMBOLS[rule]} {right}", binds
        if rule in ("neg", "pos"):
            return ("-" if rule == "neg" else "+") + self.part(node.children[0], _UNARY), _UNARY
        return self.atom(node), _ATOM

    def part(self, node: Tree[Token] | Token, binds: int) -> str:
        text, own = self.say(node)
        return f"({text})" if own < binds else text

    def atom(self, node: Tree[Token]) -> str:
        rule = str(node.data)
        if rule == "number":
            return str(node.children[0])
        if rule == "string":
            token = node.children[0]
            assert isinstance(token, Token)
            return f"“{string_value(token)}”"
        if rule in ("true", "false", "null"):
            return self.words({"true": YES, "false": NO, "null": EMPTY}[rule])
        if rule == "list":
            return self.words(LIST_SEPARATOR).join(self.part(child, _COMPARE + 1) for child in node.children)
        if rule == "name":
            return self.name(node)
        if rule == "call":
            return self.call(node)
        return str(node)  # pragma: no cover - the grammar and this class are kept in step

    def _path(self, node: Tree[Token] | Token) -> str | None:
        if isinstance(node, Tree) and node.data == "name":
            return ".".join(str(token) for token in node.children)
        return None

    def _field(self, node: Tree[Token] | Token) -> FieldWords | None:
        path = self._path(node)
        if path is None:
            return None
        found = self.fields.get(path)
        if found is None and path.endswith(".amount"):  # a money field's amount
            found = self.fields.get(path.removesuffix(".amount"))
        return found

    def name(self, node: Tree[Token]) -> str:
        path = self._path(node) or ""
        found = self._field(node)
        if found is not None:
            return found.label
        parts = path.split(".")
        if len(parts) > 1 and parts[0] in ROOTS:
            parts = parts[1:]
        return " ".join(part.replace("_", " ") for part in parts)

    def call(self, node: Tree[Token]) -> str:
        name_token, *args = node.children
        name = str(name_token)
        if name == "today" and not args:
            return self.words(TODAY)
        if name == "now" and not args:
            return self.words(NOW)
        if name in ("lower", "upper") and len(args) == 1:
            return self.part(args[0], _ATOM)  # the case of a text does not change what it says
        if name == "len" and len(args) == 1:
            return self.words(COUNT_OF, value=self.part(args[0], _ATOM))
        affix = {"contains": CONTAINS, "startswith": STARTS_WITH, "endswith": ENDS_WITH}.get(name)
        if affix is not None and len(args) == 2:
            return self.words(affix, left=self.part(args[0], _SUM), right=self.part(args[1], _SUM))
        said = ", ".join(self.say(arg)[0] for arg in args)
        return f"{name}({said})"

    def value(self, node: Tree[Token] | Token, other: Tree[Token] | Token, binds: int) -> str:
        """``node`` as compared with ``other``: a number compared with a money field is money."""
        field = self._field(other)
        if field is not None and field.currency and isinstance(node, Tree) and node.data == "number":
            return self.money(str(node.children[0]), field.currency)
        return self.part(node, binds)

    def money(self, minor_units: str, currency: str) -> str:
        try:
            digits = babel_numbers.get_currency_precision(currency)
            amount = Decimal(minor_units).scaleb(-digits)
            return babel_numbers.format_currency(amount, currency, locale=babel_name(self.locale))
        except (ArithmeticError, ValueError):  # pragma: no cover - a currency Babel does not know
            return minor_units

    def comparison(self, rule: str, left: Tree[Token] | Token, right: Tree[Token] | Token) -> str:
        said_left = self.value(left, right, _SUM)
        literal = str(right.data) if isinstance(right, Tree) else ""
        if rule in ("eq", "ne") and literal == "null":
            return self.words(IS_EMPTY if rule == "eq" else IS_NOT_EMPTY, left=said_left)
        if rule in ("eq", "ne") and literal in ("true", "false"):
            holds = (literal == "true") == (rule == "eq")
            return self.words(IS_YES if holds else IS_NO, left=said_left)
        said_right = self.value(right, left, _SUM)
        if rule in ("eq", "ne"):
            return self.words(IS if rule == "eq" else IS_NOT, left=said_left, right=said_right)
        if rule in ("in_", "not_in"):
            if literal == "list":  # a value among a few: "status is one of “Paid”, “Sent”"
                return self.words(ONE_OF if rule == "in_" else NOT_ONE_OF, left=said_left, right=said_right)
            # a value inside a text or a list field: "tags contains “VIP”"
            return self.words(CONTAINS if rule == "in_" else NOT_CONTAINS, left=said_right, right=said_left)
        return f"{said_left} {_SYMBOLS[rule]} {said_right}"
