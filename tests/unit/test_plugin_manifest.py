"""The plugin manifest: its JSON Schema, every problem a publisher's manifest can have, and the
manifest of an in-process plugin built from what it registers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from guiju_sdk import (
    API_VERSION,
    CATEGORIES,
    MANIFEST_SCHEMA,
    ActionCall,
    PluginInfo,
    hookimpl,
    manifest_from_plugin,
    manifest_problems,
    plugin_name_problem,
    registry,
    scope_problem,
)
from guiju_sdk.testing import PluginHarness
from jsonschema import Draft202012Validator

SDK_SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "sdk" / "src" / "guiju_sdk"

REMOTE: dict[str, Any] = {
    "name": "odoo-sync",
    "version": "1.2.0",
    "publisher": "Acme Ltd",
    "summary": {"zh-CN": "同步订单到 Odoo", "en": "Sync orders to Odoo"},
    "category": "erp",
    "api_range": ">=1.0,<2.0",
    "pricing": "paid",
    "scopes": [
        "records:read",
        "records:write",
        "messages:send",
        "events:emit",
        "files:write",
        "http:api.example.com",
        "http:*",
    ],
    "settings_schema": {
        "type": "object",
        "properties": {"base_url": {"type": "string"}, "token": {"type": "string", "writeOnly": True}},
    },
    "kind": "remote",
    "endpoint": "https://plugin.example.com/guiju",
    "actions": [
        {
            "name": "push_order",
            "labels": {"zh-CN": "推送订单", "en": "Push order"},
            "input_schema": {"type": "object", "properties": {"code": {"type": "string"}}},
            "output_schema": None,
            "time_limit_ms": 30_000,
        }
    ],
    "triggers": [{"name": "order_arrived", "labels": {"zh-CN": "新订单", "en": "New order"}, "payload_schema": None}],
}


def changed(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(REMOTE)
    for key, value in changes.items():
        if value is None and key == "endpoint":
            document.pop("endpoint")
        else:
            document[key] = value
    return document


def test_the_schema_is_a_draft_2020_12_schema_shipped_as_a_package_file() -> None:
    Draft202012Validator.check_schema(MANIFEST_SCHEMA)
    shipped = json.loads((SDK_SOURCE / "manifest.schema.json").read_text(encoding="utf-8"))
    assert shipped == MANIFEST_SCHEMA
    assert MANIFEST_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert CATEGORIES == (
        "erp",
        "messaging",
        "customs",
        "accounting",
        "ecommerce",
        "logistics",
        "productivity",
        "other",
    )


def test_a_valid_remote_manifest_has_no_problem() -> None:
    assert manifest_problems(REMOTE) == []
    # Optional parts left out, and a developer's endpoint on their own machine.
    minimal = {k: v for k, v in REMOTE.items() if k not in ("scopes", "settings_schema", "triggers")}
    assert manifest_problems({**minimal, "endpoint": "http://127.0.0.1:8080/guiju"}) == []
    assert manifest_problems({**minimal, "endpoint": "http://[::1]:8080"}) == []


def test_every_problem_is_listed_each_with_its_pointer() -> None:
    bad = changed(
        name="Odoo Sync",
        version="1.2",
        summary={"en": "Sync"},
        category="crm",
        pricing="gratis",
        colour="blue",
    )
    bad["actions"][0]["labels"] = {"en": "Push order"}
    assert manifest_problems(bad) == [
        "/category: 'crm' is not one of ['erp', 'messaging', 'customs', 'accounting', 'ecommerce', 'logistics', "
        "'productivity', 'other']",
        "/colour: is not a manifest property",
        "/name: 'Odoo Sync' is not a lower-case name of 2-64 characters: letters, digits and '-', starting with a "
        "letter",
        "/pricing: 'gratis' is not one of ['free', 'paid']",
        "/summary/zh-CN: is required",
        "/version: '1.2' is not a semantic version MAJOR.MINOR.PATCH, optionally followed by -prerelease",
        "/actions/0/labels: action 'push_order' needs labels in zh-CN and en",
    ]


def test_a_manifest_is_an_object() -> None:
    assert manifest_problems([REMOTE]) == ["/: a manifest is a JSON object, not list"]  # type: ignore[arg-type]


def test_missing_properties_are_named_one_by_one() -> None:
    assert manifest_problems({}) == [
        f"/{key}: is required"
        for key in ("api_range", "category", "kind", "name", "pricing", "publisher", "summary", "version")
    ]


@pytest.mark.parametrize(
    ("version", "valid"),
    [
        *[("1.2.0", True), ("0.0.1", True), ("2.0.0-rc.1", True), ("10.20.30-beta-2", True)],
        *[("1.2", False), ("01.2.0", False), ("1.2.0-", False), ("v1.2.0", False), ("1.2.0\n", False)],
    ],
)
def test_versions_are_semantic(version: str, valid: bool) -> None:
    problems = manifest_problems(changed(version=version))
    assert (problems == []) is valid, problems
    if not valid:
        assert problems[0].startswith("/version: ")


def test_plugin_names() -> None:
    assert plugin_name_problem("odoo-sync") is None
    assert plugin_name_problem("a" * 64) is None
    for bad in ("a", "a" * 65, "Odoo", "1password", "odoo_sync", "odoo.sync", "odoo\n"):
        assert plugin_name_problem(bad) is not None, bad
        assert manifest_problems(changed(name=bad))[0].startswith("/name: ")


def test_the_api_range_is_read_and_must_include_the_sdk_api() -> None:
    ours = f"{API_VERSION[0]}.{API_VERSION[1]}"
    assert manifest_problems(changed(api_range=f">={API_VERSION[0] + 1}.0")) == [
        f"/api_range: '>={API_VERSION[0] + 1}.0' excludes the SDK's plugin API {ours}"
    ]
    assert manifest_problems(changed(api_range="~1.0")) == [
        "/api_range: cannot be read: cannot read the API range clause '~1.0'"
    ]


def test_scopes() -> None:
    for good in ("records:read", "records:write", "messages:send", "events:emit", "files:write"):
        assert scope_problem(good) is None
    assert scope_problem("http:*") is None
    assert scope_problem("http:api.example.com") is None
    assert scope_problem("http:10.0.0.7") is None
    assert "unknown scope 'records:delete'" in (scope_problem("records:delete") or "")
    for bad_host in ("http:", "http:https://api.example.com", "http:api.example.com:8443", "http:API.example.com"):
        assert "after 'http:' comes a lower-case host name" in (scope_problem(bad_host) or ""), bad_host
    assert manifest_problems(changed(scopes=["records:read", "records:delete", "http:x.com/path"])) == [
        "/scopes/1: unknown scope 'records:delete': the scopes are records:read, records:write, messages:send, "
        "events:emit, files:read, files:write, mail:send, http:<host> and http:*",
        "/scopes/2: 'http:x.com/path': after 'http:' comes a lower-case host name (e.g. http:api.example.com) or '*'",
    ]
    assert manifest_problems(changed(scopes=["records:read", "records:read"]))[0].startswith("/scopes: ")


def test_schemas_must_be_valid_json_schemas() -> None:
    bad = changed(settings_schema={"type": "array"})
    bad["actions"][0]["input_schema"] = {"type": "text"}
    bad["triggers"][0]["payload_schema"] = {"properties": 3}
    problems = manifest_problems(bad)
    assert problems[0] == '/settings_schema: the settings schema must be a JSON Schema with "type": "object"'
    assert problems[1].startswith(
        "/actions/0/input_schema: action 'push_order': input_schema is not a valid JSON Schema: 'text' is not valid"
    )
    assert problems[2].startswith("/triggers/0/payload_schema: trigger 'order_arrived': payload_schema is not a valid")
    assert len(problems) == 3
    invalid_settings = manifest_problems(changed(settings_schema={"type": "object", "required": "token"}))
    assert invalid_settings[0].startswith("/settings_schema: the settings schema is not a valid JSON Schema")


def test_actions_and_triggers_follow_the_registry_rules() -> None:
    bad = changed()
    bad["actions"] += [
        {"name": "push_order", "labels": {"zh-CN": "再推", "en": "Again"}},
        {"name": "a.b", "labels": {"zh-CN": "坏", "en": "Bad"}, "time_limit_ms": registry.MAX_ACTION_TIME_LIMIT_MS + 1},
        {"name": "slow", "labels": {"zh-CN": "慢", "en": "Slow"}, "time_limit_ms": "soon"},
    ]
    bad["triggers"].append({"name": "", "labels": {"zh-CN": "空", "en": ""}})
    assert manifest_problems(bad) == [
        # The schema's shape first; a value it refused is not checked again.
        "/actions/3/time_limit_ms: 'soon' is not of type 'integer'",
        "/actions/1/name: action 'push_order' is declared twice",
        "/actions/2/name: action name 'a.b' must be 1-64 characters without '.'",
        f"/actions/2/time_limit_ms: action 'a.b': time_limit_ms must be between 1 and "
        f"{registry.MAX_ACTION_TIME_LIMIT_MS}",
        "/triggers/1/name: trigger name '' must be 1-64 characters without '.'",
        "/triggers/1/labels: trigger '' needs labels in zh-CN and en",
    ]


def test_remote_plugins_need_an_https_endpoint_and_an_action() -> None:
    assert manifest_problems(changed(endpoint=None)) == ["/endpoint: is required for a remote plugin"]
    assert manifest_problems(changed(endpoint="http://plugin.example.com")) == [
        "/endpoint: 'http://plugin.example.com' must be an https URL (plain http only for localhost, 127.0.0.1 and ::1)"
    ]
    assert manifest_problems(changed(endpoint="ftp://localhost/x"))[0].startswith("/endpoint: ")
    for not_a_base in ("https://plugin.example.com/guiju?key=1", "https://user:pw@plugin.example.com"):
        assert manifest_problems(changed(endpoint=not_a_base)) == [
            f"/endpoint: {not_a_base!r} is a base URL: no query, fragment or credentials"
        ]
    assert manifest_problems(changed(endpoint="https://[::1")) == ["/endpoint: 'https://[::1' is not a URL"]
    assert manifest_problems(changed(actions=[])) == ["/actions: a remote plugin declares at least one action"]


def test_python_plugins_have_no_endpoint() -> None:
    assert manifest_problems(changed(kind="python")) == [
        "/endpoint: a python plugin has no endpoint (only remote plugins do)"
    ]
    assert manifest_problems(changed(kind="python", endpoint=None, actions=[])) == []


class Plugin:
    @hookimpl
    def guiju_plugin_info(self, register: Any) -> None:
        register(
            PluginInfo(
                name="erp-bridge",
                version="2.1.0-rc.1",
                publisher="Acme",
                summary_en="Bridge to the ERP",
                summary_zh="连接 ERP",
                api_range=">=1.2,<2.0",
                category="erp",
                scopes=("records:read", "http:erp.example.com"),
            )
        )

    @hookimpl
    def guiju_actions(self, register: Any) -> None:
        def push(call: ActionCall) -> dict[str, Any]:
            return {}

        register(
            "push",
            push,
            labels={"zh-CN": "推送", "en": "Push"},
            input_schema={"type": "object"},
            time_limit_ms=5_000,
        )
        register("bad.name", push, labels={"zh-CN": "坏", "en": "Bad"})  # refused, so not in the manifest

    @hookimpl
    def guiju_triggers(self, register: Any) -> None:
        register("order_arrived", labels={"zh-CN": "新订单", "en": "New order"}, payload_schema={"type": "object"})

    @hookimpl
    def guiju_settings_schema(self, register: Any) -> None:
        register({"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}})


def test_the_manifest_of_an_in_process_plugin_is_built_from_what_it_registers() -> None:
    harness = PluginHarness(Plugin(), name="erp-bridge")
    document = manifest_from_plugin(harness.info(), harness.registrations, pricing="paid")
    assert document == {
        "name": "erp-bridge",
        "version": "2.1.0-rc.1",
        "publisher": "Acme",
        "summary": {"zh-CN": "连接 ERP", "en": "Bridge to the ERP"},
        "category": "erp",
        "api_range": ">=1.2,<2.0",
        "pricing": "paid",
        "scopes": ["records:read", "http:erp.example.com"],
        "settings_schema": {"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}},
        "kind": "python",
        "actions": [
            {
                "name": "push",
                "labels": {"zh-CN": "推送", "en": "Push"},
                "input_schema": {"type": "object"},
                "output_schema": None,
                "time_limit_ms": 5_000,
            }
        ],
        "triggers": [
            {
                "name": "order_arrived",
                "labels": {"zh-CN": "新订单", "en": "New order"},
                "payload_schema": {"type": "object"},
            }
        ],
    }
    assert manifest_problems(document) == []
    assert json.loads(json.dumps(document)) == document
    # A copy: storing or changing the manifest leaves the plugin's own schemas alone.
    document["settings_schema"]["properties"].clear()
    assert harness.registrations.settings_schema == {
        "type": "object",
        "properties": {"token": {"type": "string", "writeOnly": True}},
    }


def test_the_registry_refuses_invalid_json_schemas_as_the_manifest_does() -> None:
    class Broken:
        @hookimpl
        def guiju_actions(self, register: Any) -> None:
            register("push", lambda call: {}, labels={"zh-CN": "推", "en": "Push"}, output_schema={"type": 5})

        @hookimpl
        def guiju_settings_schema(self, register: Any) -> None:
            register({"type": "object", "properties": []})

    registered = PluginHarness(Broken()).registrations
    assert registered.actions == {} and registered.settings_schema is None
    [action, settings] = registered.problems
    assert action.startswith("action 'push': output_schema is not a valid JSON Schema: ")
    assert settings.startswith("the settings schema is not a valid JSON Schema: ")
