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
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.files import service as files
from services.records import service as records
from services.sops.definition import (
    HUMAN_STEPS,
    ChecklistStep,
    FormField,
    FormStep,
    Step,
)
from services.sops.procedures import service as procedures
from services.sops.runs import service
from services.sops.runs.run_views import actor_of, done_notice, focus_step, page_data, run_context
from services.web.forms import field_message, form_errors
from services.web.i18n import N_, translate
from services.web.pages import Flash, page, redirect
from services.web.viewer import Viewer
from tenants.errors import FieldProblem, ProblemError, ValidationProblem

# Uploads come in with the form (several phone photos): room for them and the envelope.
MAX_FORM_BYTES = 64 * 1024 * 1024

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
    "acknowledged": ("success", N_("Noted: you have read this version.")),
    "reassigned": ("success", N_("The step is handed over.")),
}

#: Why a step cannot be completed as things stand, by the service's conflict code.
STEP_REFUSALS: dict[str, str] = {
    "acknowledgement_required": N_("Confirm that you have read the procedure first, then complete the step."),
    "step_blocked_by_exception": N_("This step waits until its problem is resolved."),
    "run_finished": N_("This run is finished: nothing more can be done on it."),
}


def _flash(viewer: Viewer, notice: str | None) -> Flash | None:
    if notice and notice in RUN_NOTICES:
        kind, text = RUN_NOTICES[notice]
        return Flash(kind, translate(text, viewer.locale))
    return None


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


def _kept_file(meta: files.StoredFileOut) -> tuple[str, str, str]:
    """An upload as the form shows it again: (id, name, its thumbnail's address, or "" if no image)."""
    thumbnail = f"/files/{meta.id}/thumbnail" if meta.content_type.startswith("image/") else ""
    return str(meta.id), meta.name, thumbnail


async def _uploads(
    db: AsyncSession, viewer: Viewer, form: Any, name: str
) -> tuple[list[uuid.UUID], list[tuple[str, str, str]]]:
    """The files sent in ``name`` (saved now, so that a refused form keeps them) and those kept
    from the last try or uploaded one by one by the page's script (``<name>_kept``): their ids, and
    (id, file name, thumbnail) to show."""
    ids: list[uuid.UUID] = []
    shown: list[tuple[str, str, str]] = []
    for raw in form.getall(f"{name}_kept", []):
        file_id = _uuid(raw)
        if file_id is not None and file_id not in ids:
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
            shown.append(_kept_file(await files.get_file(db, file_id)))
        except ProblemError:
            shown.append((str(file_id), "?", ""))
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
    """Field name → the words for its first problem (the form's order): the run's pointers and
    codes are put on this form's fields, and :func:`form_errors` words them."""
    problems = []
    for problem in error.errors:
        name, code = _problem_field(problem), problem.code
        if name == "photos" and code == "required":
            code = "photos_required"
        elif name == "checked":
            code = "checklist_incomplete"
        problems.append(problem.moved(f"/{name}", code))
    on_fields = ProblemError(
        error.message_id, code=error.code, status=error.status, title=error.title, errors=problems, **error.params
    )
    return form_errors(on_fields, labels, viewer.locale, count=1)


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
        data = await page_data(db, member, run_id)
        focus = focus_step(data, member, step)
        flash = done_notice(data, member, done) or _flash(member, notice)
        return page(member, "sops/run.html", nav_current="tasks", flash=flash, **run_context(data, member, focus))

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
        data = await page_data(db, member, run_id)
        focus = focus_step(data, member, step_id)
        if focus is None or focus.step_id != step_id:
            return redirect(f"/runs/{run_id}")
        step_def = data.definition.step(focus.key)
        form = await request.form()
        raw: dict[str, Any] = {"checked": _strings(form, "checked")}
        kept: dict[str, list[tuple[str, str, str]]] = {}
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
            if error.status == 409:
                # The step cannot be completed as things stand: say why, keep every answer.
                refusal = STEP_REFUSALS.get(error.code, N_("This step changed while you were on it. Reload the page."))
                errors = {"form": translate(refusal, member.locale)}
            elif error.status in (400, 422):
                errors = _errors(error, _labels(step_def, member), member)
            else:
                raise
            if measured and value is None:
                errors.setdefault(
                    "measured",
                    translate(
                        N_("Enter {label} as a number."), member.locale, label=_labels(step_def, member)["measured"]
                    ),
                )
            data = await page_data(db, member, run_id)
            context = run_context(data, member, focus, values=raw, kept=kept)
            return page(
                member,
                "sops/run.html",
                status_code=HTTP_422_UNPROCESSABLE_ENTITY if error.status != 409 else error.status,
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

    @post("/acknowledge")
    async def acknowledge(
        self, run_id: FromPath[uuid.UUID], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Redirect:
        """I have read the version of the procedure this run follows (the gate of a step that asks it)."""
        run = await service.get_run(db, run_id)
        async with db.begin_nested():
            await procedures.acknowledge(db, member.member, run.procedure_id, run.version_id)
        return redirect(f"/runs/{run_id}", notice="acknowledged")

    @post("/steps/{step_id:int}/assign")
    async def reassign(
        self,
        run_id: FromPath[uuid.UUID],
        step_id: FromPath[int],
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        form = await request.form()
        chosen = _uuid(_text(form, "assignee"))
        try:
            if chosen is None:
                raise ValidationProblem(
                    errors=[FieldProblem(pointer="/user_id", code="not_an_option", message="choose a member")]
                )
            async with db.begin_nested():
                await service.assign_step(db, actor_of(member), run_id, step_id, chosen)
        except ValidationProblem as error:
            label = translate(N_("Who takes it over"), member.locale)
            errors = {"assignee": field_message(error.errors[0], label, member.locale)}
            return await self._again(db, member, run_id, step_id, errors, {}, open_panel="reassign")
        return redirect(f"/runs/{run_id}?step={step_id}", notice="reassigned")

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
        kept: list[tuple[str, str, str]] | None = None,
    ) -> Template:
        """The run page again (422), with the refused form's answers and its problems."""
        data = await page_data(db, viewer, run_id)
        context = run_context(data, viewer, focus_step(data, viewer, step_id), values=values)
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
