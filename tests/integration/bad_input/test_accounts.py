"""Bad input to the accounts service: password guessing (throttled per account and per client, with
backoff), forged forwarded addresses, hidden characters in names, full-width e-mail addresses, weak
passwords (refused in the person's language), and platform-admin rights without a verified address
or a recent password check. Every test runs on SQLite and PostgreSQL; the throttling ones on the
memory and the Redis limiter too."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from limits.aio.storage import RedisStorage
from sqlalchemy import select, update

from services.accounts.models import AuthSession, User
from services.db import open_session
from services.marketplace import service as marketplace
from tenants.base import utcnow
from tenants.models import Entity
from tests.conftest import (
    PASSWORD,
    Api,
    World,
    client_at,
    deliver_events,
    mail_to,
    random_ip,
    signup_body,
    token_from,
    unique_email,
    variant,
)

SIGNUP = "/api/v1/auth/signup"
LOGIN = "/api/v1/auth/login"


# ---------------------------------------------------------------- helpers


async def login(api: Api, email: str, password: str, **kwargs: Any) -> Any:
    return await api.post(LOGIN, {"email": email, "password": password}, **kwargs)


def problems(response: Any) -> set[tuple[str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return {(e["pointer"], e["code"]) for e in response.json()["errors"]}


def message_of(response: Any, pointer: str, code: str) -> str:
    return next(e["message"] for e in response.json()["errors"] if (e["pointer"], e["code"]) == (pointer, code))


# ---------------------------------------------------------------- item: login throttling


async def test_one_account_guessed_from_many_addresses_is_throttled(world: World, limiter_url: str | None) -> None:
    throttled = variant(world, redis_url=limiter_url, login_account_limits="3/minute;10/hour")
    assert isinstance(throttled.app.state.rate_limiter.storage, RedisStorage) == (limiter_url is not None)
    _owner, body = await throttled.signup()
    email = body["user"]["email"]
    for _ in range(3):
        guess = await login(await client_at(throttled, random_ip()), email, "Wrong-guess-123")
        assert guess.status_code == 401
    blocked = await login(await client_at(throttled, random_ip()), email, PASSWORD)  # even the right one waits
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("application/problem+json")
    assert blocked.json()["code"] == "login_rate_limited"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60

    # An address without an account answers exactly the same: the throttle tells nothing.
    ghost = unique_email("ghost")
    answers = [(await login(await client_at(throttled, random_ip()), ghost, "Wrong-guess-123")) for _ in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[-1].json()["code"] == "login_rate_limited"


async def test_backoff_grows_from_the_minute_to_the_hour(world: World, limiter_url: str | None) -> None:
    # The short tier is a few seconds wide, not one: two sign-ins (each a deliberately slow password
    # check) must fall in it together even on a busy machine.
    throttled = variant(world, redis_url=limiter_url, login_account_limits="2/3second;3/hour")
    _owner, body = await throttled.signup()
    api = await client_at(throttled, random_ip())
    for _ in range(2):
        assert (await login(api, body["user"]["email"], "Wrong-guess-123")).status_code == 401
    short = await login(api, body["user"]["email"], "Wrong-guess-123")
    assert short.status_code == 429 and 1 <= int(short.headers["retry-after"]) <= 3
    await asyncio.sleep(int(short.headers["retry-after"]) + 0.1)
    assert (await login(api, body["user"]["email"], "Wrong-guess-123")).status_code == 401
    long = await login(api, body["user"]["email"], PASSWORD)
    assert long.status_code == 429
    assert int(long.headers["retry-after"]) > 3000  # now the hour's tier holds the account


async def test_a_correct_password_clears_the_accounts_failures(world: World, limiter_url: str | None) -> None:
    throttled = variant(world, redis_url=limiter_url, login_account_limits="3/minute")
    _owner, body = await throttled.signup()
    api = await client_at(throttled, random_ip())
    email = body["user"]["email"]
    for _ in range(2):
        assert (await login(api, email, "Wrong-guess-123")).status_code == 401
    assert (await login(api, email, PASSWORD)).status_code == 200
    for _ in range(2):  # the count started again
        assert (await login(api, email, "Wrong-guess-123")).status_code == 401
    assert (await login(api, email, PASSWORD)).status_code == 200


async def test_a_shared_proxy_address_is_not_locked_out_by_guesses_at_other_accounts(
    world: World, limiter_url: str | None
) -> None:
    throttled = variant(world, redis_url=limiter_url, login_account_limits="2/minute", login_client_limits="8/minute")
    _colleague, body = await throttled.signup()
    office = random_ip()
    guesser = await client_at(throttled, office)
    for n in range(6):  # someone in the office guesses at other people's accounts
        assert (await login(guesser, f"target-{n}-{uuid.uuid4().hex[:6]}@example.com", "Wrong-1x")).status_code == 401
    colleague = await client_at(throttled, office)
    assert (await login(colleague, body["user"]["email"], PASSWORD)).status_code == 200

    # Spraying guesses over many accounts from one address stops at the client limit.
    for n in range(2):
        await login(guesser, f"spray-{n}-{uuid.uuid4().hex[:6]}@example.com", "Wrong-1x")
    sprayed = await login(guesser, unique_email("spray"), "Wrong-1x")
    assert sprayed.status_code == 429 and sprayed.json()["code"] == "login_rate_limited"
    elsewhere = await client_at(throttled, random_ip())
    assert (await login(elsewhere, body["user"]["email"], PASSWORD)).status_code == 200


async def test_forwarded_for_is_believed_only_from_a_listed_proxy(world: World) -> None:
    proxied = variant(world, trusted_proxies=("10.20.0.0/16",), login_client_limits="2/minute")

    # A peer that is not a listed proxy: its X-Forwarded-For is ignored, so rotating it evades nothing.
    stranger = await client_at(proxied, random_ip("203.0"))
    answers = [
        await login(stranger, unique_email("spoof"), "Wrong-1x", headers={"X-Forwarded-For": random_ip()})
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [401, 401, 429]

    # The listed proxy: the address it forwards is the client's, each with its own count.
    proxy = await client_at(proxied, "10.20.3.4")
    first, second = random_ip(), random_ip()
    for _ in range(2):
        assert (
            await login(proxy, unique_email("a"), "Wrong-1x", headers={"X-Forwarded-For": first})
        ).status_code == 401
    limited = await login(proxy, unique_email("a"), "Wrong-1x", headers={"X-Forwarded-For": f"{first}"})
    assert limited.status_code == 429
    other = await login(proxy, unique_email("b"), "Wrong-1x", headers={"X-Forwarded-For": f"{second}, 10.20.9.9"})
    assert other.status_code == 401  # the right-most untrusted hop is the client

    # Loopback is no exception: nothing is trusted unless listed.
    local = await client_at(variant(world, login_client_limits="2/minute"), "127.0.0.1")
    spoofed = [
        await login(local, unique_email("local"), "Wrong-1x", headers={"X-Forwarded-For": random_ip()})
        for _ in range(3)
    ]
    assert [a.status_code for a in spoofed] == [401, 401, 429]


async def test_reset_and_verification_mails_are_limited_per_address(world: World, limiter_url: str | None) -> None:
    limited = variant(world, redis_url=limiter_url, mail_link_limits="2/hour")
    owner, body = await limited.signup()  # the sign-up's own verification mail is not counted
    email = body["user"]["email"]
    anonymous = await client_at(limited, random_ip())
    answers = [await anonymous.post("/api/v1/auth/password-reset", {"email": email}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[-1].json()["code"] == "mail_rate_limited"
    nobody = unique_email("nobody")
    ghost = [await anonymous.post("/api/v1/auth/password-reset", {"email": nobody}) for _ in range(3)]
    assert [a.status_code for a in ghost] == [202, 202, 429]  # the same for an address without an account
    await deliver_events()
    assert len(mail_to(email, "reset_password")) == 2

    other, _ = await limited.signup()
    resends = [await other.post("/api/v1/auth/resend-verification") for _ in range(3)]
    assert [r.status_code for r in resends] == [202, 202, 429]
    assert resends[-1].json()["code"] == "mail_rate_limited"
    assert (await owner.post("/api/v1/auth/resend-verification")).status_code == 429  # resets counted too


# ---------------------------------------------------------------- item: names


HIDDEN = {
    "bidi override": "Li\u202eieW",
    "bidi isolate": "\u2067Wei\u2069",
    "left-to-right mark": "Li\u200eWei",
    "arabic letter mark": "Li\u061cWei",
    "C0 control": "Li\x07Wei",
    "C1 control": "Li\x9bWei",
    "escape sequence": "Li\x1b[31mWei",
    "zero-width space": "Li\u200bWei",
    "word joiner": "Li\u2060Wei",
    "byte-order mark": "\ufeffLi Wei",
    "line separator": "Li\u2028Wei",
    "private use": "Li\ue000Wei",
    "lone joiner": "Li\u200dWei",
}


@pytest.mark.parametrize("name", list(HIDDEN.values()), ids=list(HIDDEN))
async def test_names_with_hidden_characters_are_refused_with_every_problem(world: World, name: str) -> None:
    api = await world.client()
    response = await api.post(SIGNUP, signup_body(display_name=name, company_name=f"Co {name}", password="password123"))
    assert problems(response) >= {
        ("/display_name", "invalid_characters"),
        ("/company_name", "invalid_characters"),
        ("/password", "password_too_weak"),
    }
    assert "U+" in message_of(response, "/display_name", "invalid_characters")


async def test_real_names_are_kept_normalised(world: World) -> None:
    _api, body = await world.signup(
        display_name="  Jose\u0301 👩\u200d💻 ",  # decomposed é, an emoji ZWJ sequence, spaces around
        company_name="\u3000杭州茶叶 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f\u3000",
    )
    assert body["user"]["display_name"] == "José 👩\u200d💻"
    assert body["tenant"]["name"] == "杭州茶叶 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    persian = await world.signup(display_name="نرگس\u200cخانم")  # ZWNJ between letters
    assert persian[1]["user"]["display_name"] == "نرگس\u200cخانم"
    async with open_session(system=True) as db:
        stored = await db.scalar(select(User.display_name).where(User.email == body["user"]["email"]))
    assert stored == "José 👩\u200d💻"


async def test_workspace_entity_and_member_names_are_checked_too(world: World) -> None:
    owner, body = await world.signup()
    renamed = await owner.patch("/api/v1/tenant", {"name": "Tea\u202e Co", "locale": "fr"})
    assert problems(renamed) == {("/name", "invalid_characters"), ("/locale", "unknown_locale")}
    blank = await owner.patch("/api/v1/tenant", {"name": " \u3000 "})
    assert problems(blank) == {("/name", "required")}
    entity = await owner.post("/api/v1/entities", {"name": "HK\x07 Ltd", "legal_name": "HK\u200b Ltd", "country": "hk"})
    assert problems(entity) == {
        ("/name", "invalid_characters"),
        ("/legal_name", "invalid_characters"),
        ("/country", "invalid_country"),
    }
    created = await owner.post("/api/v1/entities", {"name": " Cafe\u0301 HK ", "country": "HK", "currency": "HKD"})
    assert created.status_code == 201
    assert created.json()["name"] == created.json()["legal_name"] == "Café HK"
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        names = set(await db.scalars(select(Entity.name)))
    assert "Café HK" in names and not any("\u200b" in n or "\x07" in n for n in names)
    assert (await owner.get("/api/v1/tenant")).json()["name"] == body["tenant"]["name"]  # nothing half-changed

    email = unique_email("joiner")
    assert (await owner.post("/api/v1/invitations", {"email": email})).status_code == 201
    await deliver_events()
    joiner = await world.client()
    accepted = await joiner.post(
        "/api/v1/auth/accept-invitation",
        {
            "token": token_from(mail_to(email, "invitation")[-1]),
            "display_name": "Wang\u2066Fang",
            "password": "aaaaaaaaaa",
        },
    )
    assert problems(accepted) == {("/display_name", "invalid_characters"), ("/password", "password_too_weak")}


# ---------------------------------------------------------------- item: e-mail addresses


@pytest.mark.parametrize(
    "address",
    [
        "ｍｅｉ＠ｅｘａｍｐｌｅ．ｃｏｍ",
        "ｍｅｉ@example.com",
        "mei@ｅｘａｍｐｌｅ.com",
        "mei@example．com",
        "mei@例子。中国",
        "mei\u200b@example.com",
        "mei@exa\u202emple.com",
        "李@example.com",
    ],
)
async def test_full_width_and_non_ascii_addresses_are_refused(world: World, address: str) -> None:
    api = await world.client()
    response = await api.post(SIGNUP, signup_body(email=address))
    assert problems(response) == {("/email", "invalid_email")}
    owner, _ = await world.signup()
    invited = await owner.post("/api/v1/invitations", {"email": address})
    assert problems(invited) == {("/email", "invalid_email")}
    reset = await api.post("/api/v1/auth/password-reset", {"email": address})
    assert problems(reset) == {("/email", "invalid_email")}


async def test_an_internationalised_domain_is_an_address(world: World) -> None:
    local = f"mei-{uuid.uuid4().hex[:8]}"
    _api, body = await world.signup(email=f"{local.upper()}@例子.中国")
    assert body["user"]["email"] == f"{local}@例子.中国"
    api = await world.client()
    assert (await login(api, f"{local}@例子.中国", PASSWORD)).status_code == 200
    again = await api.post(SIGNUP, signup_body(email=f"{local}@xn--fsqu00a.xn--fiqs8s"))
    assert again.status_code == 409  # the same address in its ASCII form


# ---------------------------------------------------------------- item: weak passwords


async def test_weak_passwords_are_refused_in_the_forms_language(world: World) -> None:
    api = await world.client()
    zh = await api.post(SIGNUP, signup_body(password="password123", locale="zh-CN"))
    assert problems(zh) == {("/password", "password_too_weak")}
    assert message_of(zh, "/password", "password_too_weak") == "这是一个非常常见的密码。再加一两个词，不常见的词更好。"
    en = await api.post(SIGNUP, signup_body(password="password123", locale="en"))
    assert message_of(en, "/password", "password_too_weak") == (
        "This is a very common password. Add another word or two. Uncommon words are better."
    )
    body = signup_body(password="qwertyuiop")
    del body["locale"]
    browser = await api.post(SIGNUP, body, headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"})
    assert message_of(browser, "/password", "password_too_weak").startswith("This is a top-100 common password.")
    chinese = await api.post(SIGNUP, body, headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert message_of(chinese, "/password", "password_too_weak").startswith("这是最常见的 100 个密码之一。")
    short = await api.post(SIGNUP, signup_body(password="abc", locale="zh-CN"))
    assert problems(short) == {("/password", "password_too_short"), ("/password", "password_too_weak")}
    assert message_of(short, "/password", "password_too_short") == "请至少使用 10 个字符。"


async def test_a_password_built_on_the_persons_details_is_weak(world: World) -> None:
    api = await world.client()
    # Strong for zxcvbn alone (score 3); weak once it knows the company's name.
    response = await api.post(SIGNUP, signup_body(company_name="Xiamen Oolong Trading", password="Oolongtrading"))
    assert problems(response) == {("/password", "password_too_weak")}
    other_company = await api.post(SIGNUP, signup_body(company_name="Hangzhou Tea Co", password="Oolongtrading"))
    assert other_company.status_code == 201


async def test_a_hostile_password_is_judged_quickly(world: World) -> None:
    """Symbols that read as letters make zxcvbn's work explode; the answer still comes at once."""
    api = await world.client()
    hostile = ("4@8(3<[{6#9!1|2$5%7+" * 7)[:128]
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await api.post(SIGNUP, signup_body(password=hostile))
    assert response.status_code == 201, response.text
    assert loop.time() - started < 2.0


async def test_reset_change_and_invitation_judge_passwords_in_the_persons_language(world: World) -> None:
    _owner, body = await world.signup(locale="zh-CN")
    email = body["user"]["email"]
    anonymous = await world.client()
    assert (await anonymous.post("/api/v1/auth/password-reset", {"email": email})).status_code == 202
    await deliver_events()
    token = token_from(mail_to(email, "reset_password")[-1])
    weak = await anonymous.post(
        "/api/v1/auth/password-reset/confirm",
        {"token": token, "password": "1234567890"},
        headers={"Accept-Language": "en"},
    )
    assert problems(weak) == {("/password", "password_too_weak")}
    assert message_of(weak, "/password", "password_too_weak").startswith("这是")  # the account's language
    done = await anonymous.post("/api/v1/auth/password-reset/confirm", {"token": token, "password": "New-Harbour-77"})
    assert done.status_code == 204  # the refused try left the link working

    signed_in, elsewhere = await world.client(), await world.client()
    assert (await login(signed_in, email, "New-Harbour-77")).status_code == 200
    assert (await login(elsewhere, email, "New-Harbour-77")).status_code == 200
    wrong = await signed_in.post(
        "/api/v1/auth/change-password", {"current_password": "Not-mine-4321", "new_password": "Pine-Cone-3890"}
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    weak_change = await signed_in.post(
        "/api/v1/auth/change-password", {"current_password": "New-Harbour-77", "new_password": "iloveyou12"}
    )
    assert problems(weak_change) == {("/new_password", "password_too_weak")}
    assert message_of(weak_change, "/new_password", "password_too_weak").startswith("这与一个常用密码很相似")
    changed = await signed_in.post(
        "/api/v1/auth/change-password", {"current_password": "New-Harbour-77", "new_password": "Pine-Cone-3890"}
    )
    assert changed.status_code == 204
    assert (await signed_in.get("/api/v1/members")).status_code == 200  # this session goes on
    assert (await elsewhere.get("/api/v1/members")).status_code == 401  # the others ended
    assert (await login(await world.client(), email, "Pine-Cone-3890")).status_code == 200

    # An invitation to an English workspace: the new member's password advice is in English.
    en_owner, _ = await world.signup(locale="en")
    invitee = unique_email("invitee")
    assert (await en_owner.post("/api/v1/invitations", {"email": invitee})).status_code == 201
    await deliver_events()
    joiner = await world.client()
    refused = await joiner.post(
        "/api/v1/auth/accept-invitation",
        {"token": token_from(mail_to(invitee, "invitation")[-1]), "display_name": "Wang", "password": "1234567890"},
    )
    assert message_of(refused, "/password", "password_too_weak").startswith("This is")


# ---------------------------------------------------------------- item: platform admin rights


@pytest.fixture
def admin_email(world: World) -> Iterator[str]:
    email = unique_email("platform-admin")
    marketplace.configure(dataclasses.replace(world.settings, platform_admins=(email,)))
    try:
        yield email
    finally:
        marketplace.configure(world.settings)


async def test_platform_admin_rights_need_a_verified_address_and_a_recent_password(
    world: World, admin_email: str
) -> None:
    _publisher, target = await world.signup()
    grant = {"tenant_id": target["tenant"]["id"], "name": f"Publisher {uuid.uuid4().hex[:6]}"}
    admin, admin_body = await world.signup(email=admin_email)

    # Whoever signed up with the address first is no admin until the mailbox is proven.
    for call in (admin.get("/api/v1/admin/plugin-versions"), admin.post("/api/v1/admin/publishers", grant)):
        refused = await call
        assert refused.status_code == 403 and refused.json()["code"] == "email_not_verified"

    await deliver_events()
    token = token_from(mail_to(admin_email, "verify_email")[-1])
    assert (await admin.post("/api/v1/auth/verify-email", {"token": token})).status_code == 200
    assert (await admin.get("/api/v1/admin/plugin-versions")).status_code == 200  # reading needs no password

    sensitive = [
        ("POST", "/api/v1/admin/publishers", grant),
        ("POST", "/api/v1/admin/plugin-versions/no-such-plugin/1.0.0/approve", None),
        ("POST", "/api/v1/admin/plugin-versions/no-such-plugin/1.0.0/reject", {"reason": "unsafe"}),
        ("GET", "/api/v1/admin/plugin-versions/no-such-plugin/1.0.0/source", None),
    ]
    for method, path, payload in sensitive:
        response = await admin.request(method, path, json=payload)
        assert response.status_code == 403, path
        assert response.json()["code"] == "reauthentication_required"

    wrong = await admin.post("/api/v1/auth/reauthenticate", {"password": "Not-the-password-1"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    confirmed = await admin.post("/api/v1/auth/reauthenticate", {"password": PASSWORD})
    assert confirmed.status_code == 200
    assert (await admin.post("/api/v1/admin/publishers", grant)).status_code == 201
    for method, path, payload in sensitive[1:]:
        response = await admin.request(method, path, json=payload)
        assert response.status_code == 404, path  # allowed now: the version does not exist

    async with open_session(system=True) as db:
        window = timedelta(minutes=world.settings.reauthentication_window_minutes)
        moved = await db.execute(
            update(AuthSession)
            .where(AuthSession.user_id == uuid.UUID(admin_body["user"]["id"]))
            .values(password_checked_at=utcnow() - window - timedelta(seconds=5))
        )
        assert moved.rowcount == 1  # type: ignore[attr-defined]
    stale = await admin.post("/api/v1/admin/publishers", grant)
    assert stale.status_code == 403 and stale.json()["code"] == "reauthentication_required"
    assert (await admin.post("/api/v1/auth/reauthenticate", {"password": PASSWORD})).status_code == 200
    assert (await admin.post("/api/v1/admin/publishers", grant)).status_code == 201


async def test_reauthentication_is_throttled_like_sign_in(world: World, limiter_url: str | None) -> None:
    throttled = variant(world, redis_url=limiter_url, login_account_limits="3/minute")
    api, body = await throttled.signup()
    for _ in range(3):
        wrong = await api.post("/api/v1/auth/reauthenticate", {"password": "Not-the-password-1"})
        assert wrong.status_code == 403
    blocked = await api.post("/api/v1/auth/reauthenticate", {"password": PASSWORD})
    assert blocked.status_code == 429 and blocked.json()["code"] == "login_rate_limited"
    # The account's budget is shared with sign-in: a stolen session cookie is no way around it.
    assert (await login(await client_at(throttled, random_ip()), body["user"]["email"], PASSWORD)).status_code == 429
