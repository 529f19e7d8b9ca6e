"""The accounts' pages: sign up, sign in and out, the mailed links (confirm the email, set a new
password, accept an invitation), the language switch and a person's own settings.

Each form posts to its own page; a refused form comes back (422) with every answer kept and every
problem beside its field, worded from the service's problem codes. Each change runs in a savepoint,
so a refused one leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import credentials, service
from services.accounts.routes import limiter_of
from services.accounts.schemas import (
    AcceptInvitationIn,
    ChangePasswordIn,
    EmailIn,
    LoginIn,
    ProfilePatch,
    ResetPasswordIn,
    SignupIn,
    TokenIn,
)
from services.http import client_key, expired_session_cookie, session_cookie
from services.settings import Settings
from services.web.extensions import settings_sections
from services.web.forms import decode_form, form_errors, form_fields
from services.web.i18n import N_, translate
from services.web.pages import page, redirect
from services.web.viewer import Viewer, locale_cookie, safe_next
from tenants.errors import ProblemError
from tenants.models import LOCALES, Industry

INDUSTRY_LABELS = {
    Industry.ECOMMERCE.value: N_("E-commerce"),
    Industry.FOREIGN_TRADE.value: N_("Foreign trade"),
    Industry.CLINIC.value: N_("Clinic"),
    Industry.GENERAL.value: N_("Other"),
}
LANGUAGE_LABELS = {"zh-CN": "中文", "en": "English"}
# A mailed link's page holds its token in the address: no other page or cache is told it.
LINK_PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _labels(viewer: Viewer, **labels: str) -> dict[str, str]:
    return {name: translate(text, viewer.locale) for name, text in labels.items()}


SIGNUP_LABELS = {
    "display_name": N_("Your name"),
    "email": N_("Email"),
    "password": N_("Password"),
    "company_name": N_("Company name"),
    "industry": N_("Industry"),
    "locale": N_("Language"),
    "timezone": N_("Time zone"),
}
LOGIN_LABELS = {"email": N_("Email"), "password": N_("Password")}
PROFILE_LABELS = {"display_name": N_("Your name"), "locale": N_("Language"), "timezone": N_("Time zone")}
PASSWORD_LABELS = {"current_password": N_("Current password"), "new_password": N_("New password")}
RESET_LABELS = {"password": N_("New password")}
ACCEPT_LABELS = {"display_name": N_("Your name"), "password": N_("Password")}


def _refused(viewer: Viewer, template: str, error: ProblemError, labels: dict[str, str], **context: Any) -> Template:
    errors = form_errors(error, _labels(viewer, **labels), viewer.locale)
    status = error.status if error.status != 400 else HTTP_422_UNPROCESSABLE_ENTITY
    return page(viewer, template, status_code=status, errors=errors, **context)


def _industries(viewer: Viewer) -> list[tuple[str, str]]:
    return [(value, translate(label, viewer.locale)) for value, label in INDUSTRY_LABELS.items()]


class AccountPages(Controller):
    include_in_schema = False

    # ------------------------------------------------------------ sign up, in, out

    @get("/signup")
    async def signup_form(self, viewer: NamedDependency[Viewer]) -> Template | Redirect:
        if viewer.signed_in:
            return redirect("/app")
        return page(viewer, "accounts/signup.html", values={"locale": viewer.locale}, industries=_industries(viewer))

    @post("/signup")
    async def signup(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        values.setdefault("industry", Industry.GENERAL.value)
        try:
            async with db.begin_nested():
                user, tenant = await service.signup(db, decode_form(SignupIn, values), settings)
                _auth, raw = await service.open_login_session(db, user, tenant.id, settings, password_checked=True)
        except ProblemError as error:
            return _refused(
                viewer, "accounts/signup.html", error, SIGNUP_LABELS, values=values, industries=_industries(viewer)
            )
        # A new owner continues into the onboarding wizard (industry packs, roles, first install).
        return redirect("/onboarding", cookies=[session_cookie(raw, settings), locale_cookie(user.locale)])

    @get("/login")
    async def login_form(
        self, viewer: NamedDependency[Viewer], next: FromQuery[str | None] = None, notice: FromQuery[str | None] = None
    ) -> Template | Redirect:
        if viewer.signed_in:
            return redirect(safe_next(next))
        return page(viewer, "accounts/login.html", values={}, next=safe_next(next), notice=notice)

    @post("/login")
    async def login(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        form = await request.form()
        target = safe_next(str(form.get("next") or ""))
        try:
            data = decode_form(LoginIn, values)
            _auth, raw = await service.login(
                db, data.email, data.password, client_key(request), limiter_of(request), settings
            )
        except ProblemError as error:
            values.pop("password", None)
            return _refused(viewer, "accounts/login.html", error, LOGIN_LABELS, values=values, next=target)
        return redirect(target, cookies=[session_cookie(raw, settings)])

    @post("/logout")
    async def logout(
        self, viewer: NamedDependency[Viewer], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> Redirect:
        if viewer.principal is not None:
            await service.logout(db, viewer.principal)
        return redirect("/login", notice="signed_out", cookies=[expired_session_cookie(settings)])

    @post("/language")
    async def switch_language(
        self, request: Request[Any, Any, Any], viewer: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Redirect:
        """The header's switch: the language of this browser, and of a signed-in person everywhere."""
        form = await request.form()
        locale = str(form.get("locale") or "")
        target = safe_next(str(form.get("next") or ""), "/")
        if locale not in LOCALES:
            return redirect(target)
        if viewer.principal is not None:
            await service.set_own_locale(db, viewer.principal, locale)
        return redirect(target, cookies=[locale_cookie(locale)])

    # ------------------------------------------------------------ the mailed links

    @get("/verify-email")
    async def verify_email_form(self, viewer: NamedDependency[Viewer], token: FromQuery[str] = "") -> Template:
        # Opening the link changes nothing (mail scanners open links); the button confirms.
        return page(viewer, "accounts/verify_email.html", token=token, headers=LINK_PAGE_HEADERS)

    @post("/verify-email")
    async def verify_email(
        self, request: Request[Any, Any, Any], viewer: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            async with db.begin_nested():
                await service.verify_email(db, decode_form(TokenIn, values).token)
        except ProblemError as error:
            return _refused(viewer, "accounts/verify_email.html", error, {}, token=values.get("token", ""))
        return redirect("/app" if viewer.signed_in else "/login", notice="email_verified")

    @post("/verify-email/resend")
    async def resend_verification(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Redirect:
        await service.resend_verification(db, member.member, settings, limiter_of(request))
        return redirect("/app", notice="verification_sent")

    @get("/forgot-password")
    async def forgot_password_form(self, viewer: NamedDependency[Viewer]) -> Template:
        return page(viewer, "accounts/forgot_password.html", values={})

    @post("/forgot-password")
    async def forgot_password(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            data = decode_form(EmailIn, values)
            await service.request_password_reset(db, data.email, settings, limiter_of(request), client_key(request))
        except ProblemError as error:
            return _refused(viewer, "accounts/forgot_password.html", error, {"email": N_("Email")}, values=values)
        return redirect("/login", notice="reset_sent")

    @get("/reset-password")
    async def reset_password_form(self, viewer: NamedDependency[Viewer], token: FromQuery[str] = "") -> Template:
        return page(viewer, "accounts/reset_password.html", token=token, headers=LINK_PAGE_HEADERS)

    @post("/reset-password")
    async def reset_password(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            async with db.begin_nested():
                data = decode_form(ResetPasswordIn, values)
                user = await service.reset_password(db, data.token, data.password, settings)
                tenant_ids = await service.member_tenant_ids(db, user.id)
                _auth, raw = await service.open_login_session(
                    db, user, tenant_ids[0] if tenant_ids else None, settings, password_checked=True
                )
        except ProblemError as error:
            return _refused(viewer, "accounts/reset_password.html", error, RESET_LABELS, token=values.get("token", ""))
        return redirect("/app", notice="password_reset", cookies=[session_cookie(raw, settings)])

    @get("/invitations/accept")
    async def accept_invitation_form(self, viewer: NamedDependency[Viewer], token: FromQuery[str] = "") -> Template:
        return page(viewer, "accounts/accept_invitation.html", token=token, values={}, headers=LINK_PAGE_HEADERS)

    @post("/invitations/accept")
    async def accept_invitation(
        self,
        request: Request[Any, Any, Any],
        viewer: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        values.setdefault("locale", viewer.locale)
        try:
            async with db.begin_nested():
                user, tenant, _created = await service.accept_invitation(
                    db, decode_form(AcceptInvitationIn, values), viewer.principal, settings
                )
                if viewer.principal is not None:
                    await service.switch_tenant(db, viewer.principal, tenant.id)
                    cookies = []
                else:
                    _auth, raw = await service.open_login_session(db, user, tenant.id, settings, password_checked=True)
                    cookies = [session_cookie(raw, settings)]
        except ProblemError as error:
            values.pop("password", None)
            return _refused(
                viewer,
                "accounts/accept_invitation.html",
                error,
                ACCEPT_LABELS,
                token=values.get("token", ""),
                values=values,
            )
        return redirect("/app", notice="joined", cookies=cookies)

    # ------------------------------------------------------------ my settings

    @get("/me")
    async def settings_page(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template:
        context = _settings_context(member)
        context["sections"] = await settings_sections(db, member)
        return page(member, "accounts/settings.html", nav_current="me", notice=notice, **context)

    @post("/me/profile")
    async def save_profile(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template | Redirect:
        values = await form_fields(request)
        values.setdefault("timezone", "")
        try:
            async with db.begin_nested():
                user = await service.update_profile(db, member.member, decode_form(ProfilePatch, values))
        except ProblemError as error:
            context = _settings_context(member)
            context["profile"].update(values)
            context["sections"] = await settings_sections(db, member)
            return _refused(member, "accounts/settings.html", error, PROFILE_LABELS, nav_current="me", **context)
        return redirect("/me", notice="saved", cookies=[locale_cookie(user.locale)])

    @post("/me/password")
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Template | Redirect:
        values = await form_fields(request)
        try:
            async with db.begin_nested():
                data = decode_form(ChangePasswordIn, values)
                await credentials.change_password(
                    db,
                    member.member,
                    data.current_password,
                    data.new_password,
                    client_key(request),
                    limiter_of(request),
                    settings,
                )
        except ProblemError as error:
            context = _settings_context(member)
            context["sections"] = await settings_sections(db, member)
            return _refused(member, "accounts/settings.html", error, PASSWORD_LABELS, nav_current="me", **context)
        return redirect("/me", notice="password_changed")


def _settings_context(viewer: Viewer) -> dict[str, Any]:
    own_zone = viewer.timezone
    return {
        "profile": {"display_name": viewer.display_name, "locale": viewer.locale, "timezone": own_zone},
        "languages": list(LANGUAGE_LABELS.items()),
    }


PAGES = [AccountPages]
