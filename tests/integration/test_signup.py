"""Self-serve sign-up: one transaction creating user, tenant, owner membership and default entity."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from services.accounts.models import User
from services.db import open_session
from services.outbox.models import OutboxEvent
from tenants.models import Entity, Membership, Tenant
from tests.conftest import World, deliver_events, mail_to, signup_body


async def test_signup_creates_everything_and_signs_in(world: World) -> None:
    api, body = await world.signup(company_name="杭州茶叶进出口有限公司", locale="zh-CN")
    tenant_id = uuid.UUID(body["tenant"]["id"])
    assert body["tenant"]["industry"] == "foreign_trade"
    assert body["tenant"]["timezone"] == "Asia/Shanghai"
    assert body["user"]["email_verified"] is False

    session = (await api.get("/api/v1/auth/session")).json()
    assert session["tenant"]["id"] == str(tenant_id)
    assert session["role"] == "owner"
    entities = (await api.get("/api/v1/entities")).json()
    assert [(e["name"], e["is_default"]) for e in entities] == [("杭州茶叶进出口有限公司", True)]

    async with open_session(system=True) as db:
        events = (await db.scalars(select(OutboxEvent).where(OutboxEvent.tenant_id == tenant_id))).all()
    assert "tenant.created" in {e.type for e in events}
    created = next(e for e in events if e.type == "tenant.created")
    assert created.payload["slug"] == body["tenant"]["slug"]


async def test_verification_mail_is_sent_in_the_users_language(world: World) -> None:
    _api, body = await world.signup(locale="zh-CN")
    await deliver_events()
    mails = mail_to(body["user"]["email"], "verify_email")
    assert len(mails) == 1
    assert "请确认" in mails[0].subject
    assert mails[0].link.startswith("http://guiju.test/verify-email?token=")


async def test_every_validation_problem_is_listed(world: World) -> None:
    api = await world.client()
    response = await api.post(
        "/api/v1/auth/signup",
        {
            "email": "not-an-email",
            "password": "short",
            "display_name": "x" * 101,
            "company_name": " ",
            "industry": "mining",
            "locale": "fr",
            "timezone": "Mars/Olympus",
            "surprise": True,
        },
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation_failed"
    codes = {(e["pointer"], e["code"]) for e in problem["errors"]}
    assert codes >= {
        ("/email", "invalid_email"),
        ("/password", "password_too_short"),
        ("/display_name", "too_long"),
        ("/company_name", "required"),
        ("/industry", "unknown_industry"),
        ("/locale", "unknown_locale"),
        ("/timezone", "unknown_timezone"),
        ("/surprise", "unknown_field"),
    }


async def test_weak_and_overlong_passwords_are_refused(world: World) -> None:
    api = await world.client()
    for password, code in [
        ("aaaaaaaaaaaa", "password_too_weak"),
        ("password123", "password_too_weak"),
        ("Ab1-" * 40, "password_too_long"),
    ]:
        response = await api.post("/api/v1/auth/signup", signup_body(password=password))
        assert response.status_code == 422, password
        assert code in {e["code"] for e in response.json()["errors"]}


async def test_missing_fields_and_wrong_types_are_all_listed(world: World) -> None:
    api = await world.client()
    response = await api.post("/api/v1/auth/signup", {"email": 42, "password": ["x"]})
    assert response.status_code == 422
    found = {(e["pointer"], e["code"]) for e in response.json()["errors"]}
    assert found >= {
        ("/email", "wrong_type"),
        ("/password", "wrong_type"),
        ("/display_name", "required"),
        ("/company_name", "required"),
        ("/industry", "required"),
    }


async def test_malformed_json_is_a_clear_problem(world: World) -> None:
    api = await world.client()
    response = await api.post("/api/v1/auth/signup", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_duplicate_email_and_slug_are_conflicts_and_leave_nothing_behind(world: World) -> None:
    _api, first = await world.signup(slug=f"tea-{first_suffix()}")
    async with open_session(system=True) as db:
        before = [await db.scalar(select(func.count()).select_from(t)) for t in (User, Tenant, Membership, Entity)]

    api = await world.client()
    dup_email = await api.post("/api/v1/auth/signup", signup_body(email=first["user"]["email"].upper()))
    assert dup_email.status_code == 409
    assert dup_email.json()["code"] == "email_taken"
    dup_slug = await api.post("/api/v1/auth/signup", signup_body(slug=first["tenant"]["slug"]))
    assert dup_slug.status_code == 409
    assert dup_slug.json()["code"] == "slug_taken"

    async with open_session(system=True) as db:
        after = [await db.scalar(select(func.count()).select_from(t)) for t in (User, Tenant, Membership, Entity)]
    assert after == before


def first_suffix() -> str:
    import uuid

    return uuid.uuid4().hex[:8]


async def test_a_failure_late_in_signup_rolls_everything_back(world: World, monkeypatch: object) -> None:
    """If anything fails after the tenant rows are written, no user, tenant or membership remains."""
    import pytest

    from services.accounts import service

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mail queue exploded")

    mp = pytest.MonkeyPatch()
    mp.setattr(service, "send_verification", broken)
    body = signup_body(company_name=f"Rollback Test {first_suffix()}")
    try:
        api = await world.client()
        response = await api.post("/api/v1/auth/signup", body)
    finally:
        mp.undo()
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    async with open_session(system=True) as db:
        assert await db.scalar(select(User).where(User.email == body["email"])) is None
        assert await db.scalar(select(Tenant).where(Tenant.name == body["company_name"])) is None
