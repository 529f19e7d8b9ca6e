"""Field types of collections: definitions, their checks, value coercion and type conversion.

A pure module (no I/O). Values are stored as JSON in a canonical form per type, chosen so that the
database can filter and sort them on SQLite and Postgres alike:

- text, long_text, select, email, phone (E.164): a string; multi_select: a list of strings
- number: a JSON number; boolean: true/false
- money: ``{"amount": <int minor units>, "currency": "CNY"}``
- date: ``"YYYY-MM-DD"``; datetime: ``"YYYY-MM-DDTHH:MM:SSZ"`` in UTC (compares as text)
- user, entity, file, relation: the referenced row's id as a string (existence is checked by the service)
- line_items: a list of objects keyed by the sub-fields' keys
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.names import name_problems
from services.patterns import PatternError, compile_pattern, pattern_problem
from tenants.errors import FieldProblem


class FieldType(enum.StrEnum):
    TEXT = "text"
    LONG_TEXT = "long_text"
    NUMBER = "number"
    MONEY = "money"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    SELECT = "select"
    MULTI_SELECT = "multi_select"
    EMAIL = "email"
    PHONE = "phone"
    USER = "user"
    ENTITY = "entity"
    FILE = "file"
    RELATION = "relation"
    LINE_ITEMS = "line_items"


# Types whose value is the id of another row.
REFERENCE_TYPES = frozenset({FieldType.USER, FieldType.ENTITY, FieldType.FILE, FieldType.RELATION})
# Types a line item's sub-field may have: plain values, nothing nested or referencing.
LINE_ITEM_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.LONG_TEXT,
        FieldType.NUMBER,
        FieldType.MONEY,
        FieldType.DATE,
        FieldType.DATETIME,
        FieldType.BOOLEAN,
        FieldType.SELECT,
        FieldType.EMAIL,
        FieldType.PHONE,
    }
)
# Types on which min/max mean something: a length, a value, an amount or a count.
BOUNDED_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.LONG_TEXT,
        FieldType.NUMBER,
        FieldType.MONEY,
        FieldType.MULTI_SELECT,
        FieldType.LINE_ITEMS,
    }
)
UNIQUE_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.NUMBER,
        FieldType.MONEY,
        FieldType.DATE,
        FieldType.DATETIME,
        FieldType.SELECT,
        FieldType.EMAIL,
        FieldType.PHONE,
        FieldType.USER,
        FieldType.ENTITY,
        FieldType.FILE,
        FieldType.RELATION,
    }
)

KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
MAX_TEXT = 1_000
MAX_LONG_TEXT = 100_000
MAX_FIELDS = 200
MAX_OPTIONS = 500
MAX_OPTION_LENGTH = 200
MAX_PATTERN = 500
MAX_LINE_ITEMS = 1_000
# A number beyond this is refused: JSON numbers past 2**53 lose precision in browsers and in float sorting.
MAX_SAFE_NUMBER = 2**53
# ISO 4217 currencies whose minor unit is not the cent; the rest have two decimals.
_CURRENCY_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip
_TRUE = frozenset({"true", "yes", "y", "1", "是", "对"})
_FALSE = frozenset({"false", "no", "n", "0", "否", "错"})
MULTI_SEPARATOR = ";"


class FieldDef(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One field of a collection. ``key`` is stable for the field's life; ``label`` is what people see."""

    key: str
    label: str
    type: str
    required: bool = False
    unique: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    options: list[str] | None = None
    currency: str | None = None
    # For phone numbers written without a country code.
    region: str | None = None
    target_collection: str | None = None
    fields: list[FieldDef] | None = None
    help: str | None = None
    # A removed field is hidden: its values stay in the records until an admin purges them.
    removed: bool = False

    @property
    def field_type(self) -> FieldType:
        return FieldType(self.type)


class FieldValueError(Exception):
    """A value that does not fit its field: ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pointer = pointer


def currency_exponent(currency: str) -> int:
    return _CURRENCY_EXPONENTS.get(currency, 2)


# ---------------------------------------------------------------- definitions


def validate_field_defs(defs: list[FieldDef], *, prefix: str = "/fields", nested: bool = False) -> list[FieldProblem]:
    """Every problem of a list of field definitions, each pointing at the offending attribute."""
    problems: list[FieldProblem] = []
    if len(defs) > MAX_FIELDS:
        problems.append(
            FieldProblem.of(prefix, "too_many_fields", "at most {MAX_FIELDS} fields", MAX_FIELDS=MAX_FIELDS)
        )
    seen: dict[str, int] = {}
    for index, fd in enumerate(defs):
        at = f"{prefix}/{index}"
        if not KEY_RE.fullmatch(fd.key):
            problems.append(
                FieldProblem.of(
                    f"{at}/key", "invalid_key", "a key is lower_snake_case: a-z, 0-9 and _, starting with a letter"
                )
            )
        elif fd.key in {"id", "entity_id", "created_at", "updated_at", "created_by", "updated_by", "version"}:
            problems.append(
                FieldProblem.of(f"{at}/key", "reserved_key", "'{key}' is reserved for the record itself", key=fd.key)
            )
        if fd.key in seen:
            problems.append(
                FieldProblem.of(
                    f"{at}/key", "duplicate_key", "'{key}' is also field {index}", key=fd.key, index=seen[fd.key]
                )
            )
        else:
            seen[fd.key] = index
        if not fd.label.strip() or len(fd.label) > 200:
            problems.append(FieldProblem.of(f"{at}/label", "invalid_label", "a label has 1 to 200 characters"))
        problems += name_problems(fd.label, f"{at}/label", required=False)
        try:
            ftype = FieldType(fd.type)
        except ValueError:
            problems.append(
                FieldProblem.of(
                    f"{at}/type", "unknown_type", "use one of: {options}", options=", ".join(t.value for t in FieldType)
                )
            )
            continue
        problems.extend(_type_problems(fd, ftype, at, nested))
    return problems


def _type_problems(fd: FieldDef, ftype: FieldType, at: str, nested: bool) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if nested and ftype not in LINE_ITEM_TYPES:
        problems.append(
            FieldProblem.of(f"{at}/type", "type_not_allowed_in_line_items", "line items hold plain values only")
        )
    if fd.unique and (nested or ftype not in UNIQUE_TYPES):
        problems.append(
            FieldProblem.of(f"{at}/unique", "unique_not_supported", "a {ftype} field cannot be unique", ftype=ftype)
        )
    if (fd.min is not None or fd.max is not None) and ftype not in BOUNDED_TYPES:
        problems.append(
            FieldProblem.of(f"{at}/min", "bounds_not_supported", "min/max do not apply to a {ftype} field", ftype=ftype)
        )
    for bound in ("min", "max"):
        value = getattr(fd, bound)
        if value is not None and not math.isfinite(value):
            problems.append(
                FieldProblem.of(f"{at}/{bound}", "invalid_bound", "{bound} must be a finite number", bound=bound)
            )
    if fd.min is not None and fd.max is not None and fd.min > fd.max:
        problems.append(FieldProblem.of(f"{at}/min", "min_above_max", "min is greater than max"))
    if fd.pattern is not None:
        if ftype not in {FieldType.TEXT, FieldType.LONG_TEXT}:
            problems.append(
                FieldProblem.of(f"{at}/pattern", "pattern_not_supported", "a pattern applies to text fields")
            )
        elif len(fd.pattern) > MAX_PATTERN:
            problems.append(
                FieldProblem.of(
                    f"{at}/pattern", "pattern_too_long", "at most {MAX_PATTERN} characters", MAX_PATTERN=MAX_PATTERN
                )
            )
        elif (reason := pattern_problem(fd.pattern)) is not None:
            problems.append(
                FieldProblem.of(
                    f"{at}/pattern",
                    "invalid_pattern",
                    "the pattern of '{key}' cannot be used: {reason}",
                    key=fd.key,
                    reason=reason,
                )
            )
    if ftype in {FieldType.SELECT, FieldType.MULTI_SELECT}:
        problems.extend(_option_problems(fd.options, f"{at}/options"))
    elif fd.options is not None:
        problems.append(FieldProblem.of(f"{at}/options", "options_not_supported", "options apply to select fields"))
    if fd.currency is not None and (ftype != FieldType.MONEY or not CURRENCY_RE.fullmatch(fd.currency)):
        problems.append(FieldProblem.of(f"{at}/currency", "invalid_currency", "an ISO 4217 code on a money field"))
    if fd.region is not None and (ftype != FieldType.PHONE or fd.region not in phonenumbers.SUPPORTED_REGIONS):
        problems.append(FieldProblem.of(f"{at}/region", "invalid_region", "an ISO 3166 region code on a phone field"))
    if ftype == FieldType.RELATION:
        if not fd.target_collection or not KEY_RE.fullmatch(fd.target_collection):
            problems.append(
                FieldProblem.of(
                    f"{at}/target_collection", "target_required", "a relation names its target collection's key"
                )
            )
    elif fd.target_collection is not None:
        problems.append(
            FieldProblem.of(f"{at}/target_collection", "target_not_supported", "only relation fields have a target")
        )
    if ftype == FieldType.LINE_ITEMS:
        if not fd.fields:
            problems.append(
                FieldProblem.of(f"{at}/fields", "sub_fields_required", "line items need at least one sub-field")
            )
        else:
            problems.extend(validate_field_defs(fd.fields, prefix=f"{at}/fields", nested=True))
    elif fd.fields is not None:
        problems.append(FieldProblem.of(f"{at}/fields", "sub_fields_not_supported", "only line items have sub-fields"))
    if fd.default is not None and not any(
        p.pointer.startswith(at + "/") and p.code != "invalid_label" for p in problems
    ):
        if ftype in REFERENCE_TYPES:
            problems.append(
                FieldProblem.of(f"{at}/default", "default_not_supported", "a {ftype} field has no default", ftype=ftype)
            )
        else:
            try:
                coerce_value(fd, fd.default)
            except FieldValueError as exc:
                problems.append(
                    FieldProblem.of(
                        f"{at}/default",
                        "invalid_default",
                        "the default is not valid: {reason}",
                        reason=exc.message,
                    )
                )
    return problems


def _option_problems(options: list[str] | None, at: str) -> list[FieldProblem]:
    if not options:
        return [FieldProblem.of(at, "options_required", "a select field needs at least one option")]
    problems = []
    if len(options) > MAX_OPTIONS:
        problems.append(
            FieldProblem.of(at, "too_many_options", "at most {MAX_OPTIONS} options", MAX_OPTIONS=MAX_OPTIONS)
        )
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not option.strip() or len(option) > MAX_OPTION_LENGTH or MULTI_SEPARATOR in option or '"' in option:
            problems.append(
                FieldProblem.of(
                    f"{at}/{i}",
                    "invalid_option",
                    '1 to {MAX_OPTION_LENGTH} characters, without ; or "',
                    MAX_OPTION_LENGTH=MAX_OPTION_LENGTH,
                )
            )
        if option in seen:
            problems.append(
                FieldProblem.of(f"{at}/{i}", "duplicate_option", "'{option}' is listed twice", option=option)
            )
        seen.add(option)
    return problems


# ---------------------------------------------------------------- values


def _bad(code: str, message: str) -> FieldValueError:
    return FieldValueError(code, message)


def coerce_value(fd: FieldDef, raw: Any, *, from_text: bool = False) -> Any:
    """The canonical stored form of ``raw`` for ``fd``, or :class:`FieldValueError`.

    ``from_text`` accepts the textual forms a spreadsheet cell holds ("12.50 CNY", "yes", "a; b");
    JSON input must have the right JSON type. ``None`` (and an empty cell) means "no value".
    """
    ftype = fd.field_type
    if from_text and isinstance(raw, str) and not raw.strip():
        raw = None
    if raw is None:
        if fd.required:
            raise _bad("required", "a value is required")
        return None
    handler = _COERCERS[ftype]
    return handler(fd, raw, from_text)


def _check_bounds(fd: FieldDef, size: float, what: str) -> None:
    if fd.min is not None and size < fd.min:
        raise _bad("below_min", f"{what} must be at least {_fmt_bound(fd.min)}")
    if fd.max is not None and size > fd.max:
        raise _bad("above_max", f"{what} must be at most {_fmt_bound(fd.max)}")


def _fmt_bound(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _text(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if from_text and isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = _number_text(raw)
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected text")
    value = raw if fd.field_type == FieldType.LONG_TEXT else raw.strip()
    limit = MAX_LONG_TEXT if fd.field_type == FieldType.LONG_TEXT else MAX_TEXT
    if len(value) > limit:
        raise _bad("too_long", f"at most {limit} characters")
    if fd.required and not value.strip():
        raise _bad("required", "a value is required")
    _check_bounds(fd, len(value), "the length")
    if fd.pattern is not None:
        # RE2: linear in the length of the value, whatever the tenant's pattern.
        try:
            matched = compile_pattern(fd.pattern).fullmatch(value)
        except PatternError as exc:  # saved before patterns were RE2: the field must be fixed first
            raise _bad(
                "invalid_pattern", f"the field's pattern cannot be used, an admin must change it: {exc}"
            ) from None
        if not matched:
            raise _bad("pattern_mismatch", f"does not match the pattern {fd.pattern}")
    return value


def _number_text(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _parse_decimal(text: str) -> Decimal:
    cleaned = text.strip().replace(",", "").replace("_", "")
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        raise _bad("wrong_type", f"'{text}' is not a number") from None
    if not number.is_finite():
        raise _bad("not_finite", f"'{text}' is not a finite number")
    return number


def _number(fd: FieldDef, raw: Any, from_text: bool) -> int | float:
    if from_text and isinstance(raw, str):
        number = _parse_decimal(raw)
        value: int | float = int(number) if number == number.to_integral_value() else float(number)
    elif isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _bad("wrong_type", "expected a number")
    else:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad("not_finite", "expected a finite number, not infinity or NaN")
    if abs(value) > MAX_SAFE_NUMBER:
        raise _bad("out_of_range", "the number is too large")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _check_bounds(fd, value, "the value")
    return value


def _money(fd: FieldDef, raw: Any, from_text: bool) -> dict[str, Any]:
    amount: Any
    currency: Any
    if from_text and isinstance(raw, str | int | float) and not isinstance(raw, bool):
        amount, currency = _parse_money_text(str(raw) if not isinstance(raw, str) else raw, fd.currency)
    elif isinstance(raw, dict):
        unknown = set(raw) - {"amount", "currency"}
        if unknown:
            raise _bad("wrong_type", f"money has only amount and currency, not {sorted(unknown)}")
        amount, currency = raw.get("amount"), raw.get("currency", fd.currency)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise _bad("wrong_type", "amount is an integer in minor units (cents)")
    else:
        raise _bad("wrong_type", 'expected {"amount": <minor units>, "currency": "CNY"}')
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency):
        raise _bad("invalid_currency", "currency is an ISO 4217 code such as CNY or USD")
    if fd.currency is not None and currency != fd.currency:
        raise _bad("wrong_currency", f"this field holds {fd.currency} amounts")
    if abs(amount) > MAX_SAFE_NUMBER:
        raise _bad("out_of_range", "the amount is too large")
    _check_bounds(fd, amount, "the amount (in minor units)")
    return {"amount": amount, "currency": currency}


def _parse_money_text(text: str, default_currency: str | None) -> tuple[int, str | None]:
    parts = text.strip().split()
    currency = default_currency
    if len(parts) == 2:
        if CURRENCY_RE.fullmatch(parts[0]):
            currency, number_text = parts[0], parts[1]
        elif CURRENCY_RE.fullmatch(parts[1]):
            number_text, currency = parts[0], parts[1]
        else:
            raise _bad("wrong_type", f"'{text}' is not an amount like '12.50 CNY'")
    elif len(parts) == 1:
        number_text = parts[0]
    else:
        raise _bad("wrong_type", f"'{text}' is not an amount like '12.50 CNY'")
    if currency is None:
        raise _bad("invalid_currency", "write the currency with the amount, like '12.50 CNY'")
    number = _parse_decimal(number_text)
    minor = number.scaleb(currency_exponent(currency))
    if minor != minor.to_integral_value():
        raise _bad("too_precise", f"{currency} has {currency_exponent(currency)} decimals")
    return int(minor), currency


def format_money(value: dict[str, Any]) -> str:
    exponent = currency_exponent(value["currency"])
    amount = Decimal(value["amount"]).scaleb(-exponent)
    return f"{amount:.{exponent}f} {value['currency']}"


def _date(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if from_text and isinstance(raw, datetime):
        raw = raw.date().isoformat()
    if from_text and isinstance(raw, date):
        raw = raw.isoformat()
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(raw.strip()[:10] if from_text and "T" in raw else raw.strip()).isoformat()
    except ValueError:
        raise _bad("invalid_date", f"'{raw}' is not a date (YYYY-MM-DD)") from None


def _datetime(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if from_text and isinstance(raw, datetime):
        parsed = raw
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise _bad("invalid_datetime", f"'{raw}' is not an ISO 8601 date and time") from None
    else:
        raise _bad("wrong_type", "expected an ISO 8601 date and time, like 2026-03-01T09:30:00+08:00")
    if parsed.tzinfo is None:
        raise _bad("timezone_required", "say the time zone, like +08:00 or Z")
    return format_datetime(parsed)


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _boolean(fd: FieldDef, raw: Any, from_text: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if from_text and isinstance(raw, str | int) and not isinstance(raw, bool):
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _bad("wrong_type", "expected true or false")


def _select(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected one of the options")
    value = raw.strip() if from_text else raw
    if value not in (fd.options or []):
        raise _bad("not_an_option", f"'{value}' is not one of {fd.options}")
    return value


def _multi_select(fd: FieldDef, raw: Any, from_text: bool) -> list[str]:
    if from_text and isinstance(raw, str):
        text = raw.strip()
        raw = json.loads(text) if text.startswith("[") and _is_json(text) else text.split(MULTI_SEPARATOR)
        raw = [r.strip() for r in raw if isinstance(r, str) and r.strip()] if isinstance(raw, list) else raw
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise _bad("wrong_type", "expected a list of options")
    chosen = list(dict.fromkeys(raw))  # no duplicates, order kept
    wrong = [v for v in chosen if v not in (fd.options or [])]
    if wrong:
        raise _bad("not_an_option", f"{wrong} not among {fd.options}")
    if fd.required and not chosen:
        raise _bad("required", "choose at least one option")
    _check_bounds(fd, len(chosen), "the number of choices")
    return chosen


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _email(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected an email address")
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _bad("invalid_email", str(exc)) from None


def _phone(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if from_text and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected a phone number")
    try:
        number = phonenumbers.parse(raw.strip(), fd.region or "CN")
    except phonenumbers.NumberParseException:
        raise _bad("invalid_phone", f"'{raw}' is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise _bad("invalid_phone", f"'{raw}' is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _reference(fd: FieldDef, raw: Any, from_text: bool) -> str:
    if not isinstance(raw, str):
        raise _bad("wrong_type", "expected an id")
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise _bad("invalid_id", f"'{raw}' is not an id") from None


def _line_items(fd: FieldDef, raw: Any, from_text: bool) -> list[dict[str, Any]]:
    if from_text and isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise _bad("wrong_type", "line items are written as a JSON list of objects") from None
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise _bad("wrong_type", "expected a list of objects")
    if len(raw) > MAX_LINE_ITEMS:
        raise _bad("too_many_items", f"at most {MAX_LINE_ITEMS} line items")
    if fd.required and not raw:
        raise _bad("required", "at least one line is required")
    _check_bounds(fd, len(raw), "the number of lines")
    subs = {s.key: s for s in fd.fields or []}
    lines: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        for key in item:
            if key not in subs:
                raise FieldValueError("unknown_field", f"line {index + 1}: no sub-field '{key}'", f"/{index}/{key}")
        line: dict[str, Any] = {}
        for key, sub in subs.items():
            try:
                line[key] = coerce_value(sub, item.get(key, sub.default), from_text=from_text)
            except FieldValueError as exc:
                raise FieldValueError(exc.code, f"line {index + 1}, {key}: {exc.message}", f"/{index}/{key}") from None
        lines.append(line)
    return lines


_COERCERS: dict[FieldType, Any] = {
    FieldType.TEXT: _text,
    FieldType.LONG_TEXT: _text,
    FieldType.NUMBER: _number,
    FieldType.MONEY: _money,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.BOOLEAN: _boolean,
    FieldType.SELECT: _select,
    FieldType.MULTI_SELECT: _multi_select,
    FieldType.EMAIL: _email,
    FieldType.PHONE: _phone,
    FieldType.USER: _reference,
    FieldType.ENTITY: _reference,
    FieldType.FILE: _reference,
    FieldType.RELATION: _reference,
    FieldType.LINE_ITEMS: _line_items,
}


def validate_value(type_name: str, raw: Any, *, options: list[str] | None = None, required: bool = False) -> Any:
    """Check a value against a bare field type (for forms that are not collections)."""
    try:
        ftype = FieldType(type_name)
    except ValueError:
        raise _bad("unknown_type", f"'{type_name}' is not a field type") from None
    if ftype == FieldType.LINE_ITEMS:
        raise _bad("unsupported_type", "line items need sub-field definitions")
    fd = FieldDef(key="value", label="value", type=ftype.value, options=options, required=required)
    return coerce_value(fd, raw)


def default_for(fd: FieldDef) -> Any:
    """The stored value of ``fd``'s default (``None`` when it has none)."""
    if fd.default is None:
        return None
    return coerce_value(msgspec.structs.replace(fd, required=False), fd.default)


# ---------------------------------------------------------------- text form (export, conversion)


def value_to_text(fd: FieldDef, value: Any) -> str:
    """The cell text of a stored value; :func:`coerce_value` with ``from_text`` reads it back."""
    if value is None:
        return ""
    ftype = fd.field_type
    if ftype == FieldType.MONEY and isinstance(value, dict):
        return format_money(value)
    if ftype == FieldType.BOOLEAN:
        return "true" if value else "false"
    if ftype == FieldType.MULTI_SELECT and isinstance(value, list):
        return f"{MULTI_SEPARATOR} ".join(value)
    if ftype == FieldType.LINE_ITEMS:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if ftype == FieldType.NUMBER and isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# ---------------------------------------------------------------- type changes


def convert_value(old: FieldDef, new: FieldDef, value: Any) -> Any:
    """``value`` (stored for ``old``) in ``new``'s form, or :class:`FieldValueError` when it does not convert.

    A value that converts loses nothing a person would miss: numbers become money in the field's
    currency, a single choice becomes a one-item multiple choice, and so on; anything else goes
    through its text form, exactly as if it were typed into a spreadsheet.
    """
    if value is None:
        return None
    old_type, new_type = old.field_type, new.field_type
    if old_type == FieldType.NUMBER and new_type == FieldType.MONEY:
        if new.currency is None:
            raise _bad("currency_required", "give the money field a currency to convert numbers")
        minor = Decimal(str(value)).scaleb(currency_exponent(new.currency))
        if minor != minor.to_integral_value():
            raise _bad("too_precise", f"{value} has more decimals than {new.currency}")
        return coerce_value(new, {"amount": int(minor), "currency": new.currency})
    if old_type == FieldType.MONEY and new_type == FieldType.NUMBER:
        number = Decimal(value["amount"]).scaleb(-currency_exponent(value["currency"]))
        return coerce_value(new, str(number), from_text=True)
    if old_type == FieldType.SELECT and new_type == FieldType.MULTI_SELECT:
        return coerce_value(new, [value])
    if old_type == FieldType.MULTI_SELECT and new_type == FieldType.SELECT:
        if len(value) > 1:
            raise _bad("several_choices", f"{value} has more than one choice")
        return coerce_value(new, value[0] if value else None)
    if old_type == FieldType.DATE and new_type == FieldType.DATETIME:
        return f"{value}T00:00:00Z"
    if old_type == FieldType.DATETIME and new_type == FieldType.DATE:
        return str(value)[:10]
    if old_type == FieldType.LINE_ITEMS and new_type == FieldType.LINE_ITEMS:
        return coerce_value(new, value)
    if old_type == new_type and old_type not in {FieldType.LINE_ITEMS}:
        return coerce_value(new, value)
    if new_type == FieldType.LINE_ITEMS:
        raise _bad("not_convertible", f"a {old_type} value cannot become line items")
    return coerce_value(new, value_to_text(old, value), from_text=True)


def problem_for(exc: FieldValueError, pointer: str) -> FieldProblem:
    return FieldProblem(pointer=pointer + exc.pointer, code=exc.code, message=exc.message)
