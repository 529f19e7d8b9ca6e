"""A person's own settings: their name, language and time zone (the API and the settings page)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts.login_sessions import get_user
from services.accounts.models import User
from services.accounts.schemas import ProfilePatch
from services.accounts.workspace import _timezone_ok
from services.names import clean_name, name_problems
from services.validation import check, register_check
from tenants.errors import FieldProblem
from tenants.models import LOCALES
from tenants.principal import Principal


def profile_problems(data: dict[str, Any]) -> list[FieldProblem]:
    """Every problem of a profile change beyond its types (absent fields are skipped)."""
    problems: list[FieldProblem] = []
    if isinstance(data.get("display_name"), str):
        problems += name_problems(data["display_name"], "/display_name")
    if data.get("locale") is not None and data["locale"] not in LOCALES:
        problems.append(
            FieldProblem.of(
                pointer="/locale", code="unknown_locale", message="use one of {options}", options=list(LOCALES)
            )
        )
    timezone = data.get("timezone")
    if isinstance(timezone, str) and timezone and not _timezone_ok(timezone):
        problems.append(
            FieldProblem(pointer="/timezone", code="unknown_timezone", message="use an IANA time zone name")
        )
    return problems


register_check(ProfilePatch, profile_problems)


async def update_profile(session: AsyncSession, principal: Principal, patch: ProfilePatch) -> User:
    """Change the caller's own name, language or time zone (an empty time zone: the workspace's)."""
    check(profile_problems(msgspec.structs.asdict(patch)))
    user = await get_user(session, principal.user_id)
    if patch.display_name is not None:
        user.display_name = clean_name(patch.display_name)
    if patch.locale is not None:
        user.locale = patch.locale
    if patch.timezone is not None:
        user.timezone = patch.timezone or None
    return user


async def set_own_locale(session: AsyncSession, principal: Principal, locale: str) -> User:
    """The header's language switch: the caller's language from now on, on every device."""
    return await update_profile(session, principal, ProfilePatch(locale=locale))
