"""The business calendar API: defaults, replacing it, validation, roles, audit and due times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.db import open_session
from services.sops.calendar import service as calendar
from services.sops.definition import Due, Duration
from tests.conftest import World

CALENDAR = {
    "timezone": "Asia/Shanghai",
    "working_days": [1, 2, 3, 4, 5],
    "intervals": [{"start": "13:00", "end": "18:00"}, {"start": "09:00", "end": "12:00"}],
    "holidays": [{"date": "2024-10-01", "name": "National Day"}, {"date": "2024-05-01", "name": "Labour Day"}],
    "extra_working_days": [{"date": "2024-05-11", "name": "Make-up day"}],
}


async def put(api: Any, body: Any) -> Any:
    return await api.request("PUT", "/api/v1/calendar", json=body)


async def test_defaults_follow_the_tenant(world: World) -> None:
    api, _ = await world.signup(timezone="Europe/Berlin")
    shown = await api.get("/api/v1/calendar")
    assert shown.status_code == 200
    assert shown.json() == {
        "timezone": "Europe/Berlin",
        "working_days": [1, 2, 3, 4, 5],
        "intervals": [{"start": "09:00", "end": "18:00"}],
        "holidays": [],
        "extra_working_days": [],
        "is_default": True,
        "updated_at": None,
    }


async def test_replace_and_read_back(world: World) -> None:
    api, body = await world.signup()
    saved = await put(api, CALENDAR)
    assert saved.status_code == 200, saved.text
    out = saved.json()
    assert out["is_default"] is False
    assert out["intervals"] == [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}]
    assert [h["date"] for h in out["holidays"]] == ["2024-05-01", "2024-10-01"]
    assert out["extra_working_days"] == [{"date": "2024-05-11", "name": "Make-up day"}]
    assert (await api.get("/api/v1/calendar")).json() == out

    # A second PUT replaces the whole calendar; omitted parts take their defaults.
    again = await put(api, {"timezone": "UTC", "working_days": [1, 2, 3, 4, 5, 6]})
    assert again.status_code == 200, again.text
    assert again.json()["holidays"] == []
    assert again.json()["working_days"] == [1, 2, 3, 4, 5, 6]
    assert again.json()["intervals"] == [{"start": "09:00", "end": "18:00"}]

    # The service sees what was saved, and computes due times on it.
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        cal = await calendar.get_calendar(db)
        due_at = await calendar.due_function(db)
    assert cal.timezone == "UTC"
    assert cal.working_days == (1, 2, 3, 4, 5, 6)
    friday_evening = datetime(2024, 5, 10, 17, 0, tzinfo=UTC)
    assert due_at(Due(within=Duration(hours=2)), friday_evening, {}) == datetime(2024, 5, 11, 10, 0, tzinfo=UTC)


async def test_every_problem_is_listed_and_nothing_is_saved(world: World) -> None:
    api, _ = await world.signup()
    bad = {
        "timezone": "Mars/Olympus_Mons",
        "working_days": [1, 8, 1],
        "intervals": [
            {"start": "09:00", "end": "12:30"},
            {"start": "12:00", "end": "18:00"},
            {"start": "19:00", "end": "18:00"},
            {"start": "9am", "end": "25:00"},
        ],
        "holidays": [{"date": "2024-02-30"}, {"date": "2024-05-01"}, {"date": "2024-05-01"}],
        "extra_working_days": [{"date": "2024-05-01"}, {"date": "20240511"}],
    }
    response = await put(api, bad)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert {(e["pointer"], e["code"]) for e in problem["errors"]} == {
        ("/timezone", "unknown_timezone"),
        ("/working_days/1", "invalid_weekday"),
        ("/working_days/2", "duplicate_weekday"),
        ("/intervals/1", "overlapping_interval"),
        ("/intervals/2", "inverted_interval"),
        ("/intervals/3/start", "invalid_time"),
        ("/intervals/3/end", "invalid_time"),
        ("/holidays/0/date", "invalid_date"),
        ("/holidays/2/date", "duplicate_date"),
        ("/extra_working_days/0/date", "holiday_conflict"),
        ("/extra_working_days/1/date", "invalid_date"),
    }
    assert (await api.get("/api/v1/calendar")).json()["is_default"] is True

    empty = await put(api, {"working_days": [], "intervals": []})
    assert {e["code"] for e in empty.json()["errors"]} == {"no_working_days", "no_working_hours"}
    typed = await put(api, {"working_days": "weekdays", "surprise": 1})
    assert typed.status_code == 422
    assert {e["pointer"] for e in typed.json()["errors"]} == {"/working_days", "/surprise"}


async def test_members_read_and_only_admins_write(world: World) -> None:
    owner, _ = await world.signup()
    manager, _ = await world.invite_and_join(owner, "manager")
    member, _ = await world.invite_and_join(owner, "member")
    assert (await member.get("/api/v1/calendar")).status_code == 200
    for api in (member, manager):
        refused = await put(api, CALENDAR)
        assert refused.status_code == 403
        assert refused.json()["code"] == "role_required"
    admin, _ = await world.invite_and_join(owner, "admin")
    assert (await put(admin, CALENDAR)).status_code == 200
    assert (await member.get("/api/v1/calendar")).json()["is_default"] is False
    anonymous = await world.client()
    assert (await anonymous.get("/api/v1/calendar")).status_code == 401


async def test_changes_are_audited(world: World) -> None:
    api, body = await world.signup()
    await put(api, CALENDAR)
    await put(api, {**CALENDAR, "holidays": []})
    events = (await api.get("/api/v1/audit")).json()
    changes = [e for e in _items(events) if e["action"] == "calendar.updated"]
    assert len(changes) == 2
    newest, first = changes
    assert first["before"] is None
    assert first["actor_id"] == body["user"]["id"]
    assert len(first["after"]["holidays"]) == 2
    assert newest["before"]["holidays"] == first["after"]["holidays"]
    assert newest["after"]["holidays"] == []


def _items(page: Any) -> list[dict[str, Any]]:
    return list(page["items"])


async def test_tenants_have_their_own_calendars(world: World) -> None:
    a, _ = await world.signup()
    b, _ = await world.signup()
    await put(a, {**CALENDAR, "timezone": "America/New_York"})
    assert (await b.get("/api/v1/calendar")).json()["is_default"] is True
    assert (await a.get("/api/v1/calendar")).json()["timezone"] == "America/New_York"


async def test_a_calendar_may_follow_a_countrys_public_holidays(world: World) -> None:
    api, body = await world.signup()
    saved = await put(
        api,
        {
            "timezone": "Asia/Shanghai",
            "holiday_country": "CN",
            "holidays": [{"date": "2025-09-29", "name": "Company outing"}],
        },
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["holiday_country"] == "CN"
    assert (await api.get("/api/v1/calendar")).json() == saved.json()

    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        due_at = await calendar.due_function(db)
    friday = datetime(2025, 9, 26, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai
    # Sunday the 28th is a make-up working day; the tenant closed Monday the 29th.
    assert due_at(Due(within=Duration(days=1, business=True)), friday, {}) == datetime(2025, 9, 28, 9, 0, tzinfo=UTC)
    assert due_at(Due(within=Duration(days=2, business=True)), friday, {}) == datetime(2025, 9, 30, 9, 0, tzinfo=UTC)
    # Then 1-8 October are National Day.
    assert due_at(Due(within=Duration(days=3, business=True)), friday, {}) == datetime(2025, 10, 9, 9, 0, tzinfo=UTC)

    # Leaving the country out goes back to the weekdays alone, and the answer leaves it out too.
    plain = await put(api, {"timezone": "Asia/Shanghai"})
    assert "holiday_country" not in plain.json()
    events = _items((await api.get("/api/v1/audit")).json())
    newest = next(e for e in events if e["action"] == "calendar.updated")
    assert newest["before"]["holiday_country"] == "CN"
    assert "holiday_country" not in newest["after"]


async def test_an_unknown_country_is_refused(world: World) -> None:
    api, _ = await world.signup()
    for country in ("XX", "cn"):
        refused = await put(api, {"holiday_country": country})
        assert refused.status_code == 422
        assert {(e["pointer"], e["code"]) for e in refused.json()["errors"]} == {
            ("/holiday_country", "unknown_country")
        }
    assert (await api.get("/api/v1/calendar")).json()["is_default"] is True
