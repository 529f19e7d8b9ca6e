"""Tenant and partner patterns run on RE2: time linear in the text, whatever the pattern; a pattern
RE2 cannot compile is refused where it is saved, naming the field."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from services.marketplace import publishing
from services.patterns import compile_pattern, schema_validator
from tests.conftest import World
from tests.integration.test_publishing import Platform, _publisher_and_admin, platform, remote_manifest
from tests.plugin_support import list_remote_version, remote_action

__all__ = ["platform"]  # the fixture, shared with the publishing tests

# The classic catastrophic patterns, each with a text that makes a backtracking engine try every
# way to split it (a run of the repeated character and one that cannot match at the end).
CATASTROPHIC: list[tuple[str, Callable[[int], str]]] = [
    (r"(a+)+$", lambda n: "a" * n + "!"),
    (r"(a|a)*$", lambda n: "a" * n + "!"),
    (r"(a*)*b", lambda n: "a" * n),
    (r"(x+x+)+y", lambda n: "x" * n),
    (r"(a|aa)+$", lambda n: "a" * n + "!"),
    (r"^(\w+\s?)*$", lambda n: "word " * (n // 5) + "!"),
]
SIZES = (1_000, 2_000, 4_000, 8_000, 16_000)


def _best_time(run: Callable[[], Any], repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(("pattern", "text_of"), CATASTROPHIC, ids=[p for p, _ in CATASTROPHIC])
def test_catastrophic_patterns_take_time_linear_in_the_text(pattern: str, text_of: Callable[[int], str]) -> None:
    compiled = compile_pattern(pattern)
    times = []
    for n in SIZES:
        text = text_of(n)
        times.append(_best_time(lambda text=text: (compiled.fullmatch(text), compiled.search(text))))
    # 16 times the text: linear time is at most ~16 times as long (less, with the fixed cost of a
    # call), quadratic 256 times, a backtracking engine never finishes. A generous factor for noise.
    growth = times[-1] / times[0]
    assert growth < 16 * 4, f"{pattern}: {[f'{t * 1e6:.0f}µs' for t in times]}"


async def _collection(api: Any, fields: list[dict[str, Any]]) -> Any:
    return await api.post(
        "/api/v1/collections", {"key": f"c_{uuid.uuid4().hex[:8]}", "name": "Parts", "fields": fields}
    )


async def test_a_catastrophic_field_pattern_answers_at_once(world: World) -> None:
    api, _ = await world.signup()
    created = await _collection(api, [{"key": "code", "label": "Code", "type": "text", "pattern": "(a+)+$"}])
    assert created.status_code == 201, created.text
    records = f"/api/v1/collections/{created.json()['id']}/records"

    started = time.monotonic()
    refused = [await api.post(records, {"values": {"code": "a" * n + "!"}}) for n in (30, 999)]
    elapsed = time.monotonic() - started

    assert [r.status_code for r in refused] == [422, 422], [r.text for r in refused]
    assert [(e["pointer"], e["code"]) for r in refused for e in r.json()["errors"]] == [
        ("/values/code", "pattern_mismatch"),
        ("/values/code", "pattern_mismatch"),
    ]
    assert elapsed < 5, f"{elapsed:.1f}s: the pattern ran on a backtracking engine"
    accepted = await api.post(records, {"values": {"code": "a" * 30}})
    assert accepted.status_code == 201, accepted.text


async def test_patterns_re2_cannot_run_are_refused_when_the_collection_is_saved(world: World) -> None:
    api, _ = await world.signup()
    fields = [
        {"key": "ref", "label": "Ref", "type": "text", "pattern": r"(a)\1"},
        {"key": "sku", "label": "SKU", "type": "text", "pattern": r"(?=A)[A-Z]+"},
        {"key": "note", "label": "Note", "type": "text", "pattern": r"[A-Z]+-\d+"},
    ]
    refused = await _collection(api, fields)
    assert refused.status_code == 422, refused.text
    errors = refused.json()["errors"]
    assert [(e["pointer"], e["code"]) for e in errors] == [
        ("/fields/0/pattern", "invalid_pattern"),
        ("/fields/1/pattern", "invalid_pattern"),
    ]
    assert "'ref'" in errors[0]["message"] and "backreferences" in errors[0]["message"]
    assert "'sku'" in errors[1]["message"] and "lookaround" in errors[1]["message"]
    assert all(c["name"] != "Parts" for c in (await api.get("/api/v1/collections")).json())

    created = await _collection(api, fields[2:])
    assert created.status_code == 201, created.text
    changed = await api.patch(
        f"/api/v1/collections/{created.json()['id']}",
        {"fields": [{**fields[2], "pattern": r"(?<!X)\d+"}]},
    )
    assert changed.status_code == 422, changed.text
    assert [(e["pointer"], e["code"]) for e in changed.json()["errors"]] == [("/fields/0/pattern", "invalid_pattern")]
    kept = await api.get(f"/api/v1/collections/{created.json()['id']}")
    assert [f["pattern"] for f in kept.json()["fields"]] == [r"[A-Z]+-\d+"]


def test_partner_schemas_run_their_patterns_on_re2() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^x(y+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    started = time.monotonic()
    errors = sorted(
        e.message for e in schema_validator(schema).iter_errors({"code": "a" * 5000 + "!", "x" + "y" * 5000 + "!": 1})
    )
    assert time.monotonic() - started < 2
    assert len(errors) == 2 and "does not match '^(a+)+$'" in errors[0] and "not match any of the regexes" in errors[1]
    assert list(schema_validator(schema).iter_errors({"code": "aaa", "xyy": 3})) == []
    unusable = schema_validator({"type": "string", "pattern": "(?=a)a"})
    assert ["cannot be used" in e.message for e in unusable.iter_errors("a")] == [True]


async def test_plugin_settings_with_a_catastrophic_pattern_answer_at_once(world: World) -> None:
    api, _ = await world.signup()
    name = f"re2-{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {"account": {"type": "string", "pattern": "^(a+)+$"}}}
    await list_remote_version(
        name, "1.0.0", endpoint="https://plugins.example.com/re2", secret="s" * 20, actions=[], settings_schema=schema
    )
    started = time.monotonic()
    refused = await api.post(f"/api/v1/plugins/{name}/install", {"scopes": [], "config": {"account": "a" * 40 + "!"}})
    assert time.monotonic() - started < 5
    assert refused.status_code == 422, refused.text
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [("/config/account", "invalid_pattern")]


async def test_a_remote_manifest_with_patterns_re2_cannot_run_is_refused(platform: Platform) -> None:
    publisher, _admin, _ = await _publisher_and_admin(platform)
    document = remote_manifest(
        platform.plugin,
        "1.0.0",
        "https://plugins.example.com/ship",
        settings_schema={"type": "object", "properties": {"port": {"type": "string", "pattern": r"(\w)\1"}}},
        actions=[
            remote_action(
                "book",
                input_schema={"type": "object", "patternProperties": {"(?<=x)y": {"type": "string"}}},
            )
        ],
    )
    refused = await publisher.post("/api/v1/publisher/plugins/remote", {"manifest": document})
    assert refused.status_code == 422, refused.text
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/manifest/settings_schema/properties/port/pattern", "invalid_pattern"),
        ("/manifest/actions/0/input_schema/patternProperties/(?<=x)y", "invalid_pattern"),
    ]


def test_a_source_submissions_manifest_is_checked_for_patterns_re2_cannot_run() -> None:
    manifest = {
        "settings_schema": {"type": "object", "properties": {"pattern": {"type": "string", "pattern": "^ok$"}}},
        "actions": [
            {"name": "a", "output_schema": {"type": "object", "properties": {"x": {"pattern": r"\bx(?!y)"}}}},
            {"name": "b", "input_schema": {"items": [{"anyOf": [{"pattern": "(a)\\1"}]}]}},
        ],
    }
    assert [pointer for pointer, _ in publishing.schema_patterns_of(manifest)] == [
        "/actions/0/output_schema/properties/x/pattern"
    ]
    manifest["actions"][1]["input_schema"] = {"items": {"anyOf": [{"pattern": "(a)\\1"}]}}
    assert [pointer for pointer, _ in publishing.schema_patterns_of(manifest)] == [
        "/actions/0/output_schema/properties/x/pattern",
        "/actions/1/input_schema/items/anyOf/0/pattern",
    ]
