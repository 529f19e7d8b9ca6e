"""The hooks of the built-in plugin erp: multi-entity invoicing, reconciliation, Odoo and exports.

What each action does is in its module: :mod:`guiju_erp.invoicing`, :mod:`guiju_erp.reconciliation`,
:mod:`guiju_erp.export`, :mod:`guiju_erp.odoo`. Tenant admins: docs/plugins/erp.md.
"""

from __future__ import annotations

from guiju_sdk import (
    Health,
    PluginContext,
    PluginInfo,
    Register,
    RegisterAction,
    RegisterHealth,
    RegisterSettingsSchema,
    RegisterTrigger,
    hookimpl,
)

from guiju_erp import export, invoicing, odoo, reconciliation
from guiju_erp.records import INVOICE_SUMMARY_SCHEMA
from guiju_erp.settings import SETTINGS_SCHEMA, settings_problems

# http:* because each tenant's Odoo lives on its own host (acme.odoo.com, erp.example.cn, …),
# which no manifest can list in advance; the host still refuses private and loopback addresses.
SCOPES = ("records:read", "records:write", "files:write", "events:emit", "http:*")


@hookimpl
def guiju_plugin_info(register: Register) -> None:
    register(
        PluginInfo(
            name="erp",
            version="1.0.0",
            publisher="Guiju",
            summary_en="Multi-entity invoicing, reconciliation, Odoo sync and accounting export.",
            summary_zh="多主体开票、对账、Odoo 同步与会计导出。",
            api_range=">=1.3,<2.0",
            category="erp",
            scopes=SCOPES,
        )
    )


@hookimpl
def guiju_actions(register: RegisterAction) -> None:
    register(
        "generate_invoices",
        invoicing.generate_invoices,
        labels={"zh-CN": "由订单生成应收应付发票", "en": "Generate invoices from an order"},
        input_schema=invoicing.INPUT_SCHEMA,
        output_schema=invoicing.OUTPUT_SCHEMA,
        time_limit_ms=60_000,
    )
    register(
        "reconcile",
        reconciliation.reconcile,
        labels={"zh-CN": "核销对账", "en": "Reconcile invoices and payments"},
        input_schema=reconciliation.INPUT_SCHEMA,
        output_schema=reconciliation.OUTPUT_SCHEMA,
        time_limit_ms=120_000,
    )
    register(
        "export_accounting",
        export.export_accounting,
        labels={"zh-CN": "导出发票与记账凭证", "en": "Export invoices and vouchers"},
        input_schema=export.INPUT_SCHEMA,
        output_schema=export.OUTPUT_SCHEMA,
        time_limit_ms=120_000,
    )
    register(
        "odoo_upsert_partners",
        odoo.upsert_partners,
        labels={"zh-CN": "同步往来单位到 Odoo", "en": "Upsert partners in Odoo"},
        input_schema=odoo.UPSERT_PARTNERS_INPUT,
        output_schema=odoo.UPSERT_PARTNERS_OUTPUT,
        time_limit_ms=120_000,
    )
    register(
        "odoo_push_sale_order",
        odoo.push_sale_order,
        labels={"zh-CN": "推送销售订单到 Odoo", "en": "Push a sale order to Odoo"},
        input_schema=odoo.PUSH_SALE_ORDER_INPUT,
        output_schema=odoo.PUSH_SALE_ORDER_OUTPUT,
        time_limit_ms=120_000,
    )
    register(
        "odoo_push_invoices",
        odoo.push_invoices,
        labels={"zh-CN": "推送发票到 Odoo", "en": "Push invoices to Odoo"},
        input_schema=odoo.PUSH_INVOICES_INPUT,
        output_schema=odoo.PUSH_INVOICES_OUTPUT,
        time_limit_ms=300_000,
    )
    register(
        "odoo_sync_payments",
        odoo.sync_payments,
        labels={"zh-CN": "从 Odoo 读取收付款状态", "en": "Read payment states from Odoo"},
        input_schema=odoo.SYNC_PAYMENTS_INPUT,
        output_schema=odoo.SYNC_PAYMENTS_OUTPUT,
        time_limit_ms=120_000,
    )


@hookimpl
def guiju_triggers(register: RegisterTrigger) -> None:
    register(
        "invoice_overdue",
        labels={"zh-CN": "发票逾期", "en": "Invoice overdue"},
        payload_schema=reconciliation.PAYLOAD_SCHEMA,
        poll=reconciliation.poll_overdue,
        poll_seconds=3600,
    )
    register(
        "invoice_created",
        labels={"zh-CN": "发票已生成", "en": "Invoice created"},
        payload_schema={
            **INVOICE_SUMMARY_SCHEMA,
            "properties": {
                **{k: v for k, v in INVOICE_SUMMARY_SCHEMA["properties"].items() if k != "created"},
                "order_id": {"type": "string"},
                "order_number": {"type": "string"},
            },
            "required": [r for r in INVOICE_SUMMARY_SCHEMA["required"] if r != "created"],
        },
    )


@hookimpl
def guiju_settings_schema(register: RegisterSettingsSchema) -> None:
    register(SETTINGS_SCHEMA)


@hookimpl
async def guiju_health_check(context: PluginContext, register: RegisterHealth) -> None:
    settings, problems = settings_problems(context.config)
    if settings is None:
        register(Health(False, "Fix the settings: " + "; ".join(problems)))
        return
    odoo_ok, odoo_message = await odoo.check_odoo(context)
    entities = ", ".join(settings.entities)
    message = f"Entities {entities} configured" + (f"; {odoo_message}" if odoo_message else "")
    register(Health(odoo_ok, message))
