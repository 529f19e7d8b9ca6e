"""The links mailed to a user: the email verification link and the password reset link.

Each is a single-use token of a purpose, stored hashed; a new one retires the older unused ones.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import throttle
from services.accounts.emails import normalize_email
from services.accounts.hashing import hash_password, hash_token, new_token
from services.accounts.models import AuthSession, User, UserToken
from services.accounts.passwords import password_problems, personal_words
from services.mail import service as mail
from services.ratelimit import RateLimiter
from services.settings import Settings
from services.validation import check
from services.web.i18n import pick_locale
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, Gone, ValidationProblem
from tenants.principal import Principal

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105  (a token purpose, not a secret)


async def send_verification(session: AsyncSession, user: User, settings: Settings) -> None:
    raw = await _issue_user_token(session, user, VERIFY_EMAIL, timedelta(hours=settings.verify_token_ttl_hours))
    await mail.request_mail(
        session,
        to=user.email,
        template=VERIFY_EMAIL,
        locale=user.locale,
        variables={"name": user.display_name, "hours": settings.verify_token_ttl_hours},
        link=f"{settings.public_url}/verify-email?token={raw}",
    )


async def _issue_user_token(session: AsyncSession, user: User, purpose: str, ttl: timedelta) -> str:
    # A new token retires the older unused ones of the same purpose.
    await session.execute(
        update(UserToken)
        .where(UserToken.user_id == user.id, UserToken.purpose == purpose, UserToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    raw, digest = new_token()
    session.add(UserToken(id=new_id(), user_id=user.id, purpose=purpose, token_hash=digest, expires_at=utcnow() + ttl))
    await session.flush()
    return raw


async def _consume_user_token(session: AsyncSession, raw: str, purpose: str) -> User:
    token = await session.scalar(
        select(UserToken).where(UserToken.token_hash == hash_token(raw), UserToken.purpose == purpose).with_for_update()
    )
    if token is None:
        raise Gone("This link is not valid.", code="token_invalid")
    if token.used_at is not None:
        raise Gone("This link was already used.", code="token_used")
    if token.expires_at <= utcnow():
        raise Gone("This link has expired; ask for a new one.", code="token_expired")
    # A conditional update makes the token single-use even under concurrent requests.
    result = await session.execute(
        update(UserToken).where(UserToken.id == token.id, UserToken.used_at.is_(None)).values(used_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Gone("This link was already used.", code="token_used")
    user = await session.get(User, token.user_id)
    assert user is not None
    return user


async def verify_email(session: AsyncSession, raw_token: str) -> User:
    user = await _consume_user_token(session, raw_token, VERIFY_EMAIL)
    user.email_verified_at = user.email_verified_at or utcnow()
    return user


async def resend_verification(
    session: AsyncSession, principal: Principal, settings: Settings, limiter: RateLimiter
) -> None:
    user = await session.get(User, principal.user_id)
    assert user is not None
    if user.email_verified_at is not None:
        raise Conflict("This email is already verified.", code="already_verified")
    await throttle.before_mail_link(limiter, settings, user.email)
    await send_verification(session, user, settings)


async def request_password_reset(
    session: AsyncSession, raw_email: str, settings: Settings, limiter: RateLimiter, client: str
) -> None:
    """Mail a reset link if the account exists; answer the same either way (no account probing)."""
    email, problem = normalize_email(raw_email)
    if problem:
        raise ValidationProblem(errors=[problem])
    assert email is not None
    await throttle.before_mail_link(limiter, settings, email, client)
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        return
    raw = await _issue_user_token(session, user, RESET_PASSWORD, timedelta(minutes=settings.reset_token_ttl_minutes))
    await mail.request_mail(
        session,
        to=user.email,
        template=RESET_PASSWORD,
        locale=user.locale,
        variables={"name": user.display_name, "minutes": settings.reset_token_ttl_minutes},
        link=f"{settings.public_url}/reset-password?token={raw}",
    )


async def reset_password(session: AsyncSession, raw_token: str, new_password: str, settings: Settings) -> User:
    """Set a new password from a reset link; every existing login session of the user ends.

    A refused password rolls the transaction back, so the link still works for a better one.
    """
    user = await _consume_user_token(session, raw_token, RESET_PASSWORD)
    check(new_password_problems(user, new_password, settings))
    user.password_hash = await hash_password(new_password)
    user.password_changed_at = utcnow()
    user.email_verified_at = user.email_verified_at or utcnow()  # the link proved the mailbox
    await session.execute(delete(AuthSession).where(AuthSession.user_id == user.id))
    return user


def new_password_problems(
    user: User, password: str, settings: Settings, pointer: str = "/password"
) -> list[FieldProblem]:
    """The problems of ``user``'s new password, in their language, judged against their details."""
    return password_problems(
        password,
        locale=pick_locale(user.locale),
        min_score=settings.password_min_score,
        user_inputs=personal_words(user.email, user.display_name),
        pointer=pointer,
    )
