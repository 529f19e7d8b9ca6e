"""The plugin SDK: every hook, through the testing harness a plugin author uses.

Every hook of ``GuijuSpec`` has a ``test_hook_<name>`` here and a section in docs/plugins.md;
``test_every_hook_is_documented_and_tested`` fails when a hook is added without both.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy
import pytest
from guiju_sdk import (
    ActionCall,
    Document,
    Health,
    HttpResponse,
    PluginContext,
    PluginInfo,
    RecordRejected,
    ScopeDenied,
    hookimpl,
    registry,
)
from guiju_sdk.testing import FakeContext, HttpRequest, PluginHarness

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


class ExamplePlugin:
    """A plugin using every hook, as a partner would write it."""

    def __init__(self) -> None:
        self.lifecycle: list[tuple[str, Any]] = []

    @hookimpl
    def guiju_plugin_info(self, register: Any) -> None:
        register(
            PluginInfo(
                name="example",
                version="1.0.0",
                publisher="Acme",
                summary_en="Example",
                summary_zh="示例",
                api_range=">=1.2,<2.0",
                category="erp",
                scopes=("records:read", "records:write"),
            )
        )

    @hookimpl
    def guiju_actions(self, register: Any) -> None:
        async def push(call: ActionCall) -> dict[str, Any]:
            assert call.context is not None
            response = await call.context.http(
                "POST",
                "https://erp.example/orders",
                json=call.input,
                headers={"Idempotency-Key": call.idempotency_key, "Authorization": call.context.secret("token") or ""},
            )
            await call.context.write_record("orders", {"erp_id": response.json()["id"]})
            return {"erp_id": response.json()["id"]}

        register("push", push, labels={"zh-CN": "推送", "en": "Push"}, time_limit_ms=5_000)
        register("bad.name", push, labels={"zh-CN": "坏", "en": "Bad"})  # refused: '.' in the name
        register("unlabelled", push, labels={"en": "English only"})  # refused: no zh-CN label

    @hookimpl
    def guiju_triggers(self, register: Any) -> None:
        async def poll(context: PluginContext) -> list[dict[str, Any]]:
            return [{"order": r["values"]["code"]} for r in await context.read_records("orders", where={"new": True})]

        register("order_arrived", labels={"zh-CN": "新订单", "en": "New order"}, poll=poll, poll_seconds=60)
        register("too_often", labels={"zh-CN": "太频繁", "en": "Too often"}, poll=poll, poll_seconds=1)

    @hookimpl
    def guiju_document_kinds(self, register: Any) -> None:
        def packing_list(context: PluginContext, values: Mapping[str, Any], format: str) -> Document:
            return Document(
                f"packing-list.{format}", "text/csv", f"code,qty\n{values['code']},{values['qty']}\n".encode()
            )

        register("packing_list", packing_list, labels={"zh-CN": "装箱单", "en": "Packing list"}, formats=("csv",))

    @hookimpl
    def guiju_templates(self, register: Any) -> None:
        register(Path(__file__).parent)  # any directory: the gallery validates the pack itself
        register(Path(__file__))  # refused: not a directory

    @hookimpl
    def guiju_settings_schema(self, register: Any) -> None:
        register(
            {
                "type": "object",
                "properties": {"base_url": {"type": "string"}, "token": {"type": "string", "writeOnly": True}},
                "required": ["base_url"],
            }
        )

    @hookimpl
    def guiju_installed(self, context: PluginContext) -> None:
        self.lifecycle.append(("installed", context.tenant_id))

    @hookimpl
    def guiju_configuration_changed(self, context: PluginContext, previous: Mapping[str, Any]) -> None:
        self.lifecycle.append(("configured", (dict(previous), dict(context.config))))

    @hookimpl
    def guiju_uninstalled(self, context: PluginContext, delete_data: bool) -> None:
        self.lifecycle.append(("uninstalled", delete_data))

    @hookimpl
    def guiju_health_check(self, context: PluginContext, register: Any) -> None:
        if not context.config.get("base_url"):
            register(Health(False, "Set the ERP's address in the plugin's settings."))
        else:
            register(Health(True))


@pytest.fixture
def harness() -> PluginHarness:
    return PluginHarness(ExamplePlugin(), name="example")


def erp(request: HttpRequest) -> HttpResponse:
    assert request.headers["Authorization"] == "secret-token"
    return HttpResponse(201, {"content-type": "application/json"}, b'{"id": "SO-7"}')


def test_hook_guiju_plugin_info(harness: PluginHarness) -> None:
    info = harness.info()
    assert (info.name, info.api_range, info.scopes) == ("example", ">=1.2,<2.0", ("records:read", "records:write"))


async def test_hook_guiju_actions(harness: PluginHarness) -> None:
    assert sorted(harness.registrations.actions) == ["push"]
    assert "action name 'bad.name' must be 1-64 characters without '.'" in harness.registrations.problems
    assert "action 'unlabelled' needs labels in zh-CN and en" in harness.registrations.problems
    context = FakeContext(
        plugin="example",
        secrets={"token": "secret-token"},
        hosts={"erp.example"},
        http_handler=erp,
        collections={"orders": []},
    )
    assert await harness.run_action("push", {"code": "A1"}, context) == {"erp_id": "SO-7"}
    [request] = context.requests
    assert request.json == {"code": "A1"} and request.headers["Idempotency-Key"] == context.idempotency_key
    assert context.collections["orders"][0]["values"] == {"erp_id": "SO-7"}
    # Outside the grant: an undeclared host, an ungranted collection.
    with pytest.raises(ScopeDenied):
        await harness.run_action("push", {"code": "A1"}, FakeContext(secrets={"token": "secret-token"}))
    elsewhere = FakeContext(secrets={"token": "secret-token"}, hosts={"erp.example"}, http_handler=erp)
    with pytest.raises(ScopeDenied, match="orders"):
        await harness.run_action("push", {"code": "A1"}, elsewhere)


async def test_hook_guiju_triggers(harness: PluginHarness) -> None:
    assert sorted(harness.registrations.triggers) == ["order_arrived"]
    assert "trigger 'too_often': poll_seconds must be at least 60" in harness.registrations.problems
    context = FakeContext(
        collections={
            "orders": [{"id": "1", "values": {"code": "A1", "new": True}}, {"id": "2", "values": {"code": "B2"}}]
        }
    )
    assert await harness.poll_trigger("order_arrived", context) == [{"order": "A1"}]


async def test_hook_guiju_document_kinds(harness: PluginHarness) -> None:
    document = await harness.generate_document("packing_list", {"code": "A1", "qty": 3}, "csv")
    assert document == Document("packing-list.csv", "text/csv", b"code,qty\nA1,3\n")


def test_hook_guiju_templates(harness: PluginHarness) -> None:
    assert harness.registrations.template_packs == [Path(__file__).parent]
    assert any("is not a directory" in p for p in harness.registrations.problems)


def test_hook_guiju_settings_schema(harness: PluginHarness) -> None:
    schema = harness.registrations.settings_schema
    assert schema is not None and registry.secret_fields(schema) == {"token"}


async def test_hook_guiju_installed(harness: PluginHarness) -> None:
    await harness.installed(FakeContext(tenant_id="t-1"))
    assert isinstance(harness.plugin, ExamplePlugin) and harness.plugin.lifecycle == [("installed", "t-1")]


async def test_hook_guiju_configuration_changed(harness: PluginHarness) -> None:
    await harness.configuration_changed(
        {"base_url": "https://old.example"}, FakeContext(config={"base_url": "https://erp.example"})
    )
    assert isinstance(harness.plugin, ExamplePlugin)
    assert harness.plugin.lifecycle == [
        ("configured", ({"base_url": "https://old.example"}, {"base_url": "https://erp.example"}))
    ]


async def test_hook_guiju_uninstalled(harness: PluginHarness) -> None:
    await harness.uninstalled(delete_data=True)
    assert isinstance(harness.plugin, ExamplePlugin) and harness.plugin.lifecycle == [("uninstalled", True)]


async def test_hook_guiju_health_check(harness: PluginHarness) -> None:
    assert await harness.health(FakeContext()) == Health(False, "Set the ERP's address in the plugin's settings.")
    assert await harness.health(FakeContext(config={"base_url": "https://erp.example"})) == Health(True)


def test_a_plugin_implementing_an_unknown_hook_is_refused() -> None:
    class Stray:
        @hookimpl
        def guiju_no_such_hook(self) -> None: ...

    with pytest.raises(pluggy.PluginValidationError):
        PluginHarness(Stray())


def test_a_hook_that_raises_is_reported_not_raised() -> None:
    class Broken:
        @hookimpl
        def guiju_actions(self, register: Any) -> None:
            raise RuntimeError("boom")

    assert PluginHarness(Broken()).registrations.problems == ["guiju_actions raised RuntimeError: boom"]


def test_every_hook_is_documented_and_tested() -> None:
    documented = set(re.findall(r"^#+ .*`(guiju_\w+)`", DOCS.read_text(encoding="utf-8"), flags=re.MULTILINE))
    tested = {name.removeprefix("test_hook_") for name in dir(sys.modules[__name__]) if name.startswith("test_hook_")}
    hooks = set(registry.hook_names())
    assert hooks - documented == set(), "hooks without a section in docs/plugins.md"
    assert hooks - tested == set(), "hooks without a test_hook_<name> in this module"
    assert documented - hooks == set() and tested - hooks == set(), "docs or tests of hooks that do not exist"


def _context_members() -> set[str]:
    return {name for name in vars(PluginContext) if not name.startswith("_")}


def test_every_context_member_is_documented_and_offered_by_the_host_and_the_fake() -> None:
    from services.marketplace.host import HostContext

    docs = DOCS.read_text(encoding="utf-8")
    section = docs[docs.index("## `PluginContext`") : docs.index("## Testing a plugin")]
    members = _context_members()
    assert {"next_number", "read_record", "read_file", "resolve_address"} <= members
    assert {m for m in members if f"`{m}" not in section and f"`await {m}" not in section} == set()
    for implementation in (HostContext, FakeContext):
        offered = set(dir(implementation)) | {f.name for f in dataclasses.fields(implementation)}
        assert members - offered == set(), implementation.__name__


async def test_the_fake_context_numbers_reads_and_refuses_as_the_host_does() -> None:
    context = FakeContext(collections={"invoices": []}, unique_fields={"invoices": ("number",)}, hosts={"smtp.example"})
    assert [await context.next_number("inv", key=k) for k in (None, "a", None, "a")] == [1, 2, 3, 2]
    assert await context.next_number("other") == 1
    first = await context.write_record("invoices", {"number": "INV-1"})
    assert await context.read_record("invoices", first["id"]) == first
    assert await context.read_record("invoices", "missing") is None
    with pytest.raises(RecordRejected) as rejected:
        await context.write_record("invoices", {"number": "INV-1"})
    assert rejected.value.problems == [{"pointer": "/values/number", "message": "'INV-1' is already used"}]
    await context.write_record("invoices", {"number": "INV-1", "note": "same record"}, record_id=first["id"])
    stored = await context.store_file("a.pdf", b"%PDF", "application/pdf")
    assert await context.read_file(stored.id) == (stored, b"%PDF")
    with pytest.raises(LookupError):
        await context.read_file("missing")
    assert await context.resolve_address("smtp.example", 587) == "smtp.example"
    with pytest.raises(ScopeDenied):
        await context.resolve_address("127.0.0.1", 25)


def test_send_for_real_answers_as_the_host_does() -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from guiju_sdk import ActionFailed
    from guiju_sdk.testing import send_for_real

    class Partner(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/slow":
                time.sleep(0.5)
            status = 200 if self.path == "/ok" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"seen": ' + body + b', "type": "' + self.headers["Content-Type"].encode() + b'"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Partner)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = send_for_real(HttpRequest("POST", f"{base}/ok", {"n": 1}, None, {}, 5))
        assert (ok.status, ok.json()) == (200, {"seen": {"n": 1}, "type": "application/json"})
        assert send_for_real(HttpRequest("POST", f"{base}/missing", {"n": 2}, None, {}, 5)).status == 404
        with pytest.raises(ActionFailed, match=r"took longer than 0\.1 s") as slow:
            send_for_real(HttpRequest("POST", f"{base}/slow", {}, None, {}, 0.1))
        assert slow.value.retryable
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ActionFailed, match="failed") as refused:
        send_for_real(HttpRequest("POST", f"{base}/ok", {}, None, {}, 1))
    assert refused.value.retryable


def test_a_schemas_check_is_remembered_only_for_the_same_schema() -> None:
    from guiju_sdk.registry import json_schema_problem

    valid = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    invalid = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}}
    for _ in range(2):  # the second answer is the remembered one, and the same
        assert json_schema_problem(valid) is None
        assert (
            json_schema_problem(invalid)
            == "is not a valid JSON Schema: '1' is not of type 'number' (at /properties/n/minimum)"
        )
    # Values JSON tells apart stay apart: a tuple is no array, true is no 1.
    assert json_schema_problem({"type": "array", "prefixItems": [{"type": "string"}]}) is None
    assert json_schema_problem({"type": "array", "prefixItems": ({"type": "string"},)}) is not None
    assert json_schema_problem({"type": "integer", "minimum": 1}) is None
    assert json_schema_problem({"type": "integer", "minimum": True}) is not None
    # A value JSON has no word for is still checked, every time.
    assert json_schema_problem({"type": "string", "enum": {"a"}}) is not None
