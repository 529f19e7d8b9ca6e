"""Notices about runs, sent from the run events (an outbox subscriber, so the work's own
transaction stays short and a notice exists only for work that was committed):

- a step assigned to me (unless I took it myself), or ready for my role to claim;
- a problem reported on a run (to the people its kind names to tell, and to the run's starter),
  and a problem escalated (to the people it escalates to);
- a step overdue (to its assignee, else to its role);
- a mention in a comment (the members it names, and ``@name`` or ``@email`` in its words).

Each notice's ``dedupe_key`` is the event's id, so a redelivered event notifies nobody twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import service as accounts
from services.broker import tenant_session
from services.notifications import service as notifications
from services.outbox import service as outbox
from services.sops.definition import Owner
from services.sops.runs.models import Run, RunComment, StepInstance
from services.sops.runs.owners import _members_with_role, _owner_user_ids
from services.sops.runs.state import OPEN_STATUSES, decode_state
from tenants.base import as_uuid
from tenants.models import Role

log = logging.getLogger("guiju.runs.notices")

MAX_EXCERPT = notifications.MAX_EXCERPT


def run_link(run_id: Any) -> str:
    return f"/runs/{run_id}"


async def _step(db: AsyncSession, run_id: uuid.UUID, step_id: Any) -> StepInstance | None:
    if not isinstance(step_id, int):
        return None
    found: StepInstance | None = await db.scalar(
        select(StepInstance).where(StepInstance.run_id == run_id, StepInstance.step_id == step_id)
    )
    return found


def _ids(values: Iterable[Any]) -> list[uuid.UUID]:
    found = [as_uuid(v) for v in values]
    return list(dict.fromkeys(v for v in found if v is not None))


async def _on_step_assigned(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    data = payload.get("data") or {}
    user_id, by = as_uuid(data.get("user_id")), as_uuid(data.get("by"))
    run_id = as_uuid(payload.get("run_id"))
    # Taking a task yourself, or getting it by your own doing (the run you started), tells nobody.
    if user_id is None or run_id is None or user_id in (by, as_uuid(data.get("caused_by"))):
        return
    step = await _step(db, run_id, payload.get("step_id"))
    if step is None:
        return
    params = {"run": payload.get("run_title", ""), "step": step.title, "run_id": str(run_id), "step_id": step.step_id}
    if by is not None:
        params["actor_id"] = str(by)
    await notifications.send(db, [user_id], "step_assigned", params, link=run_link(run_id), dedupe_key=key)


async def _on_step_ready(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    run_id = as_uuid(payload.get("run_id"))
    if run_id is None:
        return
    step = await _step(db, run_id, payload.get("step_id"))
    # Only a step still waiting for someone to claim it: one given to a member says so itself.
    if step is None or step.role is None or step.assignee_id is not None or step.status not in OPEN_STATUSES:
        return
    members = await _members_with_role(db, Role(step.role))
    params = {"run": step.run_title, "step": step.title, "run_id": str(run_id), "step_id": step.step_id}
    await notifications.send(db, members, "step_claimable", params, link=run_link(run_id), dedupe_key=key)


async def _on_step_overdue(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    run_id = as_uuid(payload.get("run_id"))
    if run_id is None:
        return
    assignee = as_uuid(payload.get("assignee_id"))
    role = payload.get("role")
    if assignee is not None:
        people = [assignee]
    elif role in {r.value for r in Role}:
        people = await _members_with_role(db, Role(role))
    else:
        return
    params = {
        "run": payload.get("run_title", ""),
        "step": payload.get("title", ""),
        "run_id": str(run_id),
        "step_id": payload.get("step_id"),
    }
    await notifications.send(db, people, "step_overdue", params, link=run_link(run_id), dedupe_key=key)


async def _on_exception_raised(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    data = payload.get("data") or {}
    run_id = as_uuid(payload.get("run_id"))
    if run_id is None:
        return
    run = await db.scalar(select(Run).where(Run.id == run_id))
    if run is None:
        return
    state = decode_state(run.state)
    people: list[uuid.UUID] = []
    for rule in msgspec.convert(data.get("notify") or [], type=list[Owner]):
        people += await _owner_user_ids(db, run, rule, state, None)
    starter = state.started_by or run.started_by
    if starter is not None:
        people.append(starter)
    raised_by = as_uuid(data.get("raised_by"))
    people = [p for p in dict.fromkeys(people) if p != raised_by]
    params: dict[str, Any] = {
        "run": run.title,
        "label": data.get("label") or data.get("kind") or "",
        "note": (data.get("note") or "")[:MAX_EXCERPT],
        "run_id": str(run_id),
        "exception_id": data.get("exception_id"),
    }
    if raised_by is not None:
        params["actor_id"] = str(raised_by)
    await notifications.send(db, people, "exception_raised", params, link=run_link(run_id), dedupe_key=key)


async def _on_exception_escalated(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    data = payload.get("data") or {}
    run_id = as_uuid(payload.get("run_id"))
    if run_id is None:
        return
    params = {
        "run": payload.get("run_title", ""),
        "label": data.get("label") or data.get("kind") or "",
        "run_id": str(run_id),
        "exception_id": data.get("exception_id"),
    }
    people = _ids(data.get("user_ids") or [])
    await notifications.send(db, people, "exception_escalated", params, link=run_link(run_id), dedupe_key=key)


def mentioned(body: str, people: Iterable[accounts.MemberContact]) -> list[uuid.UUID]:
    """The members a comment mentions: ``@`` then their name or e-mail address (longest names
    first, so that "@Wang Fang" is not also "@Wang")."""
    text = body.casefold()
    found: list[uuid.UUID] = []
    handles = sorted(
        ((handle.casefold(), p.user_id) for p in people for handle in (p.display_name, p.email) if handle.strip()),
        key=lambda h: -len(h[0]),
    )
    for handle, user_id in handles:
        needle = "@" + handle
        if needle in text:
            text = text.replace(needle, "")
            if user_id not in found:
                found.append(user_id)
    return found


async def _on_commented(db: AsyncSession, key: str, payload: dict[str, Any]) -> None:
    run_id, comment_id = as_uuid(payload.get("run_id")), as_uuid(payload.get("comment_id"))
    if run_id is None or comment_id is None:
        return
    comment = await db.scalar(select(RunComment).where(RunComment.id == comment_id))
    run = await db.scalar(select(Run).where(Run.id == run_id))
    if comment is None or run is None:
        return
    # The members the comment names (picked where it was written), and those its words call on.
    people = _ids(payload.get("mentioned_ids") or [])
    if "@" in comment.body:
        members = await accounts.member_contacts(db, set(await accounts.member_ids_with_role(db, Role.MEMBER)))
        people += mentioned(comment.body, members)
    people = [p for p in dict.fromkeys(people) if p != comment.author_id]
    if not people:
        return
    excerpt = comment.body.strip()
    params: dict[str, Any] = {
        "run": run.title,
        "excerpt": excerpt if len(excerpt) <= MAX_EXCERPT else excerpt[: MAX_EXCERPT - 1] + "…",
        "run_id": str(run_id),
        "comment_id": str(comment_id),
    }
    if comment.author_id is not None:
        params["actor_id"] = str(comment.author_id)
    await notifications.send(db, people, "mentioned", params, link=run_link(run_id), dedupe_key=key)


_HANDLERS = {
    events.STEP_ASSIGNED.name: _on_step_assigned,
    events.STEP_READY.name: _on_step_ready,
    events.STEP_OVERDUE.name: _on_step_overdue,
    events.EXCEPTION_RAISED.name: _on_exception_raised,
    events.EXCEPTION_ESCALATED.name: _on_exception_escalated,
    events.RUN_COMMENTED.name: _on_commented,
}


async def on_run_events(messages: list[dict[str, Any]]) -> None:
    """Outbox subscriber: the notices of each event, in one transaction of its tenant per event."""
    for message in messages:
        tenant_id = as_uuid(message.get("tenant_id"))
        handler = _HANDLERS.get(str(message.get("type")))
        if tenant_id is None or handler is None:
            continue
        async with tenant_session(tenant_id) as db:
            await handler(db, f"event:{message['id']}", dict(message.get("payload") or {}))


for _event_type in _HANDLERS:
    outbox.subscribe(_event_type, on_run_events)
