"""Login sessions, CSRF, rate limiting, email verification and password reset."""

from __future__ import annotations

from datetime import timedelta

from limits.aio.storage import RedisStorage
from sqlalchemy import update

from services.accounts.models import UserToken
from services.accounts.service import hash_token
from services.db import open_session
from services.ratelimit import Limit
from tenants.base import utcnow
from tests.conftest import PASSWORD, World, client_at, deliver_events, mail_to, random_ip, token_from, variant


async def _login(
    world: World, email: str, password: str = PASSWORD, client: str | None = None
) -> tuple[object, object]:
    api = await (client_at(world, client) if client else world.client())
    response = await api.post("/api/v1/auth/login", {"email": email, "password": password})
    return api, response


async def test_login_sets_an_httponly_samesite_cookie_and_logout_ends_it(world: World) -> None:
    _owner, body = await world.signup()
    api, response = await _login(world, body["user"]["email"].upper())
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert response.json()["role"] == "owner"
    assert (await api.get("/api/v1/members")).status_code == 200

    assert (await api.post("/api/v1/auth/logout")).status_code == 204
    # The server forgot the session: replaying the old cookie does not work either.
    replay = await world.client()
    replay.client.cookies.set("guiju_session", api_cookie(response))
    assert (await replay.get("/api/v1/members")).status_code == 401


def api_cookie(response: object) -> str:
    header = response.headers["set-cookie"]  # type: ignore[attr-defined]
    return str(header.split("guiju_session=", 1)[1].split(";", 1)[0])


async def test_wrong_password_and_unknown_account_answer_the_same(world: World) -> None:
    _owner, body = await world.signup()
    _api, wrong = await _login(world, body["user"]["email"], "Wrong-password-1")
    _api, unknown = await _login(world, "nobody-here@example.com", "Wrong-password-1")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"


async def test_repeated_wrong_passwords_are_rate_limited(world: World, limiter_url: str | None) -> None:
    # The default limits, counted in memory (one process) and in Redis (shared by every API process).
    world = variant(world, redis_url=limiter_url)
    assert isinstance(world.app.state.rate_limiter.storage, RedisStorage) == (limiter_url is not None)
    _owner, body = await world.signup()
    email = body["user"]["email"]
    client = random_ip()  # Redis keeps its counts beyond this run: an address of this test's own
    per_minute = min(tier.amount for tier in Limit.parse("login", world.settings.login_account_limits).tiers)
    for _ in range(per_minute):
        _api, response = await _login(world, email, "Wrong-password-1", client)
        assert response.status_code == 401
    _api, blocked = await _login(world, email, PASSWORD, client)  # even the right password waits now
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "login_rate_limited"
    assert int(blocked.headers["retry-after"]) > 0


async def test_cookie_writes_need_the_csrf_token(world: World) -> None:
    owner, _body = await world.signup()
    no_token = await owner.post("/api/v1/invitations", {"email": "x@example.com"}, headers={"X-CSRF-Token": ""})
    assert no_token.status_code == 403
    assert no_token.json()["code"] == "csrf_failed"
    wrong = await owner.post("/api/v1/invitations", {"email": "x@example.com"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = await owner.post("/api/v1/invitations", {"email": "x@example.com"})
    assert ok.status_code == 201, ok.text


async def test_unauthenticated_calls_get_401(world: World) -> None:
    api = await world.client()
    response = await api.get("/api/v1/members")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


async def test_email_verification_is_single_use(world: World) -> None:
    owner, body = await world.signup()
    await deliver_events()
    token = token_from(mail_to(body["user"]["email"], "verify_email")[-1])
    first = await owner.post("/api/v1/auth/verify-email", {"token": token})
    assert first.status_code == 200
    assert first.json()["email_verified"] is True
    again = await owner.post("/api/v1/auth/verify-email", {"token": token})
    assert again.status_code == 410
    assert again.json()["code"] == "token_used"
    bogus = await owner.post("/api/v1/auth/verify-email", {"token": "made-up"})
    assert bogus.json()["code"] == "token_invalid"
    resend = await owner.post("/api/v1/auth/resend-verification")
    assert resend.json()["code"] == "already_verified"


async def test_expired_tokens_are_refused(world: World) -> None:
    owner, body = await world.signup()
    await deliver_events()
    token = token_from(mail_to(body["user"]["email"], "verify_email")[-1])
    async with open_session(system=True) as db:
        await db.execute(
            update(UserToken)
            .where(UserToken.token_hash == hash_token(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = await owner.post("/api/v1/auth/verify-email", {"token": token})
    assert response.status_code == 410
    assert response.json()["code"] == "token_expired"


async def test_resending_verification_retires_the_older_link(world: World) -> None:
    owner, body = await world.signup()
    await owner.post("/api/v1/auth/resend-verification")
    await deliver_events()
    first, second = (token_from(m) for m in mail_to(body["user"]["email"], "verify_email")[-2:])
    assert (await owner.post("/api/v1/auth/verify-email", {"token": first})).json()["code"] == "token_used"
    assert (await owner.post("/api/v1/auth/verify-email", {"token": second})).status_code == 200


async def test_password_reset_changes_the_password_and_ends_every_session(world: World) -> None:
    owner, body = await world.signup()
    email = body["user"]["email"]
    anonymous = await world.client()
    assert (await anonymous.post("/api/v1/auth/password-reset", {"email": email})).status_code == 202
    # Unknown addresses get the same answer (no account probing) and no mail.
    assert (await anonymous.post("/api/v1/auth/password-reset", {"email": "ghost@example.com"})).status_code == 202
    await deliver_events()
    assert mail_to("ghost@example.com") == []
    token = token_from(mail_to(email, "reset_password")[-1])

    weak = await anonymous.post("/api/v1/auth/password-reset/confirm", {"token": token, "password": "short"})
    assert weak.status_code == 422
    done = await anonymous.post("/api/v1/auth/password-reset/confirm", {"token": token, "password": "New-Harbour-77"})
    assert done.status_code == 204
    reused = await anonymous.post("/api/v1/auth/password-reset/confirm", {"token": token, "password": "Other-Path-88"})
    assert reused.json()["code"] == "token_used"

    assert (await owner.get("/api/v1/members")).status_code == 401  # the old session ended
    _api, old = await _login(world, email, PASSWORD)
    assert old.status_code == 401
    _api, new = await _login(world, email, "New-Harbour-77")
    assert new.status_code == 200


async def test_a_user_in_two_workspaces_switches_between_them(world: World) -> None:
    first_owner, first = await world.signup(company_name="First Co")
    second_owner, second = await world.signup(company_name="Second Co")
    joiner, _uid = await world.invite_and_join(second_owner, email=None)
    joiner_email = (await joiner.get("/api/v1/auth/session")).json()["user"]["email"]
    invite = await first_owner.post("/api/v1/invitations", {"email": joiner_email, "role": "manager"})
    assert invite.status_code == 201
    await deliver_events()
    token = token_from(mail_to(joiner_email, "invitation")[-1])
    accepted = await joiner.post("/api/v1/auth/accept-invitation", {"token": token})
    assert accepted.status_code == 200, accepted.text
    session = accepted.json()
    assert session["tenant"]["id"] == first["tenant"]["id"]
    assert session["role"] == "manager"
    assert {w["tenant"]["id"] for w in session["workspaces"]} == {first["tenant"]["id"], second["tenant"]["id"]}

    switched = await joiner.post("/api/v1/auth/switch-tenant", {"tenant_id": second["tenant"]["id"]})
    assert switched.json()["role"] == "member"
    members = (await joiner.get("/api/v1/members")).json()
    assert {m["email"] for m in members} == {second["user"]["email"], joiner_email}

    stranger = await joiner.post("/api/v1/auth/switch-tenant", {"tenant_id": "01a1fe2a-0000-7000-8000-000000000000"})
    assert stranger.status_code == 404
