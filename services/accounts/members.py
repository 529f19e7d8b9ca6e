"""Members and invitations: changing roles, removing members (a workspace keeps at least one
owner), inviting by email (with the pack roles the invitee will hold), resending and revoking an
invitation, accepting one (as a signed-in user or as a new account), and who holds each pack role."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts.emails import normalize_email
from services.accounts.hashing import hash_password, hash_token, new_token
from services.accounts.login_sessions import _sync_login_sessions, get_user
from services.accounts.models import Invitation, User
from services.accounts.pack_roles import PackRole, pack_roles
from services.accounts.passwords import password_problems, personal_words
from services.accounts.schemas import AcceptInvitationIn, InvitationIn
from services.accounts.workspace import current_tenant, existing_member_ids
from services.mail import service as mail
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.settings import Settings
from services.web.i18n import pick_locale
from tenants.base import new_id, utcnow
from tenants.errors import (
    Conflict,
    FieldProblem,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
    ValidationProblem,
)
from tenants.models import LOCALES, Membership, Role, Tenant, TenantStatus
from tenants.principal import Principal
from tenants.sessions import bind_tenant

# ---------------------------------------------------------------- members


_LIST_MEMBERS = (
    select(
        User.id.label("user_id"),
        User.email,
        User.display_name,
        Membership.role,
        Membership.created_at.label("joined_at"),
    )
    .join(User, User.id == Membership.user_id)
    .order_by(Membership.created_at)
)


async def list_members(session: AsyncSession, principal: Principal) -> list[Any]:
    """Rows of (user_id, email, display_name, role, joined_at), oldest member first."""
    principal.require_tenant()
    return list((await session.execute(_LIST_MEMBERS)).all())


#: A search among the members answers at most this many.
MEMBER_MATCHES = 10


def _like(text: str) -> str:
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


async def search_members(
    session: AsyncSession, principal: Principal, text: str, *, limit: int = MEMBER_MATCHES
) -> list[Any]:
    """Members of the principal's workspace whose name or email holds ``text`` (any case), as
    :func:`list_members`' rows, oldest member first; every member (up to ``limit``) for no text."""
    principal.require_tenant()
    query = _LIST_MEMBERS
    wanted = text.strip()
    if wanted:
        pattern = _like(wanted)
        query = query.where(User.display_name.ilike(pattern, escape="!") | User.email.ilike(pattern, escape="!"))
    return list((await session.execute(query.limit(max(1, limit)))).all())


async def _membership(session: AsyncSession, user_id: uuid.UUID) -> Membership:
    membership = await session.scalar(select(Membership).where(Membership.user_id == user_id).with_for_update())
    if membership is None:
        raise NotFound("No such member.", code="member_not_found")
    return membership


async def _owner_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(Membership).where(Membership.role == Role.OWNER)) or 0
    )


async def change_role(session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: str) -> Membership:
    principal.require_role(Role.ADMIN)
    if role not in {r.value for r in Role}:
        raise ValidationProblem(
            errors=[
                FieldProblem.of(
                    pointer="/role",
                    code="unknown_role",
                    message="use one of {options}",
                    options=[r.value for r in Role],
                )
            ]
        )
    membership = await _membership(session, user_id)
    new_role = Role(role)
    assert principal.role is not None
    if (Role(membership.role) == Role.OWNER or new_role == Role.OWNER) and principal.role != Role.OWNER:
        raise Forbidden("Only an owner can grant or take away the owner role.", code="owner_required")
    if Role(membership.role) == Role.OWNER and new_role != Role.OWNER and await _owner_count(session) <= 1:
        raise Conflict("A workspace keeps at least one owner.", code="last_owner")
    membership.role = new_role
    await _sync_login_sessions(session, membership.tenant_id, user_id, new_role)
    await outbox.emit(session, events.MEMBER_ROLE_CHANGED.name, {"user_id": str(user_id), "role": new_role.value})
    return membership


async def remove_member(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    if user_id != principal.user_id:
        principal.require_role(Role.ADMIN)
    else:
        principal.require_tenant()
    membership = await _membership(session, user_id)
    assert principal.role is not None
    if Role(membership.role) == Role.OWNER:
        if principal.role != Role.OWNER:
            raise Forbidden("Only an owner can remove an owner.", code="owner_required")
        if await _owner_count(session) <= 1:
            raise Conflict("A workspace keeps at least one owner.", code="last_owner")
    await session.delete(membership)
    await _sync_login_sessions(session, membership.tenant_id, user_id, None)
    await outbox.emit(session, events.MEMBER_REMOVED.name, {"user_id": str(user_id)})


# ---------------------------------------------------------------- invitations

INVITATION_TOKEN = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{20,100})$")


async def invite(session: AsyncSession, principal: Principal, data: InvitationIn, settings: Settings) -> Invitation:
    tenant_id = principal.require_role(Role.ADMIN)
    problems = []
    email, problem = normalize_email(data.email)
    if problem:
        problems.append(problem)
    if data.role not in {r.value for r in Role}:
        problems.append(
            FieldProblem.of(
                pointer="/role", code="unknown_role", message="use one of {options}", options=[r.value for r in Role]
            )
        )
    unknown = set(pack_roles().unknown(data.pack_roles))
    problems += [
        FieldProblem(pointer=f"/pack_roles/{index}", code="unknown_pack_role", message="no pack has this role")
        for index, key in enumerate(data.pack_roles)
        if key in unknown
    ]
    if problems:
        raise ValidationProblem(errors=problems)
    assert principal.role is not None and email is not None
    if Role(data.role) == Role.OWNER and principal.role != Role.OWNER:
        raise Forbidden("Only an owner can invite an owner.", code="owner_required")
    existing_member = await session.scalar(
        select(Membership.user_id).join(User, User.id == Membership.user_id).where(User.email == email)
    )
    if existing_member is not None:
        raise Conflict(
            "This person is already a member.",
            code="already_member",
            errors=[FieldProblem("/email", "already_member", "this address belongs to a member")],
        )
    now = utcnow()
    await session.execute(
        update(Invitation)
        .where(Invitation.email == email, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    invitation = Invitation(
        id=new_id(),
        email=email,
        role=data.role,
        pack_roles=list(dict.fromkeys(data.pack_roles)),
        token_hash="",
        invited_by=principal.user_id,
        expires_at=now,
    )
    session.add(invitation)
    await _send_invitation(session, principal, tenant_id, invitation, settings)
    await outbox.emit(session, events.MEMBER_INVITED.name, {"invitation_id": str(invitation.id), "role": data.role})
    return invitation


async def _send_invitation(
    session: AsyncSession, principal: Principal, tenant_id: uuid.UUID, invitation: Invitation, settings: Settings
) -> None:
    """Give ``invitation`` a new token and a new time limit, and mail its link (an earlier link stops working)."""
    secret, _ = new_token()
    raw = f"{tenant_id.hex}.{secret}"
    invitation.token_hash = hash_token(raw)
    invitation.expires_at = utcnow() + timedelta(days=settings.invitation_ttl_days)
    await session.flush()
    inviter = await get_user(session, principal.user_id)
    tenant = await current_tenant(session, principal)
    await mail.request_mail(
        session,
        to=invitation.email,
        template="invitation",
        locale=tenant.locale,
        variables={
            "inviter": inviter.display_name,
            "tenant": tenant.name,
            "role": invitation.role,
            "days": settings.invitation_ttl_days,
        },
        link=f"{settings.public_url}/invitations/accept?token={raw}",
    )


async def _pending_invitation(session: AsyncSession, invitation_id: uuid.UUID) -> Invitation:
    invitation = await session.scalar(select(Invitation).where(Invitation.id == invitation_id).with_for_update())
    if invitation is None or invitation.revoked_at is not None or invitation.accepted_at is not None:
        raise NotFound("No such pending invitation.", code="invitation_not_found")
    return invitation


async def resend_invitation(
    session: AsyncSession, principal: Principal, invitation_id: uuid.UUID, settings: Settings
) -> Invitation:
    """Mail a pending invitation again with a new link and a new time limit (admin)."""
    tenant_id = principal.require_role(Role.ADMIN)
    invitation = await _pending_invitation(session, invitation_id)
    await _send_invitation(session, principal, tenant_id, invitation, settings)
    return invitation


async def list_invitations(session: AsyncSession, principal: Principal) -> list[Invitation]:
    principal.require_role(Role.ADMIN)
    return list(
        await session.scalars(
            select(Invitation)
            .where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
            .order_by(Invitation.created_at)
        )
    )


async def revoke_invitation(session: AsyncSession, principal: Principal, invitation_id: uuid.UUID) -> None:
    principal.require_role(Role.ADMIN)
    invitation = await _pending_invitation(session, invitation_id)
    invitation.revoked_at = utcnow()


async def accept_invitation(
    session: AsyncSession, data: AcceptInvitationIn, principal: Principal | None, settings: Settings
) -> tuple[User, Tenant, bool]:
    """Join the invitation's tenant: as the signed-in user, or as a new account created here.

    Returns the user, the tenant and whether the user was created.
    """
    match = INVITATION_TOKEN.match(data.token)
    if not match:
        raise Gone("This invitation link is not valid.", code="token_invalid")
    tenant_id = uuid.UUID(match.group(1))
    await bind_tenant(session, tenant_id)
    invitation = await session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(data.token)).with_for_update()
    )
    if invitation is None or invitation.revoked_at is not None:
        raise Gone("This invitation is not valid.", code="token_invalid")
    if invitation.accepted_at is not None:
        raise Gone("This invitation was already used.", code="token_used")
    if invitation.expires_at <= utcnow():
        raise Gone("This invitation has expired; ask for a new one.", code="token_expired")
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    if tenant.status != TenantStatus.ACTIVE:
        raise Forbidden("This workspace is suspended.", code="tenant_suspended")

    created = False
    if principal is not None:
        user = await get_user(session, principal.user_id)
        if user.email != invitation.email:
            raise Forbidden("This invitation was sent to another email address.", code="invitation_email_mismatch")
    else:
        user_or_none = await session.scalar(select(User).where(User.email == invitation.email))
        if user_or_none is not None:
            raise Unauthorized("An account with this email exists: sign in, then accept.", code="sign_in_to_accept")
        problems = name_problems(data.display_name or "", "/display_name")
        if data.password is None:
            problems.append(FieldProblem(pointer="/password", code="required", message="this field is required"))
        else:
            problems += password_problems(
                data.password,
                locale=pick_locale(data.locale, tenant.locale),
                min_score=settings.password_min_score,
                user_inputs=personal_words(invitation.email, data.display_name, tenant.name),
            )
        if data.locale is not None and data.locale not in LOCALES:
            problems.append(
                FieldProblem.of(
                    pointer="/locale", code="unknown_locale", message="use one of {options}", options=list(LOCALES)
                )
            )
        if problems:
            raise ValidationProblem(errors=problems)
        assert data.password is not None and data.display_name is not None
        user = User(
            id=new_id(),
            email=invitation.email,
            password_hash=await hash_password(data.password),
            display_name=clean_name(data.display_name),
            locale=data.locale or tenant.locale,
            email_verified_at=utcnow(),
        )  # the invitation link proved the mailbox
        session.add(user)
        created = True
        await session.flush()
    if await session.scalar(select(Membership.user_id).where(Membership.user_id == user.id)) is not None:
        raise Conflict("You are already a member of this workspace.", code="already_member")
    result = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=utcnow(), accepted_by=user.id)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Gone("This invitation was already used.", code="token_used")
    session.add(Membership(user_id=user.id, role=invitation.role))
    await session.flush()
    await _grant_pack_roles(session, invitation, user.id)
    await outbox.emit(session, events.MEMBER_JOINED.name, {"user_id": str(user.id), "role": invitation.role})
    return user, tenant, created


async def _grant_pack_roles(session: AsyncSession, invitation: Invitation, user_id: uuid.UUID) -> None:
    """Give the new member the pack roles the invitation carried, on the inviter's behalf: their
    decision, taken when they invited, still needs them to be an admin of the workspace now."""
    if not invitation.pack_roles or invitation.invited_by is None:
        return
    inviter_role = await session.scalar(select(Membership.role).where(Membership.user_id == invitation.invited_by))
    if inviter_role is None or not Role(inviter_role).at_least(Role.ADMIN):
        return
    acting = Principal(
        user_id=invitation.invited_by,
        session_id=invitation.id,
        tenant_id=invitation.tenant_id,
        role=Role(inviter_role),
        csrf_token="",
    )
    await pack_roles().grant_on_join(session, acting, user_id, list(invitation.pack_roles))


# ---------------------------------------------------------------- pack roles


async def list_pack_roles(session: AsyncSession, principal: Principal, locale: str) -> list[PackRole]:
    """The roles of the workspace's installed packs, each with its holder (None: nobody) (admin)."""
    principal.require_role(Role.ADMIN)
    roles = await pack_roles().installed(session, principal, locale)
    members = await existing_member_ids(session, {r.holder_id for r in roles if r.holder_id is not None})
    # A holder who has left the workspace holds nothing.
    return [r if r.holder_id in members else PackRole(**{**vars(r), "holder_id": None}) for r in roles]


async def assign_pack_role(session: AsyncSession, principal: Principal, key: str, user_id: uuid.UUID | None) -> None:
    """Give the pack role ``key`` to a member, or to nobody (``None``) (admin)."""
    principal.require_role(Role.ADMIN)
    await pack_roles().assign(session, principal, key, user_id)


async def set_pack_roles(session: AsyncSession, principal: Principal, user_id: uuid.UUID, keys: list[str]) -> None:
    """Make ``keys`` exactly the pack roles member ``user_id`` holds (admin): each role given to
    them is taken from whoever held it; a role taken from them is held by nobody."""
    principal.require_role(Role.ADMIN)
    await _membership(session, user_id)
    roles = {r.key: r for r in await pack_roles().installed(session, principal, "en")}
    problems = [
        FieldProblem(f"/pack_roles/{index}", "unknown_pack_role", "no installed pack has this role")
        for index, key in enumerate(keys)
        if key not in roles
    ]
    if problems:
        raise ValidationProblem(errors=problems)
    for key, role in roles.items():
        holds = role.holder_id == user_id
        if key in keys and not holds:
            await pack_roles().assign(session, principal, key, user_id)
        elif key not in keys and holds:
            await pack_roles().assign(session, principal, key, None)
