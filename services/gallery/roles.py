"""Who holds each role of an installed pack, and handing a role over.

An installation maps each pack role to one member (``role_mapping``); a role with nobody has its
steps owned by ``vacant`` (nobody can claim them). Giving a role to a member rewrites the owners
the role put in the pack's procedures (a vacant owner, or the previous holder on the steps the
pack gave the role) and publishes that as a new version, so new runs go to the new holder; the
open steps of running runs that wait for nobody are assigned to them at once. Taking a role away
makes those owners vacant again.

This is the accounts service's :class:`~services.accounts.service.PackRoles`: it checks the roles an
invitation carries and gives them to the invitee on joining, before or after the pack is installed
(during onboarding the wizard's answer is changed, so the install maps the role to them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.audit import service as audit
from services.gallery import loader, onboarding
from services.gallery.catalog import _language, catalog, localized_items
from services.gallery.install import _installation, _items
from services.gallery.loader import Pack
from services.gallery.models import TemplateInstallation
from services.sops.procedures import service as procedures
from services.sops.runs import service as runs
from tenants.base import utcnow
from tenants.errors import FieldProblem, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal


def split_key(key: str) -> tuple[str, str] | None:
    """``<pack id>:<role key>`` as its two parts (None when it is not of that form)."""
    pack_id, sep, role = key.partition(":")
    return (pack_id, role) if sep and pack_id and role else None


def _role_keys(pack: Pack) -> list[str]:
    return [str(r["key"]) for r in pack.roles]


def unknown_roles(keys: Sequence[str]) -> list[str]:
    """The keys that name no role of a pack on offer."""
    offered = catalog().packs
    unknown = []
    for key in keys:
        parts = split_key(key)
        pack = offered.get(parts[0]) if parts else None
        if parts is None or pack is None or parts[1] not in _role_keys(pack):
            unknown.append(key)
    return unknown


async def installed_roles(db: AsyncSession, principal: Principal, locale: str) -> list[accounts.PackRole]:
    """The roles of the workspace's installed packs in ``locale``, each with its holder."""
    principal.require_tenant()
    language = _language(locale)
    offered = catalog().packs
    found = []
    for installation in await db.scalars(select(TemplateInstallation).order_by(TemplateInstallation.created_at)):
        pack = offered.get(installation.pack_id)
        if pack is None:
            continue
        pack_title = str(loader.localize(pack.meta["title"], language))
        for role in pack.roles:
            key = str(role["key"])
            holder = installation.role_mapping.get(key)
            found.append(
                accounts.PackRole(
                    key=f"{pack.id}:{key}",
                    title=str(loader.localize(role["title"], language)),
                    pack_title=pack_title,
                    description=str(loader.localize(role.get("description") or "", language)),
                    holder_id=uuid.UUID(holder) if holder else None,
                )
            )
    return found


def _hand_over(
    definition: dict[str, Any], role: str, role_steps: set[str], previous: str | None, new: str | None
) -> dict[str, Any]:
    """``definition`` with the owners the role put there naming ``new`` (vacant when None)."""
    vacant = {"kind": "vacant", "role": role}
    target = {"kind": "member", "user_id": new} if new else vacant

    def walk(value: Any, in_role_step: bool) -> Any:
        if isinstance(value, dict):
            if value == vacant:
                return target
            if in_role_step and previous and value == {"kind": "member", "user_id": previous}:
                return target
            return {k: walk(v, in_role_step) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, in_role_step) for v in value]
        return value

    steps = [walk(step, step.get("key") in role_steps) for step in definition.get("steps") or []]
    return {**definition, "steps": steps}


_Change = tuple[str, set[str], str | None, str | None]  # role, its steps, previous holder, new holder


async def _rewrite_procedure(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, change: _Change) -> None:
    role, role_steps, previous, new = change
    try:
        state, draft_id = await procedures.procedure_state(db, procedure_id)
    except NotFound:
        return  # deleted from the workspace
    definition = state["definition"]
    rewritten = _hand_over(definition, role, role_steps, previous, new)
    if rewritten == definition:
        return
    # An open draft is the workspace's work in progress: it gets the new owners and stays a draft.
    publish = draft_id is None
    if draft_id is None:
        draft_id = (await procedures.new_draft(db, principal, procedure_id)).id
    await procedures.update_draft(db, principal, procedure_id, draft_id, procedures.DraftIn(definition=rewritten))
    if publish:
        await procedures.publish(
            db, principal, procedure_id, draft_id, procedures.PublishIn(change_note="role holder changed")
        )


async def assign_role(db: AsyncSession, principal: Principal, key: str, user_id: uuid.UUID | None) -> None:
    """Give the pack role ``key`` (``<pack id>:<role key>``) to member ``user_id``, or to nobody (admin).

    404 ``pack_role_not_found`` when no installed pack has the role; 422 ``not_a_member``.
    """
    principal.require_role(Role.ADMIN)
    parts = split_key(key)
    installation = await _installation(db, parts[0], required=False) if parts else None
    pack = catalog().packs.get(parts[0]) if parts else None
    if parts is None or installation is None or pack is None or parts[1] not in _role_keys(pack):
        raise NotFound("No installed pack has this role.", code="pack_role_not_found")
    role = parts[1]
    if user_id is not None and not await accounts.existing_member_ids(db, {user_id}):
        raise ValidationProblem(errors=[FieldProblem("/user_id", "not_a_member", "not a member of this workspace")])
    mapping = dict(installation.role_mapping)
    previous = mapping.get(role)
    new = str(user_id) if user_id is not None else None
    if previous == new:
        return
    if new is None:
        mapping.pop(role, None)
    else:
        mapping[role] = new
    installation.role_mapping = mapping
    installation.updated_at = utcnow()
    localized = localized_items(pack, installation.language)
    for row in await _items(db, installation):
        data = localized.get(("procedure", row.key)) if row.kind == "procedure" else None
        if data is None:
            continue
        role_steps = {
            str(step.get("key"))
            for step in data["definition"].get("steps") or []
            if ("role", role) in set(loader.references(step))
        }
        if not role_steps:
            continue
        await _rewrite_procedure(db, principal, row.object_id, (role, role_steps, previous, new))
        if user_id is not None:
            await runs.hand_over_vacant_steps(db, row.object_id, role, user_id)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="template.role_assigned",
        subject_type="template",
        subject_id=installation.id,
        before={"role": role, "user_id": previous},
        after={"role": role, "user_id": new},
    )


class GalleryPackRoles:
    """The gallery's pack roles, as the accounts service asks for them."""

    def unknown(self, keys: Sequence[str]) -> list[str]:
        return unknown_roles(keys)

    async def installed(self, db: AsyncSession, principal: Principal, locale: str) -> list[accounts.PackRole]:
        return await installed_roles(db, principal, locale)

    async def assign(self, db: AsyncSession, principal: Principal, key: str, user_id: uuid.UUID | None) -> None:
        await assign_role(db, principal, key, user_id)

    async def grant_on_join(self, db: AsyncSession, acting: Principal, user_id: uuid.UUID, keys: Sequence[str]) -> None:
        for key in keys:
            parts = split_key(key)
            if parts is None:
                continue
            if await _installation(db, parts[0], required=False) is not None:
                await assign_role(db, acting, key, user_id)
            else:
                await onboarding.give_role(db, acting, parts[0], parts[1], user_id)


accounts.register_pack_roles(GalleryPackRoles())
