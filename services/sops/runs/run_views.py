"""What the run page shows, read from the runs service: the run, its current step (assignee, SLA
tag, instructions, checklist, form fields), its problems, waits, comments and history, with
people's names and local times, never ids (the page's controller: ``run_pages``)."""

from __future__ import annotations

import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_timedelta
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.records import service as records
from services.sops.definition import (
    HUMAN_STEPS,
    ActionStep,
    ApprovalStep,
    ChecklistStep,
    Definition,
    ExceptionKind,
    FormField,
    FormStep,
    Step,
    SubprocedureStep,
    WaitStep,
)
from services.sops.engine import Actor, RunStatus
from services.sops.procedures import service as procedures
from services.sops.procedures.flow import flow_graph
from services.sops.runs import service
from services.sops.runs.models import RunComment, StepInstance
from services.web.flowchart import Flowchart, layout
from services.web.i18n import N_, translate
from services.web.markdown import render_markdown
from services.web.pages import Flash
from services.web.viewer import Viewer
from tenants.base import utcnow
from tenants.models import Role

#: A record link offers at most this many records to choose from.
RECORD_CHOICES = 100
#: Older history entries than this many are folded away.
HISTORY_SHOWN = 5

#: How each kind of the records service's field types is asked for (a kind of the field macro).
FIELD_KINDS: dict[str, str] = {
    "text": "text",
    "long_text": "textarea",
    "number": "number",
    "money": "money",
    "date": "date",
    "datetime": "datetime",
    "boolean": "checkbox",
    "select": "select",
    "multi_select": "multiselect",
    "email": "email",
    "phone": "tel",
    "user": "user",
    "entity": "select",
    "file": "file",
    "relation": "record",
}

STATUS_LABELS = {
    RunStatus.RUNNING.value: (N_("In progress"), "info"),
    RunStatus.COMPLETED.value: (N_("Completed"), "success"),
    RunStatus.ABORTED.value: (N_("Stopped"), "neutral"),
}
STEP_STATE_LABELS = {
    "done": (N_("Done"), "success", "check"),
    "ready": (N_("In progress"), "info", "play"),
    "in_progress": (N_("In progress"), "info", "play"),
    "waiting": (N_("Waiting"), "warning", "clock"),
    "pending": (N_("Not started"), "neutral", None),
    "skipped": (N_("Skipped"), "neutral", None),
    "expired": (N_("Skipped"), "neutral", None),
    "failed": (N_("Failed"), "danger", "alert"),
}


def actor_of(viewer: Viewer) -> Actor:
    principal = viewer.member
    assert principal.role is not None
    return Actor(user_id=principal.user_id, role=principal.role.value)


# ---------------------------------------------------------------- the SLA tag


@dataclass(frozen=True)
class SlaTag:
    text: str
    kind: str
    icon: str | None


def sla_tag(viewer: Viewer, row: StepInstance, now: datetime) -> SlaTag:
    """On time / due soon (the last quarter of the limit, 24 h at most) / overdue / no time limit."""
    locale = viewer.locale.replace("-", "_")
    if row.due_at is None:
        return SlaTag(translate(N_("No time limit"), viewer.locale), "neutral", None)
    due = _aware(row.due_at)
    if due <= now:
        late = format_timedelta(now - due, locale=locale, threshold=1.0)
        return SlaTag(translate(N_("Overdue by {time}"), viewer.locale, time=late), "danger", "alert")
    left = due - now
    ready = _aware(row.ready_at) if row.ready_at else None
    window = min((due - ready) / 4 if ready else timedelta(hours=24), timedelta(hours=24))
    if left <= window:
        text = translate(N_("Due soon · {time} left"), viewer.locale, time=format_timedelta(left, locale=locale))
        return SlaTag(text, "warning", "clock")
    return SlaTag(translate(N_("On time"), viewer.locale), "success", "check")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zoneinfo.ZoneInfo("UTC"))


# ---------------------------------------------------------------- what the page shows


@dataclass
class FieldView:
    """One question of the step's form, for the field macro."""

    name: str
    label: str
    kind: str
    optional: bool
    options: list[tuple[str, str]] = field(default_factory=list)
    value: Any = None
    unit: str | None = None
    currency: str = "CNY"
    hint: str | None = None
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # uploads kept from the last try
    search_url: str | None = None  # a user or record field's type-ahead
    upload_url: str | None = None  # a file field's uploads, one at a time, with scripts


@dataclass
class PageData:
    """What the run page needs, read once per request."""

    detail: service.RunDetail
    definition: Definition
    procedure_title: str
    names: dict[uuid.UUID, str]
    members: list[tuple[str, str]]
    comments: list[RunComment]
    resolvable: set[int]
    currency: str
    entities: list[tuple[str, str]]
    acknowledged: bool
    # A record link of a form step that writes the run's record: its field key → the records it
    # may point at, as (id, title), from the field's target collection.
    record_options: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


async def page_data(db: AsyncSession, viewer: Viewer, run_id: uuid.UUID) -> PageData:
    detail = await service.run_detail(db, run_id)  # 404 for another workspace's run
    version = await procedures.version_by_id(db, detail.run.version_id)
    rows = await accounts.list_members(db, viewer.member)
    names = {row.user_id: row.display_name for row in rows}
    me = viewer.member.user_id
    members = [(str(row.user_id), row.display_name) for row in rows if row.user_id == me]
    members += [(str(row.user_id), row.display_name) for row in rows if row.user_id != me]
    companies = await accounts.list_entities(db, viewer.member)
    entities = [(str(e.id), e.name) for e in companies]
    # Amounts are asked for in the workspace's main company's currency.
    currency = next((e.currency for e in companies if e.is_default), companies[0].currency if companies else "CNY")
    return PageData(
        detail=detail,
        definition=version.definition,
        procedure_title=version.title,
        names=names,
        members=members,
        comments=await service.list_comments(db, run_id),
        resolvable=await service.resolvable_exceptions(db, actor_of(viewer), run_id),
        currency=currency,
        entities=entities,
        acknowledged=await procedures.has_acknowledged(db, viewer.member.user_id, detail.run.version_id),
        record_options=await _record_options(db, detail, version.definition),
    )


def _record_links(definition: Definition) -> set[str]:
    """The keys of the record-link fields the procedure's form steps write into the run's record."""
    return {
        f.key
        for step in definition.steps
        if isinstance(step, FormStep)
        for f in step.fields
        if f.type == "relation" and f.target == "record"
    }


async def link_target(db: AsyncSession, run: Any, definition: Definition, key: str) -> str | None:
    """The collection a record-link field ``key`` of the run's record points at (its key), if the
    field is one a form step of the run's procedure writes."""
    if key not in _record_links(definition) or run.collection_id is None:
        return None
    for record_field in await records.collection_fields(db, run.collection_id):
        if record_field.key == key:
            return record_field.target_collection or None
    return None


def record_label(match: records.RecordMatch) -> str:
    """A record as a choice reads: its title, and its key field's value beside it."""
    parts = [p for p in (match.title, match.key_value) if p]
    return " · ".join(parts) or "—"


async def _record_options(
    db: AsyncSession, detail: service.RunDetail, definition: Definition
) -> dict[str, list[tuple[str, str]]]:
    """The records each record-link field of the run's record may point at (the newest of its
    target collection, by title and key field), for the form without scripts; with them, a search
    finds any record."""
    options: dict[str, list[tuple[str, str]]] = {}
    for key in _record_links(definition):
        target = await link_target(db, detail.run, definition, key)
        if target is None:
            continue
        found = await records.search_records(db, target, "", limit=RECORD_CHOICES)
        options[key] = [(str(m.id), record_label(m)) for m in found]
    return options


def _shown_steps(definition: Definition) -> list[Step]:
    """The steps a person sees in the list (decisions, splits and joins are the flow's plumbing)."""
    return [s for s in definition.steps if isinstance(s, (*HUMAN_STEPS, WaitStep, ActionStep, SubprocedureStep))]


def focus_step(data: PageData, viewer: Viewer, wanted: int | None) -> StepInstance | None:
    """The step the page is about: the one asked for, else the first open one that is mine, else
    the first open one a person does, else the first open one."""
    steps = data.detail.steps
    if wanted is not None:
        for row in steps:
            if row.step_id == wanted:
                return row
    open_rows = [r for r in steps if r.status in service.OPEN_STATUSES and r.status != "pending"]
    me = viewer.member.user_id
    for candidates in (
        [r for r in open_rows if r.assignee_id == me],
        [r for r in open_rows if _claimable(r, viewer)],
        [r for r in open_rows if r.kind in ("task", "checklist", "form", "approval")],
        open_rows,
    ):
        if candidates:
            return candidates[0]
    return None


def _claimable(row: StepInstance, viewer: Viewer) -> bool:
    return row.assignee_id is None and row.role is not None and viewer.at_least(row.role)


def _form_fields(
    data: PageData, viewer: Viewer, step: Step, values: dict[str, Any], kept: dict[str, list[tuple[str, str, str]]]
) -> list[FieldView]:
    if not isinstance(step, FormStep):
        return []
    me = translate(N_("Me ({name})"), viewer.locale, name=viewer.display_name)
    members = [(value, me if value == str(viewer.member.user_id) else label) for value, label in data.members]
    return [_field_view(f, values, kept, members, data) for f in step.fields]


def _field_view(
    form_field: FormField,
    values: dict[str, Any],
    kept: dict[str, list[tuple[str, str, str]]],
    members: list[tuple[str, str]],
    data: PageData,
) -> FieldView:
    name = f"f_{form_field.key}"
    kind = FIELD_KINDS.get(form_field.type, "text")
    options = [(o, o) for o in form_field.options]
    run_id = data.detail.run.id
    search_url = upload_url = None
    if form_field.type == "user":
        options, search_url = members, f"/runs/{run_id}/members"
    elif form_field.type == "entity":
        options = data.entities
    elif form_field.type == "relation" and form_field.key in data.record_options:
        options, kind = data.record_options[form_field.key], "record"
        search_url = f"/runs/{run_id}/records?field={form_field.key}"
    elif form_field.type == "file":
        upload_url = f"/runs/{run_id}/uploads"
    return FieldView(
        name=name,
        label=form_field.label,
        kind=kind,
        optional=not form_field.required,
        options=options,
        value=values.get(name),
        currency=data.currency,
        kept=kept.get(name, []),
        search_url=search_url,
        upload_url=upload_url,
    )


def _history(data: PageData, viewer: Viewer) -> list[tuple[datetime, str]]:
    """What happened on the run, newest first, with people's names (never ids)."""
    run, titles = data.detail.run, {}
    for row in data.detail.steps:
        titles[row.step_id] = row.title
    someone = translate(N_("Someone"), viewer.locale)

    def who(user_id: uuid.UUID | None) -> str:
        if user_id is None:
            return translate(N_("Guiju"), viewer.locale)
        return data.names.get(user_id, someone)

    entries: list[tuple[datetime, str]] = [
        (run.started_at, translate(N_("{name} started the run."), viewer.locale, name=who(run.started_by)))
    ]
    for row in data.detail.steps:
        if row.finished_at is None:
            continue
        if row.status == "done" and row.outcome == "approved":
            text = N_("{name} approved “{step}”.")
        elif row.status == "done" and row.outcome == "rejected":
            text = N_("{name} rejected “{step}”.")
        elif row.status == "done":
            text = N_("{name} finished “{step}”.")
        elif row.status == "skipped":
            text = N_("{name} skipped “{step}”.")
        else:
            text = N_("“{step}” did not finish.")
        entries.append((row.finished_at, translate(text, viewer.locale, name=who(row.finished_by), step=row.title)))
    labels = _kind_labels(data.definition)
    for exc in data.detail.state.exceptions:
        label = labels.get(exc.kind, exc.kind)
        line = translate(N_("{name} reported a problem: {kind}."), viewer.locale, name=who(exc.raised_by), kind=label)
        entries.append((exc.raised_at, f"{line} {exc.note}".strip()))
        if exc.resolved_at is not None:
            line = translate(N_("{name} resolved “{kind}”."), viewer.locale, name=who(exc.resolved_by), kind=label)
            entries.append((exc.resolved_at, f"{line} {exc.resolution_note}".strip()))
    if run.finished_at is not None:
        finished = N_("The run is complete.") if run.status == RunStatus.COMPLETED else N_("The run was stopped.")
        entries.append((run.finished_at, translate(finished, viewer.locale)))
    entries.sort(key=lambda e: _aware(e[0]), reverse=True)
    return entries


# A step instance's status as the flowchart shows it.
_CHART_STATES = {"done": "done", "skipped": "skipped", "expired": "skipped"}


def run_chart(data: PageData, viewer: Viewer, focus: StepInstance | None, now: datetime) -> Flowchart:
    """The procedure's flowchart with where this run stands: done, waiting, skipped, overdue, and
    the step in focus as current; each node opens its step guide."""
    states: dict[str, str] = {}
    for instance in data.detail.steps:  # oldest first: a step run again shows its latest state
        open_now = instance.status in ("ready", "in_progress")
        if instance.kind == "wait" and instance.status == "in_progress":
            states[instance.key] = "waiting"
        elif open_now and instance.due_at is not None and instance.due_at < now:
            states[instance.key] = "overdue"
        elif instance.status in _CHART_STATES:
            states[instance.key] = _CHART_STATES[instance.status]
    if focus is not None:
        states[focus.key] = "current"
    procedure_id = data.detail.run.procedure_id
    graph = flow_graph(
        data.definition, viewer.locale, href=lambda key: f"/sops/{procedure_id}/steps/{key}", states=states
    )
    return layout(graph)


def _kind_labels(definition: Definition) -> dict[str, str]:
    labels: dict[str, str] = {}
    for step in definition.steps:
        if isinstance(step, HUMAN_STEPS):
            for kind in step.exceptions:
                labels.setdefault(kind.key, kind.label)
    return labels


def _report_kinds(definition: Definition, step: Step | None) -> list[ExceptionKind]:
    """The problems one can report here: the current step's, else every kind the procedure names."""
    if isinstance(step, HUMAN_STEPS) and step.exceptions:
        return list(step.exceptions)
    seen: dict[str, ExceptionKind] = {}
    for each in definition.steps:
        if isinstance(each, HUMAN_STEPS):
            for kind in each.exceptions:
                seen.setdefault(kind.key, kind)
    return list(seen.values())


def done_notice(data: PageData, viewer: Viewer, done: int | None) -> Flash | None:
    """After a completion: what was done, and who has the next step now."""
    finished = next((r for r in data.detail.steps if r.step_id == done), None)
    if finished is None or finished.status != "done":
        return None
    locale = viewer.locale
    if data.detail.run.status == RunStatus.COMPLETED:
        text = translate(N_("“{step}” is done, and so is the run."), locale, step=finished.title)
        return Flash("success", text)
    after = [r for r in data.detail.steps if r.step_id > finished.step_id and r.status in ("ready", "in_progress")]
    human = [r for r in after if r.kind in ("task", "checklist", "form", "approval")]
    if not human:
        return Flash("success", translate(N_("“{step}” is done."), locale, step=finished.title))
    following = human[0]
    if following.assignee_id is not None:
        text = translate(
            N_("“{step}” is done; “{next}” is now with {name}."),
            locale,
            step=finished.title,
            next=following.title,
            name=data.names.get(following.assignee_id, translate(N_("Someone"), locale)),
        )
    else:
        text = translate(
            N_("“{step}” is done; “{next}” is waiting to be claimed."),
            locale,
            step=finished.title,
            next=following.title,
        )
    return Flash("success", text)


def run_context(
    data: PageData,
    viewer: Viewer,
    focus: StepInstance | None,
    *,
    values: dict[str, Any] | None = None,
    kept: dict[str, list[tuple[str, str, str]]] | None = None,
) -> dict[str, Any]:
    definition, detail = data.definition, data.detail
    now = utcnow()
    step_def = definition.step(focus.key) if focus is not None else None
    values = values or {}
    shown = _shown_steps(definition)
    keys = [s.key for s in shown]
    latest = {instance.key: instance for instance in detail.steps}
    step_list = []
    for number, each in enumerate(shown, start=1):
        seen = latest.get(each.key)
        state = "pending" if seen is None else seen.status
        if seen is not None and seen.kind == "wait" and seen.status == "in_progress":
            state = "waiting"
        label, kind, icon = STEP_STATE_LABELS.get(state, STEP_STATE_LABELS["pending"])
        current = focus is not None and each.key == focus.key
        step_list.append(
            {"number": number, "title": each.title, "state": translate(label, viewer.locale), "kind": kind,
             "icon": icon, "current": current}
        )  # fmt: skip
    open_exceptions = [e for e in detail.state.exceptions if e.status == "open"]
    chart = run_chart(data, viewer, focus, now)
    waits = [r for r in detail.steps if r.kind == "wait" and r.status == "in_progress"]
    others = [r for r in detail.steps if r.status in ("ready", "in_progress") and focus and r.step_id != focus.step_id]
    me = viewer.member.user_id
    mine = focus is not None and focus.assignee_id == me and focus.status in ("ready", "in_progress")
    checklist = step_def.items if isinstance(step_def, ChecklistStep) else []
    checked = set(values.get("checked", []))
    status_label, status_kind = STATUS_LABELS.get(detail.run.status, (detail.run.status, "neutral"))
    history = _history(data, viewer)
    evidence = step_def.evidence if isinstance(step_def, HUMAN_STEPS) else None
    return {
        "run": detail.run,
        "running": detail.run.status == RunStatus.RUNNING,
        "status_label": translate(status_label, viewer.locale),
        "status_kind": status_kind,
        "procedure_title": data.procedure_title,
        "focus": True,  # a focus page: a back link, no tab bar
        "current": focus,
        "step_def": step_def,
        "step_number": keys.index(focus.key) + 1 if focus is not None and focus.key in keys else None,
        "step_total": len(shown),
        "step_list": step_list,
        "chart": chart,
        "assignee": data.names.get(focus.assignee_id) if focus is not None and focus.assignee_id else None,
        "sla": sla_tag(viewer, focus, now) if focus is not None else None,
        "claimable": focus is not None and _claimable(focus, viewer) and focus.status in ("ready", "in_progress"),
        "mine": mine,
        "is_approval": isinstance(step_def, ApprovalStep),
        # The step asks its doer to have read this version of the procedure first.
        "needs_ack": isinstance(step_def, HUMAN_STEPS) and step_def.requires_acknowledgement and not data.acknowledged,
        "instructions": step_def.instructions if step_def is not None else None,
        "markdown": render_markdown,
        "checklist": checklist,
        "checked": checked,
        "form_fields": _form_fields(data, viewer, step_def, values, kept or {}) if step_def else [],
        "evidence": evidence,
        "values": values,
        "kept_photos": (kept or {}).get("photos", []),
        "open_exceptions": open_exceptions,
        "kind_labels": _kind_labels(definition),
        "resolvable": data.resolvable,
        "report_kinds": [(k.key, k.label) for k in _report_kinds(definition, step_def)],
        "waits": waits,
        "other_open": others,
        "names": data.names,
        "members": data.members,
        # The viewer as a choice of a user field (the "Me" shortcut of its type-ahead).
        "me": (str(me), viewer.display_name),
        "members_url": f"/runs/{detail.run.id}/members",
        "upload_url": f"/runs/{detail.run.id}/uploads",
        "comments": data.comments,
        "history": history[:HISTORY_SHOWN],
        "older_history": history[HISTORY_SHOWN:],
        "can_continue": viewer.at_least(Role.ADMIN.value),
        # Managers hand a person's step to someone else (转交).
        "can_reassign": viewer.at_least(Role.MANAGER.value)
        and focus is not None
        and focus.kind in ("task", "checklist", "form", "approval")
        and focus.status in ("ready", "in_progress"),
    }
