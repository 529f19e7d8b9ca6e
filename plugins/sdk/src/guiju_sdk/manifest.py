"""The plugin manifest: the JSON document a publisher submits and the host stores per plugin version.

Its shape is the JSON Schema shipped with the SDK (:data:`MANIFEST_SCHEMA`, the file
``manifest.schema.json``, Draft 2020-12); :func:`manifest_problems` checks a manifest against it and
against the rules a schema cannot say. An in-process (python) plugin does not write its manifest by
hand: :func:`manifest_from_plugin` builds it from what the plugin registers.

Example::

    {"name": "odoo-sync", "version": "1.2.0", "publisher": "Acme Ltd",
     "summary": {"zh-CN": "同步订单到 Odoo", "en": "Sync orders to Odoo"},
     "category": "erp", "api_range": ">=1.0,<2.0", "pricing": "free",
     "scopes": ["records:read", "http:odoo.example.com"], "settings_schema": null,
     "kind": "remote", "endpoint": "https://plugin.example.com/guiju",
     "actions": [{"name": "push_order", "labels": {"zh-CN": "推送订单", "en": "Push order"},
                  "input_schema": null, "output_schema": null, "time_limit_ms": 30000}],
     "triggers": []}
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator

from guiju_sdk import registry
from guiju_sdk.types import PluginInfo
from guiju_sdk.version import API_VERSION, api_version_supported

#: The manifest's JSON Schema (Draft 2020-12), loaded from ``manifest.schema.json``.
MANIFEST_SCHEMA: dict[str, Any] = json.loads(
    files("guiju_sdk").joinpath("manifest.schema.json").read_text(encoding="utf-8")
)

#: The gallery's categories (the schema's ``category`` enumeration).
CATEGORIES: tuple[str, ...] = tuple(MANIFEST_SCHEMA["properties"]["category"]["enum"])

#: The fixed scopes a plugin may ask for; besides these, ``http:<host>`` (HTTP to that host) and
#: ``http:*`` (HTTP to any host). ``files:read`` and ``mail:send`` (connecting to the SMTP server a
#: tenant configures) came with API 1.3.
SCOPES: tuple[str, ...] = (
    "records:read",
    "records:write",
    "messages:send",
    "events:emit",
    "files:read",
    "files:write",
    "mail:send",
)

#: Hosts a remote plugin's endpoint may use plain ``http`` on: a developer's own machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_VALIDATOR = Draft202012Validator(MANIFEST_SCHEMA)
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


def _pattern_problem(prop: str, value: str) -> str | None:
    # The schema's pattern, matched whole: in Python's re (which jsonschema uses) '$' also matches
    # before a final newline, so the schema alone would let "name\n" through.
    rule = MANIFEST_SCHEMA["properties"][prop]
    if re.fullmatch(rule["pattern"], value):
        return None
    return f"{value!r} is not {rule['description']}"


def plugin_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a plugin's name (also its entry-point name); ``None`` when
    nothing is."""
    return _pattern_problem("name", name)


def scope_problem(scope: str) -> str | None:
    """What is wrong with ``scope``; ``None`` when it is one of :data:`SCOPES`, ``http:*`` or
    ``http:<host>`` with a lower-case host name (no scheme, port or path)."""
    if scope in SCOPES or scope == "http:*":
        return None
    if scope.startswith("http:"):
        host = scope.removeprefix("http:")
        if _HOST_NAME.fullmatch(host):
            return None
        return f"{scope!r}: after 'http:' comes a lower-case host name (e.g. http:api.example.com) or '*'"
    return f"unknown scope {scope!r}: the scopes are {', '.join(SCOPES)}, http:<host> and http:*"


def _pointer(path: Sequence[str | int]) -> str:
    # RFC 6901: '~' and '/' inside a key are escaped.
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _schema_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The schema's violations as (pointer, message), each pinned to the property at fault (a
    missing or unknown property, not the object holding it), in the order of their paths."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for error in _VALIDATOR.iter_errors(data):
        at = tuple(error.absolute_path)
        if error.validator == "required":
            found.extend(((*at, p), "is required") for p in error.validator_value if p not in error.instance)
        elif error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            found.extend(((*at, p), "is not a manifest property") for p in error.instance if p not in known)
        elif error.validator == "pattern" and "description" in error.schema:
            found.append((at, f"{error.instance!r} is not {error.schema['description']}"))
        else:
            found.append((at, error.message))
    # Array indices sort as numbers; one missing property reported twice is kept once.
    ordered = sorted(dict.fromkeys(found), key=lambda item: [(isinstance(p, str), p) for p in item[0]])
    return [(_pointer(path), message) for path, message in ordered]


def _endpoint_problem(endpoint: str) -> str | None:
    try:
        parts = urlsplit(endpoint)
        hostname = parts.hostname
    except ValueError:
        return f"{endpoint!r} is not a URL"
    if parts.query or parts.fragment or parts.username is not None:
        # The host appends the protocol's paths to the endpoint and signs its requests itself.
        return f"{endpoint!r} is a base URL: no query, fragment or credentials"
    if parts.scheme == "https" and hostname:
        return None
    if parts.scheme == "http" and hostname in LOCAL_HOSTS:
        return None  # a developer's plugin on their own machine
    return f"{endpoint!r} must be an https URL (plain http only for localhost, 127.0.0.1 and ::1)"


def manifest_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem of a manifest, each ``"<JSON pointer>: <what is wrong>"`` (for example
    ``"/actions/0/labels: action 'push' needs labels in zh-CN and en"``); empty when it is valid.

    First the schema's violations (:data:`MANIFEST_SCHEMA`, in document order), then the rules a
    schema cannot say: the API range is readable and includes the SDK's :data:`API_VERSION`; the
    scopes are known (:func:`scope_problem`); the settings, input, output and payload schemas are
    valid JSON Schemas; action and trigger names, labels and time limits obey the same rules as a
    registration (:mod:`guiju_sdk.registry`); a remote plugin has an https endpoint and at least one
    action, a python plugin no endpoint. A value the schema refused is not checked further.
    """
    if not isinstance(data, Mapping):
        return [f"/: a manifest is a JSON object, not {type(data).__name__}"]
    schema_found = _schema_problems(data)
    refused = [at for at, _ in schema_found]
    problems = [f"{at}: {message}" for at, message in schema_found]

    def check(at: str, problem: str | None) -> None:
        if problem and not any(r == at or r.startswith(at + "/") for r in refused):
            problems.append(f"{at}: {problem}")

    for prop in ("name", "version"):
        if isinstance(data.get(prop), str):
            check(f"/{prop}", _pattern_problem(prop, data[prop]))

    api_range = data.get("api_range")
    if isinstance(api_range, str):
        try:
            if not api_version_supported(api_range):
                check("/api_range", f"{api_range!r} excludes the SDK's plugin API {API_VERSION[0]}.{API_VERSION[1]}")
        except ValueError as exc:
            check("/api_range", f"cannot be read: {exc}")

    scopes = data.get("scopes")
    for index, scope in enumerate(scopes if isinstance(scopes, list) else []):
        if isinstance(scope, str):
            check(f"/scopes/{index}", scope_problem(scope))

    if data.get("settings_schema") is not None:
        check("/settings_schema", registry.settings_schema_problem(data["settings_schema"]))

    _check_entries(data, "actions", "action", ("input_schema", "output_schema"), check)
    _check_entries(data, "triggers", "trigger", ("payload_schema",), check)

    kind, endpoint, actions = data.get("kind"), data.get("endpoint"), data.get("actions")
    if kind == "remote":
        if endpoint is None:
            check("/endpoint", "is required for a remote plugin")
        elif isinstance(endpoint, str):
            check("/endpoint", _endpoint_problem(endpoint))
        if not actions:
            check("/actions", "a remote plugin declares at least one action")
    elif kind == "python" and "endpoint" in data:
        check("/endpoint", "a python plugin has no endpoint (only remote plugins do)")
    return problems


def _check_entries(
    data: Mapping[str, Any],
    key: str,
    kind: str,
    schema_fields: tuple[str, ...],
    check: Callable[[str, str | None], None],
) -> None:
    """The registry's rules for each action (or trigger) of the manifest."""
    entries = data.get(key)
    taken: set[str] = set()
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        at, name = f"/{key}/{index}", entry.get("name")
        check(f"{at}/name", registry.name_problem(kind, name, taken))
        if isinstance(name, str):
            taken.add(name)
        check(f"{at}/labels", registry.labels_problem(kind, name, entry.get("labels")))
        for field in schema_fields:
            check(f"{at}/{field}", registry.schema_problem(kind, name, field, entry.get(field)))
        if "time_limit_ms" in entry:
            check(f"{at}/time_limit_ms", registry.time_limit_problem(name, entry["time_limit_ms"]))


def manifest_from_plugin(
    info: PluginInfo, registered: registry.Registrations, *, pricing: str = "free"
) -> dict[str, Any]:
    """The manifest of an in-process (``"kind": "python"``) plugin, from its :class:`PluginInfo` and
    what :func:`guiju_sdk.registry.collect` collected; registrations it refused are not in it.

    ``PluginInfo.summary_zh`` and ``summary_en`` become ``summary["zh-CN"]`` and ``summary["en"]``.
    Schemas are copied, so the manifest can be stored as it is.
    """
    return {
        "name": info.name,
        "version": info.version,
        "publisher": info.publisher,
        "summary": {"zh-CN": info.summary_zh, "en": info.summary_en},
        "category": info.category,
        "api_range": info.api_range,
        "pricing": pricing,
        "scopes": list(info.scopes),
        "settings_schema": copy.deepcopy(registered.settings_schema),
        "kind": "python",
        "actions": [
            {
                "name": action.name,
                "labels": dict(action.labels),
                "input_schema": copy.deepcopy(action.input_schema),
                "output_schema": copy.deepcopy(action.output_schema),
                "time_limit_ms": action.time_limit_ms,
            }
            for action in registered.actions.values()
        ],
        "triggers": [
            {
                "name": trigger.name,
                "labels": dict(trigger.labels),
                "payload_schema": copy.deepcopy(trigger.payload_schema),
            }
            for trigger in registered.triggers.values()
        ],
    }
