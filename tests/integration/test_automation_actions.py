"""The action kinds: what each checks at save time and does at run time, and how failures map to
retryable or permanent."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import sys
import threading
import types
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from guiju_sdk import ActionCall, ActionFailed, PluginInfo, hookimpl

from services.automation import actions
from services.automation.actions import (
    ActionContext,
    PermanentActionError,
    RetryableActionError,
    ValidationEnv,
    Wait,
)
from services.db import open_session
from services.marketplace import service as marketplace
from services.settings import Settings
from tenants.base import new_id, utcnow
from tests.conftest import World


def _ctx(tenant_id: str, event: dict[str, Any] | None = None, *, index: int = 0, attempt: int = 1) -> ActionContext:
    execution_id = uuid.UUID(int=uuid.UUID(tenant_id).int ^ 1)
    return ActionContext(
        tenant_id=uuid.UUID(tenant_id),
        automation_id=new_id(),
        execution_id=execution_id,
        action_index=index,
        idempotency_key=f"{execution_id}:{index}",
        event=event or {"id": "e1", "type": "test"},
        outputs=[],
        attempt=attempt,
    )


def _env(**overrides: Any) -> ValidationEnv:
    values: dict[str, Any] = {
        "procedure_ids": frozenset(),
        "collection_fields": {},
        "installed_plugins": frozenset(),
        "plugin_actions": frozenset(),
        "member_ids": frozenset(),
        "event_names": frozenset(),
    }
    values.update(overrides)
    return ValidationEnv(**values)


def _codes(kind: str, config: dict[str, Any], env: ValidationEnv | None = None) -> dict[str, str]:
    problems = actions.action_kind(kind).config_problems(config, "/actions/0", env or _env())
    return {p.pointer: p.code for p in problems}


async def _run(tenant_id: str, kind: str, config: dict[str, Any], ctx: ActionContext | None = None) -> Any:
    async with open_session(uuid.UUID(tenant_id)) as db:
        return await actions.action_kind(kind).run(db, ctx or _ctx(tenant_id), config)


async def _procedure(api: Any, steps: list[dict[str, Any]] | None = None) -> str:
    definition = {
        "start": "check",
        "steps": steps
        or [{"kind": "task", "key": "check", "title": "Check", "owner": {"kind": "role", "role": "member"}}],
    }
    created = await api.post(
        "/api/v1/procedures", {"key": f"p_{uuid.uuid4().hex[:8]}", "title": "Check", "definition": definition}
    )
    assert created.status_code == 201, created.text
    published = await api.post(
        f"/api/v1/procedures/{created.json()['id']}/versions/{created.json()['draft_version_id']}/publish",
        {"change_note": "v1"},
    )
    assert published.status_code == 200, published.text
    return str(created.json()["id"])


def test_every_kind_is_registered_with_a_queue_and_a_time_limit() -> None:
    assert set(actions.ACTION_KINDS) == {
        "start_run",
        "create_record",
        "update_record",
        "assign_step",
        "notify",
        "webhook",
        "wait",
        "plugin",
    }
    for kind in actions.ACTION_KINDS.values():
        assert kind.time_limit_ms > 0
    assert actions.action_kind("notify").queue({}) == "automation.actions"
    assert actions.action_kind("plugin").queue({"plugin": "erp"}) == "plugin.erp"
    with pytest.raises(KeyError):
        actions.action_kind("nope")


def test_resolve_evaluates_expressions_deeply_and_keeps_literals() -> None:
    context = {"event": {"record_id": "r1", "amount": 5}, "outputs": [{"run_id": "x"}]}
    resolved = actions.resolve({"a": "=event.amount * 2", "b": ["=outputs", "plain"], "c": 3}, context)
    assert resolved == {"a": 10, "b": [[{"run_id": "x"}], "plain"], "c": 3}
    with pytest.raises(PermanentActionError):
        actions.resolve("=event.amount +", context)


async def test_start_run_succeeds_and_lists_problems(world: World) -> None:
    api, body = await world.signup()
    procedure_id = await _procedure(api)
    tenant_id = body["tenant"]["id"]
    output = await _run(tenant_id, "start_run", {"procedure_id": procedure_id, "data": {}})
    run = await api.get(f"/api/v1/runs/{output['run_id']}")
    assert run.status_code == 200, run.text
    assert run.json()["run"]["started_by"] is None if "run" in run.json() else True

    env = _env(procedure_ids=frozenset({uuid.UUID(procedure_id)}), event_names=frozenset({"event.record_id"}))
    assert _codes("start_run", {"procedure_id": procedure_id, "record_id": "=event.record_id"}, env) == {}
    assert _codes("start_run", {"procedure_id": str(uuid.uuid4()), "record_id": "=event.nope", "extra": 1}, env) == {
        "/actions/0/procedure_id": "unknown_procedure",
        "/actions/0/record_id": "unknown_name",
        "/actions/0/extra": "unknown_key",
    }
    # A procedure that cannot start (it is linked to nothing, yet a record is named) fails for good.
    with pytest.raises(PermanentActionError, match=r"not_linked|validation_failed"):
        await _run(tenant_id, "start_run", {"procedure_id": procedure_id, "record_id": str(uuid.uuid4())})


async def test_create_and_update_record(world: World) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    collection = await api.post(
        "/api/v1/collections",
        {"key": "orders", "name": "Orders", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    assert collection.status_code == 201, collection.text
    collection_id = collection.json()["id"]
    ctx = _ctx(tenant_id, {"id": "e", "type": "t", "payload": {"code": "A-7"}})
    created = await _run(
        tenant_id, "create_record", {"collection_id": collection_id, "values": {"code": "=event.code"}}, ctx
    )
    record = await api.get(f"/api/v1/collections/{collection_id}/records/{created['record_id']}")
    assert record.json()["values"]["code"] == "A-7"
    updated = await _run(
        tenant_id,
        "update_record",
        {"collection_id": collection_id, "record_id": created["record_id"], "values": {"code": "B-1"}},
    )
    assert updated == {"record_id": created["record_id"]}
    record = await api.get(f"/api/v1/collections/{collection_id}/records/{created['record_id']}")
    assert record.json()["values"]["code"] == "B-1"

    env = _env(collection_fields={uuid.UUID(collection_id): frozenset({"code"})})
    assert _codes("create_record", {"collection_id": collection_id, "values": {"nope": 1, "code": "=("}}, env) == {
        "/actions/0/values/nope": "unknown_field",
        "/actions/0/values/code": "invalid_expression",
    }
    assert _codes("update_record", {"collection_id": str(uuid.uuid4()), "values": {}}, env) == {
        "/actions/0/collection_id": "unknown_collection",
        "/actions/0/record_id": "required",
    }
    with pytest.raises(PermanentActionError, match="record_not_found"):
        await _run(
            tenant_id, "update_record", {"collection_id": collection_id, "record_id": str(uuid.uuid4()), "values": {}}
        )


async def test_assign_step_to_the_least_loaded_manager_and_the_when_recheck(world: World) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    _manager, manager_id = await world.invite_and_join(api, "manager")
    procedure_id = await _procedure(api)
    run = await api.post("/api/v1/runs", {"procedure_id": procedure_id})
    assert run.status_code == 201, run.text
    run_id = run.json()["run"]["id"] if "run" in run.json() else run.json()["id"]
    config: dict[str, Any] = {"run_id": "=event.run_id", "step_key": "check", "owner": {"role": "manager"}}
    output = await _run(tenant_id, "assign_step", config, _ctx(tenant_id, {"id": "e", "type": "t", "run_id": run_id}))
    assert output["user_id"] == manager_id
    detail = await api.get(f"/api/v1/runs/{run_id}")
    assert [s["assignee_id"] for s in detail.json()["steps"]] == [manager_id]
    # `when` is re-checked on the step's fresh state: once it is not open, the action is skipped.
    step_id = detail.json()["steps"][0]["id"]
    event = {"id": "e", "type": "step.overdue", "run_id": run_id, "step_id": step_id}
    aborted = await api.post(f"/api/v1/runs/{run_id}/abort", {"reason": "test"})
    assert aborted.status_code == 200, aborted.text
    recheck = {
        "run_id": "=event.run_id",
        "step_id": "=event.step_id",
        "owner": {"role": "manager"},
        "when": "step.open",
    }
    skipped = await _run(tenant_id, "assign_step", recheck, _ctx(tenant_id, event))
    assert skipped == {"skipped": True, "reason": "when"}

    assert _codes("assign_step", {"run_id": "x", "owner": {"role": "boss"}}) == {
        "/actions/0/run_id": "invalid_id",
        "/actions/0/step_id": "step_required",
        "/actions/0/owner/role": "unknown_role",
    }


async def test_notify_in_app_once_per_action_in_each_language(world: World) -> None:
    api, body = await world.signup(locale="zh-CN")  # the title in Chinese; the body exists only in English
    tenant_id, user_id = body["tenant"]["id"], body["user"]["id"]
    config = {
        "to": ["=event.assignee_id", {"role": "owner"}],
        "title": {"zh-CN": "逾期：{{ title }}", "en": "Overdue: {{ title }}"},
        "body": {"en": "Run {{ event.run_id }} {{ missing }}"},
        "link": "/runs/{{ run_id }}",
    }
    ctx = _ctx(tenant_id, {"id": "e", "type": "step.overdue", "assignee_id": user_id, "title": "Pack", "run_id": "r9"})
    first = await _run(tenant_id, "notify", config, ctx)
    assert first["notified"] == [user_id] and first["channels"] == ["in_app"]
    again = await _run(tenant_id, "notify", config, ctx)  # a redelivery: nobody is notified twice
    assert again["notified"] == []
    listed = await api.get("/api/v1/notifications")
    items = listed.json()["items"]
    assert [(i["title"], i["body"], i["link"]) for i in items] == [("逾期：Pack", "Run r9 ", "/runs/r9")]

    problems = _codes(
        "notify",
        {"to": ["nobody", {"role": "boss"}, str(uuid.uuid4())], "title": {"fr": "x", "en": "{{ oops"}},
        _env(member_ids=frozenset({uuid.UUID(user_id)})),
    )
    assert problems == {
        "/actions/0/to/0": "invalid_recipient",
        "/actions/0/to/1/role": "unknown_role",
        "/actions/0/to/2": "unknown_member",
        "/actions/0/title/fr": "unknown_language",
        "/actions/0/title/en": "invalid_template",
    }
    # The sandbox: a template cannot reach Python internals.
    with pytest.raises(PermanentActionError):
        actions.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


# ---------------------------------------------------------------- outbound webhooks against a real local server


class _Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[tuple[int, dict[str, str], bytes]] = []


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Receiver, str]]:
    state = _Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status, headers, answer = state.answers.pop(0) if state.answers else (200, {}, b'{"ok": true}')
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", "127.0.0.1")
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


async def test_webhook_signs_carries_a_stable_idempotency_key_and_maps_failures(
    world: World, receiver: tuple[_Receiver, str]
) -> None:
    state, url = receiver
    _api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    secret = "s3cret-s3cret-s3cret"
    config = {"url": url, "secret": secret, "headers": {"X-Order": "=event.code"}, "body": {"code": "=event.code"}}
    event = {"id": "e", "type": "t", "code": "A-1"}
    state.answers = [(503, {"Retry-After": "7"}, b"busy"), (200, {}, b'{"received": 1}')]
    with pytest.raises(RetryableActionError) as failed:
        await _run(tenant_id, "webhook", config, _ctx(tenant_id, event, attempt=1))
    assert failed.value.retry_after == 7
    output = await _run(tenant_id, "webhook", config, _ctx(tenant_id, event, attempt=2))
    assert output == {"status": 200, "response": {"received": 1}}
    (first_headers, _), (headers, sent) = state.requests
    assert json.loads(sent) == {"code": "A-1"}
    assert headers["x-order"] == "A-1"
    assert headers["idempotency-key"] == first_headers["idempotency-key"] == _ctx(tenant_id).idempotency_key
    timestamp, signature = (part.split("=", 1)[1] for part in headers["x-guiju-signature"].split(","))
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + sent, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)

    state.answers = [(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b""), (422, {}, b'{"error": "bad"}')]
    with pytest.raises(RetryableActionError) as limited:
        await _run(tenant_id, "webhook", config, _ctx(tenant_id, event))
    assert limited.value.retry_after == 0  # a date in the past: retry now
    with pytest.raises(PermanentActionError, match="422"):
        await _run(tenant_id, "webhook", config, _ctx(tenant_id, event))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    with pytest.raises(RetryableActionError):
        await _run(tenant_id, "webhook", {"url": closed}, _ctx(tenant_id, event))


def test_webhook_config_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", raising=False)
    assert _codes("webhook", {"url": "https://example.com/x"}) == {}
    assert _codes(
        "webhook",
        {"url": "http://example.com/x", "method": "GET", "secret": "short", "headers": {"Content-Type": "x"}},
    ) == {
        "/actions/0/url": "insecure_url",
        "/actions/0/method": "invalid_method",
        "/actions/0/secret": "weak_secret",
        "/actions/0/headers/Content-Type": "invalid_header",
    }
    assert _codes("webhook", {"url": "ftp://u:p@x"})["/actions/0/url"] == "invalid_url"
    assert actions.retry_after_seconds("12") == 12
    assert actions.retry_after_seconds("soon") is None


def test_non_public_addresses_are_named() -> None:
    refusals = {
        text: actions.address_refusal(ipaddress.ip_address(text))
        for text in (
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "169.254.169.254",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1",
            "100.64.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
        )
    }
    assert refusals == {
        "127.0.0.1": "loopback",
        "10.1.2.3": "private",
        "192.168.0.9": "private",
        "169.254.169.254": "link-local",
        "224.0.0.1": "multicast",
        "0.0.0.0": "unspecified",
        "::1": "loopback",
        "::ffff:127.0.0.1": "loopback",
        "fe80::1": "link-local",
        "100.64.0.1": "non-public",
        "93.184.216.34": None,
        "2606:4700:4700::1111": None,
    }


def test_a_webhook_is_pinned_to_the_checked_address() -> None:
    url, headers, extensions = actions.pinned_target(
        "https://hooks.example.com:8443/in?x=1", ipaddress.ip_address("93.184.216.34")
    )
    assert (url, headers, extensions) == (
        "https://93.184.216.34:8443/in?x=1",
        {"Host": "hooks.example.com:8443"},
        {"sni_hostname": "hooks.example.com"},
    )
    url, headers, extensions = actions.pinned_target("http://h.example/", ipaddress.ip_address("2606:4700::1"))
    assert (url, headers, extensions) == ("http://[2606:4700::1]/", {"Host": "h.example"}, {})


async def test_webhooks_to_private_addresses_are_refused_unless_allowed(
    world: World, receiver: tuple[_Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = receiver  # allows plain http and private addresses for 127.0.0.1 only
    _api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    port = url.split(":")[2].split("/")[0]
    assert await _run(tenant_id, "webhook", {"url": url}) == {"status": 200, "response": {"ok": True}}
    assert len(state.requests) == 1

    refused = {
        f"https://127.0.0.2:{port}/hook": "loopback",
        f"https://localhost:{port}/hook": "loopback",  # a name is checked by what it resolves to
        "https://10.1.2.3/hook": "private",
        "https://169.254.169.254/latest/meta-data": "link-local",
        "https://[::1]/hook": "loopback",
    }
    for target, why in refused.items():
        with pytest.raises(PermanentActionError, match=f"{why} address"):
            await _run(tenant_id, "webhook", {"url": target})
    assert len(state.requests) == 1  # none of them was sent

    # Every address a name resolves to is checked, not only the first.
    loop = asyncio.get_running_loop()
    answers = [("93.184.216.34", 443), ("10.0.0.7", 443)]

    async def two_addresses(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", answer) for answer in answers]

    with monkeypatch.context() as patched:
        patched.setattr(loop, "getaddrinfo", two_addresses)
        with pytest.raises(PermanentActionError, match=r"resolves to 10\.0\.0\.7, a private address"):
            await _run(tenant_id, "webhook", {"url": "https://hooks.example.com/in"})

    # The allow-list lifts the refusal for the hosts it names.
    monkeypatch.setenv("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", "127.0.0.1,10.1.2.3")
    assert actions.url_problem("https://10.1.2.3/hook", "/url") is None
    monkeypatch.setenv("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", "")
    problem = actions.url_problem("https://10.1.2.3/hook", "/url")
    assert problem is not None and problem.code == "forbidden_address"


async def test_wait_returns_when_to_resume(world: World) -> None:
    _api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    before = utcnow()
    waited = await _run(tenant_id, "wait", {"duration": {"hours": 2, "business": False}})
    assert isinstance(waited, Wait)
    assert timedelta(hours=2) <= waited.until - before < timedelta(hours=2, minutes=1)
    later = (utcnow() + timedelta(days=3)).isoformat()
    until = await _run(
        tenant_id,
        "wait",
        {"until": "=event.due_at", "offset": {"minutes": 30, "business": False}},
        _ctx(tenant_id, {"id": "e", "type": "t", "due_at": later}),
    )
    assert isinstance(until, Wait)
    assert until.until.isoformat()[:16] == (utcnow() + timedelta(days=3, minutes=30)).isoformat()[:16]
    business = await _run(tenant_id, "wait", {"duration": {"hours": 1}})
    assert isinstance(business, Wait) and business.until > before
    assert _codes("wait", {"until": "event.due_at", "duration": {"hours": 1}}) == {
        "/actions/0/duration": "wait_required"
    }
    assert _codes("wait", {"duration": {"hours": 0}}) == {"/actions/0/duration": "invalid_duration"}
    assert _codes("wait", {"until": "not an expression"}) == {"/actions/0/until": "invalid_expression"}


# ---------------------------------------------------------------- plugin actions


@pytest.fixture
def test_plugin() -> Iterator[list[ActionCall]]:
    calls: list[ActionCall] = []
    module = types.ModuleType("guiju_test_actions_plugin")

    @hookimpl
    def guiju_plugin_info(register: Any) -> None:
        register(
            PluginInfo(
                name="erp", version="1.0.0", publisher="Acme", summary_en="ERP", summary_zh="ERP", api_range=">=1.2"
            )
        )

    def push_order(call: ActionCall) -> dict[str, Any]:
        calls.append(call)
        if call.input.get("mode") == "busy":
            raise ActionFailed("ERP busy", retryable=True, retry_after=3)
        if call.input.get("mode") == "bad":
            raise ActionFailed("ERP refused the order")
        if call.input.get("mode") == "bug":
            raise ZeroDivisionError("oops")
        return {"erp_id": f"ERP-{call.input['code']}"}

    @hookimpl
    def guiju_actions(register: Any) -> None:
        register("push_order", push_order, labels={"zh-CN": "推送订单", "en": "Push order"}, time_limit_ms=5_000)
        register("bad.name", push_order, labels={"en": "refused: a dot in the name"})

    module.guiju_plugin_info = guiju_plugin_info  # type: ignore[attr-defined]
    module.guiju_actions = guiju_actions  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    manager, report = marketplace.load_plugins(
        Settings(), eps=[EntryPoint(name="erp", value=module.__name__, group="guiju")]
    )
    assert [r.loaded for r in report] == [True], report
    marketplace.activate(manager, report)
    try:
        yield calls
    finally:
        marketplace.activate(marketplace.new_plugin_manager(), [])
        del sys.modules[module.__name__]


async def test_plugin_action_runs_with_the_idempotency_key(world: World, test_plugin: list[ActionCall]) -> None:
    api, body = await world.signup()
    tenant_id = body["tenant"]["id"]
    assert set(marketplace.plugin_actions()) == {"erp.push_order"}
    await marketplace.list_deployed_plugins()
    assert (await api.post("/api/v1/plugins/erp/install", {"scopes": []})).status_code == 201
    ctx = _ctx(tenant_id, {"id": "e", "type": "t", "code": "A-1"})
    output = await _run(
        tenant_id, "plugin", {"plugin": "erp", "action": "push_order", "input": {"code": "=event.code"}}, ctx
    )
    assert output == {"erp_id": "ERP-A-1"}
    assert test_plugin[0].idempotency_key == ctx.idempotency_key
    assert test_plugin[0].tenant_id == tenant_id and test_plugin[0].execution_id == str(ctx.execution_id)
    with pytest.raises(RetryableActionError) as busy:
        await _run(tenant_id, "plugin", {"plugin": "erp", "action": "push_order", "input": {"mode": "busy"}})
    assert busy.value.retry_after == 3
    for mode in ("bad", "bug"):
        with pytest.raises(PermanentActionError):
            await _run(tenant_id, "plugin", {"plugin": "erp", "action": "push_order", "input": {"mode": mode}})

    env = _env(installed_plugins=frozenset({"erp"}), plugin_actions=frozenset(marketplace.plugin_actions()))
    assert _codes("plugin", {"plugin": "erp", "action": "push_order", "input": {}}, env) == {}
    assert _codes("plugin", {"plugin": "erp", "action": "pull", "input": []}, env) == {
        "/actions/0/action": "unknown_plugin_action",
        "/actions/0/input": "invalid_type",
    }
    assert _codes("plugin", {"plugin": "messaging", "action": "send"}, env) == {
        "/actions/0/plugin": "plugin_not_installed"
    }
