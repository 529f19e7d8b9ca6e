"""Regular expressions written by tenants and partners, run on RE2 (linear time, no backtracking).

Python's ``re`` backtracks: a pattern such as ``(a+)+$`` against thirty ``a``s and a ``!`` takes
seconds, and the whole process (every tenant it serves) waits. RE2 guarantees time linear in the
length of the text and bounded memory, at the price of backreferences and lookaround, which it
refuses to compile. Every pattern that does not come from our own code goes through this module:
collection field patterns, and the ``pattern``/``patternProperties`` keywords of plugins' JSON
Schemas (:func:`schema_validator`). Patterns in our own code stay on ``re``.

Syntax: https://github.com/google/re2/wiki/Syntax
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any, Final

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator

SYNTAX_URL: Final = "https://github.com/google/re2/wiki/Syntax"
# The memory one compiled pattern may use. Past it, compiling fails ("pattern too large") rather
# than the matcher growing without bound; matching stays linear either way.
MAX_MEMORY_BYTES: Final = 8 << 20


class PatternError(ValueError):
    """A pattern RE2 cannot compile; ``message`` says why in words a person can act on."""

    def __init__(self, pattern: str, message: str) -> None:
        super().__init__(message)
        self.pattern = pattern
        self.message = message


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_MEMORY_BYTES
    options.log_errors = False  # a tenant's typo is answered as a 422, not written to stderr
    return options


_OPTIONS: Final = _options()


class Pattern:
    """A compiled tenant pattern."""

    __slots__ = ("_regexp", "source")

    def __init__(self, source: str, regexp: Any) -> None:
        self.source = source
        self._regexp = regexp

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches."""
        return self._regexp.fullmatch(text) is not None

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text`` (JSON Schema's meaning of ``pattern``)."""
        return self._regexp.search(text) is not None

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


@functools.lru_cache(maxsize=1024)
def compile_pattern(source: str) -> Pattern:
    """``source`` compiled by RE2, or :class:`PatternError` saying why it cannot be."""
    if "\x00" in source:
        raise PatternError(source, "a pattern cannot contain the NUL character")
    try:
        regexp = re2.compile(source, _OPTIONS)
    except re2.error as exc:
        raise PatternError(source, _reason(exc)) from None
    return Pattern(source, regexp)


def pattern_problem(source: str) -> str | None:
    """Why ``source`` is not a pattern RE2 runs, or None when it is."""
    try:
        compile_pattern(source)
    except PatternError as exc:
        return exc.message
    return None


def _reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else str(exc)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    hint = ""
    if "invalid perl operator: (?<" in text or "invalid perl operator: (?=" in text or "(?!" in text:
        hint = " (lookaround is not supported)"
    elif "invalid escape sequence: \\" in text and text[-1:].isdigit():
        hint = " (backreferences are not supported)"
    elif "invalid escape sequence: \\Z" in text:
        hint = " (write \\z for the end of the text)"
    return f"{text}{hint}; patterns use RE2 syntax: {SYNTAX_URL}"


# ---------------------------------------------------------------- JSON Schema on RE2
#
# jsonschema runs ``pattern`` and ``patternProperties`` (and ``additionalProperties`` next to them)
# with Python's ``re`` and has no switch for another engine, so these keywords are replaced. A
# schema pattern RE2 cannot compile fails the value, naming the pattern, instead of falling back
# to a backtracking engine.


def _schema_pattern(pattern: str) -> Pattern | str:
    try:
        return compile_pattern(pattern)
    except PatternError as exc:
        return exc.message


def _keyword_pattern(validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    compiled = _schema_pattern(pattern)
    if isinstance(compiled, str):
        yield ValidationError(f"the schema's pattern {pattern!r} cannot be used: {compiled}")
    elif not compiled.search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _matches_any(patterns: Mapping[str, Any], key: str) -> bool:
    return any(isinstance(c := _schema_pattern(p), Pattern) and c.search(key) for p in patterns)


def _keyword_pattern_properties(
    validator: Validator, pattern_properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        compiled = _schema_pattern(pattern)
        if isinstance(compiled, str):
            yield ValidationError(f"the schema's pattern {pattern!r} cannot be used: {compiled}")
            continue
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _keyword_additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = sorted((k for k in instance if k not in properties and not _matches_any(patterns, k)), key=str)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(e) for e in extras)
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(
                f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}"
            )
        else:
            yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def _refuse_unevaluated_properties(
    validator: Validator, unevaluated: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if validator.is_type(instance, "object"):
        yield ValidationError(
            "unevaluatedProperties next to patternProperties is not supported: use additionalProperties"
        )


def _uses(schema: Any, keyword: str) -> bool:
    if isinstance(schema, Mapping):
        return keyword in schema or any(_uses(v, keyword) for v in schema.values())
    if isinstance(schema, list):
        return any(_uses(v, keyword) for v in schema)
    return False


_RE2Validator: Any = validators.extend(
    Draft202012Validator,
    {
        "pattern": _keyword_pattern,
        "patternProperties": _keyword_pattern_properties,
        "additionalProperties": _keyword_additional_properties,
    },
)
# jsonschema finds the keys ``unevaluatedProperties`` leaves to ``patternProperties`` with ``re``:
# a schema that combines the two fails its objects instead.
_RE2ValidatorWithoutUnevaluated: Any = validators.extend(
    _RE2Validator, {"unevaluatedProperties": _refuse_unevaluated_properties}
)


def schema_validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator of ``schema`` (written by a partner) whose patterns run on RE2."""
    combined = _uses(schema, "patternProperties") and _uses(schema, "unevaluatedProperties")
    return (_RE2ValidatorWithoutUnevaluated if combined else _RE2Validator)(schema)


_SCHEMA_MAPS: Final = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE: Final = (
    "items",
    "additionalItems",
    "unevaluatedItems",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "prefixItems")


def schema_pattern_problems(schema: Any, pointer: str = "") -> list[tuple[str, str]]:
    """Every ``pattern`` and ``patternProperties`` key of a JSON Schema that RE2 cannot compile, as
    (JSON pointer, why): what a plugin's submission is refused for."""
    if not isinstance(schema, Mapping):
        return []
    found: list[tuple[str, str]] = []
    if isinstance(schema.get("pattern"), str) and (reason := pattern_problem(schema["pattern"])) is not None:
        found.append((f"{pointer}/pattern", reason))
    for keyword in _SCHEMA_MAPS:
        children = schema.get(keyword)
        if not isinstance(children, Mapping):
            continue
        for name, child in children.items():
            at = f"{pointer}/{keyword}/{_escape(str(name))}"
            if keyword == "patternProperties" and (reason := pattern_problem(str(name))) is not None:
                found.append((at, reason))
            found += schema_pattern_problems(child, at)
    for keyword in _SCHEMA_ONE:
        found += schema_pattern_problems(schema.get(keyword), f"{pointer}/{keyword}")
    for keyword in _SCHEMA_LISTS:
        children = schema.get(keyword)
        if isinstance(children, list):
            for index, child in enumerate(children):
                found += schema_pattern_problems(child, f"{pointer}/{keyword}/{index}")
    return found


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")  # RFC 6901
