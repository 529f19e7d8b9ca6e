"""Who a run's step or exception goes to: the members an owner rule names.

A step's owner rule picks one member (a named member, the starter, a user field of the run or its
record, round-robin or least-loaded among a role) or leaves the step to be claimed by the role.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sops.definition import (
    HUMAN_STEPS,
    Definition,
    ExceptionKind,
    FieldOwner,
    LeastLoadedOwner,
    MemberOwner,
    Owner,
    RoleOwner,
    RoundRobinOwner,
    StarterOwner,
    Step,
)
from services.sops.engine import Actor, RunState
from services.sops.runs.models import Run, StepInstance
from services.sops.runs.state import OPEN_STATUSES, _role
from tenants.base import as_uuid
from tenants.models import Membership, Role


async def _members_with_role(db: AsyncSession, role: Role) -> list[uuid.UUID]:
    """Members holding exactly ``role``; those holding it or higher when nobody holds it exactly."""
    rows = (await db.execute(select(Membership.user_id, Membership.role))).all()
    exact = sorted((r.user_id for r in rows if r.role == role.value), key=str)
    if exact:
        return exact
    return sorted((r.user_id for r in rows if Role(r.role).at_least(role)), key=str)


async def _is_member(db: AsyncSession, user_id: uuid.UUID) -> bool:
    return await db.scalar(select(Membership.user_id).where(Membership.user_id == user_id)) is not None


def _field_value(path: str, state: RunState, record: Mapping[str, Any] | None) -> Any:
    source, _, name = path.partition(".")
    values: Mapping[str, Any] = state.data if source == "data" else (record or {})
    return values.get(name)


async def _resolve_owner(
    db: AsyncSession, run: Run, owner: Owner, step_key: str, state: RunState, record: Mapping[str, Any] | None
) -> uuid.UUID | None:
    """The member a step goes to by its owner rule; None leaves it to be claimed (role-owned)."""
    if isinstance(owner, MemberOwner):
        return owner.user_id
    if isinstance(owner, StarterOwner):
        return state.started_by or run.started_by
    if isinstance(owner, FieldOwner):
        user_id = as_uuid(_field_value(owner.field, state, record))
        return user_id if user_id is not None and await _is_member(db, user_id) else None
    if isinstance(owner, RoundRobinOwner):
        members = await _members_with_role(db, owner.role)
        if not members:
            return None
        last = await db.scalar(
            select(StepInstance.assignee_id)
            .where(
                StepInstance.procedure_id == run.procedure_id,
                StepInstance.key == step_key,
                StepInstance.assignee_id.is_not(None),
            )
            .order_by(StepInstance.ready_at.desc(), StepInstance.created_at.desc())
            .limit(1)
        )
        if last not in members:
            return members[0]
        return members[(members.index(last) + 1) % len(members)]
    if isinstance(owner, LeastLoadedOwner):
        members = await _members_with_role(db, owner.role)
        if not members:
            return None
        loads = await db.execute(
            select(StepInstance.assignee_id, func.count())
            .where(StepInstance.assignee_id.in_(members), StepInstance.status.in_(OPEN_STATUSES))
            .group_by(StepInstance.assignee_id)
        )
        counts: dict[uuid.UUID | None, int] = {row[0]: int(row[1]) for row in loads}
        return min(members, key=lambda m: (counts.get(m, 0), str(m)))
    return None  # RoleOwner: anyone with the role claims it


async def _owner_user_ids(
    db: AsyncSession, run: Run, owner: Owner, state: RunState, record: Mapping[str, Any] | None
) -> list[uuid.UUID]:
    """Every member an owner rule names: a member, the starter, a user field, or a role's members."""
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return await _members_with_role(db, owner.role)
    user_id: uuid.UUID | None = None
    if isinstance(owner, MemberOwner):
        user_id = owner.user_id
    elif isinstance(owner, StarterOwner):
        user_id = state.started_by or run.started_by
    elif isinstance(owner, FieldOwner):
        user_id = as_uuid(_field_value(owner.field, state, record))
    return [user_id] if user_id is not None and await _is_member(db, user_id) else []


def _exception_kind(definition: Definition, state: RunState, kind: str, step_id: int | None) -> ExceptionKind | None:
    """The kind of an exception: its step's own kind first, else any step's (as the engine finds it
    for an exception raised on the run, a rejection or a failed action)."""
    steps: list[Step] = list(definition.steps)
    at = next((s for s in state.steps if s.id == step_id), None) if step_id is not None else None
    if at is not None:
        steps.insert(0, definition.step(at.key))
    for step in steps:
        if isinstance(step, HUMAN_STEPS):
            found = next((k for k in step.exceptions if k.key == kind), None)
            if found is not None:
                return found
    return None


def _claim_role(step: Step) -> str | None:
    """The role that may claim an unassigned step, for its "my tasks" listing."""
    if not isinstance(step, HUMAN_STEPS):
        return None
    owner = step.owner
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return owner.role.value
    return None


async def _owner_matches(
    db: AsyncSession, run: Run, owner: Owner, actor: Actor, state: RunState, record: Mapping[str, Any] | None
) -> bool:
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return _role(actor).at_least(owner.role)
    if isinstance(owner, MemberOwner):
        return owner.user_id == actor.user_id
    if isinstance(owner, StarterOwner):
        return (state.started_by or run.started_by) == actor.user_id
    if isinstance(owner, FieldOwner):
        return as_uuid(_field_value(owner.field, state, record)) == actor.user_id
    return False
