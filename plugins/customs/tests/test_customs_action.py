"""The action generate_documents end to end with a fake context: files, document records in
versions, the event, and nothing stored when anything is wrong."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import openpyxl
import pylopdf_fonts_zh_cn
import pytest
from customs_samples import ORDER, order
from guiju_customs import plugin
from guiju_customs.fonts import FONT_ENVIRONMENT_VARIABLE, FontMissing
from guiju_customs.order import KINDS, OrderInvalid
from guiju_customs.schemas import EVENT_SCHEMA, INPUT_SCHEMA, OUTPUT_SCHEMA
from guiju_sdk import ActionCall, ActionFailed
from guiju_sdk.testing import FakeContext, PluginHarness
from jsonschema import Draft202012Validator

harness = PluginHarness(plugin, name="customs")
DOCUMENT_FIELDS = {"source_record", "kind", "format", "document_version", "file", "filename", "generated_at"}


def context(values: dict[str, Any] = ORDER, **kwargs: Any) -> FakeContext:
    collections = {"orders": [{"id": "order-1", "values": values}], "customs_documents": []}
    return FakeContext(plugin="customs", collections=collections, **kwargs)


async def test_one_action_generates_stores_records_and_announces_the_set() -> None:
    fake = context()
    output = await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    Draft202012Validator(OUTPUT_SCHEMA).validate(output)
    assert output["kinds"] == list(KINDS)
    assert output["version"] == 1
    assert len(fake.files) == len(output["file_ids"]) == 8
    stored = {stored.id: (stored, content) for stored, content in fake.files}
    records = fake.collections["customs_documents"]
    assert len(records) == 8
    for record in records:
        values = record["values"]
        assert set(values) == DOCUMENT_FIELDS
        assert values["source_record"] == "order-1"
        assert values["document_version"] == 1
        file, content = stored[values["file"]]
        assert file.name == values["filename"] == f"{values['kind']}-SO-2026-0042-v1.{values['format']}"
        assert content.startswith(b"%PDF-") if values["format"] == "pdf" else content.startswith(b"PK")
    assert {(r["values"]["kind"], r["values"]["format"]) for r in records} == {
        (kind, format) for kind in KINDS for format in ("pdf", "xlsx")
    }
    [event] = fake.events
    assert event["type"] == "plugin.customs.documents_generated"
    Draft202012Validator(EVENT_SCHEMA).validate(event["payload"])
    assert event["payload"]["record_id"] == "order-1"
    assert event["payload"]["file_ids"] == output["file_ids"]
    assert event["payload"]["versions"] == dict.fromkeys(KINDS, 1)


async def test_regenerating_makes_version_2_beside_version_1() -> None:
    fake = context()
    first = await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    second = await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    assert (first["version"], second["version"]) == (1, 2)
    versions = sorted(r["values"]["document_version"] for r in fake.collections["customs_documents"])
    assert versions == [1] * 8 + [2] * 8
    assert {d["filename"] for d in second["documents"]} == {
        f"{kind}-SO-2026-0042-v2.{format}" for kind in KINDS for format in ("pdf", "xlsx")
    }
    assert [e["payload"]["version"] for e in fake.events] == [1, 2]
    # Only the invoice again: its own sequence goes on, the others keep theirs.
    third = await harness.run_action(
        "generate_documents", {"collection": "orders", "record_id": "order-1", "kinds": ["commercial_invoice"]}, fake
    )
    assert third["versions"] == {"commercial_invoice": 3}
    assert len(third["documents"]) == 2


async def test_a_retried_action_keeps_its_version_and_records() -> None:
    fake = context()
    call = ActionCall(
        {"collection": "orders", "record_id": "order-1"}, "execution-7:0", fake.tenant_id, "execution-7", fake
    )
    fake.idempotency_key = call.idempotency_key
    first = await plugin.generate_documents(call)
    again = await plugin.generate_documents(call)
    assert first["version"] == again["version"] == 1
    assert len(fake.collections["customs_documents"]) == 8
    assert [d["document_record_id"] for d in first["documents"]] == [
        d["document_record_id"] for d in again["documents"]
    ]


async def test_order_values_in_the_input_need_no_order_collection() -> None:
    fake = FakeContext(plugin="customs", collections={"customs_documents": []})
    output = await harness.run_action(
        "generate_documents", {"record_id": "shipment-9", "order": ORDER, "kinds": ["packing_list"]}, fake
    )
    assert [d["kind"] for d in output["documents"]] == ["packing_list", "packing_list"]
    xlsx = next(content for stored, content in fake.files if stored.name.endswith(".xlsx"))
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx)).active
    assert any(cell.value == "RH/HAMBURG/C1-12" for row in sheet.iter_rows() for cell in row)


async def test_an_invalid_order_stores_nothing_and_lists_every_problem() -> None:
    bad = order(currency="XYZ", packages=-1)
    bad["lines"][0]["hs_code"] = "12"
    fake = context(bad)
    with pytest.raises(OrderInvalid) as raised:
        await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    assert not raised.value.retryable
    assert {p.pointer for p in raised.value.problems} == {"/currency", "/packages", "/lines/0/hs_code"}
    assert fake.files == []
    assert fake.collections["customs_documents"] == []
    assert fake.events == []
    assert fake.sequences == {}


async def test_an_ungranted_documents_collection_stores_nothing() -> None:
    fake = FakeContext(plugin="customs", collections={"orders": [{"id": "order-1", "values": ORDER}]})
    with pytest.raises(ActionFailed, match=r"customs_documents.*not granted"):
        await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    assert fake.files == [] and fake.events == []


async def test_the_documents_collection_is_a_setting() -> None:
    fake = FakeContext(
        plugin="customs",
        config={"documents_collection": "export_files"},
        collections={"orders": [{"id": "order-1", "values": ORDER}], "export_files": []},
    )
    await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    assert len(fake.collections["export_files"]) == 8


async def test_a_missing_record_or_collection_fails_clearly() -> None:
    fake = context()
    with pytest.raises(ActionFailed, match="no record nope"):
        await harness.run_action("generate_documents", {"collection": "orders", "record_id": "nope"}, fake)
    with pytest.raises(ActionFailed, match="'shipments' is not granted"):
        await harness.run_action("generate_documents", {"collection": "shipments", "record_id": "x"}, fake)


async def test_the_font_setting_and_environment_variable_override_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = context(config={"font_path": str(tmp_path / "missing.otf")})
    with pytest.raises(FontMissing, match=r"missing\.otf named by the setting font_path does not exist"):
        await harness.run_action("generate_documents", {"collection": "orders", "record_id": "order-1"}, fake)
    assert fake.files == []
    latin_only = tmp_path / "latin.ttf"
    latin_only.write_bytes(b"not a font")
    monkeypatch.setenv(FONT_ENVIRONMENT_VARIABLE, str(latin_only))
    with pytest.raises(FontMissing, match="GUIJU_CUSTOMS_FONT cannot be read"):
        await harness.generate_document("export_declaration", ORDER, "pdf", context())
    monkeypatch.setenv(FONT_ENVIRONMENT_VARIABLE, str(pylopdf_fonts_zh_cn.sans_path()))
    document = await harness.generate_document("export_declaration", ORDER, "pdf", context())
    assert document.content.startswith(b"%PDF-")


async def test_health_reports_the_font_and_a_bad_credit_code() -> None:
    assert (await harness.health(FakeContext())).ok
    unhealthy = await harness.health(FakeContext(config={"exporter_uscc": "91350100M000100Y40"}))
    assert not unhealthy.ok
    assert "exporter_uscc" in unhealthy.message


def test_the_input_schema_takes_a_record_or_values() -> None:
    schema = Draft202012Validator(INPUT_SCHEMA)
    assert schema.is_valid({"collection": "orders", "record_id": "1"})
    assert schema.is_valid({"record_id": "1", "order": ORDER, "kinds": ["packing_list"]})
    assert not schema.is_valid({"record_id": "1"})
    assert not schema.is_valid({"collection": "orders"})
    assert not schema.is_valid({"collection": "orders", "record_id": "1", "kinds": ["bill_of_lading"]})
