"""The pages' template engine: Jinja through Litestar's template config, with the app's words and formats.

Templates live beside the service that renders them (``services/<service>/templates/<service>/``);
the shared layout and components are ``services/web/templates/web/``. Every template reaches:

- ``_("Text {name}", name=...)``: the text in the page's locale, from the Babel catalogs (the same
  :func:`~services.web.i18n.translate` the code uses; ``make messages`` extracts both);
- the filters ``datetime``, ``date``, ``time``, ``number``, ``money``: Babel formats in the viewer's
  locale and time zone;
- ``static_url(path)``: a static file's URL carrying its content hash, so a changed file is fetched anew;
- ``viewer``: who is looking (see :mod:`services.web.viewer`), and ``nonce``, the CSP nonce of
  this response.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from babel import numbers as babel_numbers
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from services.web.i18n import DEFAULT_LOCALE, babel_locale, translate

SERVICES_DIR = Path(__file__).resolve().parent.parent
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"


def template_dirs() -> list[Path]:
    """Every service's ``templates`` directory, the shared one (``services/web``) first."""
    shared = SERVICES_DIR / "web" / "templates"
    others = sorted(p for p in SERVICES_DIR.glob("**/templates") if p.is_dir() and p != shared)
    return [shared, *others]


def _locale(context: Context) -> str:
    viewer = context.get("viewer")
    return getattr(viewer, "locale", None) or DEFAULT_LOCALE


def _zone(context: Context) -> ZoneInfo:
    viewer = context.get("viewer")
    return ZoneInfo(getattr(viewer, "timezone", None) or "UTC")


@pass_context
def gettext(context: Context, message: str, **params: object) -> str:
    return translate(message, _locale(context), **params)


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    return value.astimezone(zone) if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)


@pass_context
def format_datetime(context: Context, value: datetime | None, format: str = "medium") -> str:
    """A moment in the viewer's time zone and locale ("2026年3月5日 14:00", "Mar 5, 2026, 2:00 PM")."""
    if value is None:
        return ""
    local = _local(value, _zone(context))
    locale = babel_locale(_locale(context))
    if format == "short":
        # Babel's skeletons cover a date or a time, not both: "3月5日周四 14:00", "Thu, Mar 5 2:00 PM".
        skeleton = "MMMEd" if local.year == datetime.now(local.tzinfo).year else "yMMMEd"
        day = babel_dates.format_skeleton(skeleton, local, locale=locale)
        return f"{day} {babel_dates.format_time(local, format='short', locale=locale)}"
    return babel_dates.format_datetime(local, format=format, locale=locale)


@pass_context
def format_date(context: Context, value: date | datetime | None, format: str = "medium") -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = _local(value, _zone(context)).date()
    return babel_dates.format_date(value, format=format, locale=babel_locale(_locale(context)))


@pass_context
def format_time(context: Context, value: datetime | time | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = _local(value, _zone(context)).time()
    return babel_dates.format_time(value, format="short", locale=babel_locale(_locale(context)))


@pass_context
def format_number(context: Context, value: int | float | Decimal | None) -> str:
    if value is None:
        return ""
    return babel_numbers.format_decimal(value, locale=babel_locale(_locale(context)))


@pass_context
def format_money(context: Context, minor_units: int | None, currency: str = "CNY") -> str:
    """An amount kept in minor units (fen, cents) with its currency sign, in the viewer's locale."""
    if minor_units is None:
        return ""
    digits = babel_numbers.get_currency_precision(currency)
    amount = Decimal(minor_units).scaleb(-digits)
    return babel_numbers.format_currency(amount, currency, locale=babel_locale(_locale(context)))


@cache
def static_digest(relative: str) -> str:
    """The first 12 hex digits of the sha256 of ``static/<relative>``."""
    return hashlib.sha256((STATIC_DIR / relative).read_bytes()).hexdigest()[:12]


def static_url(relative: str) -> str:
    """``/static/<relative>?v=<hash of the file>``: cacheable for good, refreshed when the file changes
    (:mod:`services.web.static_files` serves it as ``immutable``)."""
    return f"{STATIC_PREFIX}/{relative}?v={static_digest(relative)}"


def environment() -> Environment:
    """The Jinja environment every page renders in (autoescaped; an unknown name is an error)."""
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(str(d)) for d in template_dirs()]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.update(_=gettext, static_url=static_url)
    env.filters.update(
        datetime=format_datetime, date=format_date, time=format_time, number=format_number, money=format_money
    )
    return env


@cache
def shared_environment() -> Environment:
    return environment()


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template config: Litestar's Jinja engine over :func:`shared_environment`."""
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(shared_environment()))


def render(template: str, **context: Any) -> str:
    """A template rendered outside a request (mails, tests)."""
    return shared_environment().get_template(template).render(**context)
