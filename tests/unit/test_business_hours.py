"""Business-time arithmetic: worked examples and properties against a minute-by-minute oracle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.sops.calendar.hours import (
    Holiday,
    NoWorkingTime,
    WorkingTime,
    add_business_days,
    add_business_time,
    add_duration,
    due_at,
    next_working_moment,
)
from services.sops.definition import Due, Duration

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAL = WorkingTime(
    timezone="Asia/Shanghai",
    holidays=(Holiday(date(2024, 5, 1), "Labour Day"),),
    extra_working_days=(Holiday(date(2024, 5, 11), "Make-up day"),),
)
LUNCH = WorkingTime(timezone="Asia/Shanghai", intervals=((9 * 60, 12 * 60), (13 * 60, 18 * 60)))


def sh(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    """A Shanghai wall time as the aware UTC instant the functions take and give."""
    return datetime(y, m, d, hh, mm, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.mark.parametrize(
    ("start", "minutes", "expected"),
    [
        (sh(2024, 5, 6, 10), 60, sh(2024, 5, 6, 11)),  # Monday, inside hours
        (sh(2024, 5, 6, 17, 30), 60, sh(2024, 5, 7, 9, 30)),  # carries over to Tuesday
        (sh(2024, 5, 6, 17), 60, sh(2024, 5, 6, 18)),  # lands exactly at closing time
        (sh(2024, 5, 3, 17), 120, sh(2024, 5, 6, 10)),  # Friday -> Monday
        (sh(2024, 5, 4, 15), 0, sh(2024, 5, 6, 9)),  # Saturday: the next working moment
        (sh(2024, 5, 6, 7), 30, sh(2024, 5, 6, 9, 30)),  # before opening
        (sh(2024, 5, 6, 20), 30, sh(2024, 5, 7, 9, 30)),  # after closing
        (sh(2024, 4, 30, 17), 120, sh(2024, 5, 2, 10)),  # the 1 May holiday is skipped
        (sh(2024, 5, 10, 17), 120, sh(2024, 5, 11, 10)),  # Saturday 11 May is a make-up working day
        (sh(2024, 5, 6, 10), 9 * 60 * 5, sh(2024, 5, 11, 10)),  # five working days later: the make-up Saturday
        (sh(2024, 4, 29, 10), 9 * 60 * 3, sh(2024, 5, 3, 10)),  # three working days, over the holiday
    ],
)
def test_add_business_time_examples(start: datetime, minutes: int, expected: datetime) -> None:
    assert add_business_time(start, minutes, CAL) == expected


def test_lunch_break_is_not_counted() -> None:
    assert add_business_time(sh(2024, 5, 6, 11, 30), 60, LUNCH) == sh(2024, 5, 6, 13, 30)
    assert add_business_time(sh(2024, 5, 6, 12, 15), 15, LUNCH) == sh(2024, 5, 6, 13, 15)
    assert next_working_moment(sh(2024, 5, 6, 12, 0), LUNCH) == sh(2024, 5, 6, 13)
    assert next_working_moment(sh(2024, 5, 6, 11, 0), LUNCH) == sh(2024, 5, 6, 11)


def test_daylight_saving_counts_real_minutes() -> None:
    # New York springs forward at 02:00 on Sunday 10 March 2024: the night has an hour less.
    always = WorkingTime(timezone="America/New_York", working_days=(1, 2, 3, 4, 5, 6, 7), intervals=((0, 1440),))
    start = datetime(2024, 3, 10, 0, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    result = add_business_time(start, 180, always)
    assert result - start == timedelta(hours=3)
    assert result.astimezone(ZoneInfo("America/New_York")).hour == 4
    # Office hours keep their local time across the change: Friday 17:00 EST + 2h -> Monday 10:00 EDT.
    office = WorkingTime(timezone="America/New_York")
    friday = datetime(2024, 3, 8, 17, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    monday = datetime(2024, 3, 11, 10, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    assert add_business_time(friday, 120, office) == monday
    # One working day keeps the local time of day: 17:00 on Monday, 71 real hours later.
    monday_close = datetime(2024, 3, 11, 17, 0, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    assert add_business_days(friday, 1, office) == monday_close
    assert monday_close - friday == timedelta(hours=71)


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (sh(2024, 5, 6, 10), 1, sh(2024, 5, 7, 10)),
        (sh(2024, 5, 3, 10), 1, sh(2024, 5, 6, 10)),  # Friday -> Monday
        (sh(2024, 4, 30, 10), 1, sh(2024, 5, 2, 10)),  # over the holiday
        (sh(2024, 5, 10, 10), 1, sh(2024, 5, 11, 10)),  # onto the make-up Saturday
        (sh(2024, 5, 4, 15), 1, sh(2024, 5, 7, 9)),  # Saturday: from Monday's opening
        (sh(2024, 5, 6, 18), 1, sh(2024, 5, 8, 9)),  # at closing: from Tuesday's opening
        (sh(2024, 5, 6, 10), 0, sh(2024, 5, 6, 10)),
    ],
)
def test_add_business_days_examples(start: datetime, days: int, expected: datetime) -> None:
    assert add_business_days(start, days, CAL) == expected


def test_due_at_relative_to_step_start() -> None:
    ready = sh(2024, 5, 6, 17)
    assert due_at(Due(within=Duration(hours=2)), ready, {}, CAL) == sh(2024, 5, 7, 10)
    assert due_at(Due(within=Duration(days=1, hours=1)), ready, {}, CAL) == sh(2024, 5, 7, 18)
    assert due_at(Due(within=Duration(days=1, minutes=90)), ready, {}, CAL) == sh(2024, 5, 8, 9, 30)
    # Wall-clock time ignores the calendar entirely.
    plain = Due(within=Duration(days=1, hours=2, minutes=3, business=False))
    assert due_at(plain, ready, {}, CAL) == ready + timedelta(days=1, hours=2, minutes=3)


def test_due_at_relative_to_a_field() -> None:
    within_day = Due(within=Duration(days=1), relative_to="record.delivery_date")
    values = {"record": {"delivery_date": "2024-05-06"}, "data": {"promised_at": "2024-05-06T16:00:00+08:00"}}
    # A date starts at local midnight, counting from Monday's opening.
    assert due_at(within_day, sh(2024, 1, 1, 0), values, CAL) == sh(2024, 5, 7, 9)
    two_hours = Due(within=Duration(hours=2), relative_to="data.promised_at")
    assert due_at(two_hours, sh(2024, 1, 1, 0), values, CAL) == sh(2024, 5, 6, 18)
    values_as_objects = {"record": {"delivery_date": date(2024, 5, 6)}}
    assert due_at(within_day, sh(2024, 1, 1, 0), values_as_objects, CAL) == sh(2024, 5, 7, 9)
    # A naive datetime is the tenant's local time.
    naive = {"data": {"promised_at": datetime(2024, 5, 6, 16, 0)}}
    assert due_at(two_hours, sh(2024, 1, 1, 0), naive, CAL) == sh(2024, 5, 6, 18)


@pytest.mark.parametrize(
    "values",
    [{}, {"record": {}}, {"record": {"delivery_date": None}}, {"record": {"delivery_date": "soon"}}, {"record": 3}],
)
def test_due_at_missing_field_is_none(values: dict[str, object]) -> None:
    due = Due(within=Duration(days=1), relative_to="record.delivery_date")
    assert due_at(due, sh(2024, 5, 6, 10), values, CAL) is None


def test_a_calendar_without_working_time_fails_loudly() -> None:
    never = WorkingTime(working_days=())
    with pytest.raises(NoWorkingTime):
        add_business_time(sh(2024, 5, 6, 10), 10, never)
    with pytest.raises(NoWorkingTime):
        add_business_days(sh(2024, 5, 6, 10), 1, never)
    # Only Mondays, and every Monday for years a holiday: no working time either.
    mondays = tuple(Holiday(date(2024, 5, 6) + timedelta(weeks=n)) for n in range(52 * 4))
    with pytest.raises(NoWorkingTime):
        add_business_time(sh(2024, 5, 6, 10), 10, WorkingTime(working_days=(1,), holidays=mondays))


def test_naive_and_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(datetime(2024, 5, 6, 10), 10, CAL)
    with pytest.raises(ValueError, match="negative"):
        add_business_time(sh(2024, 5, 6, 10), -1, CAL)
    with pytest.raises(ValueError, match="negative"):
        add_business_days(sh(2024, 5, 6, 10), -1, CAL)


def test_zero_duration_is_the_next_working_moment() -> None:
    assert add_duration(sh(2024, 5, 4, 10), Duration(), CAL) == sh(2024, 5, 6, 9)


# ---------------------------------------------------------------- properties

ZONES = ["Asia/Shanghai", "UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney"]
DAYS = st.dates(min_value=date(2024, 1, 1), max_value=date(2024, 3, 31))


@st.composite
def calendars(draw: st.DrawFn) -> WorkingTime:
    # Daytime intervals only (06:00-22:00): daylight-saving gaps fall at night.
    cuts = sorted(draw(st.sets(st.integers(min_value=6 * 4, max_value=22 * 4), min_size=2, max_size=6)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    intervals = tuple((cuts[i] * 15, cuts[i + 1] * 15) for i in range(0, len(cuts), 2))
    holidays = draw(st.sets(DAYS, max_size=20))
    extras = draw(st.sets(DAYS, max_size=5)) - holidays
    return WorkingTime(
        timezone=draw(st.sampled_from(ZONES)),
        working_days=tuple(sorted(draw(st.sets(st.integers(1, 7), min_size=1)))),
        intervals=intervals,
        holidays=tuple(Holiday(d, "holiday") for d in sorted(holidays)),
        extra_working_days=tuple(Holiday(d, "make-up") for d in sorted(extras)),
    )


starts = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 3, 1)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
)


def is_working_day(cal: WorkingTime, day: date) -> bool:
    if day in {h.date for h in cal.extra_working_days}:
        return True
    if day in {h.date for h in cal.holidays}:
        return False
    return day.isoweekday() in cal.working_days


def working_minute(cal: WorkingTime, moment: datetime) -> bool:
    """Is the minute beginning at ``moment`` a working minute? (The oracle: no cleverness at all.)"""
    local = moment.astimezone(ZoneInfo(cal.timezone))
    minute = local.hour * 60 + local.minute
    return is_working_day(cal, local.date()) and any(low <= minute < high for low, high in cal.intervals)


def in_working_hours_or_at_an_end(cal: WorkingTime, moment: datetime) -> bool:
    local = moment.astimezone(ZoneInfo(cal.timezone))
    minute = local.hour * 60 + local.minute + local.second / 60
    return is_working_day(cal, local.date()) and any(low <= minute <= high for low, high in cal.intervals)


@settings(max_examples=60, deadline=None)
@given(cal=calendars(), start=starts, minutes=st.integers(min_value=1, max_value=600))
def test_matches_counting_minute_by_minute(cal: WorkingTime, start: datetime, minutes: int) -> None:
    moment, counted = start, 0
    while counted < minutes:
        if working_minute(cal, moment):
            counted += 1
        moment += timedelta(minutes=1)
    assert add_business_time(start, minutes, cal) == moment


@settings(max_examples=150, deadline=None)
@given(cal=calendars(), start=starts, minutes=st.integers(min_value=0, max_value=20_000))
def test_result_is_after_start_and_inside_working_hours(cal: WorkingTime, start: datetime, minutes: int) -> None:
    result = add_business_time(start, minutes, cal)
    assert result >= start
    assert in_working_hours_or_at_an_end(cal, result)
    holidays = {h.date for h in cal.holidays} - {h.date for h in cal.extra_working_days}
    assert result.astimezone(ZoneInfo(cal.timezone)).date() not in holidays


@settings(max_examples=150, deadline=None)
@given(
    cal=calendars(),
    start=starts,
    a=st.integers(min_value=0, max_value=5000),
    b=st.integers(min_value=1, max_value=5000),
)
def test_adding_a_then_b_is_adding_a_plus_b(cal: WorkingTime, start: datetime, a: int, b: int) -> None:
    assert add_business_time(add_business_time(start, a, cal), b, cal) == add_business_time(start, a + b, cal)


@settings(max_examples=100, deadline=None)
@given(cal=calendars(), start=starts, days=st.integers(min_value=0, max_value=40))
def test_business_days_land_on_working_days(cal: WorkingTime, start: datetime, days: int) -> None:
    result = add_business_days(start, days, cal)
    first = next_working_moment(start, cal)
    assert result >= first >= start
    assert in_working_hours_or_at_an_end(cal, result)
    zone = ZoneInfo(cal.timezone)
    # Exactly `days` working days lie after the first working day, up to and including the result's day.
    day, last, counted = first.astimezone(zone).date(), result.astimezone(zone).date(), 0
    while day < last:
        day += timedelta(days=1)
        counted += is_working_day(cal, day)
    assert counted == days
    assume(days > 0)
    assert result.astimezone(zone).time() == first.astimezone(zone).time()
