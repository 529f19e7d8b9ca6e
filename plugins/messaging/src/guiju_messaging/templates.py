"""Message templates: locales, and rendering with Jinja2's sandbox.

A template is given per locale (``{"zh-CN": {...}, "en": {...}}``); each part (subject, text,
html, title) is a Jinja2 template rendered with the action's ``variables``. Rendering is
sandboxed (a template cannot reach Python internals), strict (a missing variable is an error
naming it, never an empty string) and escapes what it inserts where the output has a syntax:
HTML for an e-mail's HTML part, Slack's ``&``/``<``/``>`` for Slack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

#: The locales templates are written in; the first is the product's own language.
LOCALES: tuple[str, ...] = ("zh-CN", "en")
FALLBACK_LOCALE = "en"

#: How a part's inserted values are escaped.
Escaping = Literal["none", "html", "slack"]


class TemplateProblems(ValueError):
    """A template could not be rendered: ``problems`` lists every reason, each naming the part."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def normalize_locale(value: object) -> str | None:
    """``value`` as one of :data:`LOCALES` (``"zh"``, ``"zh_CN"``, ``"zh-Hans-CN"`` → ``"zh-CN"``;
    ``"en-GB"`` → ``"en"``), or ``None`` when it names neither language."""
    if not isinstance(value, str):
        return None
    language = value.strip().replace("_", "-").split("-", 1)[0].lower()
    if language == "zh":
        return "zh-CN"
    if language == "en":
        return "en"
    return None


def choose_locale(available: Iterable[str], wanted: object, default: object) -> str:
    """The locale to render for someone who reads ``wanted``: theirs when the template has it,
    else the tenant's ``default``, else English, else whatever the template has."""
    have = [locale for locale in LOCALES if locale in set(available)]
    if not have:
        raise ValueError("the template has no locale")
    for candidate in (normalize_locale(wanted), normalize_locale(default), FALLBACK_LOCALE):
        if candidate in have:
            return candidate
    return have[0]


def slack_escape(text: str) -> str:
    """Escape what Slack's mrkdwn gives a meaning to (a value cannot mention ``@channel`` or forge
    a link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize(escape: Callable[[str], str]) -> Callable[[Any], Any]:
    def finalize(value: Any) -> Any:
        return escape("" if value is None else str(value))

    return finalize


_ENVIRONMENTS: dict[Escaping, SandboxedEnvironment] = {
    "none": SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True),
    "html": SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True),
    "slack": SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize(slack_escape)
    ),
}


def render_parts(
    locale: str,
    parts: Mapping[str, str],
    variables: Mapping[str, Any],
    escaping: Mapping[str, Escaping] | None = None,
) -> dict[str, str]:
    """Render each part of one locale's template with ``variables``.

    ``escaping`` says how each part escapes inserted values (default: not at all). Raises
    :class:`TemplateProblems` listing every problem of every part: a syntax error with its line,
    each variable the template uses that ``variables`` lacks, a missing attribute.
    """
    problems: list[str] = []
    rendered: dict[str, str] = {}
    for name, source in parts.items():
        where = f"template {locale}.{name}"
        environment = _ENVIRONMENTS[(escaping or {}).get(name, "none")]
        try:
            parsed = environment.parse(source)
        except TemplateSyntaxError as exc:
            problems.append(f"{where}: syntax error on line {exc.lineno}: {exc.message}")
            continue
        missing = sorted(meta.find_undeclared_variables(parsed) - set(variables))
        if missing:
            problems.append(f"{where}: missing variable(s) {', '.join(missing)}")
            continue
        try:
            rendered[name] = environment.from_string(source).render(dict(variables))
        except UndefinedError as exc:
            problems.append(f"{where}: {exc.message}")
        except TemplateError as exc:  # the sandbox refusing an unsafe access, a filter's error
            problems.append(f"{where}: {exc.message or type(exc).__name__}")
        except (TypeError, ValueError, ArithmeticError) as exc:  # an expression failing on the values given
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
    if problems:
        raise TemplateProblems(problems)
    return rendered
