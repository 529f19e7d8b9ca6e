"""The onboarding wizard's pages: 1 packs, 2 roles (and sample data, key clashes), 3 install with
live progress, 4 what to do next. Each step posts to its own page and is saved as it is left; the
install runs one pack per request (htmx polls every 2 s; without JS, a button does the same)."""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.gallery import onboarding, service
from services.records import service as records
from services.settings import Settings
from services.sops.procedures.flow import flow_graph
from services.web.flowchart import layout
from services.web.forms import form_fields
from services.web.i18n import N_, translate
from services.web.pages import page, redirect
from services.web.viewer import Viewer
from tenants.errors import ProblemError

STEP_PATHS = {1: "/onboarding/packs", 2: "/onboarding/roles", 3: "/onboarding/install", 4: "/onboarding/done"}
PROBLEM_WORDS = {
    "packs_required": N_("Choose at least one pack."),
    "choose_member": N_("Choose a member for this role."),
    "invalid_email": N_("Enter an email address like name@example.com."),
    "key_unavailable": N_("This key is taken or not valid; try {suggested}."),
}


def _errors(viewer: Viewer, error: ProblemError) -> dict[str, str]:
    found: dict[str, str] = {}
    for problem in error.errors:
        name = problem.pointer.lstrip("/")
        words = PROBLEM_WORDS.get(problem.code, N_("Check this answer."))
        found.setdefault(name, translate(words, viewer.locale, suggested=problem.message))
    if not found:
        found["form"] = error.worded(partial(translate, locale=viewer.locale))
    return found


def _focus(viewer: Viewer, template: str, step: int, **context: Any) -> Template:
    back = STEP_PATHS.get(step - 1, "/app")
    return page(
        viewer, template, nav_current="dashboard", focus=True, step=step, steps=onboarding.STEPS, back=back, **context
    )


async def _members(db: AsyncSession, viewer: Viewer) -> list[tuple[str, str]]:
    rows = await accounts.list_members(db, viewer.member)
    return [(str(row[0]), str(row[2] or row[1])) for row in rows]


class OnboardingPages(Controller):
    include_in_schema = False
    path = "/onboarding"

    @get("")
    async def resume(self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]) -> Redirect:
        wizard = await onboarding.load(db, member.member)
        return redirect(STEP_PATHS[wizard.step])

    # ------------------------------------------------------------ 1. packs

    @get("/packs")
    async def packs_form(self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]) -> Template:
        wizard = await onboarding.load(db, member.member)
        return await self._packs(member, db, wizard.packs, {})

    async def _packs(
        self, viewer: Viewer, db: AsyncSession, chosen: list[str], errors: dict[str, str], status: int = 200
    ) -> Template:
        language = onboarding.language_of(viewer.locale)
        cards = onboarding.pack_cards(language, await onboarding.installed_packs(db))
        return _focus(
            viewer, "gallery/onboarding_packs.html", 1, cards=cards, chosen=chosen, errors=errors, status_code=status
        )

    @post("/packs")
    async def choose_packs(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        values = await form_fields(request, lists=frozenset({"packs"}))
        chosen = list(values.get("packs") or [])
        try:
            async with db.begin_nested():
                await onboarding.choose_packs(db, member.member, chosen)
        except ProblemError as error:
            return await self._packs(member, db, chosen, _errors(member, error), HTTP_422_UNPROCESSABLE_ENTITY)
        return redirect(STEP_PATHS[2])

    @get("/packs/{pack_id:str}")
    async def preview(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], pack_id: FromPath[str]
    ) -> Template:
        preview = await service.get_pack(db, member.member, pack_id, onboarding.language_of(member.locale))
        language = preview.language
        roles = {r.key: (r.title.get(language) or r.key) for r in preview.roles}
        charts = {
            key: layout(flow_graph(definition, member.locale))
            for key, definition in service.pack_definitions(pack_id, language).items()
        }
        return page(
            member,
            "gallery/onboarding_preview.html",
            nav_current="dashboard",
            focus=True,
            back=STEP_PATHS[1],
            preview=preview,
            charts=charts,
            role_titles=roles,
            title=preview.pack.title.get(language, preview.pack.id),
        )

    # ------------------------------------------------------------ 2. roles, samples, clashes

    @get("/roles")
    async def roles_form(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        wizard = await onboarding.load(db, member.member)
        if not wizard.packs:
            return redirect(STEP_PATHS[1])
        return await self._roles(member, db, wizard, {}, {})

    async def _roles(
        self,
        viewer: Viewer,
        db: AsyncSession,
        wizard: onboarding.Wizard,
        values: dict[str, Any],
        errors: dict[str, str],
        status: int = 200,
    ) -> Template:
        language = onboarding.language_of(viewer.locale)
        return _focus(
            viewer,
            "gallery/onboarding_roles.html",
            2,
            roles=onboarding.pack_roles(wizard, language),
            clashes=await onboarding.key_clashes(db, wizard, language),
            chosen_collections=wizard.collections,
            members=await _members(db, viewer),
            samples=wizard.samples,
            values=values,
            errors=errors,
            status_code=status,
        )

    @post("/roles")
    async def choose_roles(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            async with db.begin_nested():
                await onboarding.choose_roles(db, member.member, values, settings)
        except ProblemError as error:
            wizard = await onboarding.load(db, member.member)
            for role in onboarding.pack_roles(wizard, "en"):
                name = f"{role.pack_id}:{role.key}"
                answer = wizard.roles.setdefault(role.pack_id, {}).setdefault(role.key, onboarding.RoleAnswer())
                answer.choice = values.get(f"role:{name}", "none")
                answer.user_id = values.get(f"member:{name}")
                answer.email = values.get(f"email:{name}")
            wizard.samples = values.get("samples", "yes") == "yes"
            return await self._roles(member, db, wizard, values, _errors(member, error), HTTP_422_UNPROCESSABLE_ENTITY)
        return redirect(STEP_PATHS[3])

    # ------------------------------------------------------------ 3. install with progress

    @get("/install")
    async def install_page(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        wizard = await onboarding.load(db, member.member)
        if not wizard.results:
            return redirect(STEP_PATHS[2] if wizard.packs else STEP_PATHS[1])
        return _focus(member, "gallery/onboarding_install.html", 3, **self._progress_context(member, wizard))

    def _progress_context(self, viewer: Viewer, wizard: onboarding.Wizard) -> dict[str, Any]:
        language = onboarding.language_of(viewer.locale)
        titles = {c.id: c.title for c in onboarding.pack_cards(language, set())}
        return {
            "items": [(p, titles.get(p, p), wizard.results.get(p, {})) for p in wizard.packs],
            "progress": onboarding.progress(wizard),
        }

    @post("/install/next")
    async def install_next(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        wizard = await onboarding.install_next(db, member.member)
        if request.headers.get("hx-request"):
            return page(member, "gallery/onboarding_progress.html", **self._progress_context(member, wizard))
        return redirect(STEP_PATHS[3])

    @post("/install/retry/{pack_id:str}")
    async def retry(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], pack_id: FromPath[str]
    ) -> Redirect:
        await onboarding.retry(db, member.member, pack_id)
        return redirect(STEP_PATHS[3])

    # ------------------------------------------------------------ 4. what to do next

    @get("/done")
    async def done(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template | Redirect:
        wizard = await onboarding.load(db, member.member)
        if wizard.step < 4:
            return redirect(STEP_PATHS[wizard.step])
        unassigned = sorted({r for res in wizard.results.values() for r in res.get("unassigned") or []})
        return _focus(
            member,
            "gallery/onboarding_done.html",
            4,
            samples=await records.count_samples(db),
            unassigned=len(unassigned),
            notice=notice,
        )

    @post("/samples/delete")
    async def delete_samples(self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]) -> Redirect:
        async with db.begin_nested():
            await records.delete_samples(db, member.member)
        return redirect(STEP_PATHS[4], notice="samples_deleted")


PAGES = [OnboardingPages]
