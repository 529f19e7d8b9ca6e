"""A signed-in person's password, asked for again: re-authentication before sensitive actions, and
changing the password.

Both check the password under the same throttle as sign-in (a stolen session cookie is no way
around it), and stamp the login session with the time the password was checked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts.models import AuthSession
from services.accounts.service import check_password, get_user, hash_password, new_password_problems
from services.ratelimit import RateLimiter
from services.settings import Settings
from services.validation import check
from tenants.base import utcnow
from tenants.errors import Forbidden
from tenants.principal import Principal


async def _confirm_password(
    session: AsyncSession, principal: Principal, password: str, client: str, limiter: RateLimiter, settings: Settings
) -> datetime:
    user = await get_user(session, principal.user_id)
    if await check_password(session, user.email, password, client, limiter, settings) is None:
        raise Forbidden("The password is wrong.", code="wrong_password")
    now = utcnow()
    await session.execute(
        update(AuthSession).where(AuthSession.id == principal.session_id).values(password_checked_at=now)
    )
    return now


async def reauthenticate(
    session: AsyncSession, principal: Principal, password: str, client: str, limiter: RateLimiter, settings: Settings
) -> datetime:
    """Check the password again; returns until when sensitive actions are allowed in this session."""
    checked = await _confirm_password(session, principal, password, client, limiter, settings)
    return checked + timedelta(minutes=settings.reauthentication_window_minutes)


async def change_password(
    session: AsyncSession,
    principal: Principal,
    current_password: str,
    new_password: str,
    client: str,
    limiter: RateLimiter,
    settings: Settings,
) -> None:
    """Replace the password after checking the current one; the user's other login sessions end."""
    await _confirm_password(session, principal, current_password, client, limiter, settings)
    user = await get_user(session, principal.user_id)
    check(new_password_problems(user, new_password, settings, "/new_password"))
    user.password_hash = await hash_password(new_password)
    user.password_changed_at = utcnow()
    await session.execute(
        delete(AuthSession).where(AuthSession.user_id == user.id, AuthSession.id != principal.session_id)
    )
