"""The SOP library's pages: the list of published procedures, a procedure's page (start a run, or
confirm reading it first), a step's guide (what a QR code on the wall opens, with its photos and a
form to suggest a change) and the sheet of QR codes.

The addresses are stable (a procedure's id and a step's key), so a printed code keeps working
across versions. A code holds a short link (``/q/<code>``) that leads to them; someone not signed
in goes to the sign-in page and comes back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import segno
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from services.records import service as records
from services.settings import Settings
from services.sops.definition import HUMAN_STEPS, ExceptionKind, Step
from services.sops.engine import Actor
from services.sops.procedures import links, suggestions
from services.sops.procedures import service as procedures
from services.sops.procedures.conditions import FieldWords, field_words
from services.sops.procedures.flow import NumberedStep, flow_graph
from services.sops.procedures.library import LibraryEntry, library, library_entry
from services.sops.runs import service as runs
from services.sops.runs.service import TaskFilters
from services.web.flowchart import Flowchart, layout
from services.web.forms import decode_form, form_errors, form_fields
from services.web.i18n import N_, translate
from services.web.markdown import render_markdown
from services.web.pages import page, redirect
from services.web.viewer import Viewer
from tenants.errors import NotFound, ProblemError

NEEDS_RECORD = N_("A run of this procedure is about one record: start it from that record.")
SUGGESTION_LABEL = N_("What should change")


def _actor(viewer: Viewer) -> Actor:
    principal = viewer.member
    assert principal.role is not None
    return Actor(user_id=principal.user_id, role=principal.role.value)


def procedure_path(procedure_id: uuid.UUID) -> str:
    return f"/sops/{procedure_id}"


def step_path(procedure_id: uuid.UUID, key: str) -> str:
    return f"/sops/{procedure_id}/steps/{key}"


def qr_svg(url: str) -> Markup:
    """A QR code of ``url`` as inline SVG (sized by CSS; the standard quiet zone of four modules)."""
    code = segno.make(url, error="m", micro=False)
    svg = code.svg_inline(
        scale=1, border=4, omitsize=True, svgclass="qr", lineclass="qr-dark", dark="#000", light="#fff"
    )
    return Markup(svg)  # noqa: S704 - segno writes the markup; the URL is ours


@dataclass(frozen=True)
class QrCell:
    title: str
    subtitle: str
    url: str  # the short link the code holds
    svg: Markup

    @property
    def short_url(self) -> str:
        """The address as printed under the code: without its scheme."""
        return self.url.split("://", 1)[-1]


async def _fields(db: AsyncSession, entry: LibraryEntry) -> dict[str, FieldWords]:
    """How the procedure's conditions name fields: its collection's labels, then its own."""
    collection: list[Any] = []
    if entry.collection_id is not None:
        try:
            collection = list(await records.collection_fields(db, entry.collection_id))
        except NotFound:
            collection = []
    return field_words(entry.definition, collection)


def _chart(entry: LibraryEntry, locale: str, fields: dict[str, FieldWords]) -> Flowchart:
    graph = flow_graph(entry.definition, locale, href=lambda key: step_path(entry.procedure_id, key), fields=fields)
    return layout(graph)


def _step(entry: LibraryEntry, key: str, locale: str) -> tuple[NumberedStep, list[NumberedStep]]:
    steps = entry.steps(locale)
    found = next((s for s in steps if s.step.key == key and s.number is not None), None)
    if found is None:
        raise NotFound("No such step.", code="step_not_found")
    return found, steps


def _instructions(step: Step) -> dict[str, Markup]:
    parts = {"what": step.instructions.what, "how": step.instructions.how, "standard": step.instructions.standard}
    return {name: render_markdown(text, photos=True) for name, text in parts.items() if text.strip()}


def _exceptions(step: Step) -> list[ExceptionKind]:
    return list(step.exceptions) if isinstance(step, HUMAN_STEPS) else []


async def _my_task_at(db: AsyncSession, actor: Actor, procedure_id: uuid.UUID, step_key: str) -> Any:
    """The viewer's open task at this step of the procedure (the soonest due), if they hold one."""
    cursor: str | None = None
    while True:
        rows, cursor = await runs.my_tasks(db, actor, TaskFilters(procedure_id=procedure_id), cursor=cursor, limit=100)
        found = next((r for r in rows if r.key == step_key), None)
        if found is not None or cursor is None:
            return found


class LibraryPages(Controller):
    include_in_schema = False

    @get("/sops")
    async def list_page(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        q: FromQuery[str] = "",
        notice: FromQuery[str | None] = None,
    ) -> Template:
        entries = await library(db, member.member, q[:200])
        return page(
            member,
            "sops/library.html",
            nav_current="library",
            notice=notice,
            entries=entries,
            q=q[:200],
            main_class="wide",
        )

    @get("/sops/{procedure_id:uuid}")
    async def procedure_page(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        procedure_id: FromPath[uuid.UUID],
        notice: FromQuery[str | None] = None,
    ) -> Template:
        entry = await library_entry(db, member.member, procedure_id)
        return await self._procedure(db, member, entry, notice=notice)

    async def _procedure(
        self, db: AsyncSession, viewer: Viewer, entry: LibraryEntry, *, status_code: int = 200, **context: Any
    ) -> Template:
        return page(
            viewer,
            "sops/procedure.html",
            status_code=status_code,
            nav_current="library",
            main_class="wide",
            entry=entry,
            steps=entry.steps(viewer.locale),
            chart=_chart(entry, viewer.locale, await _fields(db, entry)),
            **{"start_error": "", **context},
        )

    @post("/sops/{procedure_id:uuid}/start")
    async def start(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], procedure_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        entry = await library_entry(db, member.member, procedure_id)
        try:
            async with db.begin_nested():
                run = await runs.start_run(db, procedure_id, _actor(member))
        except ProblemError as error:
            if any(problem.pointer == "/record_id" for problem in error.errors):
                message = translate(NEEDS_RECORD, member.locale)
            else:
                message = " ".join(form_errors(error, {}, member.locale).values())
            status = error.status if error.status != 400 else 422
            return await self._procedure(db, member, entry, status_code=status, start_error=message)
        return redirect(f"/runs/{run.id}")

    @post("/sops/{procedure_id:uuid}/acknowledge")
    async def acknowledge(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        procedure_id: FromPath[uuid.UUID],
    ) -> Redirect:
        entry = await library_entry(db, member.member, procedure_id)
        fields = await form_fields(request)
        # The version read is the one the page showed; a newer one published meanwhile is not confirmed.
        version = str(fields.get("version_id") or entry.version_id)
        try:
            version_id = uuid.UUID(version)
        except ValueError:
            version_id = entry.version_id
        async with db.begin_nested():
            await procedures.acknowledge(db, member.member, procedure_id, version_id)
        return redirect(procedure_path(procedure_id), notice="acknowledged")

    @get("/sops/{procedure_id:uuid}/steps/{step_key:str}")
    async def step_page(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        procedure_id: FromPath[uuid.UUID],
        step_key: FromPath[str],
        notice: FromQuery[str | None] = None,
    ) -> Template:
        return await self._step_page(db, member, procedure_id, step_key, notice=notice)

    async def _step_page(
        self,
        db: AsyncSession,
        viewer: Viewer,
        procedure_id: uuid.UUID,
        step_key: str,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> Template:
        entry = await library_entry(db, viewer.member, procedure_id)
        found, steps = _step(entry, step_key, viewer.locale)
        task = await _my_task_at(db, _actor(viewer), procedure_id, step_key)
        return page(
            viewer,
            "sops/step.html",
            status_code=status_code,
            nav_current="library",
            entry=entry,
            numbered=found,
            total=sum(1 for s in steps if s.number is not None),
            is_start=step_key == entry.definition.start,
            instructions=_instructions(found.step),
            exceptions=_exceptions(found.step),
            task=task,
            max_suggestion=suggestions.MAX_TEXT,
            **{"errors": {}, "values": {}, **context},
        )

    @post("/sops/{procedure_id:uuid}/steps/{step_key:str}/suggest")
    async def suggest(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        procedure_id: FromPath[uuid.UUID],
        step_key: FromPath[str],
    ) -> Template | Redirect:
        entry = await library_entry(db, member.member, procedure_id)
        _step(entry, step_key, member.locale)
        values = await form_fields(request)
        try:
            async with db.begin_nested():  # a refused suggestion leaves nothing behind
                data = decode_form(suggestions.SuggestionIn, {"text": values.get("text", ""), "step_key": step_key})
                await suggestions.suggest(db, member.member, procedure_id, data)
        except ProblemError as error:
            errors = form_errors(error, {"text": translate(SUGGESTION_LABEL, member.locale)}, member.locale)
            return await self._step_page(
                db, member, procedure_id, step_key, status_code=422, errors=errors, values=values
            )
        return redirect(step_path(procedure_id, step_key), notice="suggestion_sent")

    @get("/sops/{procedure_id:uuid}/qr")
    async def qr_sheet(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        procedure_id: FromPath[uuid.UUID],
    ) -> Template:
        entry = await library_entry(db, member.member, procedure_id)
        numbered = [n for n in entry.steps(member.locale) if n.number is not None]
        keys = [links.PROCEDURE_PAGE, *(n.step.key for n in numbered)]
        codes = await links.short_links(db, member.member, procedure_id, keys)
        base = settings.public_url.rstrip("/")

        def cell(key: str, title: str, subtitle: str) -> QrCell:
            url = f"{base}{links.short_path(codes[key])}"
            return QrCell(title, subtitle, url, qr_svg(url))

        cells = [
            cell(
                links.PROCEDURE_PAGE,
                entry.title,
                translate("Procedure · v{number}", member.locale, number=entry.version_number),
            )
        ]
        for n in numbered:
            title = translate("Step {number}: {name}", member.locale, number=n.number, name=n.step.title)
            cells.append(cell(n.step.key, title, f"{entry.title} · v{entry.version_number}"))
        sheets = [cells[i : i + 12] for i in range(0, len(cells), 12)]
        return page(
            member, "sops/qr_sheet.html", nav_current="library", entry=entry, sheets=sheets, main_class="wide qr-page"
        )


class ShortLinks(Controller):
    """``/q/<code>``: what a printed QR code holds. It opens the step's guide, or the procedure's page
    (where a run is started) for the procedure's own code, or a step no longer in the procedure."""

    include_in_schema = False

    @get("/q/{code:str}")
    async def follow(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], code: FromPath[str]
    ) -> Redirect:
        link = await links.resolve(db, member.member, code)
        entry = await library_entry(db, member.member, link.procedure_id)
        keys = {n.step.key for n in entry.steps(member.locale) if n.number is not None}
        if link.step_key in keys:
            return redirect(step_path(link.procedure_id, link.step_key))
        return redirect(procedure_path(link.procedure_id))


PAGES = [LibraryPages, ShortLinks]
