"""Money and quantities as :class:`~decimal.Decimal`, never floats, rounded half up as invoices are."""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def to_decimal(value: Any) -> Decimal | None:
    """``value`` (a JSON number or a numeric string) as a finite Decimal; ``None`` when it is not one.

    Floats go through ``str`` so that 0.1 stays 0.1 rather than its binary approximation."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))
    elif isinstance(value, str) and value.strip():
        try:
            number = Decimal(value.strip().replace(",", ""))
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def cents(value: Decimal) -> Decimal:
    """``value`` rounded half up to 2 decimal places."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def amount_of(value: Any) -> Decimal:
    """A stored amount (number or string) as cents; an unreadable or empty one counts as zero."""
    number = to_decimal(value)
    return cents(number) if number is not None else ZERO


def as_json_number(value: Decimal) -> float | int:
    """A Decimal as a JSON number: an int when whole, else a float (exact for 2-decimal amounts)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def as_text(value: Decimal) -> str:
    """An amount as text with 2 decimals, as accounting files show it (``"1234.50"``)."""
    return f"{cents(value):.2f}"


def is_currency(value: Any) -> bool:
    """Whether ``value`` is an ISO 4217 code: three capital letters."""
    return isinstance(value, str) and _CURRENCY.fullmatch(value) is not None


def parse_date(value: Any) -> dt.date | None:
    """A ``YYYY-MM-DD`` date (a datetime's date part is accepted too); ``None`` when it is not one."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def parse_period(value: Any) -> tuple[dt.date, dt.date] | None:
    """A ``YYYY-MM`` period as its first and last day; ``None`` when it is not one."""
    if not isinstance(value, str):
        return None
    match = _PERIOD.fullmatch(value.strip())
    if match is None:
        return None
    year, month = int(match[1]), int(match[2])
    first = dt.date(year, month, 1)
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return first, following - dt.timedelta(days=1)
