"""Business-time arithmetic on a tenant's working calendar. Pure: no I/O, no clock.

A calendar says which days are working days (ISO weekdays, minus named holidays, plus make-up
working days such as a Saturday worked in exchange for a holiday bridge, 调休) and which hours of a
working day count (one or more intervals, the same on every working day), in the tenant's timezone.
A calendar may also follow a country's public holidays and make-up working days
(:mod:`services.sops.calendar.public`); the tenant's own dates take precedence over the country's.

Times go in and come out as timezone-aware UTC. Durations are counted in real elapsed minutes:
each working interval is converted to UTC on its own date, so a daylight-saving change is honoured.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from services.sops.calendar.public import is_public_holiday, is_public_working_day
from services.sops.definition import Due, Duration

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"
DEFAULT_WORKING_DAYS: Final = (1, 2, 3, 4, 5)
DEFAULT_INTERVALS: Final = ((9 * 60, 18 * 60),)
MINUTES_PER_DAY: Final = 24 * 60
# A calendar whose next working moment is further away than this has no working time at all.
_SEARCH_LIMIT_DAYS: Final = 3 * 366


class Holiday(msgspec.Struct, frozen=True):
    """A named date: a holiday (not worked) or a make-up working day."""

    date: date
    name: str = ""


class WorkingTime(msgspec.Struct, frozen=True):
    """A tenant's working calendar.

    ``intervals`` are ``(start, end)`` minutes since local midnight, sorted, not overlapping,
    ``0 <= start < end <= 1440``; ``working_days`` are ISO weekdays (1 = Monday).
    ``holiday_country`` (ISO 3166-1 alpha-2, or None for none) adds that country's public holidays
    and make-up working days under the tenant's own ``holidays`` and ``extra_working_days``.
    """

    timezone: str = DEFAULT_TIMEZONE
    working_days: tuple[int, ...] = DEFAULT_WORKING_DAYS
    intervals: tuple[tuple[int, int], ...] = DEFAULT_INTERVALS
    holidays: tuple[Holiday, ...] = ()
    extra_working_days: tuple[Holiday, ...] = ()
    holiday_country: str | None = None


class NoWorkingTime(ValueError):
    """The calendar has no working time within a few years of the start."""


class _Plan:
    """A calendar prepared for fast lookups (built once per distinct calendar)."""

    __slots__ = ("country", "extra", "holidays", "intervals", "weekdays", "zone")

    def __init__(self, cal: WorkingTime) -> None:
        self.zone = ZoneInfo(cal.timezone)
        self.weekdays = frozenset(cal.working_days)
        self.holidays = frozenset(h.date for h in cal.holidays)
        self.extra = frozenset(h.date for h in cal.extra_working_days)
        self.intervals = tuple(sorted(cal.intervals))
        self.country = cal.holiday_country

    def is_working_day(self, day: date) -> bool:
        # The tenant's own dates first: a closure it added closes even a make-up working day, and
        # a day it chose to work is worked even on a public holiday.
        if day in self.extra:
            return True
        if day in self.holidays:
            return False
        if self.country is not None:
            if is_public_working_day(self.country, day):
                return True
            if is_public_holiday(self.country, day):
                return False
        return day.isoweekday() in self.weekdays

    def local(self, day: date, minute: int) -> datetime:
        """The UTC instant of ``minute`` past local midnight on ``day`` (1440 = the next midnight)."""
        # Adding to an aware datetime is wall-clock arithmetic; zoneinfo then finds that wall time's offset.
        wall = datetime.combine(day, time(), tzinfo=self.zone) + timedelta(minutes=minute)
        return wall.astimezone(UTC)

    def periods(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working periods (UTC, in order) that end after ``start``, the first clipped to begin at it."""
        day = start.astimezone(self.zone).date() - timedelta(days=1)  # the day before covers DST edges
        searched = 0
        while True:
            if self.is_working_day(day):
                searched = 0
                for low, high in self.intervals:
                    begin, end = self.local(day, low), self.local(day, high)
                    if end <= start or end <= begin:
                        continue
                    yield max(begin, start), end
            else:
                searched += 1
                if searched > _SEARCH_LIMIT_DAYS:
                    raise NoWorkingTime("the business calendar has no working time ahead")
            day += timedelta(days=1)


@functools.lru_cache(maxsize=256)
def _plan(cal: WorkingTime) -> _Plan:
    return _Plan(cal)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("business-time arithmetic needs a timezone-aware datetime")
    return moment.astimezone(UTC)


def next_working_moment(start: datetime, cal: WorkingTime) -> datetime:
    """``start`` itself when it lies inside working hours, else the beginning of the next working period."""
    begin, _end = next(_plan(cal).periods(_aware(start)))
    return begin


def add_business_time(start: datetime, minutes: int, cal: WorkingTime) -> datetime:
    """The moment ``minutes`` working minutes after ``start`` (counting from the next working moment).

    With ``minutes > 0`` the result is the earliest such moment, so it may be exactly the end of a
    working interval (18:00 rather than 09:00 the next working day); with ``minutes == 0`` it is
    the next working moment.
    """
    if minutes < 0:
        raise ValueError("minutes must not be negative")
    start = _aware(start)
    remaining = timedelta(minutes=minutes)
    periods = _plan(cal).periods(start)
    if minutes == 0:
        return next(periods)[0]
    for begin, end in periods:
        available = end - begin
        if remaining <= available:
            return begin + remaining
        remaining -= available
    raise AssertionError("unreachable: periods() is endless or raises")  # pragma: no cover


def add_business_days(start: datetime, days: int, cal: WorkingTime) -> datetime:
    """The same local time of day ``days`` working days after the next working moment from ``start``.

    A start outside working hours first moves to the next working moment (so a request made on
    Saturday with one working day to answer is due on Tuesday at opening time).
    """
    if days < 0:
        raise ValueError("days must not be negative")
    plan = _plan(cal)
    moment = next_working_moment(start, cal)
    if days == 0:
        return moment
    local = moment.astimezone(plan.zone)
    day = local.date()
    minute = local.hour * 60 + local.minute
    counted = searched = 0
    while counted < days:
        day += timedelta(days=1)
        if plan.is_working_day(day):
            counted += 1
            searched = 0
        else:
            searched += 1
            if searched > _SEARCH_LIMIT_DAYS:
                raise NoWorkingTime("the business calendar has no working time ahead")
    return plan.local(day, minute) + timedelta(seconds=local.second, microseconds=local.microsecond)


def add_duration(start: datetime, within: Duration, cal: WorkingTime) -> datetime:
    """``start`` plus ``within``: working days then working minutes when ``business``, else wall-clock time."""
    start = _aware(start)
    if not within.business:
        return start + timedelta(days=within.days, hours=within.hours, minutes=within.minutes)
    moment = add_business_days(start, within.days, cal) if within.days else start
    working_minutes = within.hours * 60 + within.minutes
    if working_minutes or not within.days:
        moment = add_business_time(moment, working_minutes, cal)
    return moment


def field_value(values: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``record.delivery_date``) of nested mappings; None when missing."""
    current: Any = values
    for key in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def as_moment(value: Any, cal: WorkingTime) -> datetime | None:
    """A date/datetime field value as an aware UTC instant; a date (or naive time) is local to the tenant.

    ISO text is accepted, since JSON-stored records keep dates as text. Anything else is None.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=_plan(cal).zone)
        return moment.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=_plan(cal).zone).astimezone(UTC)
    return None


def due_at(due: Due, ready_at: datetime, values: Mapping[str, Any], cal: WorkingTime) -> datetime | None:
    """When a step that became ready at ``ready_at`` is due, or None when its date field is empty."""
    if due.relative_to == "step_start":
        base: datetime | None = _aware(ready_at)
    else:
        base = as_moment(field_value(values, due.relative_to), cal)
    if base is None:
        return None
    return add_duration(base, due.within, cal)
