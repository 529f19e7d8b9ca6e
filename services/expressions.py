"""The safe expression language of procedure decisions and automation conditions. Never ``eval``.

Parsed with a Lark grammar into a tree that is interpreted here: only literals, names into the
given context (``data.amount``, ``record.status``), comparisons, arithmetic, ``and``/``or``/``not``,
``in``, and a fixed set of functions. No attribute access on Python objects, no calls out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ExpressionError(Exception):
    """A syntax error (with ``position``) or an evaluation error."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class Expression:
    """A compiled expression: ``names`` are the dotted paths it reads; ``evaluate(context)`` runs it."""

    source: str
    names: frozenset[str]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def compile_expression(source: str) -> Expression:
    """Parse ``source``; raises ExpressionError naming the position of a syntax error."""
    raise NotImplementedError


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Compile (cached) and evaluate."""
    return compile_expression(source).evaluate(context)
