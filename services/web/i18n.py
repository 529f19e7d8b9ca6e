"""Translations: every user-facing word goes through the Babel catalogs in ``translations/``.

The message id is the English text (``translate("Use at least {count} characters.", "zh-CN",
count=10)``); ``N_`` marks a text for extraction where it is only named, not translated yet.
``make messages`` extracts every marked text into ``translations/messages.pot`` and updates both
catalogs; a unit test fails when a text used in the code is missing or empty in either.

The locale of a message is the person's own (their account, or what a form says), then the
request's ``Accept-Language``, then the platform's default.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache, partial
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from tenants.errors import Words
from tenants.models import LOCALES

DEFAULT_LOCALE = "zh-CN"
TRANSLATIONS_DIR = Path(__file__).parent / "translations"
CATALOG_DOMAIN = "messages"

# The request's Accept-Language header, for messages made where no request is at hand.
accept_language_var: ContextVar[str | None] = ContextVar("accept_language", default=None)


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated later, where the locale is known."""
    return message


def babel_name(locale: str) -> str:
    """The catalog directory of a product locale: ``zh-CN`` → ``zh_CN``."""
    return locale.replace("-", "_")


@cache
def babel_locale(locale: str) -> Locale:
    """Babel's locale of a product locale, parsed once (Babel parses a locale's name at every call)."""
    return Locale.parse(babel_name(locale))


@cache
def catalog(locale: str) -> dict[str, str]:
    """The translations of ``locale`` (a product locale), message id → text; empty entries left out."""
    path = TRANSLATIONS_DIR / babel_name(locale) / "LC_MESSAGES" / f"{CATALOG_DOMAIN}.po"
    with path.open("rb") as po:
        parsed = read_po(po, locale=babel_name(locale))
    return {str(m.id): str(m.string) for m in parsed if m.id and isinstance(m.string, str) and m.string}


def translate(message: str, locale: str, **params: object) -> str:
    """``message`` in ``locale`` (the English id when the catalog lacks it), ``{name}``s filled in."""
    text = catalog(locale if locale in LOCALES else DEFAULT_LOCALE).get(message, message)
    return text.format(**params) if params else text


def join_sentences(sentences: list[str], locale: str) -> str:
    """Translated sentences as one text: Chinese puts no space between sentences, English one."""
    return ("" if locale == "zh-CN" else " ").join(sentences)


def _preferences(accept_language: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first (q=0 left out)."""
    weighted: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept_language.split(",")):
        tag, _, rest = item.strip().partition(";")
        quality = 1.0
        name, _, value = rest.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _q, _i, tag in sorted(weighted)]


def negotiate(accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """The product locale best matching an Accept-Language header (any Chinese → zh-CN, any English → en)."""
    by_language = {Locale.parse(babel_name(code)).language: code for code in LOCALES}
    for tag in _preferences(accept_language or "")[:10]:
        if tag == "*":
            return default
        try:
            language = Locale.parse(tag, sep="-").language
        except (ValueError, UnknownLocaleError):
            continue
        if language in by_language:
            return by_language[language]
    return default


def pick_locale(*candidates: str | None) -> str:
    """The first of ``candidates`` that is a product locale, else the request's Accept-Language."""
    for candidate in candidates:
        if candidate in LOCALES:
            return candidate
    return negotiate(accept_language_var.get())


_READER_STATE = "reader_locales"


def remember_reader(
    connection: ASGIConnection[Any, Any, Any, Any], locale: str | None, tenant_locale: str | None
) -> None:
    """The signed-in caller's own language setting and their workspace's, read with the session:
    an error answer to this request is worded for them, without another query."""
    connection.scope.setdefault("state", {})[_READER_STATE] = (locale, tenant_locale)


def reader_locale(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The language of an error answer: the signed-in caller's own setting, else the request's
    ``Accept-Language``, else their workspace's default, else the platform's."""
    own, tenant = connection.scope.get("state", {}).get(_READER_STATE, (None, None))
    if own in LOCALES:
        return str(own)
    asked = negotiate(connection.headers.get("accept-language", "")[:256], default="")
    if asked:
        return asked
    return str(tenant) if tenant in LOCALES else DEFAULT_LOCALE


def problem_wording(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, Words]:
    """The reader's language (:func:`reader_locale`) and its words, for an error answer."""
    locale = reader_locale(connection)
    return locale, partial(translate, locale=locale)


class AcceptLanguageMiddleware:
    """Keeps the request's Accept-Language where :func:`pick_locale` finds it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept-language"), None)
        token = accept_language_var.set(header[:256] if header else None)
        try:
            await self.app(scope, receive, send)
        finally:
            accept_language_var.reset(token)
