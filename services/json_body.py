"""Reading a JSON request body safely: the one decoder every JSON body passes through.

A body is refused before any recursive code (type conversion, validation, the database's JSON
type, encoding an answer) sees it when it is not UTF-8, not JSON, or nested deeper than
:data:`MAX_JSON_DEPTH`; and a text holding U+0000 is refused, since PostgreSQL's text and jsonb
cannot store that character and SQLite would keep what PostgreSQL refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from tenants.errors import FieldProblem, ProblemError, ValidationProblem

#: Objects and arrays nested inside each other, counted from the body itself (``{}`` is 1, ``{"a": []}``
#: is 2). The API's own bodies stay under 10 levels (a procedure definition's step evidence is about
#: 6); template packs stop at 40; 64 leaves room for webhook senders' payloads and free-form run data.
MAX_JSON_DEPTH: Final = 64

JSON_MEDIA_TYPES_TEXT: Final = "application/json or application/*+json"
MALFORMED_JSON: Final = "malformed_json"
INVALID_UTF8: Final = "invalid_utf8"
TOO_DEEPLY_NESTED: Final = "too_deeply_nested"
NUL_CHARACTER: Final = "nul_character"


class MalformedBody(ProblemError):
    """A body that cannot be read as JSON at all (the ``code`` says why)."""

    status = 400
    code = MALFORMED_JSON
    title = "The body is not valid JSON"


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters (a charset)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def decode_json_body(raw: bytes) -> Any:
    """Decode a request body: :class:`MalformedBody` (400) when it is empty, not UTF-8, not JSON or
    nested deeper than :data:`MAX_JSON_DEPTH`; :class:`ValidationProblem` (422) listing every text
    that holds U+0000."""
    if not raw.strip():
        raise empty_body_problem()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            "The body is not valid UTF-8 (byte {position} cannot start or continue a character).",
            code=INVALID_UTF8,
            position=exc.start + 1,
        ) from exc
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedBody("The body is not valid JSON: {exc}.", exc=exc) from exc
    except RecursionError as exc:  # msgspec guards its own recursion; far deeper than the limit anyway
        raise _too_deep() from exc
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise _too_deep()
    # U+0000 can only be written as the escape \u0000 in JSON: no escape, no walk.
    if b"\\u0000" in raw:
        check_no_nul(nul_problems(value))
    return value


def empty_body_problem() -> MalformedBody:
    return MalformedBody("The body is empty: send a JSON value.")


def _too_deep() -> MalformedBody:
    return MalformedBody(
        "The body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep.",
        code=TOO_DEEPLY_NESTED,
        MAX_JSON_DEPTH=MAX_JSON_DEPTH,
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels, level by level (no recursion)."""
    level = [value]
    depth = 0
    while level:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return False


def pointer_token(key: str | int) -> str:
    """One reference token of a JSON pointer (RFC 6901): ``~`` and ``/`` escaped."""
    return str(key).replace("~", "~0").replace("/", "~1")


def nul_problems(value: Any, prefix: str = "") -> list[FieldProblem]:
    """Every text of ``value`` (object keys too) that holds U+0000, by pointer, in document order."""
    problems: list[FieldProblem] = []
    pending: list[tuple[str, Any]] = [(prefix, value)]
    while pending:
        pointer, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                problems.append(nul_problem(pointer))
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                child_pointer = f"{pointer}/{pointer_token(key)}"
                if "\x00" in key:
                    problems.append(nul_problem(child_pointer, "a name"))
                children.append((child_pointer, child))
            pending.extend(reversed(children))
        elif isinstance(item, list):
            pending.extend(reversed([(f"{pointer}/{i}", child) for i, child in enumerate(item)]))
    return problems


def nul_problem(pointer: str, what: str = "a text") -> FieldProblem:
    return FieldProblem.of(
        pointer=pointer, code=NUL_CHARACTER, message="{what} may not contain the character U+0000", what=what
    )


def texts_nul_problems(texts: Iterable[tuple[str, str]]) -> list[FieldProblem]:
    """The problems of ``(pointer, text)`` pairs whose text holds U+0000."""
    return [nul_problem(pointer) for pointer, text in texts if "\x00" in text]


def check_no_nul(problems: list[FieldProblem]) -> None:
    if problems:
        raise ValidationProblem("Text may not contain the character U+0000 (NUL).", errors=problems)
