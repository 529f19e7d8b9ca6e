"""The runs' pages: the dashboard (the app's front door for owners and admins) and My tasks (the
frontline's home screen).

My tasks lists the steps assigned to the viewer and those their role may claim, most urgent first,
with filters in the query string (so Back works). Claiming is a form post that works without
JavaScript; with htmx the card is swapped in place, and says who was quicker when someone else
claimed the step first. The dashboard starts runs through the same service as the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_422_UNPROCESSABLE_ENTITY
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.notifications import service as notifications
from services.sops.engine import Actor
from services.sops.procedures import service as procedures
from services.sops.runs import service
from services.sops.runs.routes import RunItemNumber, actor_of
from services.sops.runs.schemas import StartRunIn
from services.web.forms import decode_form, form_errors, form_fields
from services.web.i18n import N_, babel_locale, translate
from services.web.pages import Flash, page, redirect
from services.web.templating import shared_environment
from services.web.viewer import Viewer, safe_next
from tenants.base import utcnow
from tenants.errors import ProblemError

PER_PAGE = 20
MAX_PAGE_NUMBER = 500
TASKS_PATH = "/tasks"

VIEW_LABELS = {
    "all": N_("All"),
    "mine": N_("Assigned to me"),
    "claimable": N_("Claimable"),
    "overdue": N_("Overdue"),
}
START_LABELS = {"procedure_id": N_("Procedure")}


# ---------------------------------------------------------------- how a task is shown


@dataclass(frozen=True)
class SlaTag:
    kind: str  # the tag's colour: success, warning, danger, neutral
    icon: str
    text: str


# Fields of a clock pattern finer than the minute (seconds, fractions, milliseconds in the day).
_SUB_MINUTE_FIELDS = frozenset("sSA")


@cache
def _clock_pattern(locale: str) -> tuple[babel_dates.DateTimePattern, bool]:
    """The locale's short clock pattern, parsed once, and whether it shows nothing finer than minutes."""
    pattern = babel_dates.get_time_format("short", locale=babel_locale(locale))
    fields = {value[0] for kind, value in babel_dates.tokenize_pattern(pattern.pattern) if kind == "field"}
    return pattern, not fields & _SUB_MINUTE_FIELDS


@cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return None


class DueWords:
    """Due times and time spans as a viewer reads them at one moment ("today 14:00", "Mar 5, 14:00",
    "2 hr"), in their zone and language. Babel's formatting is the costly part of a card, and a
    page's cards share a few clocks, days and spans: each distinct one is formatted once per page."""

    def __init__(self, viewer: Viewer, now: datetime) -> None:
        self.viewer = viewer
        self.now = now
        self._locale = babel_locale(viewer.locale)
        self._zone = _zone(viewer.timezone)
        local_now = self._local(now)
        self._today, self._year = local_now.date(), local_now.year
        self._clock_pattern, self._by_minute = _clock_pattern(viewer.locale)
        self._clocks: dict[datetime, str] = {}
        self._days: dict[date, str] = {}
        self._spans: dict[int, str] = {}

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self._zone) if self._zone is not None else moment

    def _clock(self, local: datetime) -> str:
        key = local.replace(second=0, microsecond=0) if self._by_minute else local
        clock = self._clocks.get(key)
        if clock is None:
            clock = self._clocks[key] = self._clock_pattern.apply(local, self._locale)
        return clock

    def _day(self, local: datetime) -> str:
        day = self._days.get(local.date())
        if day is None:
            # Babel's skeletons hold a date or a time, not both: "3月5日周四 14:00", "Thu, Mar 5 14:00".
            skeleton = "MMMEd" if local.year == self._year else "yMMMd"
            day = self._days[local.date()] = babel_dates.format_skeleton(skeleton, local, locale=self._locale)
        return day

    def when(self, moment: datetime) -> str:
        """A due time as a person reads it: "today 14:00", else "Mar 5, 14:00"."""
        local = self._local(moment)
        clock = self._clock(local)
        if local.date() == self._today:
            return translate(N_("today {time}"), self.viewer.locale, time=clock)
        return f"{self._day(local)} {clock}"

    def span(self, seconds: float) -> str:
        """A time span, to the minute at least ("1 min", "2 hr")."""
        span = int(max(60.0, abs(seconds)))
        text = self._spans.get(span)
        if text is None:
            # Under an hour in minutes ("1 min", not "60 s"); beyond, the next unit from 1.2 of it on.
            threshold = 1.0 if span < 3600 else 1.2
            text = self._spans[span] = babel_dates.format_timedelta(
                span, threshold=threshold, format="short", locale=self._locale
            )
        return text


def sla_tag(task: service.BoardTask, due: DueWords) -> SlaTag:
    """The step's SLA state as text, icon and colour (never colour alone)."""
    locale = due.viewer.locale
    if task.due_at is None:
        return SlaTag("neutral", "clock", translate(N_("No time limit"), locale))
    left = (task.due_at - due.now).total_seconds()
    if task.sla == "overdue":
        return SlaTag("danger", "alert", translate(N_("Overdue by {time}"), locale, time=due.span(left)))
    if task.sla == "due_soon":
        return SlaTag("warning", "clock", translate(N_("Due soon · {time} left"), locale, time=due.span(left)))
    return SlaTag("success", "check", translate(N_("On time"), locale))


@dataclass(frozen=True)
class Card:
    task: service.BoardTask
    sla: SlaTag
    step: str  # the step's name and number ("Pick · Step 3 of 7")
    when: str  # "Due today 14:00", or ""
    mine: bool
    claimable: bool
    holder: str | None  # who holds the step when it is someone else's
    message: str | None = None  # the outcome of a claim, read out


def card_of(
    task: service.BoardTask,
    due: DueWords,
    actor: Actor,
    *,
    holder: str | None = None,
    message: str | None = None,
) -> Card:
    locale = due.viewer.locale
    step = task.title
    if task.position is not None and task.step_count is not None:
        step = translate(
            N_("{step} · Step {n} of {total}"), locale, step=task.title, n=task.position, total=task.step_count
        )
    when = ""
    if task.due_at is not None:
        when = translate(N_("Due {when}"), locale, when=due.when(task.due_at))
    return Card(
        task=task,
        sla=sla_tag(task, due),
        step=step,
        when=when,
        mine=task.assignee_id == actor.user_id,
        claimable=task.assignee_id is None,
        holder=holder,
        message=message,
    )


@cache
def _icons() -> dict[str, Markup]:
    """The cards' icons, drawn once (a macro call per card and icon is most of a card's cost)."""
    components: Any = shared_environment().get_template("web/components.html").module
    return {name: Markup(components.icon(name)) for name in ("alert", "check", "clock", "user")}  # noqa: S704


def card_words(viewer: Viewer) -> dict[str, Any]:
    """What every card of a page shares: its icons and its fixed words, in the viewer's language."""
    return {
        "icons": _icons(),
        "words": {
            "claim": translate(N_("Claim"), viewer.locale),
            "claiming": translate(N_("Claiming…"), viewer.locale),
            "mine": translate(N_("Assigned to me"), viewer.locale),
        },
    }


def _tasks_query(view: str, q: str, procedure: uuid.UUID | None, page_number: int | None = None) -> str:
    params: dict[str, Any] = {}
    if view != "all":
        params["view"] = view
    if q:
        params["q"] = q
    if procedure is not None:
        params["procedure"] = str(procedure)
    if page_number is not None and page_number > 1:
        params["page"] = page_number
    return f"{TASKS_PATH}?{urlencode(params)}" if params else TASKS_PATH


def _as_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


# ---------------------------------------------------------------- the pages


class RunPages(Controller):
    include_in_schema = False

    @get("/app")
    async def dashboard(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template:
        return await _dashboard(member, db, notice=notice)

    @post("/app/start-run")
    async def start_run(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        """The dashboard's "start a run": the procedure's latest published version, then its run page."""
        values = await form_fields(request)
        try:
            async with db.begin_nested():
                data = decode_form(StartRunIn, {"procedure_id": values.get("procedure_id", "")})
                run = await service.start_run(db, data.procedure_id, actor_of(member.member))
        except ProblemError as error:
            labels = {name: translate(label, member.locale) for name, label in START_LABELS.items()}
            errors = form_errors(error, labels, member.locale)
            status = error.status if error.status not in (400, 404) else HTTP_422_UNPROCESSABLE_ENTITY
            return await _dashboard(member, db, status_code=status, errors=errors, values=values)
        return redirect(f"/runs/{run.id}")

    @get(TASKS_PATH)
    async def my_tasks(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        view: FromQuery[str] = "all",
        q: FromQuery[str] = "",
        procedure: FromQuery[str | None] = None,
        page: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_NUMBER)] = 1,
        notice: FromQuery[str | None] = None,
    ) -> Template:
        more = _is_htmx(request) and page > 1
        return await _my_tasks(
            member, db, view=view, q=q, procedure=procedure, page_number=page, notice=notice, more=more
        )

    @post("/tasks/{run_id:uuid}/{step_id:int}/claim")
    async def claim(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[uuid.UUID],
        step_id: RunItemNumber,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
    ) -> Template | Redirect:
        """Claim a step; with htmx the answer is the card itself, as it now stands."""
        form = await request.form()
        back = safe_next(str(form.get("next") or ""), TASKS_PATH)
        actor = actor_of(member.member)
        refused: ProblemError | None = None
        try:
            async with db.begin_nested():
                await service.claim_step(db, actor, run_id, step_id)
        except ProblemError as error:
            if error.status != HTTP_409_CONFLICT:
                raise
            refused = error
        if refused is None and not _is_htmx(request):
            return redirect(back, notice="task_claimed")
        task = await service.board_task(db, run_id, step_id)
        if task is None:  # the run was deleted meanwhile: nothing left to show
            return redirect(back)
        holder = None
        if refused is not None and task.assignee_id is not None and task.assignee_id != actor.user_id:
            names = await accounts.member_names(db, {task.assignee_id})
            holder = names.get(task.assignee_id) or translate(N_("someone else"), member.locale)
        if refused is None:
            message = translate(N_("You claimed this task: it is yours now."), member.locale)
        elif holder is not None:
            message = translate(N_("Already claimed by {name}."), member.locale, name=holder)
        else:
            message = translate(N_("This task can no longer be claimed."), member.locale)
        status = HTTP_409_CONFLICT if refused is not None else 200
        if not _is_htmx(request):
            # Without JavaScript: the list again, as it was filtered, saying who was quicker.
            query = parse_qs(urlsplit(back).query)
            first = {k: v[0] for k, v in query.items() if v}
            return await _my_tasks(
                member,
                db,
                view=first.get("view", "all"),
                q=first.get("q", ""),
                procedure=first.get("procedure"),
                page_number=_page_number(first.get("page")),
                flash=Flash("warning", message),
                status_code=status,
            )
        card = card_of(task, DueWords(member, utcnow()), actor, holder=holder, message=message)
        return page(member, "sops/task_card.html", status_code=status, card=card, this_url=back, **card_words(member))


def _page_number(raw: str | None) -> int:
    try:
        return int(raw or 1)
    except ValueError:
        return 1


async def _my_tasks(
    member: Viewer,
    db: AsyncSession,
    *,
    view: str,
    q: str,
    procedure: str | None,
    page_number: int,
    notice: str | None = None,
    more: bool = False,
    flash: Flash | None = None,
    status_code: int = 200,
) -> Template:
    actor = actor_of(member.member)
    chosen: service.View = view if view in service.VIEWS else "all"
    procedure_id = _as_uuid(procedure)
    search = q.strip()[:100]
    page_number = min(max(1, page_number), MAX_PAGE_NUMBER)
    filters = service.BoardFilters(view=chosen, procedure_id=procedure_id, search=search)
    board = await service.task_board(db, actor, filters, page=page_number, per_page=PER_PAGE)
    due = DueWords(member, board.now)
    context: dict[str, Any] = {
        **card_words(member),
        "cards": [card_of(t, due, actor) for t in board.tasks],
        "board": board,
        "view": chosen,
        "q": search,
        "procedure_id": str(procedure_id) if procedure_id else "",
        "page_number": page_number,
        "this_url": _tasks_query(chosen, search, procedure_id, page_number),
        "next_url": _tasks_query(chosen, search, procedure_id, page_number + 1) if board.has_more else None,
        "previous_url": _tasks_query(chosen, search, procedure_id, page_number - 1) if page_number > 1 else None,
        "chips": [
            (key, label, getattr(board.counts, key), _tasks_query(key, search, procedure_id))
            for key, label in VIEW_LABELS.items()
        ],
    }
    if more:
        return page(member, "sops/task_more.html", **context)
    context["procedures"] = [(str(pid), title) for pid, title in board.procedures]
    context["filtered"] = bool(search or procedure_id)
    if flash is not None:
        context["flash"] = flash
    return page(member, "sops/my_tasks.html", status_code=status_code, nav_current="tasks", notice=notice, **context)


async def _dashboard(
    viewer: Viewer,
    db: AsyncSession,
    *,
    notice: str | None = None,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> Template:
    actor = actor_of(viewer.member)
    views = await procedures.list_procedures(db, viewer.member)
    startable = [
        (str(v.procedure.id), v.procedure.title)
        for v in views
        if v.latest_published_version is not None and v.procedure.collection_id is None
    ]
    counts = await service.task_counts(db, actor)
    now = utcnow()
    loads = await service.runs_in_flight(db) if views else []
    due = DueWords(viewer, now)
    problems = [(p, due.when(p.raised_at)) for p in await service.open_exceptions(db)] if views else []
    rows, _cursor = await notifications.list_notifications(db, viewer.member.user_id, unread=True, limit=5)
    # Worded for this reader now (a notice is stored as its kind and names, not as finished text).
    unread = await notifications.render(db, rows, viewer.locale)
    notices = [(n.title, safe_next(n.link, "") if n.link else "", due.when(n.created_at)) for n in unread]
    return page(
        viewer,
        "sops/dashboard.html",
        status_code=status_code,
        main_class="wide",
        nav_current="dashboard",
        notice=notice,
        errors=errors or {},
        values=values or {},
        has_procedures=bool(views),
        startable=startable,
        counts=counts,
        loads=loads,
        problems=problems,
        notices=notices,
    )


PAGES = [RunPages]
