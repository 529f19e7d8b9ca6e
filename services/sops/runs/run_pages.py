"""The run page (工单): one run, its current step, and everything people do on it.

Every action is a plain form post to a page of its own that calls the same runs-service function
as the API (claim, complete, approve, reject, raise and resolve an exception, comment, end a wait
now) and answers "see other" back to the run; a refused completion comes back (422) with every
value and upload kept and each problem beside its field, worded from the service's codes. Each
change runs in a savepoint, so a refused one leaves nothing behind (uploads excepted: they are
kept for the next try).
"""

from __future__ import annotations

import unicodedata
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.dates import format_timedelta
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.files import service as files
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
from services.sops.runs import service
from services.sops.runs.models import RunComment, StepInstance
from services.web.forms import field_message
from services.web.i18n import N_, translate
from services.web.pages import Flash, page, redirect
from services.web.viewer import Viewer
from tenants.base import utcnow
from tenants.errors import FieldProblem, ProblemError
from tenants.models import Role

# Uploads come in with the form (several phone photos): room for them and the envelope.
MAX_FORM_BYTES = 64 * 1024 * 1024
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

#: The notices of the run page, by the key a redirect names (a fixed list: no link can make the
#: page say something else).
RUN_NOTICES: dict[str, tuple[str, str]] = {
    "claimed": ("success", N_("The step is yours now.")),
    "approved": ("success", N_("Approved.")),
    "rejected": ("info", N_("Rejected; the reason is in the history.")),
    "reported": ("warning", N_("The problem is reported; the people who handle it are told.")),
    "resolved": ("success", N_("The problem is resolved.")),
    "commented": ("success", N_("Comment added.")),
    "continued": ("success", N_("The wait is over; the run goes on.")),
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

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def markdown(text: str) -> Markup:
    """A step's Markdown instructions as HTML; raw HTML in them is shown as text, never run."""
    return Markup(_markdown.render(text or ""))  # noqa: S704 - markdown-it escapes, html is off


def actor_of(viewer: Viewer) -> Actor:
    principal = viewer.member
    assert principal.role is not None
    return Actor(user_id=principal.user_id, role=principal.role.value)


def _flash(viewer: Viewer, notice: str | None) -> Flash | None:
    if notice and notice in RUN_NOTICES:
        kind, text = RUN_NOTICES[notice]
        return Flash(kind, translate(text, viewer.locale))
    return None


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
    kept: list[tuple[str, str]] = field(default_factory=list)  # uploads kept from the last try


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


async def _page_data(db: AsyncSession, viewer: Viewer, run_id: uuid.UUID) -> PageData:
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
    )


def _shown_steps(definition: Definition) -> list[Step]:
    """The steps a person sees in the list (decisions, splits and joins are the flow's plumbing)."""
    return [s for s in definition.steps if isinstance(s, (*HUMAN_STEPS, WaitStep, ActionStep, SubprocedureStep))]


def _focus_step(data: PageData, viewer: Viewer, wanted: int | None) -> StepInstance | None:
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
    data: PageData, viewer: Viewer, step: Step, values: dict[str, Any], kept: dict[str, list[tuple[str, str]]]
) -> list[FieldView]:
    if not isinstance(step, FormStep):
        return []
    me = translate(N_("Me ({name})"), viewer.locale, name=viewer.display_name)
    members = [(value, me if value == str(viewer.member.user_id) else label) for value, label in data.members]
    return [_field_view(f, values, kept, members, data) for f in step.fields]


def _field_view(
    form_field: FormField,
    values: dict[str, Any],
    kept: dict[str, list[tuple[str, str]]],
    members: list[tuple[str, str]],
    data: PageData,
) -> FieldView:
    name = f"f_{form_field.key}"
    kind = FIELD_KINDS.get(form_field.type, "text")
    options = [(o, o) for o in form_field.options]
    if form_field.type == "user":
        options = members
    elif form_field.type == "entity":
        options = data.entities
    return FieldView(
        name=name,
        label=form_field.label,
        kind=kind,
        optional=not form_field.required,
        options=options,
        value=values.get(name),
        currency=data.currency,
        kept=kept.get(name, []),
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


def _done_notice(data: PageData, viewer: Viewer, done: int | None) -> Flash | None:
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


def _context(
    data: PageData,
    viewer: Viewer,
    focus: StepInstance | None,
    *,
    values: dict[str, Any] | None = None,
    kept: dict[str, list[tuple[str, str]]] | None = None,
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
        "assignee": data.names.get(focus.assignee_id) if focus is not None and focus.assignee_id else None,
        "sla": sla_tag(viewer, focus, now) if focus is not None else None,
        "claimable": focus is not None and _claimable(focus, viewer) and focus.status in ("ready", "in_progress"),
        "mine": mine,
        "is_approval": isinstance(step_def, ApprovalStep),
        "instructions": step_def.instructions if step_def is not None else None,
        "markdown": markdown,
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
        "comments": data.comments,
        "history": history[:HISTORY_SHOWN],
        "older_history": history[HISTORY_SHOWN:],
        "can_continue": viewer.at_least(Role.ADMIN.value),
    }


# ---------------------------------------------------------------- reading the posted form


def _number_text(raw: str) -> str:
    """What a person typed as a number, with full-width digits and signs made plain."""
    return unicodedata.normalize("NFKC", raw).replace(",", "").replace(" ", "").strip()


def _form_value(form_field: FormField, raw: Any, viewer: Viewer, currency: str) -> Any:
    """The JSON value the records service checks, from what the form sent (strings). What does not
    read as its type is passed on as typed, and the service's own check says what is wrong."""
    kind = form_field.type
    if kind == "multi_select":
        return list(raw) if isinstance(raw, list) else ([raw] if raw else None)
    if kind == "boolean":
        return raw == "true" if raw else (None if form_field.required else False)
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if kind == "number":
        try:
            number = Decimal(_number_text(text))
        except InvalidOperation:
            return text
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "money":
        try:
            amount = Decimal(_number_text(text)).scaleb(records.currency_exponent(currency))
        except InvalidOperation:
            return text
        if not amount.is_finite() or amount != amount.to_integral_value():
            return text
        return {"amount": int(amount), "currency": currency}
    if kind == "datetime":
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            return text
        if local.tzinfo is None:
            local = local.replace(tzinfo=zoneinfo.ZoneInfo(viewer.timezone))
        return local.isoformat()
    return text


def _uuid(raw: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


async def _uploads(
    db: AsyncSession, viewer: Viewer, form: Any, name: str
) -> tuple[list[uuid.UUID], list[tuple[str, str]]]:
    """The files sent in ``name`` (saved now, so that a refused form keeps them) and those kept
    from the last try (``<name>_kept``): their ids, and (id, file name) pairs to show."""
    ids: list[uuid.UUID] = []
    shown: list[tuple[str, str]] = []
    for raw in form.getall(f"{name}_kept", []):
        file_id = _uuid(raw)
        if file_id is not None:
            ids.append(file_id)
    for upload in form.getall(name, []):
        if not isinstance(upload, UploadFile) or not upload.filename:
            continue
        try:
            content = await upload.read()
        finally:
            await upload.close()
        if not content:
            continue
        tenant_id = viewer.member.require_tenant()
        saved = await files.save_file(
            db,
            tenant_id=tenant_id,
            name=upload.filename,
            content_type=upload.content_type,
            data=content,
            uploaded_by=viewer.member.user_id,
        )
        ids.append(saved.id)
    for file_id in ids:
        try:
            shown.append((str(file_id), (await files.get_file(db, file_id)).name))
        except ProblemError:
            shown.append((str(file_id), "?"))
    return ids, shown


def _strings(form: Any, name: str) -> list[str]:
    return [v for v in form.getall(name, []) if isinstance(v, str) and v.strip()]


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _choose_kind(viewer: Viewer) -> str:
    label = translate(N_("What went wrong"), viewer.locale)
    return field_message(FieldProblem(pointer="/kind", code="not_an_option", message=""), label, viewer.locale)


#: Where a problem of the completion points → the form's field name.
_EVIDENCE_NAMES = {"/evidence/note": "note", "/evidence/files": "photos", "/evidence/value": "measured"}


def _problem_field(problem: FieldProblem) -> str:
    pointer = problem.pointer
    if pointer.startswith("/values/"):
        return "f_" + pointer.split("/")[2]
    if pointer.startswith("/checked"):
        return "checked"
    for prefix, name in _EVIDENCE_NAMES.items():
        if pointer.startswith(prefix):
            return name
    return pointer.strip("/").split("/", 1)[0] or "form"


def _errors(error: ProblemError, labels: dict[str, str], viewer: Viewer) -> dict[str, str]:
    """Field name → the words for its first problem (the form's order), from the service's codes."""
    found: dict[str, str] = {}
    for problem in error.errors:
        name = _problem_field(problem)
        if name not in labels or name in found:
            continue
        if name == "photos" and problem.code == "required":
            problem = FieldProblem(pointer=problem.pointer, code="photos_required", message=problem.message)
        if name == "checked":
            found[name] = translate(N_("Tick every item of the checklist."), viewer.locale)
            continue
        found[name] = field_message(problem, labels[name], viewer.locale, count=1)
    if not found:
        found["form"] = translate(error.detail or error.title, viewer.locale)
    return {name: found[name] for name in [*labels, "form"] if name in found}


def _labels(step: Step, viewer: Viewer) -> dict[str, str]:
    labels: dict[str, str] = {}
    if isinstance(step, ChecklistStep):
        labels["checked"] = translate(N_("Checklist"), viewer.locale)
    if isinstance(step, FormStep):
        labels.update({f"f_{f.key}": f.label for f in step.fields})
    if isinstance(step, HUMAN_STEPS):
        labels["measured"] = step.evidence.value.label if step.evidence.value else translate(N_("Value"), viewer.locale)
        labels["note"] = translate(N_("Note"), viewer.locale)
        labels["photos"] = translate(N_("Photos"), viewer.locale)
    return labels


# ---------------------------------------------------------------- the pages


class RunPage(Controller):
    include_in_schema = False
    path = "/runs/{run_id:uuid}"

    @get("/")
    async def show(
        self,
        run_id: FromPath[uuid.UUID],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        step: FromQuery[int | None] = None,
        done: FromQuery[int | None] = None,
        notice: FromQuery[str | None] = None,
    ) -> Template:
        data = await _page_data(db, member, run_id)
        focus = _focus_step(data, member, step)
        flash = _done_notice(data, member, done) or _flash(member, notice)
        return page(member, "sops/run.html", nav_current="tasks", flash=flash, **_context(data, member, focus))

    @post("/steps/{step_id:int}/claim")
    async def claim(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Redirect:
        async with db.begin_nested():
            await service.claim_step(db, actor_of(member), run_id, step_id)
        return redirect(f"/runs/{run_id}?step={step_id}", notice="claimed")

    @post("/steps/{step_id:int}/complete", request_max_body_size=MAX_FORM_BYTES)
    async def complete(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        data = await _page_data(db, member, run_id)
        focus = _focus_step(data, member, step_id)
        if focus is None or focus.step_id != step_id:
            return redirect(f"/runs/{run_id}")
        step_def = data.definition.step(focus.key)
        form = await request.form()
        raw: dict[str, Any] = {"checked": _strings(form, "checked")}
        kept: dict[str, list[tuple[str, str]]] = {}
        values: dict[str, Any] = {}
        form_ids: dict[str, uuid.UUID] = {}
        if isinstance(step_def, FormStep):
            for form_field in step_def.fields:
                name = f"f_{form_field.key}"
                if form_field.type == "file":
                    ids, kept[name] = await _uploads(db, member, form, name)
                    if ids:
                        form_ids[name] = ids[-1]
                        kept[name] = kept[name][-1:]
                    values[form_field.key] = str(ids[-1]) if ids else None
                    continue
                sent: Any = _strings(form, name) if form_field.type == "multi_select" else _text(form, name)
                raw[name] = sent
                values[form_field.key] = _form_value(form_field, sent, member, data.currency)
        photo_ids, kept["photos"] = await _uploads(db, member, form, "photos")
        note, measured = _text(form, "note"), _text(form, "measured")
        raw.update(note=note, measured=measured)
        value: float | None = None
        if measured:
            try:
                value = float(Decimal(_number_text(measured)))
            except InvalidOperation:
                value = None
        try:
            async with db.begin_nested():
                await service.complete_step(
                    db,
                    actor_of(member),
                    run_id,
                    step_id,
                    values={k: v for k, v in values.items() if v is not None},
                    checked=raw["checked"],
                    note=note,
                    file_ids=photo_ids,
                    value=value,
                )
        except ProblemError as error:
            if error.status not in (400, 422):
                raise
            errors = _errors(error, _labels(step_def, member), member)
            if measured and value is None:
                errors.setdefault(
                    "measured",
                    translate(
                        N_("Enter {label} as a number."), member.locale, label=_labels(step_def, member)["measured"]
                    ),
                )
            data = await _page_data(db, member, run_id)
            context = _context(data, member, focus, values=raw, kept=kept)
            return page(
                member,
                "sops/run.html",
                status_code=HTTP_422_UNPROCESSABLE_ENTITY,
                nav_current="tasks",
                errors=errors,
                **context,
            )
        return redirect(f"/runs/{run_id}?done={step_id}")

    @post("/steps/{step_id:int}/approve")
    async def approve(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Redirect:
        form = await request.form()
        async with db.begin_nested():
            await service.approve_step(db, actor_of(member), run_id, step_id, _text(form, "note"))
        return redirect(f"/runs/{run_id}", notice="approved")

    @post("/steps/{step_id:int}/reject")
    async def reject(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        form = await request.form()
        reason = _text(form, "reason")
        try:
            async with db.begin_nested():
                await service.reject_step(db, actor_of(member), run_id, step_id, reason)
        except ProblemError as error:
            if error.status != 422:
                raise
            label = translate(N_("Reason"), member.locale)
            errors = {"reason": field_message(error.errors[0], label, member.locale)} if error.errors else {}
            return await self._again(db, member, run_id, step_id, errors, {"reason": reason}, open_panel="reject")
        return redirect(f"/runs/{run_id}", notice="rejected")

    @post("/steps/{step_id:int}/continue")
    async def continue_wait(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Redirect:
        async with db.begin_nested():
            await service.continue_wait(db, actor_of(member), run_id, step_id)
        return redirect(f"/runs/{run_id}", notice="continued")

    @post("/exceptions", request_max_body_size=MAX_FORM_BYTES)
    async def report(
        self,
        run_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        form = await request.form()
        kind, note = _text(form, "kind"), _text(form, "problem_note")
        step_id = int(_text(form, "step_id")) if _text(form, "step_id").isdigit() else None
        file_ids, kept = await _uploads(db, member, form, "problem_photos")
        if not kind:
            errors = {"kind": _choose_kind(member)}
            values = {"kind": kind, "problem_note": note}
            return await self._again(db, member, run_id, step_id, errors, values, open_panel="report", kept=kept)
        try:
            async with db.begin_nested():
                await service.raise_exception(
                    db, actor_of(member), run_id, kind, step_id=step_id, note=note, file_ids=file_ids
                )
        except ProblemError as error:
            if error.status != 422:
                raise
            errors = {"kind": _choose_kind(member)}
            values = {"kind": kind, "problem_note": note}
            return await self._again(db, member, run_id, step_id, errors, values, open_panel="report", kept=kept)
        return redirect(f"/runs/{run_id}", notice="reported")

    @post("/exceptions/{exception_id:int}/resolve")
    async def resolve(
        self,
        run_id: FromPath[uuid.UUID],
        exception_id: FromPath[int],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Redirect:
        form = await request.form()
        async with db.begin_nested():
            await service.resolve_exception(
                db, actor_of(member), run_id, exception_id, note=_text(form, f"resolution_{exception_id}")
            )
        return redirect(f"/runs/{run_id}", notice="resolved")

    @post("/comments")
    async def comment(
        self,
        run_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        form = await request.form()
        body = _text(form, "body")
        picked = [u for u in (_uuid(v) for v in _strings(form, "mentions")) if u is not None]
        rows = await accounts.list_members(db, member.member)
        # "@name" in the words calls on that member as well (the longest names first: "@Li Wei" over "@Li").
        for row in sorted(rows, key=lambda r: len(r.display_name), reverse=True):
            if row.display_name and f"@{row.display_name}" in body and row.user_id not in picked:
                picked.append(row.user_id)
        try:
            async with db.begin_nested():
                await service.add_comment(db, actor_of(member), run_id, body, mentions=picked)
        except ProblemError as error:
            if error.status != 422:
                raise
            label = translate(N_("Comment"), member.locale)
            errors = {"body": field_message(error.errors[0], label, member.locale)} if error.errors else {}
            return await self._again(db, member, run_id, None, errors, {"body": body})
        return redirect(f"/runs/{run_id}?notice=commented#comments")

    async def _again(
        self,
        db: AsyncSession,
        viewer: Viewer,
        run_id: uuid.UUID,
        step_id: int | None,
        errors: dict[str, str],
        values: dict[str, Any],
        *,
        open_panel: str | None = None,
        kept: list[tuple[str, str]] | None = None,
    ) -> Template:
        """The run page again (422), with the refused form's answers and its problems."""
        data = await _page_data(db, viewer, run_id)
        context = _context(data, viewer, _focus_step(data, viewer, step_id), values=values)
        context.update(open_panel=open_panel, kept_problem_photos=kept or [])
        return page(
            viewer,
            "sops/run.html",
            status_code=HTTP_422_UNPROCESSABLE_ENTITY,
            nav_current="tasks",
            errors=errors,
            **context,
        )


PAGES = [RunPage]
