"""The event catalog: every name the services emit or subscribe to is in it, the automation
triggers offer exactly its events, payloads as the emitters build them match its structs, and the
reference page lists it."""

from __future__ import annotations

import ast
import importlib
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import msgspec
import pytest

from services import events
from services.automation import schemas as automation_schemas
from services.automation import service as automations
from services.automation import validation as automation_validation
from services.marketplace import host
from services.marketplace import service as marketplace
from services.sops import engine
from services.webhooks import service as webhooks

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"

# Emits whose name is a value the scan cannot follow, each checked another way.
DYNAMIC = {
    # The engine's events: their names come from catalog entries (the engine scan below).
    ("services/sops/runs/transitions.py", "event.type"),
    # Parameters typed events.EventType (mypy keeps them catalog entries).
    ("services/sops/engine.py", "event.name"),
    ("services/records/values.py", "event.name"),
    ("services/marketplace/installations.py", "event.name"),
    # A delayed event: its name is checked where emit_later is called.
    ("services/scheduler/service.py", "event_type"),
    # Subscriptions in a loop over tuples checked in test_subscribed_tuples_are_in_the_catalog.
    ("services/automation/service.py", "_event_type"),
    ("services/marketplace/actors.py", "_event_type"),
    ("services/webhooks/service.py", "_event_type"),
}
UNRESOLVED = object()


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _resolve(node: ast.expr, module: ModuleType) -> Any:
    """The value ``node`` names in ``module``'s globals (a literal, a constant, an attribute of one)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(module, node.id, UNRESOLVED)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, module)
        return UNRESOLVED if base is UNRESOLVED else getattr(base, node.attr, UNRESOLVED)
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "events.plugin_event_name":
        return "plugin.<plugin>.<trigger>"
    return UNRESOLVED


def _named_events(tree: ast.AST) -> list[tuple[str, ast.expr]]:
    """(what, the expression naming the event) of every emit, delayed emit and subscription."""
    found: list[tuple[str, ast.expr]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if func == "outbox.emit" and len(node.args) >= 2:
            found.append(("emit", node.args[1]))
        elif func.endswith("emit_later") and "type" in keywords:
            found.append(("emit_later", keywords["type"]))
        elif func == "outbox.subscribe" and node.args:
            found.append(("subscribe", node.args[0]))
        elif func in {"self.emit", "run.emit"} and node.args:
            found.append(("engine", node.args[0]))
        elif func == "Event" and "type" in keywords:
            found.append(("engine", keywords["type"]))
    return found


def _problem(what: str, value: Any) -> str | None:
    if isinstance(value, events.EventType):
        return None if events.CATALOG.get(value.name) is value else f"{value.name!r} is not the catalog's entry"
    if not isinstance(value, str):
        return f"names an event with {value!r}"
    if what == "subscribe" and value.endswith(".*"):
        known = any(f.prefix == value[:-1] for f in events.FAMILIES) or any(
            n.startswith(value[:-1]) for n in events.CATALOG
        )
        return None if known else f"{value!r} matches no event"
    if what == "engine":
        return None if value in events.CATALOG else f"{value!r} is not in the catalog"
    if value == events.PLUGIN_EVENTS.pattern or events.is_known(value):
        return None
    return f"{value!r} is not in the catalog"


def test_every_event_the_services_name_is_in_the_catalog() -> None:
    problems: list[str] = []
    scanned = 0
    for path in sorted(SERVICES.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if "migrations" in rel:
            continue
        named = _named_events(ast.parse(path.read_text(encoding="utf-8")))
        if not named:
            continue
        module = importlib.import_module(_module_name(path))
        for what, node in named:
            scanned += 1
            source = ast.unparse(node)
            if (rel, source) in DYNAMIC:
                continue
            value = _resolve(node, module)
            problem = f"cannot follow {source!r}" if value is UNRESOLVED else _problem(what, value)
            if problem:
                problems.append(f"{rel}:{node.lineno}: {what} {problem}")
    assert problems == [], "\n".join(problems)
    assert scanned > 60  # the scan found the emitters (a refactoring that hid them would pass silently)


def test_the_scan_refuses_an_unknown_name() -> None:
    tree = ast.parse('outbox.emit(db, "record.craeted", {})\noutbox.subscribe("recrod.*", handle)')
    named = _named_events(tree)
    assert [_problem(what, _resolve(node, events)) for what, node in named] == [
        "'record.craeted' is not in the catalog",
        "'recrod.*' matches no event",
    ]


def test_the_engine_emits_catalog_events() -> None:
    assert set(engine.EVENT_TYPES) <= set(events.CATALOG)
    for name in engine.EVENT_TYPES:
        assert issubclass(events.get(name).payload, events.RunPayload), name


def test_subscribed_tuples_are_in_the_catalog() -> None:
    assert set(automations.RECORD_EVENTS) | set(automations.RUN_EVENTS) <= set(events.CATALOG)
    handled = (
        *host.HOOK_EVENTS,
        marketplace.HEALTH_REQUESTED,
        marketplace.POLL_DUE,
        marketplace.NOTIFICATION_FORWARDED,
    )
    assert set(handled) <= set(events.CATALOG)
    delivered = [name for name in webhooks.SUBSCRIBED_TYPES if not name.endswith(".*")]
    assert delivered and set(delivered) <= set(events.CATALOG)
    assert all(
        any(f.prefix == name[:-1] for f in events.FAMILIES) for name in webhooks.SUBSCRIBED_TYPES if name.endswith(".*")
    )


def test_automation_triggers_offer_exactly_the_catalog_events() -> None:
    run_events = events.trigger_events("run_event")
    record_events = events.trigger_events("record_event")
    assert set(get_args(automation_schemas.RunEvent)) == set(run_events)
    assert set(automations.RUN_EVENTS) == set(run_events)
    assert {f"record.{e}" for e in get_args(automation_schemas.RecordEvent)} == set(record_events)
    assert set(automations.RECORD_EVENTS) == set(record_events)


def test_run_event_conditions_read_the_catalog_payload_keys() -> None:
    keys = {k for name in events.trigger_events("run_event") for k in events.get(name).payload.__struct_fields__}
    assert {f"event.{k}" for k in keys} | {"event.data.*"} == automation_validation._RUN_NAMES


def test_an_unknown_trigger_event_is_refused_when_an_automation_is_read() -> None:
    trigger = {"type": "run_event", "events": ["step.overdue", "step.exploded"]}
    body = {"name": "x", "trigger": trigger, "actions": [{"kind": "notify"}]}
    with pytest.raises(msgspec.ValidationError, match="events"):
        msgspec.convert(body, automation_schemas.AutomationIn)


def test_the_catalog_is_well_formed() -> None:
    assert len(events.CATALOG) >= 50
    for name, event in events.CATALOG.items():
        assert event.name == name
        assert event.description.endswith(".") and "\n" not in event.description, name
        assert issubclass(event.payload, events.Payload), name
        assert event.payload.__struct_config__.forbid_unknown_fields, name
        assert event.trigger in {None, *get_args(events.TriggerKind)}, name
        assert events.family_of(name) is None
    with pytest.raises(events.UnknownEvent):
        events.get("record.craeted")


def test_plugin_events_form_a_family() -> None:
    assert events.plugin_event_name("erp", "invoice_overdue") == "plugin.erp.invoice_overdue"
    assert events.is_known("plugin.erp.invoice_overdue")
    assert events.payload_problem("plugin.erp.invoice_overdue", {"anything": [1, 2]}) is None
    assert not events.is_known("plugin.erp")
    assert not events.is_known("plugin..x")
    for plugin, trigger in (("erp", ""), ("", "x"), ("a.b", "x")):
        with pytest.raises(events.UnknownEvent):
            events.plugin_event_name(plugin, trigger)


# ---------------------------------------------------------------- payloads as the emitters build them

ID = str(uuid.uuid4())
AT = "2026-12-07T09:30:00+00:00"
RUN = {
    "run_id": ID,
    "procedure_id": ID,
    "version_id": ID,
    "run_title": "Ship SO-42",
    "run_status": "running",
    "record_id": ID,
    "collection_id": ID,
}
STEP = {**RUN, "step_id": 3, "step_key": "pack", "assignee_id": None, "due_at": AT}
OWNER = {"kind": "role", "role": "member"}
TIMER = {
    "run_id": ID,
    "procedure_id": ID,
    "run_title": "Ship SO-42",
    "record_id": None,
    "collection_id": None,
    "step_id": 3,
    "step_key": "pack",
    "title": "Pack",
    "assignee_id": ID,
    "role": None,
    "due_at": AT,
}
RECORD = {
    "collection_id": ID,
    "collection_key": "orders",
    "record_id": ID,
    "entity_id": None,
    "changed_fields": ["status"],
    "values": {"status": "paid", "total": {"amount": 100, "currency": "CNY"}},
    "before": {"status": "new", "total": None},
}
PLUGIN = {"plugin": "erp", "version": "1.2.0"}

PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    ("record.created", {**RECORD, "changed_fields": ["status", "total"], "before": None}),
    ("record.updated", RECORD),
    ("record.deleted", {**RECORD, "changed_fields": ["status", "total"], "values": None}),
    ("run.started", {**RUN, "data": {"started_by": ID}}),
    ("run.completed", {**RUN, "run_status": "completed", "data": {}}),
    ("run.aborted", {**RUN, "run_status": "aborted", "data": {"reason": "Aborted by hand.", "by": ID}}),
    ("run.commented", {"run_id": ID, "procedure_id": ID, "comment_id": ID, "step_id": None, "author_id": ID}),
    ("run.migrated", {"run_id": ID, "procedure_id": ID, "from_version_id": ID, "to_version_id": ID}),
    ("step.ready", {**STEP, "data": {"owner": OWNER, "due_at": AT, "expires_at": None}}),
    (
        "step.ready",
        {
            **STEP,
            "data": {"owner": OWNER, "due_at": None, "expires_at": None, "approvers": [OWNER], "mode": "all"},
        },
    ),
    ("step.assigned", {**STEP, "assignee_id": ID, "data": {"user_id": ID, "by": None}}),
    ("step.started", {**STEP, "data": {"by": ID}}),
    (
        "step.completed",
        {
            **STEP,
            "data": {
                "by": ID,
                "outcome": "done",
                "values": {"weight": 2.5},
                "checked": ["labels"],
                "evidence": {"note": "", "files": [], "value": None},
            },
        },
    ),
    ("step.completed", {**STEP, "data": {"by": ID, "outcome": "approved", "note": "ok", "values": {}}}),
    ("step.completed", {**STEP, "data": {"outcome": "succeeded", "values": {"invoice": "INV-1"}}}),
    ("step.completed", {**STEP, "data": {"outcome": None, "values": {}}}),
    ("step.skipped", {**STEP, "data": {"by": ID}}),
    ("step.expired", {**STEP, "data": {}}),
    ("step.failed", {**STEP, "data": {"error": "the sub-run was aborted"}}),
    ("step.rejected", {**STEP, "data": {"by": ID, "note": "too dear"}}),
    ("step.voted", {**STEP, "data": {"by": ID, "vote": "approve", "note": ""}}),
    ("step.due_soon", {**TIMER, "remind_at": AT}),
    ("step.overdue", TIMER),
    ("action.requested", {**STEP, "data": {"plugin": "erp", "action": "invoice", "input": {"record_id": ID}}}),
    ("step.action_requested", {**STEP, "data": {"plugin": "erp", "action": "invoice", "input": {}}}),
    ("wait.scheduled", {**STEP, "data": {"until": AT}}),
    ("subprocedure.requested", {**STEP, "data": {"procedure_id": ID}}),
    ("record.update_requested", {**STEP, "data": {"values": {"status": "packed"}}}),
    (
        "exception.raised",
        {
            **STEP,
            "exception_id": 1,
            "data": {
                "exception_id": 1,
                "kind": "damaged",
                "label": "Goods damaged",
                "note": None,
                "raised_by": ID,
                "notify": [OWNER],
                "fallback": ["call_customer"],
                "then": "resume",
                "escalate_after": {"days": 0, "hours": 4, "minutes": 0, "business": True},
                "escalate_to": [{"kind": "role", "role": "manager"}],
                "escalate_at": AT,
            },
        },
    ),
    (
        "exception.resolved",
        {**RUN, "exception_id": 1, "data": {"exception_id": 1, "kind": "damaged", "outcome": "abort"}},
    ),
    (
        "exception.escalated",
        {
            **STEP,
            "exception_id": 1,
            "data": {
                "exception_id": 1,
                "kind": "damaged",
                "label": "Goods damaged",
                "escalate_to": [{"kind": "role", "role": "manager"}],
                "escalate_at": AT,
                "user_ids": [ID],
            },
        },
    ),
    ("procedure.published", {"procedure_id": ID, "version_id": ID, "number": 2}),
    ("tenant.created", {"tenant_id": ID, "slug": "acme", "name": "Acme", "industry": None, "owner_id": ID}),
    ("member.invited", {"invitation_id": ID, "role": "member"}),
    ("member.joined", {"user_id": ID, "role": "member"}),
    ("member.role_changed", {"user_id": ID, "role": "admin"}),
    ("member.removed", {"user_id": ID}),
    ("template.installed", {"pack_id": "general-starter", "version": "1.0.0", "installation_id": ID}),
    ("template.upgraded", {"pack_id": "general-starter", "from_version": "1.0.0", "to_version": "1.1.0"}),
    ("template.uninstalled", {"pack_id": "general-starter", "version": "1.0.0"}),
    ("automation.created", {"automation_id": ID, "name": "Tell the manager"}),
    ("marketplace.installed", PLUGIN),
    ("marketplace.configured", {**PLUGIN, "previous": {"region": "cn"}, "secrets_changed": ["api_key"]}),
    ("marketplace.enabled", PLUGIN),
    ("marketplace.disabled", PLUGIN),
    ("marketplace.pinned", PLUGIN),
    ("marketplace.unpinned", PLUGIN),
    ("marketplace.upgraded", {**PLUGIN, "from_version": "1.1.0"}),
    ("marketplace.rolled_back", {**PLUGIN, "from_version": "1.3.0"}),
    (
        "marketplace.uninstalled",
        {
            **PLUGIN,
            "delete_data": False,
            "config": {},
            "secrets": {"api_key": "v1:…"},
            "granted_scopes": ["records:read"],
            "granted_collections": ["orders"],
        },
    ),
    ("marketplace.health_requested", PLUGIN),
    ("marketplace.poll_due", {"plugin": "erp", "trigger": "invoice_overdue"}),
    ("marketplace.version_submitted", PLUGIN),
    (
        "marketplace.notification_forwarded",
        {"plugin": "messaging", "key": "n:1", "input": {"recipients": [], "title": "Hi", "link": "https://x"}},
    ),
    (
        "mail.requested",
        {"to": "a@example.com", "template": "invitation", "locale": "en", "variables": {"days": 7}, "link": None},
    ),
    ("plugin.customs.documents_generated", {"record_id": ID, "version": 2}),
]


@pytest.mark.parametrize(("name", "payload"), PAYLOADS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PAYLOADS)])
def test_payloads_as_emitted_match_their_struct(name: str, payload: dict[str, Any]) -> None:
    assert events.payload_problem(name, {**payload, "_cause": {"execution_id": ID, "depth": 1}}) is None


def test_every_catalog_event_has_a_representative_payload() -> None:
    assert set(events.CATALOG) <= {name for name, _ in PAYLOADS}


def test_a_payload_missing_or_adding_a_key_is_refused() -> None:
    overdue = dict(TIMER)
    del overdue["run_title"]
    assert "run_title" in str(events.payload_problem("step.overdue", overdue))
    assert "surprise" in str(events.payload_problem("member.removed", {"user_id": ID, "surprise": 1}))
    assert events.payload_problem("record.craeted", RECORD) is not None


def test_the_structs_decode_what_they_document() -> None:
    decoded = msgspec.convert(TIMER, events.STEP_OVERDUE.payload)
    assert decoded.run_title == "Ship SO-42" and decoded.step_id == 3


def test_the_reference_page_lists_the_catalog() -> None:
    page = events.reference_page()
    for name in events.CATALOG:
        assert f"### `{name}`" in page
    assert f"### `{events.PLUGIN_EVENTS.pattern}`" in page
    written = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert written == page, "docs/events.md is stale: python -m services.events > docs/events.md"
