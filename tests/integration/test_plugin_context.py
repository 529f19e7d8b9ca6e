"""What API 1.3 added to the host's ``PluginContext``: gapless numbering per tenant and plugin,
one record by id, refused writes that leave the action's transaction usable, reading the tenant's
files, and vetted addresses for a plugin's own connections (SMTP)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from guiju_sdk import RecordRejected, ScopeDenied
from sqlalchemy import select

from services.db import open_session
from services.files import service as files
from services.marketplace import host
from services.marketplace import service as marketplace
from services.marketplace.models import PluginInstallation, PluginSequence
from tests.conftest import World
from tests.plugin_support import deployed, plugin_module

SCOPES = ("records:read", "records:write", "files:read", "mail:send")


@pytest.fixture
async def numbering_plugin(world: World) -> AsyncIterator[None]:
    with deployed(plugin_module("numbering", scopes=SCOPES), plugin_module("numbering-two", scopes=SCOPES)):
        await marketplace.list_deployed_plugins()
        yield


async def _tenant_with_plugin(world: World, plugin: str = "numbering", collections: tuple[str, ...] = ()) -> str:
    api, body = await world.signup()
    for key in collections:
        made = await api.post(
            "/api/v1/collections",
            {
                "key": key,
                "name": key.title(),
                "fields": [
                    {"key": "code", "label": "Code", "type": "text", "required": True, "unique": True},
                    {"key": "note", "label": "Note", "type": "text"},
                ],
            },
        )
        assert made.status_code == 201, made.text
    installed = await api.post(
        f"/api/v1/plugins/{plugin}/install", {"scopes": list(SCOPES), "collections": list(collections)}
    )
    assert installed.status_code == 201, installed.text
    return str(body["tenant"]["id"])


async def _context(db: Any, plugin: str = "numbering") -> host.HostContext:
    installation = await db.scalar(select(PluginInstallation).where(PluginInstallation.plugin == plugin))
    assert installation is not None
    return host.HostContext(db, installation, frozenset(SCOPES))


async def _numbers(tenant_id: str, sequence: str, keys: list[str | None], plugin: str = "numbering") -> list[int]:
    async with open_session(uuid.UUID(tenant_id)) as db:
        context = await _context(db, plugin)
        return [await context.next_number(sequence, key=key) for key in keys]


async def test_numbers_are_gapless_per_tenant_and_plugin_and_a_key_keeps_its_number(
    world: World, numbering_plugin: None
) -> None:
    tenant_a = await _tenant_with_plugin(world)
    tenant_b = await _tenant_with_plugin(world)
    await _tenant_with_plugin(world, "numbering-two")

    assert await _numbers(tenant_a, "invoice:HK:2026", [None, None, "order-7"]) == [1, 2, 3]
    # The key's number again, whoever asks later; other keys go on from the last number.
    assert await _numbers(tenant_a, "invoice:HK:2026", ["order-7", "order-8", None, "order-7"]) == [3, 4, 5, 3]
    # Another sequence, another tenant: each starts at 1.
    assert await _numbers(tenant_a, "invoice:CN:2026", [None]) == [1]
    assert await _numbers(tenant_b, "invoice:HK:2026", ["order-7", None]) == [1, 2]

    # A rolled-back action gives its number back: no gap.
    with pytest.raises(RuntimeError):
        async with open_session(uuid.UUID(tenant_a)) as db:
            assert await (await _context(db)).next_number("invoice:HK:2026", key="order-9") == 6
            raise RuntimeError("the action failed after numbering")
    assert await _numbers(tenant_a, "invoice:HK:2026", ["order-10", "order-9"]) == [6, 7]

    # Row-level security: tenant B's session sees only B's sequences.
    async with open_session(uuid.UUID(tenant_b)) as db:
        names = {(row.plugin, row.name, row.last_number) for row in await db.scalars(select(PluginSequence))}
    assert names == {("numbering", "invoice:HK:2026", 2)}

    with pytest.raises(ValueError, match="1 to 200"):
        await _numbers(tenant_a, "", [None])


async def test_concurrent_numbering_never_repeats_a_number(world: World, numbering_plugin: None) -> None:
    if world.backend.name != "postgres":
        pytest.skip("the embedded database has one writer at a time: nothing runs concurrently there")
    tenant_id = await _tenant_with_plugin(world)

    async def one(key: str | None) -> int:
        async with open_session(uuid.UUID(tenant_id)) as db:
            number = await (await _context(db)).next_number("concurrent", key=key)
            await asyncio.sleep(0.01)  # hold the transaction open while the others wait
            return number

    keys: list[str | None] = [None] * 12 + ["same"] * 6
    numbers = await asyncio.gather(*(one(key) for key in keys))
    plain, keyed = numbers[:12], numbers[12:]
    assert len(set(keyed)) == 1  # every caller with the key got the one number
    assert sorted([*plain, keyed[0]]) == list(range(1, 14))  # gapless, none twice


async def test_read_record_and_a_refused_write_that_leaves_the_transaction_usable(
    world: World, numbering_plugin: None
) -> None:
    tenant_id = await _tenant_with_plugin(world, collections=("invoices",))
    other_tenant = await _tenant_with_plugin(world, collections=("invoices",))
    async with open_session(uuid.UUID(tenant_id)) as db:
        context = await _context(db)
        first = await context.write_record("invoices", {"code": "INV-1"})
        assert await context.read_record("invoices", first["id"]) == first
        assert await context.read_record("invoices", str(uuid.uuid4())) is None
        assert await context.read_record("invoices", "not-an-id") is None
        with pytest.raises(RecordRejected) as rejected:
            await context.write_record("invoices", {"code": "INV-1", "note": "again"})
        assert [p["code"] for p in rejected.value.problems] == ["duplicate_value"]
        with pytest.raises(RecordRejected) as missing:
            await context.write_record("invoices", {"note": "no code"})
        assert missing.value.problems and missing.value.problems[0]["pointer"].endswith("code")
        # The transaction goes on: the plugin reads what is there and writes more.
        found = await context.read_records("invoices", where={"code": "INV-1"})
        assert [r["id"] for r in found] == [first["id"]]
        await context.write_record("invoices", {"code": "INV-2"})
    async with open_session(uuid.UUID(tenant_id)) as db:
        codes = sorted(r["values"]["code"] for r in await (await _context(db)).read_records("invoices"))
    assert codes == ["INV-1", "INV-2"]
    # Another tenant cannot read the record by its id, even with the same collection granted.
    async with open_session(uuid.UUID(other_tenant)) as db:
        assert await (await _context(db)).read_record("invoices", first["id"]) is None


async def test_read_file_reads_the_tenants_files_only(world: World, numbering_plugin: None) -> None:
    tenant_id = await _tenant_with_plugin(world)
    other_tenant = await _tenant_with_plugin(world)
    async with open_session(uuid.UUID(tenant_id)) as db:
        stored = await files.save_file(
            db,
            tenant_id=uuid.UUID(tenant_id),
            name="装箱单.pdf",
            content_type="application/pdf",
            data=b"%PDF-1.7 packing list",
            uploaded_by=None,
        )
    async with open_session(uuid.UUID(tenant_id)) as db:
        found, data = await (await _context(db)).read_file(str(stored.id))
    assert (found.name, found.size, data) == ("装箱单.pdf", 21, b"%PDF-1.7 packing list")
    async with open_session(uuid.UUID(other_tenant)) as db:
        with pytest.raises(LookupError, match="no file"):
            await (await _context(db)).read_file(str(stored.id))
    async with open_session(uuid.UUID(tenant_id)) as db:
        context = await _context(db)
        context.declared_scopes = frozenset({"records:read"})  # a version that did not ask for files:read
        with pytest.raises(ScopeDenied, match="files:read"):
            await context.read_file(str(stored.id))


async def test_resolve_address_refuses_private_addresses_unless_the_operator_allows_them(
    world: World, numbering_plugin: None
) -> None:
    tenant_id = await _tenant_with_plugin(world)
    async with open_session(uuid.UUID(tenant_id)) as db:
        context = await _context(db)
        for private in ("127.0.0.1", "localhost", "10.0.0.8"):
            with pytest.raises(ScopeDenied, match="public addresses"):
                await context.resolve_address(private, 587)
        assert await context.resolve_address("8.8.8.8", 465) == "8.8.8.8"
        context.declared_scopes = frozenset({"records:read"})
        with pytest.raises(ScopeDenied, match="mail:send"):
            await context.resolve_address("8.8.8.8", 465)
    marketplace.configure(dataclasses.replace(world.settings, plugin_allow_http_hosts=("127.0.0.1",)))
    try:
        async with open_session(uuid.UUID(tenant_id)) as db:
            assert await (await _context(db)).resolve_address("127.0.0.1", 587) == "127.0.0.1"
    finally:
        marketplace.configure(world.settings)
