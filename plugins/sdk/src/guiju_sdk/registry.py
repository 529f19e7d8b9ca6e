"""What a plugin registers through its hooks, collected and checked in one place.

The host and the testing harness (:mod:`guiju_sdk.testing`) both call :func:`collect`, so a plugin
that passes its own tests registers exactly what the host will accept. The checks of one
registration (:func:`name_problem`, :func:`labels_problem`, ...) are public: a plugin's published
manifest (:mod:`guiju_sdk.manifest`) is held to the same rules.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable, Container, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from guiju_sdk.hookspecs import GuijuSpec
from guiju_sdk.types import ActionHandler, DocumentGenerator, TriggerPoll
from guiju_sdk.version import DEPRECATED, PROJECT_NAME

MAX_ACTION_TIME_LIMIT_MS = 300_000
MIN_POLL_SECONDS = 60
#: How long a lifecycle or health hook may run.
LIFECYCLE_TIME_LIMIT_SECONDS = 60.0
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


def deprecations(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    """What of :data:`guiju_sdk.version.DEPRECATED` ``plugin`` uses (its hooks and the arguments
    they name), one message each; every message is also warned as a ``DeprecationWarning``."""
    found: list[str] = []
    for caller in manager.get_hookcallers(plugin) or []:
        for implementation in caller.get_hookimpls():
            if implementation.plugin is not plugin:
                continue
            for key in (caller.name, *(f"{caller.name}:{arg}" for arg in implementation.argnames)):
                if key in DEPRECATED:
                    found.append(f"{key} is deprecated: {DEPRECATED[key]}")
    for message in found:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
    return found


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows Guiju's hook specifications."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(GuijuSpec)
    return manager


def hook_names() -> list[str]:
    """The names of every hook a plugin may implement."""
    return sorted(name for name in dir(GuijuSpec) if name.startswith("guiju_"))


def name_problem(kind: str, name: object, taken: Container[str]) -> str | None:
    """What is wrong with ``name`` as the name of an action, trigger or document kind (``kind``),
    given the names ``taken`` already; ``None`` when nothing is."""
    if not isinstance(name, str) or not name or "." in name or len(name) > 64:
        return f"{kind} name {name!r} must be 1-64 characters without '.'"
    if name in taken:
        return f"{kind} {name!r} is declared twice"
    return None


def labels_problem(kind: str, name: object, labels: object) -> str | None:
    """What is wrong with ``labels``: they must be non-empty strings in every language of
    :data:`LANGUAGES`; ``None`` when nothing is."""
    if not isinstance(labels, dict) or not all(
        isinstance(labels.get(lang), str) and labels[lang] for lang in LANGUAGES
    ):
        return f"{kind} {name!r} needs labels in zh-CN and en"
    return None


def json_schema_problem(schema: object) -> str | None:
    """What is wrong with ``schema`` as a JSON Schema (Draft 2020-12), said of it ("is not ...");
    ``None`` when nothing is."""
    if not isinstance(schema, dict):
        return "is not a JSON Schema object"
    try:
        key = _frozen(schema)
    except TypeError:  # a value JSON has no word for: checked each time, as it comes
        return _checked_schema_problem(schema)
    if key not in _SCHEMA_PROBLEMS:
        if len(_SCHEMA_PROBLEMS) >= _SCHEMA_PROBLEMS_KEPT:
            _SCHEMA_PROBLEMS.clear()
        _SCHEMA_PROBLEMS[key] = _checked_schema_problem(schema)
    return _SCHEMA_PROBLEMS[key]


def _frozen(value: object) -> Hashable:
    """``value`` as a hashable key that tells apart every schema the check could tell apart: key
    order, and the types of values (a tuple is no JSON array, 1.0 is no 1), are kept."""
    if isinstance(value, dict):
        return (dict, tuple((_frozen(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    if value is None or isinstance(value, str | int | float):  # bool is an int, told apart by its type
        return (type(value), value)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


# Checking a schema against the meta-schema is slow (tens of milliseconds) and every app start
# checks every plugin's schemas again: a schema is checked once per process, its answer kept.
_SCHEMA_PROBLEMS: dict[Hashable, str | None] = {}
_SCHEMA_PROBLEMS_KEPT = 4096


def _checked_schema_problem(schema: dict[str, Any]) -> str | None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"/{part}" for part in exc.path)
        return f"is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    return None


def schema_problem(kind: str, name: object, field: str, schema: object) -> str | None:
    """What is wrong with the optional JSON Schema ``field`` (``input_schema``, ...) of ``kind``
    ``name``; ``None`` when it is absent or valid."""
    if schema is None:
        return None
    problem = json_schema_problem(schema)
    return f"{kind} {name!r}: {field} {problem}" if problem else None


def time_limit_problem(name: object, time_limit_ms: object) -> str | None:
    """What is wrong with an action's ``time_limit_ms``; ``None`` when nothing is."""
    if (
        isinstance(time_limit_ms, bool)
        or not isinstance(time_limit_ms, int)
        or not 0 < time_limit_ms <= MAX_ACTION_TIME_LIMIT_MS
    ):
        return f"action {name!r}: time_limit_ms must be between 1 and {MAX_ACTION_TIME_LIMIT_MS}"
    return None


def settings_schema_problem(schema: object) -> str | None:
    """What is wrong with a settings schema: it must be a valid JSON Schema with
    ``"type": "object"``; ``None`` when nothing is."""
    problem = json_schema_problem(schema)
    if problem:
        return f"the settings schema {problem}"
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return 'the settings schema must be a JSON Schema with "type": "object"'
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
            name_problem("action", name, found.actions)
            or labels_problem("action", name, labels)
            or schema_problem("action", name, "input_schema", input_schema)
            or schema_problem("action", name, "output_schema", output_schema)
            or time_limit_problem(name, time_limit_ms)
        )
        if problem is None and not callable(handler):
            problem = f"action {name!r}: the handler is not callable"
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
            name_problem("trigger", name, found.triggers)
            or labels_problem("trigger", name, labels)
            or schema_problem("trigger", name, "payload_schema", payload_schema)
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
            name_problem("document kind", name, found.document_kinds)
            or labels_problem("document kind", name, labels)
            or schema_problem("document kind", name, "record_schema", record_schema)
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
        problem = settings_schema_problem(schema)
        if found.settings_schema is not None:
            found.problems.append("the settings schema is registered twice")
        elif problem:
            found.problems.append(problem)
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
    # asyncio.timeout rather than wait_for: no extra task per call (this runs for every action).
    async with asyncio.timeout(time_limit_seconds):
        if inspect.iscoroutinefunction(function):
            return await function(*args)
        return await asyncio.to_thread(function, *args)


async def call_hook(
    manager: pluggy.PluginManager,
    plugin_name: str,
    hook: str,
    *,
    time_limit_seconds: float | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Call one plugin's implementation of ``hook`` with ``kwargs`` as the host does: in a worker
    thread (a hook may block), awaiting what an ``async def`` implementation returns, all within
    ``time_limit_seconds`` (``TimeoutError`` beyond it). Returns the hook's results."""
    plugin = manager.get_plugin(plugin_name)
    if plugin is None:
        raise LookupError(f"no plugin {plugin_name!r} is registered")
    caller = manager.subset_hook_caller(hook, remove_plugins=[p for p in manager.get_plugins() if p is not plugin])

    async def run() -> list[Any]:
        results = await asyncio.to_thread(lambda: caller(**kwargs))
        return [await result if inspect.isawaitable(result) else result for result in results]

    return await asyncio.wait_for(run(), time_limit_seconds)
