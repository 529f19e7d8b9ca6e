"""One contract for ``PluginContext``, run against the SDK's ``FakeContext`` (what partners test
their plugins with) and the host's context (what their plugins meet in production): a plugin whose
tests pass on the fake must behave the same on the host.

Each test takes a ``Subject``: a context granting the collection ``invoices`` (``code`` unique and
required, ``note``), a member to message, and a way to see the messages and events it sent. Once
the fake is told what the host knows from the database (required fields, granted scopes, the
workspace's members), it must refuse what the host refuses.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from guiju_sdk import PluginContext, RecordRejected, ScopeDenied
from guiju_sdk.testing import FakeContext
from sqlalchemy import select

from services.db import open_session
from services.marketplace import host
from services.marketplace import service as marketplace
from services.marketplace.models import PluginInstallation
from services.notifications.models import Notification
from services.outbox.models import OutboxEvent
from tests.conftest import Backend, World, open_world
from tests.plugin_support import SETTINGS_SCHEMA, deployed, plugin_module

PLUGIN = "contract"
SCOPES = ("records:read", "records:write", "files:read", "files:write", "messages:send", "events:emit", "mail:send")
CONFIG = {"base_url": "https://erp.example.com", "company": "Acme"}
SECRETS = {"api_key": "s3cret-key-1"}


@dataclass
class Subject:
    """A context under test, and what it needs to be checked by its effects."""

    context: PluginContext
    member_id: str  # a member of the context's tenant
    messages: Callable[[], Awaitable[list[tuple[str, str]]]]  # (user id, title) sent so far
    events: Callable[[], Awaitable[list[tuple[str, dict[str, Any]]]]]  # (type, payload) emitted so far
    kind: str


def _fake_subject() -> Subject:
    member_id = str(uuid.uuid4())
    context = FakeContext(
        tenant_id=str(uuid.uuid4()),
        plugin=PLUGIN,
        config=dict(CONFIG),
        secrets=dict(SECRETS),
        collections={"invoices": []},
        unique_fields={"invoices": ("code",)},
        required_fields={"invoices": ("code",)},
        scopes=frozenset(SCOPES),
        members={member_id},
    )

    async def messages() -> list[tuple[str, str]]:
        return [(to, m["title"]) for m in context.messages for to in m["to"]]

    async def events() -> list[tuple[str, dict[str, Any]]]:
        return [(e["type"], e["payload"]) for e in context.events]

    return Subject(context, member_id, messages, events, "fake")


async def _host_subject(world: World) -> AsyncIterator[Subject]:
    module = plugin_module(PLUGIN, scopes=SCOPES, settings_schema=SETTINGS_SCHEMA)
    with deployed(module):
        await marketplace.list_deployed_plugins()
        api, body = await world.signup()
        made = await api.post(
            "/api/v1/collections",
            {
                "key": "invoices",
                "name": "Invoices",
                "fields": [
                    {"key": "code", "label": "Code", "type": "text", "required": True, "unique": True},
                    {"key": "note", "label": "Note", "type": "text"},
                ],
            },
        )
        assert made.status_code == 201, made.text
        installed = await api.post(
            f"/api/v1/plugins/{PLUGIN}/install",
            {"scopes": list(SCOPES), "collections": ["invoices"], "config": {**CONFIG, **SECRETS}},
        )
        assert installed.status_code == 201, installed.text
        async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
            installation = await db.scalar(select(PluginInstallation).where(PluginInstallation.plugin == PLUGIN))
            assert installation is not None
            context = host.HostContext(db, installation, frozenset(SCOPES))

            async def messages() -> list[tuple[str, str]]:
                rows = await db.scalars(select(Notification).order_by(Notification.created_at))
                return [(str(n.user_id), n.title) for n in rows]

            async def events() -> list[tuple[str, dict[str, Any]]]:
                rows = await db.scalars(select(OutboxEvent).where(OutboxEvent.type.startswith(f"plugin.{PLUGIN}.")))
                return [(e.type, e.payload) for e in rows]

            yield Subject(context, body["user"]["id"], messages, events, "host")


@pytest.fixture(params=["fake", "host-sqlite", "host-postgres"])
def implementation(request: pytest.FixtureRequest) -> Backend | None:
    """The context's implementation: the fake (no database), or the host's on a backend."""
    if request.param == "fake":
        return None
    request.getfixturevalue("stub_worker")
    return request.getfixturevalue(f"{request.param.removeprefix('host-')}_backend")  # type: ignore[no-any-return]


@pytest.fixture
async def subject(implementation: Backend | None, tmp_path: Path) -> AsyncIterator[Subject]:
    if implementation is None:
        yield _fake_subject()
        return
    async with open_world(implementation, tmp_path) as world:
        async for made in _host_subject(world):
            yield made


# ---------------------------------------------------------------- identity, settings


async def test_identity_config_and_secrets(subject: Subject) -> None:
    context = subject.context
    assert isinstance(context, PluginContext)
    assert uuid.UUID(context.tenant_id) and context.plugin == PLUGIN
    assert context.idempotency_key is None  # outside an action
    assert dict(context.config) == CONFIG  # the secret setting is not in the configuration
    assert context.secret("api_key") == SECRETS["api_key"]
    assert context.secret("unset") is None
    assert context.log.extra is not None and context.log.extra["tenant_id"] == context.tenant_id


# ---------------------------------------------------------------- records


async def test_records_written_are_read_back_newest_first(subject: Subject) -> None:
    context = subject.context
    first = await context.write_record("invoices", {"code": "INV-1", "note": "first"})
    second = await context.write_record("invoices", {"code": "INV-2", "note": "second"})
    assert uuid.UUID(first["id"]) and first["values"]["code"] == "INV-1"
    read = await context.read_record("invoices", first["id"])
    assert read is not None and read["id"] == first["id"] and read["values"]["note"] == "first"
    newest = await context.read_records("invoices")
    assert [r["id"] for r in newest] == [second["id"], first["id"]]
    assert [r["id"] for r in await context.read_records("invoices", limit=1)] == [second["id"]]
    found = await context.read_records("invoices", where={"code": "INV-1"})
    assert [(r["id"], r["values"]["code"]) for r in found] == [(first["id"], "INV-1")]
    assert await context.read_records("invoices", where={"code": "nowhere"}) == []
    assert await context.read_record("invoices", str(uuid.uuid4())) is None


async def test_an_update_changes_the_given_values_only(subject: Subject) -> None:
    context = subject.context
    made = await context.write_record("invoices", {"code": "INV-1", "note": "draft"})
    changed = await context.write_record("invoices", {"note": "sent"}, record_id=made["id"])
    assert changed["id"] == made["id"]
    assert (changed["values"]["code"], changed["values"]["note"]) == ("INV-1", "sent")
    read = await context.read_record("invoices", made["id"])
    assert read is not None and (read["values"]["code"], read["values"]["note"]) == ("INV-1", "sent")
    assert len(await context.read_records("invoices")) == 1


async def test_a_repeated_unique_value_is_rejected_and_the_context_goes_on(subject: Subject) -> None:
    context = subject.context
    kept = await context.write_record("invoices", {"code": "INV-1"})
    with pytest.raises(RecordRejected) as refused:
        await context.write_record("invoices", {"code": "INV-1", "note": "again"})
    assert [p["pointer"] for p in refused.value.problems] == ["/values/code"]
    # The refusal leaves the context usable, and nothing was written.
    assert [r["id"] for r in await context.read_records("invoices")] == [kept["id"]]
    other = await context.write_record("invoices", {"code": "INV-2"})
    assert other["values"]["code"] == "INV-2"


async def test_a_missing_required_value_is_rejected(subject: Subject) -> None:
    with pytest.raises(RecordRejected) as refused:
        await subject.context.write_record("invoices", {"note": "no code"})
    assert "/values/code" in [p["pointer"] for p in refused.value.problems]
    assert await subject.context.read_records("invoices") == []


async def test_a_collection_not_granted_is_refused(subject: Subject) -> None:
    context = subject.context
    with pytest.raises(ScopeDenied):
        await context.read_records("payroll")
    with pytest.raises(ScopeDenied):
        await context.read_record("payroll", str(uuid.uuid4()))
    with pytest.raises(ScopeDenied):
        await context.write_record("payroll", {"code": "X"})


# ---------------------------------------------------------------- numbering


async def test_numbers_are_gapless_and_a_key_keeps_its_number(subject: Subject) -> None:
    context = subject.context
    assert [await context.next_number("invoice:2026") for _ in range(2)] == [1, 2]
    assert await context.next_number("invoice:2026", key="order-7") == 3
    assert await context.next_number("invoice:2026", key="order-7") == 3
    assert await context.next_number("invoice:2026") == 4
    assert await context.next_number("receipt:2026") == 1


async def test_a_sequence_needs_a_name(subject: Subject) -> None:
    with pytest.raises(ValueError, match="1 to 200"):
        await subject.context.next_number("")


# ---------------------------------------------------------------- messages, events


async def test_a_message_reaches_a_member(subject: Subject) -> None:
    await subject.context.send_message([subject.member_id], "Invoice INV-1 is overdue", "Please follow up.")
    assert (subject.member_id, "Invoice INV-1 is overdue") in await subject.messages()


async def test_a_message_to_a_stranger_is_refused(subject: Subject) -> None:
    with pytest.raises(ScopeDenied):
        await subject.context.send_message([str(uuid.uuid4())], "Hello")
    assert await subject.messages() == []


async def test_an_event_is_named_after_the_plugin(subject: Subject) -> None:
    await subject.context.emit_event("invoice.paid", {"code": "INV-1"})
    assert await subject.events() == [(f"plugin.{PLUGIN}.invoice.paid", {"code": "INV-1"})]


# ---------------------------------------------------------------- files, network


async def test_a_stored_file_is_read_back(subject: Subject) -> None:
    context = subject.context
    stored = await context.store_file("invoice.pdf", b"%PDF-1.7 invoice", "application/pdf")
    assert (stored.name, stored.content_type, stored.size) == ("invoice.pdf", "application/pdf", 16)
    read, content = await context.read_file(stored.id)
    assert (read, content) == (stored, b"%PDF-1.7 invoice")
    with pytest.raises(LookupError):
        await context.read_file(str(uuid.uuid4()))


async def test_undeclared_hosts_are_refused(subject: Subject) -> None:
    with pytest.raises(ScopeDenied):
        await subject.context.http("GET", "https://undeclared.example.org/orders")
    with pytest.raises(ScopeDenied):
        await subject.context.resolve_address("localhost", 25)


async def test_a_capability_without_its_scope_is_refused(subject: Subject) -> None:
    if isinstance(subject.context, host.HostContext):
        subject.context.declared_scopes = frozenset({"records:read"})
    else:
        assert isinstance(subject.context, FakeContext)
        subject.context.scopes = frozenset({"records:read"})
    with pytest.raises(ScopeDenied):
        await subject.context.emit_event("invoice.paid", {})
    with pytest.raises(ScopeDenied):
        await subject.context.store_file("a.txt", b"a", "text/plain")
