"""Request and response bodies of the business calendar API.

Times are ``"HH:MM"`` (``"24:00"`` ends a day) and dates ``"YYYY-MM-DD"``, kept as text on input so
that every malformed one is reported with its own pointer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

Clock = Annotated[str, Meta(max_length=5, description='A local time of day, "HH:MM"; "24:00" is midnight at the end')]
IsoDate = Annotated[str, Meta(max_length=10, description='"YYYY-MM-DD"')]
Country = Annotated[
    str,
    Meta(
        max_length=2,
        description="ISO 3166-1 alpha-2 code (e.g. CN, US) whose public holidays and make-up working days "
        "the calendar follows, beneath its own holidays and extra working days",
    ),
]
Weekday = Annotated[int, Meta(description="ISO weekday: 1 = Monday … 7 = Sunday")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class IntervalIn(Input):
    start: Clock
    end: Clock


class NamedDateIn(Input):
    date: IsoDate
    name: Annotated[str, Meta(max_length=100)] = ""


class CalendarIn(Input):
    """The whole calendar (PUT replaces it). Omitted parts take their defaults."""

    timezone: Annotated[str, Meta(max_length=64, description="IANA name, e.g. Asia/Shanghai")] | None = None
    working_days: Annotated[list[Weekday], Meta(max_length=7)] = msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5])
    intervals: Annotated[list[IntervalIn], Meta(max_length=12)] = msgspec.field(
        default_factory=lambda: [IntervalIn(start="09:00", end="18:00")]
    )
    holidays: Annotated[list[NamedDateIn], Meta(max_length=1000)] = msgspec.field(default_factory=list)
    extra_working_days: Annotated[
        list[NamedDateIn], Meta(max_length=366, description="make-up working days (调休), e.g. a Saturday worked")
    ] = msgspec.field(default_factory=list)
    holiday_country: Country | None = None


class IntervalOut(msgspec.Struct):
    start: str
    end: str


class NamedDateOut(msgspec.Struct):
    date: str
    name: str


class CalendarOut(msgspec.Struct):
    timezone: str
    working_days: list[int]
    intervals: list[IntervalOut]
    holidays: list[NamedDateOut]
    extra_working_days: list[NamedDateOut]
    is_default: bool  # no calendar saved yet: these are the defaults
    updated_at: datetime | None = None
    # Left out of the answer when the calendar follows no country's public holidays.
    holiday_country: Country | msgspec.UnsetType = msgspec.UNSET
