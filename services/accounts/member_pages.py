"""The members page (owners and admins): who is in the workspace with which roles, the pack roles
nobody holds, the invitations not yet accepted; inviting with roles, changing a member's roles,
resending or revoking an invitation, and taking someone out of the workspace.

Every action is a form post calling the accounts service (the same functions as the API); a
refusal comes back as the page with its problems worded on top (and beside the invite form's
fields), nothing changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service
from services.accounts.pack_roles import PackRole
from services.accounts.schemas import InvitationIn
from services.settings import Settings
from services.web.forms import decode_form, form_errors, form_fields
from services.web.i18n import N_, translate
from services.web.pages import page, redirect
from services.web.viewer import Viewer
from tenants.errors import ProblemError
from tenants.models import Role

ROLE_LABELS = {
    Role.OWNER.value: N_("Owner"),
    Role.ADMIN.value: N_("Admin"),
    Role.MANAGER.value: N_("Manager"),
    Role.MEMBER.value: N_("Member"),
}
INVITE_LABELS = {"email": N_("Email"), "role": N_("Access"), "pack_roles": N_("Roles")}


@dataclass(frozen=True)
class MemberRow:
    user_id: uuid.UUID
    name: str
    email: str
    role: str
    pack_roles: list[PackRole]
    joined_at: Any


@dataclass(frozen=True)
class InvitationRow:
    id: uuid.UUID
    email: str
    role: str
    pack_roles: list[str]  # titles
    expires_at: Any


async def _context(db: AsyncSession, viewer: Viewer) -> dict[str, Any]:
    principal = viewer.member
    invitations = await service.list_invitations(db, principal)  # admins only: 403 for anyone else
    roles = await service.list_pack_roles(db, principal, viewer.locale)
    titles = {r.key: f"{r.title} · {r.pack_title}" for r in roles}
    members = [
        MemberRow(
            user_id=row.user_id,
            name=row.display_name or row.email,
            email=row.email,
            role=row.role,
            pack_roles=[r for r in roles if r.holder_id == row.user_id],
            joined_at=row.joined_at,
        )
        for row in await service.list_members(db, principal)
    ]
    names = {m.user_id: m.name for m in members}
    assignable = [(v, translate(label, viewer.locale)) for v, label in ROLE_LABELS.items()]
    if principal.role != Role.OWNER:
        assignable = [(v, label) for v, label in assignable if v != Role.OWNER.value]
    return {
        "members": members,
        "nobody": [r for r in roles if r.holder_id is None],
        "pack_roles": roles,
        "pack_role_options": [(r.key, titles[r.key]) for r in roles],
        "holders": {r.key: names.get(r.holder_id) for r in roles if r.holder_id is not None},
        "invitations": [
            InvitationRow(
                id=i.id,
                email=i.email,
                role=i.role,
                pack_roles=[titles.get(k, k) for k in i.pack_roles],
                expires_at=i.expires_at,
            )
            for i in invitations
        ],
        "role_labels": {v: translate(label, viewer.locale) for v, label in ROLE_LABELS.items()},
        "access_options": assignable,
        "member_options": [(str(m.user_id), m.name) for m in members],
    }


class MemberPages(Controller):
    include_in_schema = False
    path = "/members"

    async def _page(
        self,
        viewer: Viewer,
        db: AsyncSession,
        *,
        errors: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        status: int = 200,
        notice: str | None = None,
    ) -> Template:
        context = await _context(db, viewer)
        return page(
            viewer,
            "accounts/members.html",
            status_code=status,
            nav_current="members",
            notice=notice,
            errors=errors or {},
            values=values or {"role": Role.MEMBER.value, "pack_roles": []},
            **context,
        )

    async def _refused(self, viewer: Viewer, db: AsyncSession, error: ProblemError, **kw: Any) -> Template:
        labels = {name: translate(label, viewer.locale) for name, label in INVITE_LABELS.items()}
        errors = form_errors(error, labels, viewer.locale)
        status = error.status if error.status != 400 else HTTP_422_UNPROCESSABLE_ENTITY
        return await self._page(viewer, db, errors=errors, status=status, **kw)

    @get("")
    async def members(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template:
        return await self._page(member, db, notice=notice)

    @post("/invite")
    async def invite(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request, lists=frozenset({"pack_roles"}))
        values.setdefault("email", "")
        try:
            async with db.begin_nested():
                await service.invite(db, member.member, decode_form(InvitationIn, values), settings)
        except ProblemError as error:
            return await self._refused(member, db, error, values=values)
        return redirect("/members", notice="invitation_sent")

    @post("/{user_id:uuid}/roles")
    async def change_roles(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        user_id: FromPath[uuid.UUID],
    ) -> Template | Redirect:
        values = await form_fields(request, lists=frozenset({"pack_roles"}))
        try:
            async with db.begin_nested():
                rows = {row.user_id: row for row in await service.list_members(db, member.member)}
                role = values.get("role")
                if role and user_id in rows and rows[user_id].role != role:
                    await service.change_role(db, member.member, user_id, role)
                await service.set_pack_roles(db, member.member, user_id, list(values.get("pack_roles") or []))
        except ProblemError as error:
            return await self._refused(member, db, error)
        return redirect("/members", notice="saved")

    @post("/pack-roles")
    async def assign_pack_role(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            user_id = uuid.UUID(values.get("user_id", ""))
        except ValueError:
            return await self._page(
                member,
                db,
                errors={"form": translate(N_("Choose a member for this role."), member.locale)},
                status=HTTP_422_UNPROCESSABLE_ENTITY,
            )
        try:
            async with db.begin_nested():
                await service.assign_pack_role(db, member.member, values.get("key", ""), user_id)
        except ProblemError as error:
            return await self._refused(member, db, error)
        return redirect("/members", notice="saved")

    @post("/{user_id:uuid}/remove")
    async def remove(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], user_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        try:
            async with db.begin_nested():
                await service.remove_member(db, member.member, user_id)
        except ProblemError as error:
            return await self._refused(member, db, error)
        return redirect("/members", notice="member_removed")

    @post("/invitations/{invitation_id:uuid}/resend")
    async def resend(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        invitation_id: FromPath[uuid.UUID],
    ) -> Template | Redirect:
        try:
            async with db.begin_nested():
                await service.resend_invitation(db, member.member, invitation_id, settings)
        except ProblemError as error:
            return await self._refused(member, db, error)
        return redirect("/members", notice="invitation_sent")

    @post("/invitations/{invitation_id:uuid}/revoke")
    async def revoke(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], invitation_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        try:
            async with db.begin_nested():
                await service.revoke_invitation(db, member.member, invitation_id)
        except ProblemError as error:
            return await self._refused(member, db, error)
        return redirect("/members", notice="invitation_revoked")


PAGES = [MemberPages]
