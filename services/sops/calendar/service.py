"""The tenant's business calendar: reading it, replacing it, and the due-time function runs use.

The arithmetic lives in :mod:`services.sops.calendar.hours` (pure); this module loads and stores
the tenant's settings and turns them into a :class:`~services.sops.calendar.hours.WorkingTime`.
"""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import service as audit
from services.names import name_problems
from services.sops.calendar.hours import (
    DEFAULT_INTERVALS,
    DEFAULT_TIMEZONE,
    DEFAULT_WORKING_DAYS,
    MINUTES_PER_DAY,
    Holiday,
    WorkingTime,
)
from services.sops.calendar.hours import due_at as _due_at
from services.sops.calendar.models import BusinessCalendar
from services.sops.calendar.public import country_known
from services.sops.calendar.schemas import CalendarIn, CalendarOut, IntervalOut, NamedDateIn, NamedDateOut
from services.sops.definition import Due
from tenants.base import utcnow
from tenants.context import TenantContextError
from tenants.errors import FieldProblem, ProblemError, ValidationProblem
from tenants.isolation import session_tenant_id
from tenants.models import Tenant

DueFunction = Callable[[Due, datetime, Mapping[str, Any]], datetime | None]

_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _tenant_id(db: AsyncSession) -> uuid.UUID:
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise TenantContextError("the business calendar needs a session bound to a tenant")
    return tenant_id


async def _tenant_timezone(db: AsyncSession, tenant_id: uuid.UUID) -> str:
    tenant = await db.get(Tenant, tenant_id)
    return tenant.timezone if tenant is not None and timezone_known(tenant.timezone) else DEFAULT_TIMEZONE


def timezone_known(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def clock_minutes(text: str) -> int | None:
    """``"09:30"`` -> 570; ``"24:00"`` -> 1440; None when malformed."""
    match = _CLOCK.match(text)
    if match is None:
        return None
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    return minutes if minutes <= MINUTES_PER_DAY else None


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _to_working_time(row: BusinessCalendar | None, tenant_timezone: str) -> WorkingTime:
    if row is None:
        return WorkingTime(timezone=tenant_timezone)
    return WorkingTime(
        timezone=row.timezone or tenant_timezone,
        working_days=tuple(sorted(row.working_days)),
        intervals=tuple(sorted((clock_minutes(i["start"]) or 0, clock_minutes(i["end"]) or 0) for i in row.intervals)),
        holidays=tuple(Holiday(date.fromisoformat(h["date"]), h.get("name", "")) for h in row.holidays),
        extra_working_days=tuple(
            Holiday(date.fromisoformat(h["date"]), h.get("name", "")) for h in row.extra_working_days
        ),
        holiday_country=row.holiday_country,
    )


async def _load(db: AsyncSession) -> tuple[BusinessCalendar | None, WorkingTime]:
    tenant_id = _tenant_id(db)
    row = await db.get(BusinessCalendar, tenant_id)
    return row, _to_working_time(row, await _tenant_timezone(db, tenant_id))


async def get_calendar(db: AsyncSession) -> WorkingTime:
    """The tenant's working calendar (the defaults in the tenant's timezone when none was saved)."""
    _row, cal = await _load(db)
    return cal


def due_function_for(cal: WorkingTime) -> DueFunction:
    """A pure ``due_at(due, ready_at, values)`` on ``cal``, for the run engine."""

    def due_at(due: Due, ready_at: datetime, values: Mapping[str, Any]) -> datetime | None:
        return _due_at(due, ready_at, values, cal)

    return due_at


async def due_function(db: AsyncSession) -> DueFunction:
    """Load the calendar once and return a pure ``due_at(due, ready_at, values)`` for the run engine."""
    return due_function_for(await get_calendar(db))


def calendar_out(cal: WorkingTime, row: BusinessCalendar | None) -> CalendarOut:
    return CalendarOut(
        timezone=cal.timezone,
        working_days=list(cal.working_days),
        intervals=[IntervalOut(start=clock_text(low), end=clock_text(high)) for low, high in cal.intervals],
        holidays=[NamedDateOut(date=h.date.isoformat(), name=h.name) for h in cal.holidays],
        extra_working_days=[NamedDateOut(date=h.date.isoformat(), name=h.name) for h in cal.extra_working_days],
        is_default=row is None,
        updated_at=row.updated_at if row is not None else None,
        holiday_country=cal.holiday_country if cal.holiday_country is not None else msgspec.UNSET,
    )


async def show_calendar(db: AsyncSession) -> CalendarOut:
    row, cal = await _load(db)
    return calendar_out(cal, row)


# ---------------------------------------------------------------- validating and saving


def _date_problems(entries: list[NamedDateIn], pointer: str, problems: list[FieldProblem]) -> dict[date, int]:
    seen: dict[date, int] = {}
    for index, entry in enumerate(entries):
        problems += name_problems(entry.name, f"{pointer}/{index}/name", required=False)
        try:
            day = date.fromisoformat(entry.date) if _ISO_DATE.match(entry.date) else None
        except ValueError:
            day = None
        if day is None:
            problems.append(
                FieldProblem(pointer=f"{pointer}/{index}/date", code="invalid_date", message="use a date as YYYY-MM-DD")
            )
            continue
        if day in seen:
            problems.append(
                FieldProblem.of(
                    pointer=f"{pointer}/{index}/date",
                    code="duplicate_date",
                    message="{date} is already listed at {where}/{index}",
                    date=entry.date,
                    where=pointer,
                    index=seen[day],
                )
            )
            continue
        seen[day] = index
    return seen


def calendar_problems(data: CalendarIn) -> list[FieldProblem]:
    """Every problem of a calendar, each with a JSON pointer and a stable code."""
    problems: list[FieldProblem] = []
    if data.timezone is not None and not timezone_known(data.timezone):
        problems.append(
            FieldProblem(pointer="/timezone", code="unknown_timezone", message="use an IANA time zone name")
        )
    if data.holiday_country is not None and not country_known(data.holiday_country):
        problems.append(
            FieldProblem(
                pointer="/holiday_country",
                code="unknown_country",
                message="use an upper-case ISO 3166-1 alpha-2 code of a country with public holiday data, e.g. CN",
            )
        )

    seen_days: set[int] = set()
    for index, weekday in enumerate(data.working_days):
        pointer = f"/working_days/{index}"
        if not 1 <= weekday <= 7:
            problems.append(
                FieldProblem(pointer=pointer, code="invalid_weekday", message="use 1 (Monday) to 7 (Sunday)")
            )
        elif weekday in seen_days:
            problems.append(FieldProblem(pointer=pointer, code="duplicate_weekday", message="listed twice"))
        seen_days.add(weekday)
    if not data.working_days:
        problems.append(
            FieldProblem(pointer="/working_days", code="no_working_days", message="name at least one working day")
        )

    parsed: list[tuple[int, int, int]] = []
    for index, interval in enumerate(data.intervals):
        pointer = f"/intervals/{index}"
        start, end = clock_minutes(interval.start), clock_minutes(interval.end)
        for name, value in (("start", start), ("end", end)):
            if value is None:
                problems.append(
                    FieldProblem(
                        pointer=f"{pointer}/{name}", code="invalid_time", message='use a time as "HH:MM" (00:00-24:00)'
                    )
                )
        if start is None or end is None:
            continue
        if start >= end:
            problems.append(
                FieldProblem.of(
                    pointer=pointer,
                    code="inverted_interval",
                    message="{start}-{end} ends before it starts (intervals stay within one day)",
                    start=interval.start,
                    end=interval.end,
                )
            )
            continue
        parsed.append((start, end, index))
    if not data.intervals:
        problems.append(
            FieldProblem(pointer="/intervals", code="no_working_hours", message="name at least one working interval")
        )
    parsed.sort()
    reach, reach_index = -1, -1  # the latest end so far, and whose it is
    for start, end, index in parsed:
        if start < reach:
            problems.append(
                FieldProblem.of(
                    pointer=f"/intervals/{index}",
                    code="overlapping_interval",
                    message="overlaps /intervals/{reach_index}",
                    reach_index=reach_index,
                )
            )
        if end > reach:
            reach, reach_index = end, index

    holidays = _date_problems(data.holidays, "/holidays", problems)
    extras = _date_problems(data.extra_working_days, "/extra_working_days", problems)
    for day, index in extras.items():
        if day in holidays:
            problems.append(
                FieldProblem.of(
                    pointer=f"/extra_working_days/{index}/date",
                    code="holiday_conflict",
                    message="{day} is also a holiday (/holidays/{index})",
                    day=day.isoformat(),
                    index=holidays[day],
                )
            )
    return problems


def _row_values(data: CalendarIn) -> dict[str, Any]:
    intervals = sorted(
        (clock_minutes(i.start) or 0, clock_minutes(i.end) or 0) for i in data.intervals
    )  # validated before
    return {
        "timezone": data.timezone,
        "holiday_country": data.holiday_country,
        "working_days": sorted(set(data.working_days)),
        "intervals": [{"start": clock_text(low), "end": clock_text(high)} for low, high in intervals],
        "holidays": sorted(({"date": h.date, "name": h.name} for h in data.holidays), key=lambda h: h["date"]),
        "extra_working_days": sorted(
            ({"date": h.date, "name": h.name} for h in data.extra_working_days), key=lambda h: h["date"]
        ),
    }


def _audit_view(row: BusinessCalendar | None) -> dict[str, Any] | None:
    if row is None:
        return None
    view: dict[str, Any] = {
        "timezone": row.timezone,
        "working_days": list(row.working_days),
        "intervals": list(row.intervals),
        "holidays": list(row.holidays),
        "extra_working_days": list(row.extra_working_days),
    }
    if row.holiday_country is not None:  # only when set: earlier audit entries keep their shape
        view["holiday_country"] = row.holiday_country
    return view


async def update_calendar(db: AsyncSession, data: CalendarIn, actor_id: uuid.UUID | None) -> CalendarOut:
    """Replace the tenant's calendar; every problem is listed (422) and nothing is written on any."""
    problems = calendar_problems(data)
    if problems:
        raise ValidationProblem("The business calendar is not valid.", errors=problems)
    tenant_id = _tenant_id(db)
    row = await db.get(BusinessCalendar, tenant_id, with_for_update=True)
    before = _audit_view(row)
    values = _row_values(data)
    if row is None:
        row = BusinessCalendar(tenant_id=tenant_id, **values)
        db.add(row)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    row.updated_by = actor_id
    row.updated_at = utcnow()
    try:
        await db.flush()
    except IntegrityError as exc:  # two first saves at once: the other one won
        raise ProblemError(
            "The calendar was changed at the same time; load it again and retry.",
            code="calendar_conflict",
            status=409,
            title="Conflict",
        ) from exc
    await audit.record_change(
        db,
        actor_id=actor_id,
        action="calendar.updated",
        subject_type="calendar",
        subject_id=tenant_id,
        before=before,
        after=_audit_view(row),
    )
    return calendar_out(_to_working_time(row, await _tenant_timezone(db, tenant_id)), row)


__all__ = [
    "DEFAULT_INTERVALS",
    "DEFAULT_WORKING_DAYS",
    "DueFunction",
    "WorkingTime",
    "calendar_problems",
    "due_function",
    "due_function_for",
    "get_calendar",
    "show_calendar",
    "update_calendar",
]
