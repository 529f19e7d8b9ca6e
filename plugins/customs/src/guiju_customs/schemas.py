"""The JSON Schemas the plugin registers: the order record, the action's input and output, the
event's payload and the settings."""

from __future__ import annotations

from typing import Any

from guiju_customs.order import KINDS

_TEXT: dict[str, Any] = {"type": "string"}
#: A number, a numeric string, or a money value of the records API (minor units).
_AMOUNT: dict[str, Any] = {
    "oneOf": [
        {"type": "number"},
        {"type": "string"},
        {
            "type": "object",
            "properties": {"amount": {"type": "integer"}, "currency": {"type": "string"}},
            "required": ["amount"],
        },
    ]
}


def _text(description: str) -> dict[str, Any]:
    return {**_TEXT, "description": description}


def _amount(description: str) -> dict[str, Any]:
    return {**_AMOUNT, "description": description}


LINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hs_code": _text("HS code: 10 digits (商品编号) for the declaration, otherwise 6 to 10"),
        "name_zh": _text("商品名称: the goods' Chinese name (required by the declaration)"),
        "name_en": _text("The goods' English description (invoices)"),
        "declared_elements": _text("申报要素 / 规格型号: the declared elements, e.g. 品牌|型号|用途"),
        "quantity": _amount("Quantity, more than 0"),
        "unit": _text("Unit of quantity, e.g. 台, 件, 千克, PCS"),
        "unit_price": _amount("Unit price in the order's currency"),
        "amount": _amount("Line amount: quantity × unit price to the cent (computed when absent)"),
        "currency": _text("The line's currency, if recorded: must be the order's"),
        "net_weight_kg": _amount("Net weight in kg"),
        "gross_weight_kg": _amount("Gross weight in kg, at least the net weight"),
        "packages": {"type": ["integer", "number", "string"], "description": "Packages of this line"},
        "origin_country": _text("原产国: ISO 3166-1 code (default the order's)"),
        "destination_country": _text("最终目的国: ISO 3166-1 code (default the order's)"),
        "source_region": _text("境内货源地, e.g. 深圳特区"),
    },
}

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The values of an order or shipment record",
    "properties": {
        "order_number": _text("Order number; also the invoice and contract number unless given"),
        "invoice_number": _text("Invoice number"),
        "contract_number": _text("合同协议号"),
        "order_date": _text("Order/invoice date, YYYY-MM-DD"),
        "consignor_name_zh": _text("境内发货人 (Chinese name); default: the exporter setting"),
        "consignor_name_en": _text("Consignor's English name; default: the exporter setting"),
        "consignor_address": _text("Consignor's address; default: the exporter setting"),
        "consignor_uscc": _text("Consignor's 18-character unified social credit code"),
        "consignee_name": _text("境外收货人"),
        "consignee_name_zh": _text("Consignee's Chinese name, if any"),
        "consignee_address": _text("Consignee's address"),
        "consignee_country": _text("Consignee's country, ISO 3166-1 (DE or DEU)"),
        "customs_broker": _text("申报单位; default: the setting"),
        "currency": _text("ISO 4217 currency of every amount"),
        "incoterm": _text("Incoterm (FOB, CIF, CFR, EXW, ...); 成交方式"),
        "incoterm_place": _text("The Incoterm's named place"),
        "freight": _amount("运费"),
        "insurance": _amount("保费"),
        "trade_mode": _text("监管方式 (trade mode), default 0110 一般贸易"),
        "transport_mode": _text("运输方式: 2 水路, 3 铁路, 4 公路, 5 航空, 6 邮件, 9 其他 (or sea, rail, road, air)"),
        "transport_name": _text("运输工具名称及航次号"),
        "bill_of_lading": _text("提运单号"),
        "exit_customs": _text("出境关别"),
        "export_date": _text("出口日期, YYYY-MM-DD"),
        "declaration_date": _text("申报日期, YYYY-MM-DD"),
        "departure_port": _text("离境口岸 / port of loading; default: the setting"),
        "destination_port": _text("指运港 / port of destination"),
        "destination_country": _text("运抵国, ISO 3166-1 (default the consignee's country)"),
        "trade_country": _text("贸易国, ISO 3166-1 (default the consignee's country)"),
        "origin_country": _text("原产国, ISO 3166-1 (default CN)"),
        "packages": {"type": ["integer", "number", "string"], "description": "件数, more than 0"},
        "package_kind": _text("包装种类, e.g. 纸制或纤维板制盒/箱"),
        "net_weight_kg": _amount("Total net weight (default: the lines' sum)"),
        "gross_weight_kg": _amount("Total gross weight (default: the lines' sum)"),
        "total_amount": _amount("Document total: must equal the sum of the line amounts"),
        "marks": _text("唛头 / shipping marks (default N/M)"),
        "remarks": _text("备注"),
        "payment_terms": _text("Payment terms"),
        "valid_until": _text("Proforma invoice validity, YYYY-MM-DD"),
        "lines": {"type": "array", "items": LINE_SCHEMA, "description": "The lines of goods"},
    },
}

_KIND_LIST: dict[str, Any] = {"type": "array", "items": {"enum": list(KINDS)}, "uniqueItems": True}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "record_id": {"type": "string", "minLength": 1, "description": "The order/shipment record"},
        "collection": {"type": "string", "minLength": 1, "description": "Its collection (key), to read it"},
        "order": {**ORDER_SCHEMA, "description": "The order's values, instead of reading the record"},
        "kinds": {**_KIND_LIST, "minItems": 1, "description": "The documents to make (default: all four)"},
    },
    "required": ["record_id"],
    "anyOf": [{"required": ["collection"]}, {"required": ["order"]}],
    "additionalProperties": False,
}

DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"enum": list(KINDS)},
        "format": {"enum": ["pdf", "xlsx"]},
        "version": {"type": "integer", "minimum": 1},
        "file_id": {"type": "string"},
        "filename": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "document_record_id": {"type": "string"},
    },
    "required": ["kind", "format", "version", "file_id", "filename", "size", "document_record_id"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "record_id": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "versions": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "kinds": _KIND_LIST,
        "file_ids": {"type": "array", "items": {"type": "string"}},
        "documents": {"type": "array", "items": DOCUMENT_SCHEMA},
    },
    "required": ["record_id", "version", "versions", "kinds", "file_ids", "documents"],
    "additionalProperties": False,
}

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "record_id": {"type": "string"},
        "collection": {"type": ["string", "null"]},
        "order_number": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "versions": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "kinds": _KIND_LIST,
        "file_ids": {"type": "array", "items": {"type": "string"}},
        "documents": {"type": "array", "items": DOCUMENT_SCHEMA},
    },
    "required": ["record_id", "order_number", "version", "versions", "kinds", "file_ids", "documents"],
}

DEFAULT_DOCUMENTS_COLLECTION = "customs_documents"

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "documents_collection": {
            "type": "string",
            "title": "Documents collection",
            "description": "Key of the granted collection that receives one record per generated file",
            "default": DEFAULT_DOCUMENTS_COLLECTION,
            "minLength": 1,
        },
        "exporter_name_zh": {"type": "string", "title": "Exporter name (Chinese) 境内发货人"},
        "exporter_name_en": {"type": "string", "title": "Exporter name (English)"},
        "exporter_address": {"type": "string", "title": "Exporter address"},
        "exporter_uscc": {
            "type": "string",
            "title": "Exporter unified social credit code 统一社会信用代码",
            "pattern": "^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$",
        },
        "customs_broker": {"type": "string", "title": "Customs broker 申报单位"},
        "default_departure_port": {"type": "string", "title": "Default port of departure 离境口岸"},
        "font_path": {
            "type": "string",
            "title": "CJK font path",
            "description": "A .ttf/.otf/.ttc font with Chinese glyphs on the server, instead of the default",
        },
    },
    "additionalProperties": False,
}
