"""Short links of a procedure's page and its steps' guides: ``/q/<code>``, printed under their QR codes.

A code is seven characters of an alphabet without look-alikes (no 0/o, 1/l/i), drawn at random the
first time a procedure's QR sheet is shown and kept for good: one per procedure and step key, so a
code on the wall keeps opening the same step in every later version. Codes belong to a workspace:
someone working in another workspace finds none of them (404).
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.sops.procedures.models import Procedure, ProcedureLink
from tenants.errors import NotFound
from tenants.principal import Principal

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
CODE_LENGTH = 7
CODE_PATTERN = re.compile(rf"^[{ALPHABET}]{{{CODE_LENGTH}}}$")
PROCEDURE_PAGE = ""  # the step key of the link to the procedure's own page
_TRIES = 5


@dataclass(frozen=True)
class ShortLink:
    code: str
    procedure_id: uuid.UUID
    step_key: str  # PROCEDURE_PAGE for the procedure's own page


def short_path(code: str) -> str:
    return f"/q/{code}"


def _new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


async def _codes(db: AsyncSession, procedure_id: uuid.UUID) -> dict[str, str]:
    rows = await db.execute(
        select(ProcedureLink.step_key, ProcedureLink.code).where(ProcedureLink.procedure_id == procedure_id)
    )
    return {key: code for key, code in rows.tuples()}


async def short_links(
    db: AsyncSession, principal: Principal, procedure_id: uuid.UUID, step_keys: Sequence[str]
) -> dict[str, str]:
    """Step key (``PROCEDURE_PAGE`` for the procedure's page) → its code, made on the first ask."""
    principal.require_tenant()
    if await db.scalar(select(Procedure.id).where(Procedure.id == procedure_id)) is None:
        raise NotFound("No such procedure.", code="procedure_not_found")
    wanted = list(dict.fromkeys(step_keys))
    found = await _codes(db, procedure_id)
    for _ in range(_TRIES):
        missing = [key for key in wanted if key not in found]
        if not missing:
            break
        for key in missing:
            try:
                async with db.begin_nested():
                    db.add(ProcedureLink(code=_new_code(), procedure_id=procedure_id, step_key=key))
                    await db.flush()
            except IntegrityError:  # the code was taken, or the link made meanwhile: look again
                continue
        found = await _codes(db, procedure_id)
    return {key: found[key] for key in wanted if key in found}


async def resolve(db: AsyncSession, principal: Principal, code: str) -> ShortLink:
    """The procedure and step a code of this workspace opens (404 for any other code)."""
    principal.require_tenant()
    code = code.strip().lower()
    found = None
    if CODE_PATTERN.match(code):
        found = await db.scalar(select(ProcedureLink).where(ProcedureLink.code == code))
    if found is None:
        raise NotFound("No such link.", code="link_not_found")
    return ShortLink(found.code, found.procedure_id, found.step_key)
