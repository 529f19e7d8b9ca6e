"""What a plugin registers through its hooks, collected and checked in one place.

The host and the testing harness (:mod:`guiju_sdk.testing`) both call :func:`collect`, so a plugin
that passes its own tests registers exactly what the host will accept.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from guiju_sdk.hookspecs import GuijuSpec
from guiju_sdk.types import ActionHandler, DocumentGenerator, TriggerPoll
from guiju_sdk.version import PROJECT_NAME

MAX_ACTION_TIME_LIMIT_MS = 300_000
MIN_POLL_SECONDS = 60
LANGUAGES = ("zh-CN", "en")


@dataclass(frozen=True)
class ActionSpec:
    """An action registered through ``guiju_actions``."""

    name: str
    handler: ActionHandler
    labels: dict[str, str]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    time_limit_ms: int = 30_000


@dataclass(frozen=True)
class TriggerSpec:
    """A trigger registered through ``guiju_triggers``."""

    name: str
    labels: dict[str, str]
    payload_schema: dict[str, Any] | None = None
    poll: TriggerPoll | None = None
    poll_seconds: int = 300


@dataclass(frozen=True)
class DocumentKindSpec:
    """A document kind registered through ``guiju_document_kinds``."""

    name: str
    generate: DocumentGenerator
    labels: dict[str, str]
    formats: tuple[str, ...] = ("pdf",)
    record_schema: dict[str, Any] | None = None


@dataclass
class Registrations:
    """Everything one plugin registered, and every registration refused (``problems``)."""

    actions: dict[str, ActionSpec] = field(default_factory=dict)
    triggers: dict[str, TriggerSpec] = field(default_factory=dict)
    document_kinds: dict[str, DocumentKindSpec] = field(default_factory=dict)
    template_packs: list[Path] = field(default_factory=list)
    settings_schema: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows Guiju's hook specifications."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(GuijuSpec)
    return manager


def hook_names() -> list[str]:
    """The names of every hook a plugin may implement."""
    return sorted(name for name in dir(GuijuSpec) if name.startswith("guiju_"))


def _name_problem(kind: str, name: object, taken: dict[str, Any]) -> str | None:
    if not isinstance(name, str) or not name or "." in name or len(name) > 64:
        return f"{kind} name {name!r} must be 1-64 characters without '.'"
    if name in taken:
        return f"{kind} {name!r} is registered twice"
    return None


def _labels_problem(kind: str, name: str, labels: object) -> str | None:
    if not isinstance(labels, dict) or not all(
        isinstance(labels.get(lang), str) and labels[lang] for lang in LANGUAGES
    ):
        return f"{kind} {name!r} needs labels in zh-CN and en"
    return None


def _schema_problem(kind: str, name: str, schema: object) -> str | None:
    if schema is not None and not isinstance(schema, dict):
        return f"{kind} {name!r}: a schema is a JSON Schema object"
    return None


def collect(manager: pluggy.PluginManager, plugin: object) -> Registrations:
    """Call ``plugin``'s registration hooks and check what they register.

    A malformed registration is left out and described in ``problems``; a hook that raises is
    described there too. Lifecycle and health hooks are not called here: they need a tenant.
    """
    found = Registrations()
    others = [p for p in manager.get_plugins() if p is not plugin]

    def call(hook: str, register: Any) -> None:
        try:
            manager.subset_hook_caller(hook, remove_plugins=others)(register=register)
        except Exception as exc:  # a plugin's own bug: reported, never raised into the host
            found.problems.append(f"{hook} raised {type(exc).__name__}: {exc}")

    def register_action(
        name: str,
        handler: ActionHandler,
        *,
        labels: dict[str, str],
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        time_limit_ms: int = 30_000,
    ) -> None:
        problem = (
            _name_problem("action", name, found.actions)
            or _labels_problem("action", name, labels)
            or _schema_problem("action", name, input_schema)
            or _schema_problem("action", name, output_schema)
        )
        if problem is None and not callable(handler):
            problem = f"action {name!r}: the handler is not callable"
        if problem is None and not (isinstance(time_limit_ms, int) and 0 < time_limit_ms <= MAX_ACTION_TIME_LIMIT_MS):
            problem = f"action {name!r}: time_limit_ms must be between 1 and {MAX_ACTION_TIME_LIMIT_MS}"
        if problem:
            found.problems.append(problem)
            return
        found.actions[name] = ActionSpec(name, handler, dict(labels), input_schema, output_schema, time_limit_ms)

    def register_trigger(
        name: str,
        *,
        labels: dict[str, str],
        payload_schema: dict[str, Any] | None = None,
        poll: TriggerPoll | None = None,
        poll_seconds: int = 300,
    ) -> None:
        problem = (
            _name_problem("trigger", name, found.triggers)
            or _labels_problem("trigger", name, labels)
            or _schema_problem("trigger", name, payload_schema)
        )
        if problem is None and poll is not None and not callable(poll):
            problem = f"trigger {name!r}: poll is not callable"
        if problem is None and not (isinstance(poll_seconds, int) and poll_seconds >= MIN_POLL_SECONDS):
            problem = f"trigger {name!r}: poll_seconds must be at least {MIN_POLL_SECONDS}"
        if problem:
            found.problems.append(problem)
            return
        found.triggers[name] = TriggerSpec(name, dict(labels), payload_schema, poll, poll_seconds)

    def register_document_kind(
        name: str,
        generate: DocumentGenerator,
        *,
        labels: dict[str, str],
        formats: tuple[str, ...] = ("pdf",),
        record_schema: dict[str, Any] | None = None,
    ) -> None:
        problem = (
            _name_problem("document kind", name, found.document_kinds)
            or _labels_problem("document kind", name, labels)
            or _schema_problem("document kind", name, record_schema)
        )
        if problem is None and not callable(generate):
            problem = f"document kind {name!r}: generate is not callable"
        if problem is None and (not formats or any(f not in ("pdf", "xlsx", "csv", "docx") for f in formats)):
            problem = f"document kind {name!r}: formats are some of pdf, xlsx, csv, docx"
        if problem:
            found.problems.append(problem)
            return
        found.document_kinds[name] = DocumentKindSpec(name, generate, dict(labels), tuple(formats), record_schema)

    def register_template_pack(path: Path) -> None:
        pack = Path(path)
        if not pack.is_dir():
            found.problems.append(f"template pack {str(path)!r} is not a directory")
            return
        found.template_packs.append(pack)

    def register_settings_schema(schema: dict[str, Any]) -> None:
        if found.settings_schema is not None:
            found.problems.append("the settings schema is registered twice")
        elif not isinstance(schema, dict) or schema.get("type") != "object":
            found.problems.append('the settings schema must be a JSON Schema with "type": "object"')
        else:
            found.settings_schema = schema

    call("guiju_actions", register_action)
    call("guiju_triggers", register_trigger)
    call("guiju_document_kinds", register_document_kind)
    call("guiju_templates", register_template_pack)
    call("guiju_settings_schema", register_settings_schema)
    return found


def secret_fields(schema: dict[str, Any] | None) -> frozenset[str]:
    """The properties of a settings schema marked ``"writeOnly": true``: the secrets."""
    properties = (schema or {}).get("properties") or {}
    return frozenset(name for name, prop in properties.items() if isinstance(prop, dict) and prop.get("writeOnly"))


async def call_plugin(function: Callable[..., Any], *args: Any, time_limit_seconds: float | None = None) -> Any:
    """Call a plugin's callable as the host does: a coroutine function awaited, a plain one in a
    worker thread, within ``time_limit_seconds`` (``TimeoutError`` beyond it)."""
    if inspect.iscoroutinefunction(function):
        return await asyncio.wait_for(function(*args), time_limit_seconds)
    return await asyncio.wait_for(asyncio.to_thread(function, *args), time_limit_seconds)
