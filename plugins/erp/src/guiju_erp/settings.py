"""The tenant's configuration of the plugin: its entities, collections, accounts and Odoo connection.

The host checks the configuration against :data:`SETTINGS_SCHEMA` when an admin saves it; the
plugin reads it again through :func:`load_settings`, which lists every problem (an old
configuration, or one the schema cannot judge: duplicate codes or prefixes, an unknown time zone).
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from guiju_sdk import ActionFailed, PluginContext

from guiju_erp.money import is_currency, to_decimal

DEFAULT_INVOICES_COLLECTION = "invoices"
DEFAULT_PAYMENTS_COLLECTION = "payments"
DEFAULT_TIMEZONE = "Asia/Shanghai"
ODOO_API_KEY = "odoo_api_key"
DEFAULT_ODOO_TIMEOUT = 30

#: The accounts of the vouchers, by role: (code, name), defaults from the Chinese accounting
#: standards' chart of accounts (企业会计准则).
DEFAULT_ACCOUNTS: dict[str, tuple[str, str]] = {
    "receivable": ("1122", "应收账款"),
    "revenue": ("6001", "主营业务收入"),
    "output_tax": ("22210102", "应交税费-应交增值税(销项税额)"),
    "payable": ("2202", "应付账款"),
    "cost": ("6401", "主营业务成本"),
    "input_tax": ("22210101", "应交税费-应交增值税(进项税额)"),
}
_ACCOUNT_TITLES = {
    "receivable": "Accounts receivable (应收账款)",
    "revenue": "Revenue (主营业务收入)",
    "output_tax": "Output VAT (销项税额)",
    "payable": "Accounts payable (应付账款)",
    "cost": "Cost of sales (主营业务成本)",
    "input_tax": "Input VAT (进项税额)",
}

_ENTITY_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_/-]{0,31}")
_COLLECTION_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class Entity:
    """One of the tenant's companies: it sells, buys and keeps its own invoice sequences."""

    code: str
    name: str
    currency: str
    tax_rate: Decimal
    receivable_prefix: str
    payable_prefix: str
    payment_terms_days: int
    odoo_company_id: int | None = None
    odoo_sale_tax_id: int | None = None
    odoo_purchase_tax_id: int | None = None


@dataclass(frozen=True)
class Account:
    """An account of the chart: its code and name, as the accounting software knows them."""

    code: str
    name: str


@dataclass(frozen=True)
class OdooSettings:
    """How to reach the tenant's Odoo (all four are needed)."""

    url: str
    database: str
    username: str
    api_key: str
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Settings:
    """The tenant's configuration, checked."""

    entities: dict[str, Entity]
    invoices_collection: str
    payments_collection: str
    accounts: dict[str, Account]
    timezone: zoneinfo.ZoneInfo
    odoo_default_product_id: int | None

    def entity(self, code: str) -> Entity | None:
        """The entity ``code`` (``None`` when the tenant has none of that code)."""
        return self.entities.get(code)

    def today(self) -> dt.date:
        """Today's date in the tenant's time zone."""
        return dt.datetime.now(self.timezone).date()


def _optional_int(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{where}.{key} must be a positive whole number (an Odoo record id), not {value!r}")
        return None
    return value


def _entity(raw: Any, index: int, problems: list[str]) -> Entity | None:
    where = f"entities[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be an object with code, name, currency and tax_rate")
        return None
    before = len(problems)
    code = raw.get("code")
    if not isinstance(code, str) or not _ENTITY_CODE.fullmatch(code):
        problems.append(f"{where}.code must be 1-32 letters, digits, '-' or '_' (e.g. HK), not {code!r}")
        code = f"#{index}"
    where = f"entity {code}"
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name is required (the company's legal name)")
    currency = raw.get("currency")
    if not is_currency(currency):
        problems.append(f"{where}: currency must be a three-letter ISO 4217 code (e.g. HKD, CNY), not {currency!r}")
    tax_rate = to_decimal(raw.get("tax_rate", 0))
    if tax_rate is None or not Decimal(0) <= tax_rate < 1:
        problems.append(
            f"{where}: tax_rate must be a fraction from 0 up to 1 (0.13 for 13%), not {raw.get('tax_rate')!r}"
        )
    receivable_prefix = raw.get("receivable_prefix") or f"{code}-INV"
    payable_prefix = raw.get("payable_prefix") or f"{code}-AP"
    for key, prefix in (("receivable_prefix", receivable_prefix), ("payable_prefix", payable_prefix)):
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            problems.append(f"{where}: {key} must be 1-32 letters, digits, '-', '_' or '/', not {prefix!r}")
    terms = raw.get("payment_terms_days", 30)
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= 3650:
        problems.append(f"{where}: payment_terms_days must be a whole number of days from 0 to 3650, not {terms!r}")
    company = _optional_int(raw, "odoo_company_id", where, problems)
    sale_tax = _optional_int(raw, "odoo_sale_tax_id", where, problems)
    purchase_tax = _optional_int(raw, "odoo_purchase_tax_id", where, problems)
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(currency, str) and tax_rate is not None
    return Entity(
        code=str(code),
        name=name.strip(),
        currency=currency,
        tax_rate=tax_rate,
        receivable_prefix=str(receivable_prefix),
        payable_prefix=str(payable_prefix),
        payment_terms_days=int(terms),
        odoo_company_id=company,
        odoo_sale_tax_id=sale_tax,
        odoo_purchase_tax_id=purchase_tax,
    )


def settings_problems(config: Mapping[str, Any]) -> tuple[Settings | None, list[str]]:
    """The configuration checked: the settings, or ``None`` and every problem found."""
    problems: list[str] = []
    raw_entities = config.get("entities") or []
    entities: dict[str, Entity] = {}
    if not isinstance(raw_entities, list) or not raw_entities:
        problems.append("entities: add at least one entity (one of your companies: code, name, currency, tax_rate)")
        raw_entities = raw_entities if isinstance(raw_entities, list) else []
    prefixes: dict[str, str] = {}
    for index, raw in enumerate(raw_entities):
        entity = _entity(raw, index, problems)
        if entity is None:
            continue
        if entity.code in entities:
            problems.append(f"entity {entity.code} is listed twice: codes must be unique")
            continue
        entities[entity.code] = entity
        # Invoice numbers identify invoices (payments name them), so no two sequences may share a prefix.
        for kind, prefix in (("receivable", entity.receivable_prefix), ("payable", entity.payable_prefix)):
            owner = f"{kind} prefix of entity {entity.code}"
            if prefix in prefixes:
                problems.append(f"the {owner} is {prefix!r}, already the {prefixes[prefix]}: prefixes must differ")
            prefixes[prefix] = owner
    collections: dict[str, str] = {}
    for key, default in (
        ("invoices_collection", DEFAULT_INVOICES_COLLECTION),
        ("payments_collection", DEFAULT_PAYMENTS_COLLECTION),
    ):
        value = config.get(key) or default
        if not isinstance(value, str) or not _COLLECTION_KEY.fullmatch(value):
            problems.append(f"{key} must be a collection key (lower_snake_case), not {value!r}")
        collections[key] = str(value)
    if collections["invoices_collection"] == collections["payments_collection"]:
        problems.append("invoices_collection and payments_collection must be two different collections")
    accounts: dict[str, Account] = {}
    raw_accounts = config.get("accounts") or {}
    if not isinstance(raw_accounts, Mapping):
        problems.append("accounts must be an object of account codes and names")
        raw_accounts = {}
    for role, (default_code, default_name) in DEFAULT_ACCOUNTS.items():
        raw_account = raw_accounts.get(role) or {}
        if not isinstance(raw_account, Mapping):
            problems.append(f"accounts.{role} must be an object with code and name")
            continue
        code = raw_account.get("code") or default_code
        name = raw_account.get("name") or (default_name if code == default_code else "")
        if not isinstance(code, str) or not code.strip() or not isinstance(name, str):
            problems.append(f"accounts.{role}: code must be text (e.g. {default_code}) and name text")
            continue
        accounts[role] = Account(code.strip(), name.strip())
    timezone_name = config.get("timezone") or DEFAULT_TIMEZONE
    timezone = zoneinfo.ZoneInfo("UTC")
    try:
        timezone = zoneinfo.ZoneInfo(str(timezone_name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone {timezone_name!r} is not a known time zone (e.g. Asia/Shanghai, Asia/Hong_Kong)")
    product = _optional_int(config, "odoo_default_product_id", "settings", problems)
    if problems:
        return None, problems
    return Settings(
        entities=entities,
        invoices_collection=collections["invoices_collection"],
        payments_collection=collections["payments_collection"],
        accounts=accounts,
        timezone=timezone,
        odoo_default_product_id=product,
    ), []


def load_settings(context: PluginContext) -> Settings:
    """The tenant's settings; :class:`ActionFailed` (permanent) listing every problem when they are wrong."""
    settings, problems = settings_problems(context.config)
    if settings is None:
        raise ActionFailed("The erp plugin's settings need fixing: " + "; ".join(problems))
    return settings


def odoo_settings(context: PluginContext) -> tuple[OdooSettings | None, list[str]]:
    """The Odoo connection, ``None`` when none is configured, and the problems of a partial one."""
    config = context.config
    values = {
        "odoo_url": str(config.get("odoo_url") or "").strip().rstrip("/"),
        "odoo_database": str(config.get("odoo_database") or "").strip(),
        "odoo_username": str(config.get("odoo_username") or "").strip(),
        ODOO_API_KEY: (context.secret(ODOO_API_KEY) or "").strip(),
    }
    if not any(values.values()):
        return None, []
    problems = [f"{key} is not set" for key, value in values.items() if not value]
    url = values["odoo_url"]
    if url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        problems.append(f"odoo_url must be the address of the Odoo server, like https://acme.odoo.com, not {url!r}")
    timeout = to_decimal(config.get("odoo_timeout_seconds", DEFAULT_ODOO_TIMEOUT))
    if timeout is None or not 1 <= timeout <= 120:
        problems.append(f"odoo_timeout_seconds must be from 1 to 120, not {config.get('odoo_timeout_seconds')!r}")
    if problems:
        return None, problems
    assert timeout is not None
    database, username = values["odoo_database"], values["odoo_username"]
    return OdooSettings(url, database, username, values[ODOO_API_KEY], float(timeout)), []


def require_odoo(context: PluginContext) -> OdooSettings:
    """The Odoo connection; :class:`ActionFailed` (permanent) when it is not fully configured."""
    odoo, problems = odoo_settings(context)
    if odoo is None:
        missing = problems or ["odoo_url, odoo_database, odoo_username and odoo_api_key are not set"]
        raise ActionFailed("Odoo is not configured in the erp plugin's settings: " + "; ".join(missing))
    return odoo


def _account_schema(role: str) -> dict[str, Any]:
    code, name = DEFAULT_ACCOUNTS[role]
    return {
        "type": "object",
        "title": _ACCOUNT_TITLES[role],
        "properties": {
            "code": {"type": "string", "title": "Account code", "default": code},
            "name": {"type": "string", "title": "Account name", "default": name},
        },
        "additionalProperties": False,
    }


SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ERP",
    "properties": {
        "entities": {
            "type": "array",
            "title": "Entities",
            "description": "Your companies (e.g. a Hong Kong trading company and a mainland company). "
            "Each issues and receives invoices in its own number sequences.",
            "items": {
                "type": "object",
                "properties": {
                    "code": {
                        "type": "string",
                        "title": "Code",
                        "description": "Short code orders name the entity by, e.g. HK or SZ.",
                        "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$",
                    },
                    "name": {"type": "string", "title": "Legal name", "minLength": 1},
                    "currency": {
                        "type": "string",
                        "title": "Currency",
                        "description": "Default invoice currency (ISO 4217, e.g. HKD, CNY, USD).",
                        "pattern": "^[A-Z]{3}$",
                    },
                    "tax_rate": {
                        "type": "number",
                        "title": "Standard tax rate",
                        "description": "As a fraction: 0.13 for 13% VAT, 0 for none.",
                        "minimum": 0,
                        "exclusiveMaximum": 1,
                    },
                    "receivable_prefix": {
                        "type": "string",
                        "title": "Sales invoice prefix",
                        "description": "Sales invoices are numbered PREFIX-YEAR-00001 (default CODE-INV).",
                    },
                    "payable_prefix": {
                        "type": "string",
                        "title": "Purchase invoice prefix",
                        "description": "Supplier invoices are booked as PREFIX-YEAR-00001 (default CODE-AP).",
                    },
                    "payment_terms_days": {
                        "type": "integer",
                        "title": "Payment terms (days)",
                        "description": "Days from the invoice date to its due date.",
                        "minimum": 0,
                        "maximum": 3650,
                        "default": 30,
                    },
                    "odoo_company_id": {
                        "type": "integer",
                        "title": "Odoo company id",
                        "description": "In a multi-company Odoo, the id of this entity's company.",
                        "minimum": 1,
                    },
                    "odoo_sale_tax_id": {
                        "type": "integer",
                        "title": "Odoo sales tax id",
                        "description": "The Odoo tax matching the standard rate on sales (left off: no tax in Odoo).",
                        "minimum": 1,
                    },
                    "odoo_purchase_tax_id": {
                        "type": "integer",
                        "title": "Odoo purchase tax id",
                        "description": "The Odoo tax matching the standard rate on purchases.",
                        "minimum": 1,
                    },
                },
                "required": ["code", "name", "currency", "tax_rate"],
            },
        },
        "invoices_collection": {
            "type": "string",
            "title": "Invoices collection",
            "description": "Key of the collection that holds invoices (granted to the plugin).",
            "default": DEFAULT_INVOICES_COLLECTION,
        },
        "payments_collection": {
            "type": "string",
            "title": "Payments collection",
            "description": "Key of the collection where payments are recorded (granted to the plugin).",
            "default": DEFAULT_PAYMENTS_COLLECTION,
        },
        "accounts": {
            "type": "object",
            "title": "Voucher accounts",
            "description": "Account codes and names of the exported vouchers; the defaults follow the Chinese "
            "accounting standards.",
            "properties": {role: _account_schema(role) for role in DEFAULT_ACCOUNTS},
            "additionalProperties": False,
        },
        "timezone": {
            "type": "string",
            "title": "Time zone",
            "description": "Decides what 'today' is for due dates and overdue invoices.",
            "default": DEFAULT_TIMEZONE,
        },
        "odoo_url": {
            "type": "string",
            "title": "Odoo URL",
            "description": "Your Odoo's address, e.g. https://acme.odoo.com (leave empty without Odoo).",
        },
        "odoo_database": {
            "type": "string",
            "title": "Odoo database",
            "description": "The database name (shown in Odoo's database selector or Settings › About).",
        },
        "odoo_username": {
            "type": "string",
            "title": "Odoo user",
            "description": "The login (usually the e-mail) of the Odoo user the plugin acts as.",
        },
        ODOO_API_KEY: {
            "type": "string",
            "title": "Odoo API key",
            "description": "Made in Odoo under Preferences › Account Security › New API Key.",
            "writeOnly": True,
        },
        "odoo_timeout_seconds": {
            "type": "number",
            "title": "Odoo timeout (seconds)",
            "description": "How long to wait for one answer from Odoo before trying again later.",
            "minimum": 1,
            "maximum": 120,
            "default": DEFAULT_ODOO_TIMEOUT,
        },
        "odoo_default_product_id": {
            "type": "integer",
            "title": "Odoo default product id",
            "description": "Product used for sale order lines without a sku known to Odoo.",
            "minimum": 1,
        },
    },
}
