"""The hooks of the built-in plugin customs: export documents from an order or shipment record.

Four document kinds (commercial invoice, packing list, proforma invoice and the draft China export
customs declaration), each as PDF and XLSX; the action ``generate_documents`` makes a set in one go,
stores the files, records them in the documents collection in versions, and emits
``documents_generated`` for automations (e-mailing them to the forwarder, say).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from guiju_sdk import (
    ActionCall,
    ActionFailed,
    Document,
    Health,
    PluginContext,
    PluginInfo,
    RecordRejected,
    Register,
    RegisterAction,
    RegisterDocumentKind,
    RegisterHealth,
    RegisterSettingsSchema,
    RegisterTrigger,
    ScopeDenied,
    hookimpl,
)

from guiju_customs.documents import FORMATS, render, render_set
from guiju_customs.fonts import FontMissing, find_font
from guiju_customs.layouts import LABELS
from guiju_customs.order import KINDS, read_order, uscc_problem
from guiju_customs.schemas import (
    DEFAULT_DOCUMENTS_COLLECTION,
    EVENT_SCHEMA,
    INPUT_SCHEMA,
    ORDER_SCHEMA,
    OUTPUT_SCHEMA,
    SETTINGS_SCHEMA,
)

PLUGIN = "customs"
ACTION = "generate_documents"
#: The event (and trigger) a generated set emits. Trigger names may not contain dots.
EVENT = "documents_generated"


@hookimpl
def guiju_plugin_info(register: Register) -> None:
    register(
        PluginInfo(
            name=PLUGIN,
            version="1.0.0",
            publisher="Guiju",
            summary_en="Commercial invoice, packing list, proforma invoice and export declaration drafts.",
            summary_zh="商业发票、装箱单、形式发票和出口报关单草稿。",
            api_range=">=1.3,<2.0",
            category="customs",
            scopes=("records:read", "records:write", "files:write", "events:emit"),
        )
    )


def document_generator(kind: str) -> Callable[[PluginContext, Mapping[str, Any], str], Document]:
    """The generator of document ``kind``: checks the record for that kind, then renders it."""

    def generate(context: PluginContext, values: Mapping[str, Any], format: str) -> Document:
        order = read_order(values, context.config, (kind,))
        font = find_font(context.config) if format == "pdf" else None
        return render(kind, order, format, font)

    generate.__name__ = f"generate_{kind}"
    return generate


@hookimpl
def guiju_document_kinds(register: RegisterDocumentKind) -> None:
    for kind in KINDS:
        register(kind, document_generator(kind), labels=LABELS[kind], formats=FORMATS, record_schema=ORDER_SCHEMA)


async def generate_documents(call: ActionCall) -> dict[str, Any]:
    """The action ``generate_documents``: see the module's docstring and docs/plugins/customs.md."""
    context = call.context
    if context is None:
        raise ActionFailed("generate_documents needs a host with plugin API 1.2 or later (a context)")
    record_id = str(call.input["record_id"])
    collection = call.input.get("collection")
    kinds = [kind for kind in KINDS if kind in (call.input.get("kinds") or KINDS)]
    documents_collection = str(context.config.get("documents_collection") or DEFAULT_DOCUMENTS_COLLECTION)

    values = call.input.get("order")
    if values is None:
        values = await _read_values(context, str(collection), record_id)
    order = read_order(values, context.config, kinds)
    font = find_font(context.config)
    try:
        # Refused before anything is made or stored: the documents have nowhere to go.
        await context.read_records(documents_collection, limit=1)
    except ScopeDenied as exc:
        raise ActionFailed(
            f"the documents collection {documents_collection!r} is not granted to the plugin: "
            "create it and grant it, or name another in the setting documents_collection"
        ) from exc

    # One version per kind per regeneration, the same for its PDF and XLSX; a retried action gets
    # the same numbers back (the idempotency key).
    versions = {
        kind: await context.next_number(f"document:{record_id}:{kind}", key=call.idempotency_key) for kind in kinds
    }
    # Nothing is stored until every document is made.
    rendered = await asyncio.to_thread(render_set, order, kinds, font, versions)

    generated_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    documents: list[dict[str, Any]] = []
    for (kind, format), document in zip(((k, f) for k in kinds for f in FORMATS), rendered, strict=True):
        stored = await context.store_file(document.filename, document.content, document.content_type)
        values_written = {
            "source_record": record_id,
            "kind": kind,
            "format": format,
            # "version" is every record's own revision number: the document's is a field of its own.
            "document_version": versions[kind],
            "file": stored.id,
            "filename": document.filename,
            "generated_at": generated_at,
        }
        record = await _write_document_record(context, documents_collection, values_written)
        documents.append(
            {
                "kind": kind,
                "format": format,
                "version": versions[kind],
                "file_id": stored.id,
                "filename": document.filename,
                "size": stored.size,
                "document_record_id": str(record["id"]),
            }
        )
    file_ids = [document["file_id"] for document in documents]
    version = max(versions.values())
    await context.emit_event(
        EVENT,
        {
            "record_id": record_id,
            "collection": collection,
            "order_number": order.order_number,
            "version": version,
            "versions": versions,
            "kinds": kinds,
            "file_ids": file_ids,
            "documents": documents,
        },
    )
    context.log.info("generated %s for %s (version %s)", ", ".join(kinds), record_id, version)
    return {
        "record_id": record_id,
        "version": version,
        "versions": versions,
        "kinds": kinds,
        "file_ids": file_ids,
        "documents": documents,
    }


async def _read_values(context: PluginContext, collection: str, record_id: str) -> Mapping[str, Any]:
    try:
        record = await context.read_record(collection, record_id)
    except ScopeDenied as exc:
        raise ActionFailed(f"the collection {collection!r} is not granted to the plugin: {exc}") from exc
    if record is None:
        raise ActionFailed(f"no record {record_id} in the collection {collection!r}")
    values = record.get("values")
    if not isinstance(values, Mapping):
        raise ActionFailed(f"the record {record_id} has no values")
    return values


async def _write_document_record(context: PluginContext, collection: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Create the document's record, or update the one a previous try of the same action wrote."""
    where = {key: values[key] for key in ("source_record", "kind", "format", "document_version")}
    try:
        existing = await context.read_records(collection, where=where, limit=1)
        record_id = str(existing[0]["id"]) if existing else None
        return await context.write_record(collection, values, record_id=record_id)
    except RecordRejected as exc:
        listed = "; ".join(f"{p.get('pointer', '')}: {p.get('message', '')}" for p in exc.problems) or str(exc)
        raise ActionFailed(
            f"the documents collection {collection!r} refused the document record ({listed}); "
            "it needs the fields source_record, kind, format, version, file, filename and generated_at"
        ) from exc


@hookimpl
def guiju_actions(register: RegisterAction) -> None:
    register(
        ACTION,
        generate_documents,
        labels={"zh-CN": "生成报关及出口单据", "en": "Generate export documents"},
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        time_limit_ms=120_000,
    )


@hookimpl
def guiju_triggers(register: RegisterTrigger) -> None:
    register(
        EVENT,
        labels={"zh-CN": "出口单据已生成", "en": "Export documents generated"},
        payload_schema=EVENT_SCHEMA,
    )


@hookimpl
def guiju_settings_schema(register: RegisterSettingsSchema) -> None:
    register(SETTINGS_SCHEMA)


@hookimpl
def guiju_health_check(context: PluginContext, register: RegisterHealth) -> None:
    problems: list[str] = []
    try:
        font = find_font(context.config)
    except FontMissing as exc:
        problems.append(str(exc))
    uscc = str(context.config.get("exporter_uscc") or "")
    if uscc and (message := uscc_problem(uscc)):
        problems.append(f"exporter_uscc: {message}")
    if problems:
        register(Health(False, "; ".join(problems)))
    else:
        register(Health(True, f"PDF font: {font.path}"))
