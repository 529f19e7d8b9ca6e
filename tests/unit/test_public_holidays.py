"""A business calendar that follows a country's public holidays and make-up working days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.sops.calendar.hours import (
    Holiday,
    WorkingTime,
    add_business_days,
    add_business_time,
    add_duration,
    due_at,
)
from services.sops.calendar.public import (
    country_known,
    is_public_holiday,
    is_public_working_day,
    public_year,
)
from services.sops.definition import Due, Duration

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
CHINA = WorkingTime(timezone="Asia/Shanghai", holiday_country="CN")
UNITED_STATES = WorkingTime(timezone="America/New_York", holiday_country="US")


def sh(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SHANGHAI).astimezone(UTC)


def ny(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=NEW_YORK).astimezone(UTC)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def test_china_2025_national_day_is_off_and_its_sunday_make_up_day_is_worked() -> None:
    assert all(is_public_holiday("CN", day) for day in _days(date(2025, 10, 1), date(2025, 10, 8)))
    assert is_public_working_day("CN", date(2025, 9, 28))  # a Sunday
    assert date(2025, 9, 28).isoweekday() == 7
    # Friday 26 September, 17:00 + one working day: Sunday 28th is worked.
    assert add_business_days(sh(2025, 9, 26, 17), 1, CHINA) == sh(2025, 9, 28, 17)
    # Tuesday 30 September 17:00 + two working hours: 1-8 October are off, 9 October opens.
    assert add_business_time(sh(2025, 9, 30, 17), 120, CHINA) == sh(2025, 10, 9, 10)


def test_without_a_country_the_same_dates_follow_the_weekdays() -> None:
    plain = WorkingTime(timezone="Asia/Shanghai")
    assert add_business_days(sh(2025, 9, 26, 17), 1, plain) == sh(2025, 9, 29, 17)
    assert add_business_time(sh(2025, 9, 30, 17), 120, plain) == sh(2025, 10, 1, 10)


def test_united_states_independence_day_is_off() -> None:
    assert is_public_holiday("US", date(2025, 7, 4))
    # Thursday 3 July 2025, 17:00 + two working hours: Friday the 4th is off, Monday the 7th opens.
    assert add_business_time(ny(2025, 7, 3, 17), 120, UNITED_STATES) == ny(2025, 7, 7, 10)
    assert add_business_time(ny(2025, 7, 3, 17), 120, WorkingTime(timezone="America/New_York")) == ny(2025, 7, 4, 10)


def test_the_tenants_own_dates_come_first() -> None:
    cal = WorkingTime(
        timezone="Asia/Shanghai",
        holiday_country="CN",
        holidays=(Holiday(date(2025, 9, 29), "Company outing"), Holiday(date(2025, 9, 28), "Closed")),
        extra_working_days=(Holiday(date(2025, 10, 2), "Stocktaking"),),
    )
    # Friday 26th 17:00 + one working day: the 28th (a make-up day) and the 29th (a weekday) are
    # closed by the tenant, the 30th is worked.
    assert add_business_days(sh(2025, 9, 26, 17), 1, cal) == sh(2025, 9, 30, 17)
    # From the 30th, the next working day is the tenant's own working day inside the national holiday.
    assert add_business_days(sh(2025, 9, 30, 17), 1, cal) == sh(2025, 10, 2, 17)


def test_sla_due_time_over_a_holiday() -> None:
    due = Due(within=Duration(days=2, business=True))
    # Ready on Tuesday 30 September 10:00: two working days later skips 1-8 October (and counts
    # nothing on the weekend of 4-5 October): Friday 10 October, 10:00.
    assert due_at(due, sh(2025, 9, 30, 10), {}, CHINA) == sh(2025, 10, 10, 10)
    hours = Duration(hours=10, business=True)  # 9 working hours a day
    assert add_duration(sh(2025, 9, 30, 17), hours, CHINA) == sh(2025, 10, 9, 18)


def test_china_beyond_chinese_calendar_years_still_has_its_statutory_holidays() -> None:
    year = max(day.year for day in public_year("CN", 2025).holidays) + 5
    assert date(year, 10, 1) in public_year("CN", year).holidays
    assert date(year, 5, 1) in public_year("CN", year).holidays


def test_countries_known() -> None:
    assert country_known("CN") and country_known("US") and country_known("DE")
    assert not country_known("XX") and not country_known("cn")
