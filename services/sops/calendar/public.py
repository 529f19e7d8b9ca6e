"""A country's public holidays and make-up working days, from packaged data. Pure: no I/O, no clock.

Mainland China's days off and its make-up working days (调休: weekend days worked in exchange for a
longer holiday) are announced year by year; ``chinese_calendar`` ships them for the years it knows.
Every other country, and China in the years ``chinese_calendar`` does not cover yet, comes from the
``holidays`` package: its Chinese data computes the statutory holidays of any year, but knows the
make-up working days only of the years it was told about.

Both packages are imported on first use: loading them costs most of a second, which a process
whose calendars follow no country never pays.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Final

CHINA: Final = "CN"


@dataclass(frozen=True, slots=True)
class PublicYear:
    """One year of a country's calendar: the dates off and the weekend dates worked, with their names."""

    holidays: Mapping[date, str]
    working_days: Mapping[date, str]


@functools.cache
def supported_countries() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes of the countries the ``holidays`` package knows."""
    from holidays.registry import EntityLoader

    # Read from the registry: listing them through the package would import every country's module.
    return frozenset(EntityLoader.get_country_codes(include_aliases=False))


def country_known(country: str) -> bool:
    """Whether ``country`` (upper-case alpha-2) has public holiday data."""
    return country in supported_countries()


@functools.cache
def _chinese_calendar_years() -> frozenset[int]:
    import chinese_calendar

    return frozenset(day.year for day in chinese_calendar.holidays)


def _from_chinese_calendar(year: int) -> PublicYear:
    import chinese_calendar

    return PublicYear(
        holidays=MappingProxyType({d: str(n) for d, n in chinese_calendar.holidays.items() if d.year == year}),
        working_days=MappingProxyType({d: str(n) for d, n in chinese_calendar.workdays.items() if d.year == year}),
    )


def _from_holidays(country: str, year: int) -> PublicYear:
    import holidays

    days = holidays.country_holidays(country, years=year)
    worked = {d: "" for d in getattr(days, "weekend_workdays", ()) if d.year == year}
    return PublicYear(
        holidays=MappingProxyType({d: str(name) for d, name in days.items() if d.year == year}),
        working_days=MappingProxyType(worked),
    )


@functools.lru_cache(maxsize=512)
def public_year(country: str, year: int) -> PublicYear:
    """``country``'s public holidays and make-up working days in ``year`` (a country without data: none)."""
    if country == CHINA and year in _chinese_calendar_years():
        return _from_chinese_calendar(year)
    if not country_known(country):
        return PublicYear(holidays=MappingProxyType({}), working_days=MappingProxyType({}))
    # Beyond chinese_calendar's years China's statutory holidays still come from `holidays`; the
    # make-up working days of a year neither package knows are not counted until one ships them.
    return _from_holidays(country, year)


def is_public_holiday(country: str, day: date) -> bool:
    """Whether ``day`` is a day off in ``country`` (and not one of its make-up working days)."""
    year = public_year(country, day.year)
    return day in year.holidays and day not in year.working_days


def is_public_working_day(country: str, day: date) -> bool:
    """Whether ``day`` is a make-up working day in ``country``: a weekend day that is worked."""
    return day in public_year(country, day.year).working_days
