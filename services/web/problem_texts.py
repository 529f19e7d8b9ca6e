"""The words of API errors in the code: found by reading the source, for `make messages` and tests.

An error's detail, its title and each field problem's message are message ids of the catalogs
(see :mod:`tenants.errors`). This module finds them where errors are made: the first argument (or
``detail=``) of a :class:`~tenants.errors.ProblemError` or of one of its subclasses, their
``title=`` and class-level ``title``, and the message of a ``FieldProblem(...)`` or
``FieldProblem.of(...)``. :func:`extract` is the Babel extractor of Python files (babel.cfg):
what Babel's own finds (``translate``, ``N_``) plus these texts, keyword arguments included.

A text given as a variable (an error passed on, a library's message) is not ours to word; a text
built in place (an f-string, a concatenation, ``.format``, ``.join``) cannot be translated and is
reported by :func:`problem_texts` as ``built``; a unit test fails on one.
"""

from __future__ import annotations

import ast
import io
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from babel.messages.extract import extract_python

#: ProblemError and its subclasses, and the errors whose words become a problem's detail.
DETAIL_CALLS = frozenset(
    {
        "ProblemError",
        "ValidationProblem",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "Gone",
        "RateLimited",
        "WebhookRefused",
        "FileTooLarge",
        "PackInvalid",
        "KeysTaken",
        "NoThumbnail",
        "MalformedBody",
        "EngineError",
    }
)
#: Keyword arguments of these errors that are not placeholders of the detail.
RESERVED = frozenset({"detail", "code", "status", "title", "errors", "headers", "details", "pointer", "message"})
_BUILDERS = frozenset({"format", "join", "replace", "strip", "capitalize"})


@dataclass(frozen=True)
class ProblemText:
    """A text of an error found in the source. ``kind``: ``literal`` (a message id), ``passed``
    (a variable: not ours), ``built`` (made in place: cannot be translated)."""

    line: int
    role: str  # "detail", "title" or "message"
    kind: str
    text: str  # the literal, else the expression's source
    params: frozenset[str] | None  # the keyword arguments given with it; None: unknown (**kwargs)


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if func.attr == "of" and isinstance(func.value, ast.Name) and func.value.id == "FieldProblem":
            return "FieldProblem.of"
        return func.attr
    return None


def _texts(node: ast.expr) -> Iterator[tuple[str, str]]:
    """(kind, text) of each text an expression can be."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            yield "literal", node.value
        elif node.value is not None:
            yield "built", ast.unparse(node)
    elif isinstance(node, ast.IfExp):
        yield from _texts(node.body)
        yield from _texts(node.orelse)
    elif isinstance(node, ast.BoolOp):  # `detail or title`: each operand
        for value in node.values:
            yield from _texts(value)
    elif isinstance(node, ast.Call) and _call_name(node.func) == "N_" and node.args:
        yield from _texts(node.args[0])
    elif isinstance(node, ast.JoinedStr | ast.BinOp) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _BUILDERS
    ):
        yield "built", ast.unparse(node)
    else:
        yield "passed", ast.unparse(node)


def _argument(call: ast.Call, position: int, *names: str) -> ast.expr | None:
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg in names), None)


def _params(call: ast.Call) -> frozenset[str] | None:
    if any(k.arg is None for k in call.keywords):
        return None
    return frozenset(k.arg for k in call.keywords if k.arg and k.arg not in RESERVED)


def problem_texts(source: str) -> Iterator[ProblemText]:
    """Every text of an error made in ``source`` (a Python module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and (
            node.name in DETAIL_CALLS or any(_call_name(b) in DETAIL_CALLS for b in node.bases)
        ):
            for statement in node.body:
                if (
                    isinstance(statement, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "title" for t in statement.targets)
                ) or (
                    isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and statement.target.id == "title"
                    and statement.value is not None
                ):
                    assert statement.value is not None
                    for kind, text in _texts(statement.value):
                        yield ProblemText(statement.lineno, "title", kind, text, frozenset())
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node.func)
        found: list[tuple[str, ast.expr | None, frozenset[str] | None]] = []
        if name in DETAIL_CALLS:
            found.append(("detail", _argument(node, 0, "detail", "message"), _params(node)))
            found.append(("title", next((k.value for k in node.keywords if k.arg == "title"), None), frozenset()))
        elif name == "FieldProblem":
            found.append(("message", _argument(node, 2, "message"), frozenset()))
        elif name == "FieldProblem.of":
            found.append(("message", _argument(node, 2, "message"), _params(node)))
        for role, value, params in found:
            if value is not None:
                for kind, text in _texts(value):
                    yield ProblemText(node.lineno, role, kind, text, params)


def placeholders(text: str) -> set[str]:
    """The ``{names}`` of a message (``{{`` and ``}}`` are literal braces)."""
    return {name for _literal, name, _spec, _conv in string.Formatter().parse(text) if name}


def extract(
    fileobj: IO[bytes], keywords: Mapping[str, Any], comment_tags: list[str], options: Any
) -> Iterator[tuple[Any, ...]]:
    """Babel's extractor of Python files, plus the texts of the errors made in them."""
    data = fileobj.read()
    yield from extract_python(io.BytesIO(data), keywords, comment_tags, options)
    for found in problem_texts(data.decode(options.get("encoding", "utf-8"))):
        if found.kind == "literal" and found.text:
            yield found.line, "", found.text, []
