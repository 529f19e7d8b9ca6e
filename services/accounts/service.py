"""The accounts service: sign-up, login sessions, tokens, invitations and members.

This module is the service's public entry, the one other services and the routes use. It holds
sign-up; the rest is done by its siblings: ``hashing`` (password and token hashes), ``mail_links``
(email verification and password reset links), ``login_sessions`` (sign-in, the cookie's principal,
switching workspace), ``workspace`` (the tenant's settings, its entities, lookups of its members)
``members`` (roles, removal, invitations) and ``pack_roles`` (the roles template packs bring, which
the gallery registers: who holds each, given to an invitee when they join).

Functions take a session in the caller's transaction and never commit: the route opens one
transaction per request, so a failure anywhere leaves nothing half-created.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts.emails import normalize_email
from services.accounts.hashing import hash_password, hash_token, new_token, verify_password
from services.accounts.login_sessions import (
    authenticate,
    check_password,
    csrf_ok,
    get_user,
    login,
    logout,
    member_tenant_ids,
    on_membership_change,
    open_login_session,
    switch_tenant,
    tenants_of,
)
from services.accounts.mail_links import (
    RESET_PASSWORD,
    VERIFY_EMAIL,
    new_password_problems,
    request_password_reset,
    resend_verification,
    reset_password,
    send_verification,
    verify_email,
)
from services.accounts.members import (
    INVITATION_TOKEN,
    accept_invitation,
    assign_pack_role,
    change_role,
    invite,
    list_invitations,
    list_members,
    list_pack_roles,
    remove_member,
    resend_invitation,
    revoke_invitation,
    search_members,
    set_pack_roles,
)
from services.accounts.models import User
from services.accounts.pack_roles import PackRole, PackRoles, register_pack_roles
from services.accounts.passwords import password_problems, personal_words
from services.accounts.profile import set_own_locale, update_profile
from services.accounts.schemas import InvitationIn, SignupIn
from services.accounts.workspace import (
    MemberContact,
    _timezone_ok,
    create_entity,
    create_service_user,
    current_tenant,
    existing_entity_ids,
    existing_member_ids,
    get_entity,
    list_entities,
    member_contacts,
    member_ids_with_role,
    member_locales,
    member_names,
    member_role,
    member_role_and_locale,
    tenant_locale,
    update_tenant,
    user_locale_of,
)
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.settings import Settings
from services.validation import check, register_check
from services.web.i18n import pick_locale
from tenants import provisioning
from tenants.base import new_id
from tenants.errors import Conflict, FieldProblem
from tenants.models import LOCALES, Industry, Tenant
from tenants.principal import Principal


async def invite_by_email(
    session: AsyncSession,
    principal: Principal,
    email: str,
    settings: Settings,
    role: str = "member",
    pack_roles: list[str] | None = None,
) -> None:
    """Invite ``email`` to the workspace (admin) with the pack roles they hold once they join: the
    same checks and mail as the invitations API."""
    await invite(session, principal, InvitationIn(email=email, role=role, pack_roles=pack_roles or []), settings)


__all__ = [
    "INVITATION_TOKEN",
    "RESET_PASSWORD",
    "VERIFY_EMAIL",
    "MemberContact",
    "PackRole",
    "PackRoles",
    "accept_invitation",
    "assign_pack_role",
    "authenticate",
    "change_role",
    "check_password",
    "create_entity",
    "create_service_user",
    "csrf_ok",
    "current_tenant",
    "existing_entity_ids",
    "existing_member_ids",
    "get_entity",
    "get_user",
    "hash_password",
    "hash_token",
    "invite",
    "invite_by_email",
    "list_entities",
    "list_invitations",
    "list_members",
    "list_pack_roles",
    "login",
    "logout",
    "member_contacts",
    "member_ids_with_role",
    "member_locales",
    "member_names",
    "member_role",
    "member_role_and_locale",
    "member_tenant_ids",
    "new_password_problems",
    "new_token",
    "normalize_email",
    "on_membership_change",
    "open_login_session",
    "register_pack_roles",
    "remove_member",
    "request_password_reset",
    "resend_invitation",
    "resend_verification",
    "reset_password",
    "revoke_invitation",
    "search_members",
    "send_verification",
    "set_own_locale",
    "set_pack_roles",
    "signup",
    "signup_problems",
    "switch_tenant",
    "tenant_locale",
    "tenants_of",
    "update_profile",
    "update_tenant",
    "user_locale_of",
    "verify_email",
    "verify_password",
]


# ---------------------------------------------------------------- sign-up


def signup_problems(data: dict[str, Any], min_password_score: int = 3) -> list[FieldProblem]:
    """Every problem of a sign-up form beyond its types (fields absent from ``data`` are skipped).

    Password advice is in the form's language (its ``locale``, else the request's Accept-Language).
    """
    problems: list[FieldProblem] = []
    email = None
    if isinstance(data.get("email"), str):
        email, problem = normalize_email(data["email"])
        if problem:
            problems.append(problem)
    if data.get("locale") is not None and data["locale"] not in LOCALES:
        problems.append(
            FieldProblem.of(
                pointer="/locale", code="unknown_locale", message="use one of {options}", options=list(LOCALES)
            )
        )
    for field in ("display_name", "company_name"):
        if isinstance(data.get(field), str):
            problems += name_problems(data[field], f"/{field}")
    if isinstance(data.get("password"), str):
        details = (email or data.get("email"), data.get("display_name"), data.get("company_name"), data.get("slug"))
        problems += password_problems(
            data["password"],
            locale=pick_locale(data.get("locale")),
            min_score=min_password_score,
            user_inputs=personal_words(*(d for d in details if isinstance(d, str))),
        )
    if "industry" in data and data["industry"] not in {i.value for i in Industry}:
        problems.append(
            FieldProblem.of(
                pointer="/industry",
                code="unknown_industry",
                message="use one of {options}",
                options=[i.value for i in Industry],
            )
        )
    if data.get("timezone") is not None and not _timezone_ok(data["timezone"]):
        problems.append(
            FieldProblem(pointer="/timezone", code="unknown_timezone", message="use an IANA time zone name")
        )
    slug = data.get("slug")
    if slug is not None and (not provisioning.SLUG_PATTERN.match(slug) or slug in provisioning.RESERVED_SLUGS):
        problems.append(
            FieldProblem(
                pointer="/slug",
                code="invalid_slug",
                message="3–63 lower-case letters, digits and dashes, not a reserved word",
            )
        )
    return problems


# Listing a body's type problems, the password is judged by the default minimum score.
register_check(SignupIn, signup_problems)


async def signup(session: AsyncSession, data: SignupIn, settings: Settings) -> tuple[User, Tenant]:
    """Create the user, their tenant, the owner membership and the default entity, in one transaction."""
    check(signup_problems(msgspec.structs.asdict(data), settings.password_min_score))
    email, _ = normalize_email(data.email)
    slug = data.slug
    locale = pick_locale(data.locale)
    display_name, company_name = clean_name(data.display_name), clean_name(data.company_name)
    assert email is not None

    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this email already exists; sign in instead.", code="email_taken")
    if slug is None:
        # A random suffix makes the slug; with many workspaces of one name, one may already be taken.
        slug = provisioning.slug_from_name(company_name)
        while await provisioning.slug_taken(session, slug):
            slug = provisioning.slug_from_name(company_name)
    elif await provisioning.slug_taken(session, slug):
        raise Conflict("This workspace address is taken.", code="slug_taken")

    user = User(
        id=new_id(),
        email=email,
        password_hash=await hash_password(data.password),
        display_name=display_name,
        locale=locale,
    )
    session.add(user)
    try:
        await session.flush()
        tenant = await provisioning.create_tenant(
            session,
            slug=slug,
            name=company_name,
            industry=data.industry,
            timezone=data.timezone or ("Asia/Shanghai" if locale == "zh-CN" else "UTC"),
            locale=locale,
            owner_id=user.id,
        )
    except IntegrityError as exc:  # a concurrent sign-up won the race for the email or the slug
        raise Conflict("This email or workspace address was just taken.", code="signup_conflict") from exc
    await outbox.emit(
        session,
        events.TENANT_CREATED.name,
        {
            "tenant_id": str(tenant.id),
            "slug": tenant.slug,
            "name": tenant.name,
            "industry": tenant.industry,
            "owner_id": str(user.id),
        },
    )
    await send_verification(session, user, settings)
    return user, tenant
