"""HTTP routes of the accounts service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import credentials, service
from services.accounts.models import Invitation, User
from services.accounts.schemas import (
    AcceptInvitationIn,
    ChangePasswordIn,
    EmailIn,
    EntityIn,
    EntityOut,
    InvitationIn,
    InvitationOut,
    LoginIn,
    MemberOut,
    PackRoleAssignIn,
    PackRoleOut,
    PasswordIn,
    ProfilePatch,
    ReauthenticationOut,
    ResetPasswordIn,
    RoleIn,
    SessionOut,
    SignupIn,
    SignupOut,
    SwitchTenantIn,
    TenantOut,
    TenantPatch,
    TokenIn,
    UserOut,
    WorkspaceOut,
)
from services.http import client_key, expired_session_cookie, session_cookie
from services.outputs import struct_from
from services.ratelimit import RateLimiter
from services.settings import Settings
from tenants.models import Entity, Tenant
from tenants.principal import Principal
from tenants.scopes import api_scopes


def limiter_of(request: Request[Any, Any, Any]) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def user_out(user: User) -> UserOut:
    return struct_from(UserOut, user, email_verified=user.email_verified_at is not None)


def tenant_out(tenant: Tenant) -> TenantOut:
    return struct_from(TenantOut, tenant)


def invitation_out(inv: Invitation) -> InvitationOut:
    return struct_from(InvitationOut, inv)


def entity_out(entity: Entity) -> EntityOut:
    return struct_from(EntityOut, entity)


async def session_out(db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> SessionOut:
    user = await service.get_user(db, principal.user_id)
    workspaces = await service.tenants_of(db, principal.user_id)
    current = next((t for t, _ in workspaces if t.id == principal.tenant_id), None)
    return SessionOut(
        user=user_out(user),
        tenant=tenant_out(current) if current else None,
        role=principal.role.value if principal.role else None,
        csrf_token=principal.csrf_token,
        workspaces=[WorkspaceOut(tenant=tenant_out(t), role=r.value) for t, r in workspaces],
    )


class AuthController(Controller):
    # No scopes: signing in and out, passwords, sessions and one's own account are for the person,
    # never for a token acting for them.
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/signup", status_code=201, summary="Sign up: create an account and its workspace")
    async def signup(
        self, data: JSONBody[SignupIn], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> Response[SignupOut]:
        user, tenant = await service.signup(db, data, settings)
        auth, raw = await service.open_login_session(db, user, tenant.id, settings)
        return Response(
            SignupOut(user=user_out(user), tenant=tenant_out(tenant), csrf_token=auth.csrf_token),
            status_code=201,
            cookies=[session_cookie(raw, settings)],
        )

    @post("/login", status_code=HTTP_200_OK, summary="Sign in with email and password")
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginIn],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[SessionOut]:
        _auth, raw = await service.login(
            db, data.email, data.password, client_key(request), limiter_of(request), settings
        )
        principal = await service.authenticate(db, raw)
        assert principal is not None
        return Response(await session_out(db, principal), cookies=[session_cookie(raw, settings)])

    @post(
        "/reauthenticate",
        status_code=HTTP_200_OK,
        summary="Confirm the password again; sensitive actions are allowed for a while (throttled like sign-in)",
    )
    async def reauthenticate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PasswordIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> ReauthenticationOut:
        valid_until = await credentials.reauthenticate(
            db, principal, data.password, client_key(request), limiter_of(request), settings
        )
        return ReauthenticationOut(valid_until=valid_until)

    @post(
        "/change-password",
        status_code=HTTP_204_NO_CONTENT,
        summary="Change the password (the current one is checked, throttled like sign-in); other sessions end",
    )
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChangePasswordIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> None:
        await credentials.change_password(
            db, principal, data.current_password, data.new_password, client_key(request), limiter_of(request), settings
        )

    @post("/logout", status_code=HTTP_204_NO_CONTENT, summary="Sign out (ends this login session)")
    async def logout(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> Response[None]:
        await service.logout(db, principal)
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[expired_session_cookie(settings)])

    @get("/session", summary="The signed-in user, current workspace and CSRF token")
    async def current_session(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SessionOut:
        return await session_out(db, principal)

    @patch("/profile", summary="Change your own name, language or time zone")
    async def update_profile(
        self, data: JSONBody[ProfilePatch], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> UserOut:
        return user_out(await service.update_profile(db, principal, data))

    @post("/switch-tenant", status_code=HTTP_200_OK, summary="Work in another of your workspaces")
    async def switch_tenant(
        self, data: JSONBody[SwitchTenantIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SessionOut:
        return await session_out(db, await service.switch_tenant(db, principal, data.tenant_id))

    @post("/verify-email", status_code=HTTP_200_OK, summary="Confirm an email address with the mailed token")
    async def verify_email(self, data: JSONBody[TokenIn], db: NamedDependency[AsyncSession]) -> UserOut:
        return user_out(await service.verify_email(db, data.token))

    @post("/resend-verification", status_code=HTTP_202_ACCEPTED, summary="Mail a new verification link")
    async def resend_verification(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> None:
        await service.resend_verification(db, principal, settings, limiter_of(request))

    @post(
        "/password-reset",
        status_code=HTTP_202_ACCEPTED,
        summary="Mail a password-reset link (answers the same whether or not the account exists)",
    )
    async def request_reset(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmailIn],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> None:
        await service.request_password_reset(db, data.email, settings, limiter_of(request), client_key(request))

    @post("/password-reset/confirm", status_code=HTTP_204_NO_CONTENT, summary="Set a new password from a reset link")
    async def confirm_reset(
        self, data: JSONBody[ResetPasswordIn], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> None:
        await service.reset_password(db, data.token, data.password, settings)

    @post(
        "/accept-invitation",
        status_code=HTTP_200_OK,
        summary="Accept an invitation, signed in or creating a new account",
    )
    async def accept_invitation(
        self,
        data: JSONBody[AcceptInvitationIn],
        db: NamedDependency[AsyncSession],
        optional_principal: NamedDependency[Principal | None],
        settings: NamedDependency[Settings],
    ) -> Response[SessionOut]:
        user, tenant, _created = await service.accept_invitation(db, data, optional_principal, settings)
        if optional_principal is not None:
            switched = await service.switch_tenant(db, optional_principal, tenant.id)
            return Response(await session_out(db, switched))
        _auth, raw = await service.open_login_session(db, user, tenant.id, settings)
        principal = await service.authenticate(db, raw)
        assert principal is not None
        return Response(await session_out(db, principal), cookies=[session_cookie(raw, settings)])


class TenantController(Controller):
    path = "/api/v1"
    tags = ["workspace"]
    # The workspace's people and its own settings (name, time zone, language, legal entities): an
    # admin's integration may manage them. A member leaving through DELETE /members/<own id> is
    # covered too, but members:write is an admin's scope, so a member's token cannot.
    opt = api_scopes("members")

    @get("/tenant", summary="The current workspace")
    async def get_tenant(self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> TenantOut:
        return tenant_out(await service.current_tenant(db, principal))

    @patch("/tenant", summary="Change the workspace's name, time zone or language (admin)")
    async def patch_tenant(
        self, data: JSONBody[TenantPatch], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> TenantOut:
        return tenant_out(await service.update_tenant(db, principal, data))

    @get("/entities", summary="Legal entities of the workspace")
    async def list_entities(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[EntityOut]:
        return [entity_out(e) for e in await service.list_entities(db, principal)]

    @post("/entities", status_code=201, summary="Add a legal entity (admin)")
    async def create_entity(
        self, data: JSONBody[EntityIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> EntityOut:
        return entity_out(await service.create_entity(db, principal, data))

    @get("/entities/{entity_id:uuid}", summary="One legal entity")
    async def get_entity(
        self, entity_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> EntityOut:
        return entity_out(await service.get_entity(db, principal, entity_id))

    @get("/members", summary="Members of the workspace")
    async def list_members(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[MemberOut]:
        return [
            MemberOut(user_id=r.user_id, email=r.email, display_name=r.display_name, role=r.role, joined_at=r.joined_at)
            for r in await service.list_members(db, principal)
        ]

    @patch("/members/{user_id:uuid}", summary="Change a member's role (admin; owners for the owner role)")
    async def change_role(
        self,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[RoleIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> MemberOut:
        membership = await service.change_role(db, principal, user_id, data.role)
        user = await service.get_user(db, user_id)
        return MemberOut(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=membership.role,
            joined_at=membership.created_at,
        )

    @delete(
        "/members/{user_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a member (admin), or leave the workspace yourself",
    )
    async def remove_member(
        self, user_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> None:
        await service.remove_member(db, principal, user_id)

    @get("/invitations", summary="Pending invitations (admin)")
    async def list_invitations(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[InvitationOut]:
        return [invitation_out(i) for i in await service.list_invitations(db, principal)]

    @post("/invitations", status_code=201, summary="Invite someone by email with a role (admin)")
    async def invite(
        self,
        data: JSONBody[InvitationIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> InvitationOut:
        return invitation_out(await service.invite(db, principal, data, settings))

    @delete("/invitations/{invitation_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Revoke an invitation")
    async def revoke_invitation(
        self,
        invitation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await service.revoke_invitation(db, principal, invitation_id)

    @post(
        "/invitations/{invitation_id:uuid}/resend",
        status_code=HTTP_200_OK,
        summary="Mail a pending invitation again, with a new link and time limit (admin)",
    )
    async def resend_invitation(
        self,
        invitation_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        settings: NamedDependency[Settings],
    ) -> InvitationOut:
        return invitation_out(await service.resend_invitation(db, principal, invitation_id, settings))

    @get("/pack-roles", summary="The roles of the installed template packs and who holds each (admin)")
    async def list_pack_roles(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[PackRoleOut]:
        tenant = await service.current_tenant(db, principal)
        return [
            PackRoleOut(
                key=r.key, title=r.title, pack_title=r.pack_title, description=r.description, user_id=r.holder_id
            )
            for r in await service.list_pack_roles(db, principal, tenant.locale)
        ]

    @put(
        "/pack-roles/{key:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Give a pack role to a member, or to nobody (admin): its steps go to them from now on",
    )
    async def assign_pack_role(
        self,
        key: FromPath[str],
        data: JSONBody[PackRoleAssignIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await service.assign_pack_role(db, principal, key, data.user_id)
