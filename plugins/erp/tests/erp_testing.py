"""Helpers of the erp plugin's tests: the tenant's settings, a fake context with its collections, a
harness that checks every action's input and output against its schemas, and an order.

(A module of its own, not conftest: every plugin's tests have a conftest, and the repository's
suite runs them together.)"""

from __future__ import annotations

import copy
from typing import Any

from erp_odoo_fake import API_KEY, DATABASE, LOGIN, FakeOdoo
from guiju_sdk.testing import FakeContext, PluginHarness, send_for_real
from jsonschema import Draft202012Validator

#: A Hong Kong trading company (no VAT, sells in USD) and a mainland company (13% VAT, CNY).
ENTITIES: list[dict[str, Any]] = [
    {
        "code": "HK",
        "name": "Acme Trading (HK) Limited",
        "currency": "USD",
        "tax_rate": 0,
        "receivable_prefix": "HK-INV",
        "payable_prefix": "HK-AP",
        "payment_terms_days": 30,
    },
    {
        "code": "SZ",
        "name": "深圳市艾克美贸易有限公司",
        "currency": "CNY",
        "tax_rate": 0.13,
        "receivable_prefix": "SZ-INV",
        "payable_prefix": "SZ-AP",
        "payment_terms_days": 60,
        "odoo_sale_tax_id": 1,
        "odoo_purchase_tax_id": 2,
    },
]
CONFIG: dict[str, Any] = {"entities": ENTITIES, "timezone": "Asia/Shanghai"}


def erp_context(config: dict[str, Any] | None = None, **kwargs: Any) -> FakeContext:
    """A tenant's context: the invoices collection keeps source_key unique, as the docs ask."""
    kwargs.setdefault("collections", {"invoices": [], "payments": [], "orders": []})
    return FakeContext(
        plugin="erp",
        config=copy.deepcopy(config if config is not None else CONFIG),
        unique_fields={"invoices": ("source_key",)},
        **kwargs,
    )


class CheckedHarness(PluginHarness):
    """The harness, checking input and output against the action's schemas as the host does."""

    async def run_action(self, name: str, input: dict[str, Any], context: FakeContext | None = None) -> Any:
        action = self.registrations.actions[name]
        if action.input_schema is not None:
            errors = [e.message for e in Draft202012Validator(action.input_schema).iter_errors(input)]
            assert errors == [], f"input refused by {name}'s schema: {errors}"
        output = await super().run_action(name, input, context)
        if action.output_schema is not None:
            errors = [e.message for e in Draft202012Validator(action.output_schema).iter_errors(output)]
            assert errors == [], f"output refused by {name}'s schema: {errors}"
        return output

    async def poll_trigger(self, name: str, context: FakeContext | None = None) -> list[dict[str, Any]]:
        events = await super().poll_trigger(name, context)
        schema = self.registrations.triggers[name].payload_schema
        for event in events:
            errors = [e.message for e in Draft202012Validator(schema or {}).iter_errors(event)]
            assert errors == [], f"payload refused by {name}'s schema: {errors}"
        return events


def sample_order(**changes: Any) -> dict[str, Any]:
    """Order SO-1001: HK sells to a German customer in USD; SZ buys the goods from two mainland
    suppliers in CNY (13% VAT), HK buys the packaging in Hong Kong."""
    order: dict[str, Any] = {
        "id": "rec-so-1001",
        "number": "SO-1001",
        "customer": {"name": "Globex GmbH", "ref": "C-GLOBEX"},
        "entity": "HK",
        "currency": "USD",
        "date": "2026-03-10",
        "lines": [
            {
                "line_id": "L1",
                "description": "Widget, blue",
                "sku": "W-1",
                "quantity": 100,
                "unit_price": "12.345",
                "supplier": {"name": "东莞小部件厂", "ref": "S-DG"},
                "unit_cost": 61.5,
                "cost_currency": "CNY",
                "purchasing_entity": "SZ",
            },
            {
                "line_id": "L2",
                "description": "Gadget",
                "quantity": 3,
                "unit_price": 199.99,
                "supplier": {"name": "东莞小部件厂", "ref": "S-DG"},
                "unit_cost": "800",
                "cost_currency": "CNY",
                "purchasing_entity": "SZ",
            },
            {
                "line_id": "L3",
                "description": "Gift boxes",
                "quantity": 50,
                "unit_price": 0.5,
                "supplier": "Kowloon Packaging Co",
                "unit_cost": 2.1,
                "cost_currency": "HKD",
            },
        ],
    }
    order.update(changes)
    return order


forward = send_for_real  # FakeContext's http_handler: the plugin's requests, sent for real to the local server


def odoo_context(odoo: FakeOdoo, *, api_key: str = API_KEY, **config: Any) -> FakeContext:
    """A tenant whose Odoo is the local server."""
    settings = {
        **CONFIG,
        "odoo_url": odoo.url,
        "odoo_database": DATABASE,
        "odoo_username": LOGIN,
        "odoo_timeout_seconds": 5,
        **config,
    }
    return erp_context(settings, secrets={"odoo_api_key": api_key}, hosts={"127.0.0.1"}, http_handler=forward)
