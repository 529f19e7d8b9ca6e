"""The safe expression language of procedure decisions and automation conditions. Never ``eval``.

Parsed with a Lark grammar into a tree that is interpreted here: only literals, names into the
given context (``data.amount``, ``record.status``), comparisons, arithmetic, ``and``/``or``/``not``,
``in``, and a fixed set of functions. No attribute access on Python objects, no calls out.

The tree is compiled once into nested closures (``compile_expression`` is cached), so evaluating a
condition in a hot loop costs a few Python calls per node and nothing more.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

MAX_SOURCE_LENGTH: Final = 2000
MAX_DEPTH: Final = 32  # nesting of parentheses and lists
_MAX_TREE_DEPTH: Final = 150  # operators chained or nested; keeps compiling and evaluating off Python's stack limit
MAX_LIST_ITEMS: Final = 500
MAX_FUNCTION_ARGS: Final = 50

Context = Mapping[str, Any]
Evaluator = Callable[[Context], Any]


class ExpressionError(Exception):
    """A syntax error (with ``position``) or an evaluation error."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class NotFiniteError(ExpressionError):
    """A computation whose result is not a finite number (it overflowed): JSON has no such number,
    so the result could be neither stored nor sent."""


_GRAMMAR: Final = r"""
?start: or_expr

?or_expr: and_expr
        | or_expr ("or" | "||") and_expr -> or_

?and_expr: not_expr
         | and_expr ("and" | "&&") not_expr -> and_

?not_expr: comparison
         | ("not" | "!") not_expr -> not_

?comparison: sum
           | sum "==" sum -> eq
           | sum "!=" sum -> ne
           | sum "<" sum -> lt
           | sum "<=" sum -> le
           | sum ">" sum -> gt
           | sum ">=" sum -> ge
           | sum "in" sum -> in_
           | sum "not" "in" sum -> not_in

?sum: product
    | sum "+" product -> add
    | sum "-" product -> sub

?product: unary
        | product "*" unary -> mul
        | product "/" unary -> div
        | product "%" unary -> mod

?unary: atom
      | "-" unary -> neg
      | "+" unary -> pos

?atom: NUMBER -> number
     | STRING -> string
     | "true" -> true
     | "false" -> false
     | "null" -> null
     | "[" "]" -> list
     | "[" _items "]" -> list
     | NAME "(" ")" -> call
     | NAME "(" _items ")" -> call
     | NAME ("." NAME)* -> name
     | "(" or_expr ")"

_items: or_expr ("," or_expr)* ","?

NUMBER: /\d+(\.\d+)?([eE][+-]?\d+)?/
STRING: /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/
NAME: /[A-Za-z_][A-Za-z0-9_]*/

%ignore /[ \t\r\n]+/
"""

_PARSER: Final = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)

# Readable spellings of the grammar's terminals, for "expected ..." in syntax errors.
_TERMINAL_TEXT: Final[dict[str, str]] = {
    t.name: (t.pattern.value if t.pattern.type == "str" else t.name.lower()) for t in _PARSER.terminals
}
_TERMINAL_TEXT.update({"NUMBER": "a number", "STRING": "a string", "NAME": "a name", "$END": "the end"})


class Expression:
    """A compiled expression: ``names`` are the dotted paths it reads; ``evaluate(context)`` runs it."""

    __slots__ = ("_fn", "names", "source")

    source: str
    names: frozenset[str]

    def __init__(self, source: str, names: frozenset[str], fn: Evaluator) -> None:
        self.source = source
        self.names = names
        self._fn = fn

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            return self._fn(context)
        except ExpressionError:
            raise
        except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
            # The explicit type checks below catch what users write; this catches the edges
            # (a float overflow, an aware datetime compared with a naive one) without leaking them.
            raise ExpressionError(f"cannot evaluate {self.source!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Parse ``source``; raises ExpressionError naming the position of a syntax error.

    ``position`` is the 1-based character offset of the problem in ``source`` (the column, for a
    one-line expression).
    """
    tree = syntax_tree(source)
    names: set[str] = set()
    fn = _Compiler(names).compile(tree)
    return Expression(source, frozenset(names), fn)


def syntax_tree(source: str) -> Tree[Token]:
    """The parsed tree of ``source``, checked as :func:`compile_expression` checks it (raises
    ExpressionError). For code that reads an expression rather than runs it, e.g. to word a
    condition for people; its rules are the grammar's (``eq``, ``and_``, ``name``, ``string`` …)."""
    if not isinstance(source, str):
        raise ExpressionError("an expression must be a string")
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_SOURCE_LENGTH} characters")
    if not source.strip():
        raise ExpressionError("the expression is empty", position=1)
    _check_brackets(source)
    try:
        tree = _PARSER.parse(source)
    except UnexpectedInput as exc:
        raise _syntax_error(source, exc) from None
    except LarkError as exc:  # pragma: no cover - any other parser failure is still a syntax error
        raise ExpressionError(f"syntax error: {exc}") from None
    _check_depth(tree)
    return tree


def string_value(token: Token) -> str:
    """The text of a ``STRING`` token, its quotes and escapes undone."""
    return _unquote(token)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Compile (cached) and evaluate."""
    return compile_expression(source).evaluate(context)


# ---------------------------------------------------------------- parsing helpers


def _syntax_error(source: str, exc: UnexpectedInput) -> ExpressionError:
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        return ExpressionError(f"unexpected character {source[offset]!r} at column {offset + 1}", position=offset + 1)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = sorted({_TERMINAL_TEXT.get(name, name) for name in exc.expected})
        hint = f"; expected {', '.join(expected)}" if expected and len(expected) <= 8 else ""
        if token.type == "$END":
            offset = len(source.rstrip())
            return ExpressionError(f"unexpected end of expression at column {offset + 1}{hint}", position=offset + 1)
        offset = token.start_pos if token.start_pos is not None else 0
        return ExpressionError(f"unexpected {str(token)!r} at column {offset + 1}{hint}", position=offset + 1)
    offset = getattr(exc, "pos_in_stream", None) or 0  # pragma: no cover - LALR raises the two above
    return ExpressionError(f"syntax error at column {offset + 1}", position=offset + 1)  # pragma: no cover


def _check_brackets(source: str) -> None:
    """Refuse parentheses and lists nested deeper than MAX_DEPTH (quoted text does not count)."""
    depth = 0
    quote: str | None = None
    escaped = False
    for offset, char in enumerate(source):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote or char == "\n":
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
            if depth > MAX_DEPTH:
                raise ExpressionError(
                    f"the expression is nested more than {MAX_DEPTH} levels deep (column {offset + 1})",
                    position=offset + 1,
                )
        elif char in ")]":
            depth -= 1


def _check_depth(tree: Tree[Token]) -> None:
    """Refuse trees deeper than _MAX_TREE_DEPTH before compiling them recursively."""
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_TREE_DEPTH:
            raise ExpressionError("the expression is too deeply nested; split it into simpler conditions")
        if isinstance(node, Tree):
            stack.extend((child, depth + 1) for child in node.children)


_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_ESCAPE_RE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")


def _unquote(token: Token) -> str:
    body = str(token)[1:-1]

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u") and len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        offset = (token.start_pos or 0) + 1 + match.start()
        raise ExpressionError(f"unknown escape '\\{code}' in a string at column {offset + 1}", position=offset + 1)

    return _ESCAPE_RE.sub(replace, body) if "\\" in body else body


# ---------------------------------------------------------------- values and their types


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "value"


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if _is_number(value):
        return bool(value)
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value) > 0
    return True


def _equal(left: Any, right: Any) -> bool:
    # true is not 1: a boolean equals only a boolean.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, (date, datetime)) or isinstance(right, (date, datetime)):
        try:
            left, right = _as_comparable_dates(left, right)
        except ExpressionError:
            return False
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _parse_date_text(text: str, as_datetime: bool) -> date | datetime:
    try:
        return datetime.fromisoformat(text) if as_datetime else date.fromisoformat(text)
    except ValueError:
        kind = "datetime" if as_datetime else "date"
        raise ExpressionError(f"{text!r} is not an ISO {kind}") from None


def _as_comparable_dates(left: Any, right: Any) -> tuple[Any, Any]:
    """Dates stored as ISO text compare with dates; a datetime compared with a date uses its day."""
    if isinstance(left, str):
        left = _parse_date_text(left, isinstance(right, datetime))
    if isinstance(right, str):
        right = _parse_date_text(right, isinstance(left, datetime))
    if isinstance(left, datetime) and not isinstance(right, datetime) and isinstance(right, date):
        left = left.date()
    elif isinstance(right, datetime) and not isinstance(left, datetime) and isinstance(left, date):
        right = right.date()
    if not (isinstance(left, date) and isinstance(right, date)):
        raise ExpressionError(f"cannot compare {_type_name(left)} with {_type_name(right)}")
    if isinstance(left, datetime) and isinstance(right, datetime) and (left.tzinfo is None) != (right.tzinfo is None):
        raise ExpressionError("cannot compare a datetime with a timezone with one without")
    return left, right


_ORDER_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _ordered(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return False
    compare = _ORDER_OPS[op]
    if _is_number(left) and _is_number(right):
        return compare(left, right)
    if isinstance(left, str) and isinstance(right, str):
        return compare(left, right)
    if isinstance(left, (date, datetime)) or isinstance(right, (date, datetime)):
        a, b = _as_comparable_dates(left, right)
        return compare(a, b)
    raise ExpressionError(f"cannot compare {_type_name(left)} with {_type_name(right)} using '{op}'")


def _contained(needle: Any, haystack: Any) -> bool | None:
    """``needle in haystack``; None when the haystack is null (so both ``in`` and ``not in`` are false)."""
    if haystack is None:
        return None
    if isinstance(haystack, str):
        if needle is None:
            return False
        if not isinstance(needle, str):
            raise ExpressionError(f"cannot look for {_type_name(needle)} in text")
        return needle in haystack
    if isinstance(haystack, (list, tuple)):
        return any(_equal(needle, item) for item in haystack)
    if isinstance(haystack, Mapping):
        return isinstance(needle, str) and needle in haystack
    raise ExpressionError(f"'in' needs a list or text on its right, not {_type_name(haystack)}")


def _arith_error(op: str, left: Any, right: Any) -> ExpressionError:
    return ExpressionError(f"cannot apply '{op}' to {_type_name(left)} and {_type_name(right)}")


def _finite(op: str, left: Any, right: Any, result: Any) -> Any:
    if isinstance(result, float) and not math.isfinite(result):
        raise NotFiniteError(f"{left!r} {op} {right!r} is too large a number")
    return result


def _add(left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    if _is_number(left) and _is_number(right):
        return _finite("+", left, right, left + right)
    if isinstance(left, str) and isinstance(right, str):
        return left + right
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return [*left, *right]
    raise _arith_error("+", left, right)


def _numeric(op: str, compute: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        if left is None or right is None:
            return None
        if not (_is_number(left) and _is_number(right)):
            raise _arith_error(op, left, right)
        if op in "/%" and right == 0:
            raise ExpressionError("division by zero")
        return _finite(op, left, right, compute(left, right))

    return apply


_BINARY_ARITH: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "add": _add,
    "sub": _numeric("-", lambda a, b: a - b),
    "mul": _numeric("*", lambda a, b: a * b),
    "div": _numeric("/", lambda a, b: a / b),
    "mod": _numeric("%", lambda a, b: a % b),
}


# ---------------------------------------------------------------- functions


def _fn_len(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    raise ExpressionError(f"len() needs text or a list, not {_type_name(value)}")


def _text_fn(name: str, transform: Callable[[str], str]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ExpressionError(f"{name}() needs text, not {_type_name(value)}")
        return transform(value)

    return apply


def _fn_contains(haystack: Any, needle: Any) -> bool:
    return bool(_contained(needle, haystack))


def _affix_fn(name: str, test: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def apply(text: Any, affix: Any) -> bool:
        if text is None or affix is None:
            return False
        if not (isinstance(text, str) and isinstance(affix, str)):
            raise ExpressionError(f"{name}() needs text, not {_type_name(text)} and {_type_name(affix)}")
        return test(text, affix)

    return apply


def _fn_round(value: Any, digits: Any = 0) -> Any:
    if value is None:
        return None
    if not _is_number(value):
        raise ExpressionError(f"round() needs a number, not {_type_name(value)}")
    if isinstance(digits, bool) or not isinstance(digits, int) or not -12 <= digits <= 12:
        raise ExpressionError("round()'s second argument must be a whole number from -12 to 12")
    # Half away from zero, as people round money by hand (Python's round() rounds half to even).
    rounded = Decimal(str(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if digits <= 0:
        return int(rounded)
    return rounded if isinstance(value, Decimal) else float(rounded)


def _fn_abs(value: Any) -> Any:
    if value is None:
        return None
    if not _is_number(value):
        raise ExpressionError(f"abs() needs a number, not {_type_name(value)}")
    return abs(value)


def _extreme_fn(name: str, pick_left: str) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        values = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
        best: Any = None
        for value in values:
            if value is None:
                continue
            if best is None or _ordered(pick_left, value, best):
                best = value
        return best

    apply.__name__ = name
    return apply


def _fn_now(context: Context) -> Any:
    now = context.get("now")
    if not isinstance(now, datetime):
        raise ExpressionError("now() is not available here: the evaluation context has no 'now'")
    return now


def _fn_today(context: Context) -> Any:
    today = context.get("today")
    if isinstance(today, date) and not isinstance(today, datetime):
        return today
    return _fn_now(context).date()


# name -> (function, min args, max args); None = any number.
_FUNCTIONS: Final[dict[str, tuple[Callable[..., Any], int, int | None]]] = {
    "len": (_fn_len, 1, 1),
    "lower": (_text_fn("lower", str.lower), 1, 1),
    "upper": (_text_fn("upper", str.upper), 1, 1),
    "contains": (_fn_contains, 2, 2),
    "startswith": (_affix_fn("startswith", str.startswith), 2, 2),
    "endswith": (_affix_fn("endswith", str.endswith), 2, 2),
    "round": (_fn_round, 1, 2),
    "abs": (_fn_abs, 1, 1),
    "min": (_extreme_fn("min", "<"), 1, None),
    "max": (_extreme_fn("max", ">"), 1, None),
}
# Functions that read the evaluation context (so they stay deterministic).
_CONTEXT_FUNCTIONS: Final[dict[str, Callable[[Context], Any]]] = {"now": _fn_now, "today": _fn_today}

FUNCTION_NAMES: Final = frozenset(_FUNCTIONS) | frozenset(_CONTEXT_FUNCTIONS)


# ---------------------------------------------------------------- compiling the tree to closures


def _position(node: Tree[Token] | Token) -> int | None:
    return node.start_pos + 1 if isinstance(node, Token) and node.start_pos is not None else None


def _lookup(path: tuple[str, ...]) -> Evaluator:
    """A reader of ``a.b.c``: mapping keys only, never attributes; anything missing is null."""
    if len(path) == 1:
        (root,) = path
        return lambda ctx: ctx.get(root)
    if len(path) == 2:
        root, key = path

        def read2(ctx: Context) -> Any:
            value = ctx.get(root)
            if type(value) is dict or isinstance(value, Mapping):
                return value.get(key)
            return None

        return read2

    def read(ctx: Context) -> Any:
        value: Any = ctx
        for key in path:
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(key)
            else:
                return None
        return value

    return read


class _Compiler:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def compile(self, node: Tree[Token] | Token) -> Evaluator:
        if isinstance(node, Token):  # pragma: no cover - every terminal sits under an aliased rule
            raise ExpressionError(f"unexpected {str(node)!r}")
        method = getattr(self, f"_c_{node.data}", None)
        if method is None:  # pragma: no cover - the grammar and this class are kept in step
            raise ExpressionError(f"unsupported construct {node.data!r}")
        fn: Evaluator = method(node)
        return fn

    def _children(self, node: Tree[Token]) -> list[Evaluator]:
        return [self.compile(child) for child in node.children]

    # literals

    def _c_number(self, node: Tree[Token]) -> Evaluator:
        text = str(node.children[0])
        value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError(f"the number {text} is too large", position=_position(node.children[0]))
        return lambda ctx: value

    def _c_string(self, node: Tree[Token]) -> Evaluator:
        token = node.children[0]
        assert isinstance(token, Token)
        value = _unquote(token)
        return lambda ctx: value

    def _c_true(self, node: Tree[Token]) -> Evaluator:
        return lambda ctx: True

    def _c_false(self, node: Tree[Token]) -> Evaluator:
        return lambda ctx: False

    def _c_null(self, node: Tree[Token]) -> Evaluator:
        return lambda ctx: None

    def _c_list(self, node: Tree[Token]) -> Evaluator:
        if len(node.children) > MAX_LIST_ITEMS:
            raise ExpressionError(f"a list may hold at most {MAX_LIST_ITEMS} items")
        items = self._children(node)
        return lambda ctx: [item(ctx) for item in items]

    def _c_name(self, node: Tree[Token]) -> Evaluator:
        path = tuple(str(token) for token in node.children)
        for token in node.children:
            if str(token).startswith("_"):
                raise ExpressionError(f"names may not start with '_': {'.'.join(path)!r}", position=_position(token))
        self.names.add(".".join(path))
        return _lookup(path)

    def _c_call(self, node: Tree[Token]) -> Evaluator:
        name_token, *arg_nodes = node.children
        name = str(name_token)
        position = _position(name_token)
        if name in _CONTEXT_FUNCTIONS:
            if arg_nodes:
                raise ExpressionError(f"{name}() takes no arguments", position=position)
            return _CONTEXT_FUNCTIONS[name]
        if name not in _FUNCTIONS:
            known = ", ".join(sorted(FUNCTION_NAMES))
            raise ExpressionError(f"unknown function {name!r}; the functions are {known}", position=position)
        fn, low, high = _FUNCTIONS[name]
        if len(arg_nodes) < low or (high is not None and len(arg_nodes) > high) or len(arg_nodes) > MAX_FUNCTION_ARGS:
            expected = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
            raise ExpressionError(f"{name}() takes {expected} argument(s), got {len(arg_nodes)}", position=position)
        args = [self.compile(arg) for arg in arg_nodes]
        if len(args) == 1:
            (only,) = args
            return lambda ctx: fn(only(ctx))
        if len(args) == 2:
            first, second = args
            return lambda ctx: fn(first(ctx), second(ctx))
        return lambda ctx: fn(*[arg(ctx) for arg in args])

    # logic

    def _c_or_(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: _truthy(left(ctx)) or _truthy(right(ctx))

    def _c_and_(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: _truthy(left(ctx)) and _truthy(right(ctx))

    def _c_not_(self, node: Tree[Token]) -> Evaluator:
        (operand,) = self._children(node)
        return lambda ctx: not _truthy(operand(ctx))

    # comparisons

    def _c_eq(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: _equal(left(ctx), right(ctx))

    def _c_ne(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: not _equal(left(ctx), right(ctx))

    def _order(self, node: Tree[Token], op: str) -> Evaluator:
        left, right = self._children(node)
        compare = _ORDER_OPS[op]

        def evaluate_order(ctx: Context) -> bool:
            a = left(ctx)
            b = right(ctx)
            # Fast path for the common case: two plain numbers.
            if type(a) in (int, float) and type(b) in (int, float):
                return compare(a, b)
            return _ordered(op, a, b)

        return evaluate_order

    def _c_lt(self, node: Tree[Token]) -> Evaluator:
        return self._order(node, "<")

    def _c_le(self, node: Tree[Token]) -> Evaluator:
        return self._order(node, "<=")

    def _c_gt(self, node: Tree[Token]) -> Evaluator:
        return self._order(node, ">")

    def _c_ge(self, node: Tree[Token]) -> Evaluator:
        return self._order(node, ">=")

    def _c_in_(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: _contained(left(ctx), right(ctx)) is True

    def _c_not_in(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        return lambda ctx: _contained(left(ctx), right(ctx)) is False

    # arithmetic

    def _arith(self, node: Tree[Token]) -> Evaluator:
        left, right = self._children(node)
        apply = _BINARY_ARITH[str(node.data)]
        return lambda ctx: apply(left(ctx), right(ctx))

    _c_add = _c_sub = _c_mul = _c_div = _c_mod = _arith

    def _c_neg(self, node: Tree[Token]) -> Evaluator:
        (operand,) = self._children(node)

        def negate(ctx: Context) -> Any:
            value = operand(ctx)
            if value is None:
                return None
            if not _is_number(value):
                raise ExpressionError(f"cannot negate {_type_name(value)}")
            return -value

        return negate

    def _c_pos(self, node: Tree[Token]) -> Evaluator:
        (operand,) = self._children(node)

        def positive(ctx: Context) -> Any:
            value = operand(ctx)
            if value is not None and not _is_number(value):
                raise ExpressionError(f"cannot apply unary '+' to {_type_name(value)}")
            return value

        return positive
