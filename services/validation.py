"""Decoding request bodies so that *every* problem is reported, not the first.

msgspec stops at the first error; :func:`decode_all` converts field by field so a client fixing
a form learns about all its mistakes at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import Meta

from tenants.errors import FieldProblem, ValidationProblem

T = TypeVar("T", bound=msgspec.Struct)

#: PostgreSQL's ``integer`` and ``bigint``: a number beyond its column is refused (422) before it
#: reaches SQL, where it would fail on PostgreSQL alone.
INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1
#: A positive number kept in an ``integer`` column (a record's version, a step's number in its run).
PositiveInt32 = Annotated[int, Meta(ge=1, le=INT32_MAX)]
InputCheck = Callable[[dict[str, Any]], list[FieldProblem]]

# msgspec's words for a number outside its bounds: "Expected `int` <= 2147483647".
_BOUND_MESSAGE = re.compile(r"expected `(int|float|decimal)` [<>]=? ")

# Checks beyond types and lengths (an email's form, a known locale), run on the raw input even when
# its decoding failed, so one answer lists type problems and meaning problems together.
_checks: dict[type[msgspec.Struct], InputCheck] = {}


def register_check(struct_type: type[msgspec.Struct], check_fn: InputCheck) -> None:
    _checks[struct_type] = check_fn


def validate(data: msgspec.Struct) -> None:
    """Run the registered checks of a decoded input; raise with every problem found."""
    check_fn = _checks.get(type(data))
    if check_fn is not None:
        check(check_fn(msgspec.structs.asdict(data)))


def problem_code(message: str) -> str:
    """The stable code of a msgspec validation message."""
    lowered = message.lower()
    if "length" in lowered:
        return "too_long" if "<=" in lowered else "too_short"
    if _BOUND_MESSAGE.match(lowered):
        return "out_of_range"
    if lowered.startswith("expected `"):
        return "wrong_type"
    if "invalid enum value" in lowered:
        return "not_allowed"
    if "must be" in lowered:
        return "out_of_range"
    return "invalid"


def decode_all(struct_type: type[T], raw: bytes) -> T:
    """Decode JSON into ``struct_type``, raising :class:`ValidationProblem` listing every problem."""
    try:
        return msgspec.json.decode(raw, type=struct_type)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as exc:
        raise ValidationProblem(
            "The body is not valid JSON.",
            code="malformed_json",
            errors=[FieldProblem(pointer="", code="malformed_json", message=str(exc))],
        ) from exc
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # pragma: no cover - handled above
        raise ValidationProblem("The body is not valid JSON.", code="malformed_json") from exc
    problems = struct_problems(struct_type, data)
    check_fn = _checks.get(struct_type)
    if check_fn is not None and isinstance(data, dict):
        flagged = {p.pointer for p in problems}
        fields_ok = {k: v for k, v in data.items() if f"/{k}" not in flagged and isinstance(v, str | None)}
        problems += [p for p in check_fn(fields_ok) if p.pointer not in flagged]
    if not problems:  # pragma: no cover - defensive: msgspec failed on something we did not see
        problems = [FieldProblem(pointer="", code="invalid", message="the body does not match the schema")]
    raise ValidationProblem(errors=problems)


def struct_problems(struct_type: type[msgspec.Struct], data: Any, prefix: str = "") -> list[FieldProblem]:
    if not isinstance(data, dict):
        return [FieldProblem(pointer=prefix, code="wrong_type", message="expected an object")]
    problems: list[FieldProblem] = []
    info = msgspec.structs.fields(struct_type)
    known = {f.encode_name for f in info}
    forbid_unknown = struct_type.__struct_config__.forbid_unknown_fields
    for field in info:
        pointer = f"{prefix}/{field.encode_name}"
        if field.encode_name not in data:
            if field.required:
                problems.append(FieldProblem(pointer=pointer, code="required", message="this field is required"))
            continue
        try:
            msgspec.convert(data[field.encode_name], field.type, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc).split(" - at ")[0]
            problems.append(FieldProblem(pointer=pointer, code=problem_code(message), message=message))
    if forbid_unknown:
        for key in data:
            if key not in known:
                problems.append(FieldProblem(pointer=f"{prefix}/{key}", code="unknown_field", message="unknown field"))
    return problems


def check(problems: list[FieldProblem]) -> None:
    """Raise one :class:`ValidationProblem` with all of ``problems``, if there are any."""
    if problems:
        raise ValidationProblem(errors=problems)
