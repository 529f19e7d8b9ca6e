"""Reading a template pack from its directory and checking it, every problem with its file and path.

A pack is a directory: ``pack.yaml`` (the metadata) and one YAML file per collection, procedure,
automation and document template under ``collections/``, ``procedures/``, ``automations/`` and
``documents/``. Each file is checked against the published JSON Schema (``pack.schema.json``),
then against the rules of the service it becomes (a procedure's definition as publishing checks
it, a collection's fields as the records service checks them, an automation as saving it checks
it), in both languages. A pack with any problem is refused whole: it is neither listed nor
installed.

Packs come from outside the code (plugins ship them), so reading is defensive: sizes are capped
before anything is parsed, and YAML anchors and aliases (the "billion laughs" expansion), duplicate
keys and non-string keys are refused while scanning the events, before a document is built.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml
from jsonschema import Draft202012Validator
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from services.automation import service as automation
from services.marketplace import service as marketplace
from services.records import service as records
from services.sops.procedures import validation as procedure_validation
from tenants.errors import FieldProblem, ValidationProblem

SCHEMA_PATH = Path(__file__).with_name("pack.schema.json")
LANGUAGES = ("zh-CN", "en")
MAX_FILE_BYTES = 512 * 1024
MAX_PACK_BYTES = 8 * 1024 * 1024
MAX_FILES = 400
MAX_DEPTH = 40
MAX_NODES = 100_000
ItemKind = Literal["collection", "procedure", "automation", "document"]
#: Where each kind of item lives in a pack, in the order they are installed (later ones refer to earlier).
KIND_DIRECTORIES: dict[ItemKind, str] = {
    "collection": "collections",
    "procedure": "procedures",
    "automation": "automations",
    "document": "documents",
}
_SCHEMA_DEFS: dict[ItemKind | Literal["pack"], str] = {
    "pack": "Pack",
    "collection": "Collection",
    "procedure": "Procedure",
    "automation": "Automation",
    "document": "Document",
}
REFERENCE = re.compile(r"^@(collection|procedure|role):([a-z][a-z0-9_]{0,62})$")
#: Stand-in ids of a pack's references while it is checked outside any workspace.
_CHECK_NAMESPACE = uuid.UUID("6f1d3c2e-7a40-4e0b-9c55-2b0c8a9e6d11")


class PackInvalid(ValidationProblem):
    status = 422
    code = "template_pack_invalid"
    title = "The template pack is not valid"


@dataclass(frozen=True)
class PackItem:
    """One collection, procedure, automation or document template of a pack, as written (both languages)."""

    kind: ItemKind
    key: str
    file: str
    data: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class Pack:
    """A checked pack: its metadata and items, and where it came from."""

    meta: dict[str, Any]
    items: tuple[PackItem, ...]
    directory: Path
    publisher: str = "Guiju"
    plugin: str | None = None  # the plugin that ships it; None for the platform's own packs

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def industry(self) -> str:
        return str(self.meta["industry"])

    @property
    def roles(self) -> list[dict[str, Any]]:
        return list(self.meta.get("roles") or [])

    @property
    def required_plugins(self) -> list[dict[str, Any]]:
        return list((self.meta.get("requires") or {}).get("plugins") or [])

    def of_kind(self, kind: ItemKind) -> list[PackItem]:
        return [item for item in self.items if item.kind == kind]

    def item(self, kind: ItemKind, key: str) -> PackItem | None:
        return next((i for i in self.items if i.kind == kind and i.key == key), None)


@dataclass
class _Problems:
    found: list[FieldProblem] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, file: str, pointer: str, code: str, message: str) -> None:
        where = f"{file}#{pointer}"
        if (where, code) not in self._seen:  # the same problem in both languages is said once
            self._seen.add((where, code))
            self.found.append(FieldProblem(pointer=where, code=code, message=message))

    def extend(self, file: str, problems: list[FieldProblem], prefix: str = "", language: str | None = None) -> None:
        for problem in problems:
            message = problem.message if language is None else f"{problem.message} ({language})"
            self.add(file, prefix + problem.pointer, problem.code, message)


# ---------------------------------------------------------------- reading YAML safely


def _scan(text: str) -> str | None:
    """What makes ``text`` unsafe or ambiguous to load, found from its parser events alone; None if nothing."""
    frames: list[dict[str, Any]] = []  # per open mapping: its keys, and whether a key comes next
    nodes = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.AliasEvent):
            return "YAML aliases (*name) are not allowed in a pack"
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            return "YAML anchors (&name) are not allowed in a pack"
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                return f"more than {MAX_NODES} values in one file"
            parent = frames[-1] if frames else None
            if parent is not None and parent["map"]:
                if parent["key_next"]:
                    if not isinstance(event, yaml.ScalarEvent):
                        return f"a mapping key must be a plain value (line {_line(event)})"
                    if event.value in parent["keys"]:
                        return f"the key '{event.value}' appears twice (line {_line(event)})"
                    parent["keys"].add(event.value)
                parent["key_next"] = not parent["key_next"] if isinstance(event, yaml.ScalarEvent) else False
        if isinstance(event, yaml.CollectionStartEvent):
            frames.append({"map": isinstance(event, yaml.MappingStartEvent), "keys": set(), "key_next": True})
            if len(frames) > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
        elif isinstance(event, yaml.CollectionEndEvent):
            frames.pop()
            if frames and frames[-1]["map"]:
                frames[-1]["key_next"] = True
    return None


def _line(event: yaml.Event) -> int:
    mark: Any = event.start_mark
    return int(mark.line) + 1 if mark is not None else 0


def _plain(value: Any) -> Any:
    """YAML's dates as ISO strings, so that a file reads as the JSON the schema describes."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, (date, datetime)) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def read_yaml(path: Path, name: str, problems: _Problems) -> Any:
    """The content of one pack file, or None (with the problem recorded) when it cannot be read safely."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.add(name, "", "file_too_large", f"{size} bytes; a pack file holds at most {MAX_FILE_BYTES}")
            return None
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.add(name, "", "not_utf8", "the file is not UTF-8 text")
        return None
    except OSError as exc:
        problems.add(name, "", "unreadable", f"cannot read the file: {exc.strerror or exc}")
        return None
    try:
        unsafe = _scan(text)
        if unsafe is not None:
            problems.add(name, "", "unsafe_yaml", unsafe)
            return None
        content = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark: Any = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problems.add(name, "", "invalid_yaml", f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}")
        return None
    return _plain(content)


# ---------------------------------------------------------------- the schema


@cache
def pack_schema() -> dict[str, Any]:
    """The published JSON Schema of a pack's files."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = pack_schema()
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{_SCHEMA_DEFS[kind]}"})  # type: ignore[index]


def _pointer(path: Iterator[Any] | Any) -> str:
    return "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in path)


def _schema_problems(kind: str, content: Any, name: str, problems: _Problems) -> bool:
    """Every schema violation of a file; True when there was none."""
    errors = sorted(_validator(kind).iter_errors(content), key=lambda e: list(e.absolute_path))
    for error in errors:
        # A LocalText/Localizable choice reads better as its own message than as "not valid under any".
        message = error.message
        if error.validator == "anyOf" and error.context:
            message = min(error.context, key=lambda e: len(list(e.absolute_path))).message
        problems.add(name, _pointer(error.absolute_path), f"schema_{error.validator}", message)
    return not errors


# ---------------------------------------------------------------- languages and references


def localize(value: Any, language: str) -> Any:
    """``value`` with every ``{zh-CN: …, en: …}`` text replaced by its ``language`` one."""
    if isinstance(value, dict):
        if value and set(value) <= set(LANGUAGES) and all(isinstance(v, str) for v in value.values()):
            return value.get(language) or next(iter(value.values()))
        return {k: localize(v, language) for k, v in value.items()}
    if isinstance(value, list):
        return [localize(v, language) for v in value]
    return value


def owners_as_members(value: Any) -> Any:
    """Owners written ``{kind: pack_role, role: x}`` as the member the workspace maps role ``x`` to."""
    if isinstance(value, dict):
        if value.get("kind") == "pack_role" and set(value) == {"kind", "role"}:
            return {"kind": "member", "user_id": f"@role:{value['role']}"}
        return {k: owners_as_members(v) for k, v in value.items()}
    if isinstance(value, list):
        return [owners_as_members(v) for v in value]
    return value


def references(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``@kind:key`` reference in ``value``."""
    if isinstance(value, dict):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)
    elif isinstance(value, str) and (match := REFERENCE.match(value)):
        yield match.group(1), match.group(2)


def resolve(value: Any, ids: Callable[[str, str], str]) -> Any:
    """``value`` with every ``@kind:key`` reference replaced by ``ids(kind, key)``."""
    if isinstance(value, dict):
        return {k: resolve(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ids) for v in value]
    if isinstance(value, str) and (match := REFERENCE.match(value)):
        return ids(match.group(1), match.group(2))
    return value


def check_id(kind: str, key: str) -> uuid.UUID:
    """The stand-in id of a reference while a pack is checked."""
    return uuid.uuid5(_CHECK_NAMESPACE, f"{kind}:{key}")


# ---------------------------------------------------------------- loading


def _files(directory: Path, problems: _Problems) -> list[tuple[ItemKind, Path, str]]:
    found: list[tuple[ItemKind, Path, str]] = []
    total = 0
    for kind, folder in KIND_DIRECTORIES.items():
        base = directory / folder
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            name = f"{folder}/{path.name}"
            if path.is_symlink():
                problems.add(name, "", "symlink", "links are not allowed in a pack")
                continue
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                problems.add(name, "", "unexpected_file", "a pack folder holds only .yaml files")
                continue
            total += path.stat().st_size
            found.append((kind, path, name))
    known = {"pack.yaml", "README.md", "LICENSE", *KIND_DIRECTORIES.values()}
    for path in sorted(directory.iterdir()):
        if path.name not in known:
            problems.add(path.name, "", "unexpected_file", "not part of the pack format (see docs/templates.md)")
    if len(found) > MAX_FILES:
        problems.add("", "", "too_many_files", f"{len(found)} files; a pack holds at most {MAX_FILES}")
    if total > MAX_PACK_BYTES:
        problems.add("", "", "pack_too_large", f"{total} bytes; a pack holds at most {MAX_PACK_BYTES}")
    return found


def load_pack(directory: Path, *, publisher: str = "Guiju", plugin: str | None = None) -> Pack:
    """Read and check the pack in ``directory``; raises :class:`PackInvalid` listing every problem."""
    problems = _Problems()
    if not directory.is_dir():
        raise PackInvalid("{name}: not a directory", errors=[], name=directory.name)
    meta = read_yaml(directory / "pack.yaml", "pack.yaml", problems) if (directory / "pack.yaml").is_file() else None
    if meta is None and not problems.found:
        problems.add("pack.yaml", "", "missing", "every pack has a pack.yaml")
    if meta is not None and _schema_problems("pack", meta, "pack.yaml", problems):
        _meta_problems(meta, problems)
    items: list[PackItem] = []
    files = _files(directory, problems)
    # The items are read even when pack.yaml is wrong, so that one answer lists everything.
    for kind, path, name in files:
        content = read_yaml(path, name, problems)
        if content is None or not _schema_problems(kind, content, name, problems):
            continue
        items.append(PackItem(kind, str(content["key"]), name, content))
    if isinstance(meta, dict) and not problems.found:
        _item_problems(meta, items, problems)
    if problems.found:
        raise PackInvalid(
            "The template pack in '{name}' has {count} problem(s).",
            errors=problems.found,
            name=directory.name,
            count=len(problems.found),
        )
    assert isinstance(meta, dict)  # no problems: pack.yaml was read and matched the schema
    return Pack(meta, tuple(items), directory, publisher, plugin)


def _meta_problems(meta: dict[str, Any], problems: _Problems) -> None:
    try:
        version = Version(meta["version"])
    except InvalidVersion:
        problems.add("pack.yaml", "/version", "invalid_version", "not a version")
        return
    logged = [entry["version"] for entry in meta["changelog"]]
    if meta["version"] not in logged:
        problems.add("pack.yaml", "/changelog", "version_not_logged", f"the changelog has no entry for {version}")
    for index, entry in enumerate(meta["changelog"]):
        if Version(entry["version"]) > version:
            problems.add(
                "pack.yaml", f"/changelog/{index}/version", "version_ahead", "newer than the pack's own version"
            )
    seen: set[str] = set()
    for index, role in enumerate(meta.get("roles") or []):
        if role["key"] in seen:
            problems.add(
                "pack.yaml", f"/roles/{index}/key", "duplicate_key", f"the role '{role['key']}' is listed twice"
            )
        seen.add(role["key"])
    plugins: set[str] = set()
    for index, required in enumerate((meta.get("requires") or {}).get("plugins") or []):
        if required["name"] in plugins:
            problems.add("pack.yaml", f"/requires/plugins/{index}", "duplicate_plugin", "listed twice")
        plugins.add(required["name"])
        try:
            SpecifierSet(required.get("versions", ""))
        except InvalidSpecifier:
            problems.add(
                "pack.yaml", f"/requires/plugins/{index}/versions", "invalid_range", "not a version range (PEP 440)"
            )


def _item_problems(meta: dict[str, Any], items: list[PackItem], problems: _Problems) -> None:
    """What each item means, checked in both languages as the services that receive it check it."""
    keys: dict[str, set[str]] = {kind: set() for kind in KIND_DIRECTORIES}
    for item in items:
        if item.key in keys[item.kind]:
            problems.add(item.file, "/key", "duplicate_key", f"another {item.kind} has the key '{item.key}'")
        keys[item.kind].add(item.key)
        expected = f"{item.key}.yaml"
        if Path(item.file).name not in (expected, f"{item.key}.yml"):
            problems.add(item.file, "/key", "file_name", f"a {item.kind} with the key '{item.key}' lives in {expected}")
    keys["role"] = {role["key"] for role in meta.get("roles") or []}
    required = {p["name"] for p in (meta.get("requires") or {}).get("plugins") or []}
    for item in items:
        for kind, key in references(owners_as_members(item.data)):
            if key not in keys[kind]:
                problems.add(item.file, "", "unknown_reference", f"@{kind}:{key}: the pack has no {kind} '{key}'")
    for language in LANGUAGES:
        fields_by_collection: dict[str, dict[str, str]] = {}
        for item in items:
            data = localize(owners_as_members(item.data), language)
            if item.kind == "collection":
                fields_by_collection[item.key] = _collection_problems(item, data, keys, problems, language)
            elif item.kind == "procedure":
                _procedure_problems(item, data, keys, fields_by_collection, problems, language)
            elif item.kind == "automation":
                _automation_problems(item, data, keys, required, fields_by_collection, problems, language)


def _collection_problems(
    item: PackItem, data: dict[str, Any], keys: Mapping[str, set[str]], problems: _Problems, language: str
) -> dict[str, str]:
    defs, field_problems = records.parse_field_defs(data["fields"])
    problems.extend(item.file, field_problems, language=language)
    for index, definition in enumerate(defs):
        if definition.target_collection and definition.target_collection not in keys["collection"]:
            problems.add(
                item.file,
                f"/fields/{index}/target_collection",
                "unknown_collection",
                f"the pack has no collection '{definition.target_collection}'",
            )
    if not field_problems:
        for index, sample in enumerate(data.get("samples") or []):
            _, sample_problems = records.coerce_values(defs, sample, partial=False, prefix=f"/samples/{index}")
            problems.extend(item.file, sample_problems, language=language)
    return {d.key: d.type for d in defs}


def _procedure_problems(
    item: PackItem,
    data: dict[str, Any],
    keys: Mapping[str, set[str]],
    fields_by_collection: Mapping[str, dict[str, str]],
    problems: _Problems,
    language: str,
) -> None:
    if data.get("owner_role") and data["owner_role"] not in keys["role"]:
        problems.add(item.file, "/owner_role", "unknown_role", f"the pack has no role '{data['owner_role']}'")
    collection = data.get("collection")
    if collection and collection not in keys["collection"]:
        problems.add(item.file, "/collection", "unknown_collection", f"the pack has no collection '{collection}'")
    raw = resolve(data["definition"], lambda kind, key: str(check_id(kind, key)))
    definition, decode_problems = procedure_validation.decode_definition(raw)
    problems.extend(item.file, decode_problems, "/definition", language)
    if definition is None:
        return
    context = procedure_validation.ValidationContext(
        procedure_id=check_id("procedure", item.key),
        record_fields=fields_by_collection.get(collection) if collection else None,
        member_ids=frozenset(check_id("role", key) for key in keys["role"]),
        procedure_ids=frozenset(check_id("procedure", key) for key in keys["procedure"]),
    )
    problems.extend(item.file, procedure_validation.definition_problems(definition, context), "/definition", language)


def _automation_problems(
    item: PackItem,
    data: dict[str, Any],
    keys: Mapping[str, set[str]],
    required_plugins: set[str],
    fields_by_collection: Mapping[str, dict[str, str]],
    problems: _Problems,
    language: str,
) -> None:
    body = {k: v for k, v in data.items() if k not in ("key", "description")}
    body = resolve(body, lambda kind, key: str(check_id(kind, key)))
    found = [p for p in msgspec_problems(body) if p.pointer != "/description"]
    if found:
        problems.extend(item.file, found, language=language)
        return
    parsed = msgspec.convert(body, automation.AutomationIn)
    collection_fields = {check_id("collection", k): frozenset(f) for k, f in fields_by_collection.items()}
    trigger_fields: frozenset[str] = frozenset()
    if isinstance(parsed.trigger, automation.RecordEventTrigger):
        trigger_fields = collection_fields.get(parsed.trigger.collection_id, frozenset())
    actions, triggers = _offered(required_plugins, parsed)
    env = automation.ValidationEnv(
        procedure_ids=frozenset(check_id("procedure", k) for k in keys["procedure"]),
        collection_fields=collection_fields,
        installed_plugins=frozenset(required_plugins),
        plugin_actions=actions,
        member_ids=frozenset(check_id("role", k) for k in keys["role"]),
        event_names=automation.event_names(parsed.trigger, trigger_fields),
        plugin_triggers=triggers,
    )
    found = automation.automation_problems(
        parsed.name, parsed.trigger, parsed.conditions, parsed.actions, parsed.owner_id, env
    )
    for problem in found:
        if problem.code == "plugin_not_installed":
            problem = FieldProblem.of(
                problem.pointer,
                "plugin_not_required",
                "{problem}: list it under requires.plugins in pack.yaml",
                problem=problem.message,
            )
        problems.extend(item.file, [problem], language=language)


def _offered(required_plugins: set[str], parsed: Any) -> tuple[frozenset[str], frozenset[str]]:
    """The actions and triggers of the required plugins: as registered where the plugin runs here,
    else as the automation names them (a plugin this server does not run cannot be checked)."""
    actions: set[str] = set()
    triggers: set[str] = set()
    for plugin in required_plugins:
        loaded = marketplace.loaded_plugin(plugin)
        if loaded is not None:
            actions.update(f"{plugin}.{name}" for name in loaded[1].actions)
            triggers.update(f"{plugin}.{name}" for name in loaded[1].triggers)
            continue
        actions.update(
            f"{plugin}.{a.get('action')}"
            for a in parsed.actions
            if a.get("kind") == "plugin" and a.get("plugin") == plugin
        )
        trigger = parsed.trigger
        if isinstance(trigger, automation.PluginTrigger) and trigger.plugin == plugin:
            triggers.add(f"{plugin}.{trigger.trigger}")
    return frozenset(actions), frozenset(triggers)


def msgspec_problems(body: dict[str, Any]) -> list[FieldProblem]:
    """The problems of an automation body, field by field (msgspec itself stops at the first)."""
    try:
        msgspec.convert(body, automation.AutomationIn)
    except msgspec.ValidationError:
        from services.validation import struct_problems

        return struct_problems(automation.AutomationIn, body) or [
            FieldProblem("", "invalid_automation", "the automation does not match the format")
        ]
    return []
