"""Changes members suggest to a procedure ("提建议" on a step's guide), for its owner.

A suggestion names the procedure, the version it was read in, the step (or none: the procedure as a
whole), who wrote it and what they wrote. It is stored and its owner is notified (a
``procedure_suggestion`` notice, linking to the step's guide); the owner marks it done once it is
handled. Reviews of a procedure read its open suggestions through :func:`list_suggestions`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.notifications import service as notifications
from services.sops.procedures.library import library_entry
from services.sops.procedures.models import Procedure, ProcedureSuggestion, SuggestionStatus
from tenants.errors import FieldProblem, Forbidden, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

MAX_TEXT = 2000
NOTICE_KIND = "procedure_suggestion"
EXCERPT = 200


class SuggestionIn(msgspec.Struct, forbid_unknown_fields=True):
    """What a member suggests: ``text`` (1–2000 characters), at ``step_key`` ("" for the whole procedure)."""

    text: str = ""
    step_key: str = ""


def guide_path(procedure_id: uuid.UUID, step_key: str) -> str:
    return f"/sops/{procedure_id}/steps/{step_key}" if step_key else f"/sops/{procedure_id}"


def _problems(data: SuggestionIn, step_keys: set[str]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    text = data.text.strip()
    if not text:
        problems.append(FieldProblem("/text", "required", "Write what should change."))
    elif len(text) > MAX_TEXT:
        problems.append(FieldProblem.of("/text", "too_long", "At most {limit} characters.", limit=MAX_TEXT))
    if data.step_key and data.step_key not in step_keys:
        problems.append(FieldProblem("/step_key", "unknown_step", "The procedure has no such step."))
    return problems


async def suggest(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, data: SuggestionIn
) -> ProcedureSuggestion:
    """Store a member's suggestion on the procedure's published version and notify its owner
    (422 ``validation_failed`` listing every problem; 404 for a procedure not in the library)."""
    principal.require_role(Role.MEMBER)
    entry = await library_entry(db, principal, procedure_id)
    problems = _problems(data, {step.key for step in entry.definition.steps})
    if problems:
        raise ValidationProblem(errors=problems)
    suggestion = ProcedureSuggestion(
        procedure_id=procedure_id,
        version_id=entry.version_id,
        step_key=data.step_key,
        author_id=principal.user_id,
        text=data.text.strip(),
        status=SuggestionStatus.OPEN,
    )
    db.add(suggestion)
    await db.flush()
    step_title = entry.definition.step(data.step_key).title if data.step_key else ""
    owners = await _owners(db, entry.owner_id)
    await notifications.send(
        db,
        [owner for owner in owners if owner != principal.user_id],
        NOTICE_KIND,
        {
            "actor_id": str(principal.user_id),
            "procedure": entry.title,
            "step": step_title,
            "excerpt": suggestion.text[:EXCERPT],
        },
        link=guide_path(procedure_id, data.step_key),
        dedupe_key=f"suggestion:{suggestion.id}",
    )
    return suggestion


async def _owners(db: AsyncSession, owner_id: uuid.UUID) -> list[uuid.UUID]:
    """Who hears of a suggestion: the procedure's owner, or while they are no member, the workspace's owners."""
    if await accounts.existing_member_ids(db, {owner_id}):
        return [owner_id]
    return await accounts.member_ids_with_role(db, Role.OWNER)


async def list_suggestions(
    db: AsyncSession,
    principal: Principal,
    procedure_id: uuid.UUID,
    *,
    status: Literal["open", "done"] | None = None,
) -> Sequence[ProcedureSuggestion]:
    """The procedure's suggestions, oldest first (its owner, and managers and up)."""
    procedure = await _procedure(db, principal, procedure_id)
    statement = select(ProcedureSuggestion).where(ProcedureSuggestion.procedure_id == procedure.id)
    if status is not None:
        statement = statement.where(ProcedureSuggestion.status == status)
    return (await db.scalars(statement.order_by(ProcedureSuggestion.created_at, ProcedureSuggestion.id))).all()


async def set_status(
    db: AsyncSession,
    principal: Principal,
    procedure_id: uuid.UUID,
    suggestion_id: uuid.UUID,
    status: Literal["open", "done"],
) -> ProcedureSuggestion:
    """Mark a suggestion done (handled, e.g. in a review) or open again."""
    await _procedure(db, principal, procedure_id)
    found = await db.scalar(
        select(ProcedureSuggestion).where(
            ProcedureSuggestion.procedure_id == procedure_id, ProcedureSuggestion.id == suggestion_id
        )
    )
    if found is None:
        raise NotFound("No such suggestion.", code="suggestion_not_found")
    found.status = SuggestionStatus(status)
    await db.flush()
    return found


async def _procedure(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> Procedure:
    principal.require_role(Role.MEMBER)
    assert principal.role is not None
    procedure = await db.scalar(select(Procedure).where(Procedure.id == procedure_id))
    if procedure is None:
        raise NotFound("No such procedure.", code="procedure_not_found")
    if procedure.owner_id != principal.user_id and not principal.role.at_least(Role.MANAGER):
        raise Forbidden("The procedure's owner and managers read its suggestions.", code="not_procedure_owner")
    return procedure
