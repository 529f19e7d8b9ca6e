"""The Odoo connector, over Odoo's external JSON-RPC API (``POST {url}/jsonrpc``).

``common.authenticate(db, login, api_key, {})`` gives the user id; every call after it is
``object.execute_kw(db, uid, api_key, model, method, args, kwargs)``. Everything goes through
``context.http``: the tenant's Odoo is on its own host, hence the scope ``http:*``.

Every push is idempotent: what exists in Odoo is found first (a partner by ``ref``, a sale order by
``client_order_ref``, an invoice by ``ref`` and type), and the Odoo id is written on the invoice
record once known. Odoo's answers map to failures as follows: wrong credentials, access rights,
validation and user errors, unknown models or fields are permanent, with Odoo's own message; HTTP
429, 5xx, timeouts and database concurrency errors are retried; an answer that is not JSON-RPC
fails with a message saying so.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from guiju_sdk import ActionCall, ActionFailed, PluginContext, ScopeDenied

from guiju_erp.invoicing import INPUT_SCHEMA as ORDER_INPUT_SCHEMA
from guiju_erp.invoicing import Order, order_from_input, parse_order
from guiju_erp.money import ZERO, amount_of, as_json_number
from guiju_erp.records import Invoice, read_invoices, read_open_invoices
from guiju_erp.settings import Entity, OdooSettings, Settings, load_settings, odoo_settings, require_odoo

#: Seconds to wait before retrying when Odoo says neither how long nor when.
DEFAULT_RETRY_AFTER = 30.0
#: Odoo exceptions that a retry cannot fix; Odoo's message says what to change.
_PERMANENT_ODOO_ERRORS = ("ValidationError", "UserError", "MissingError", "RedirectWarning", "AccessError")
#: PostgreSQL concurrency errors Odoo gave up retrying itself: they pass with time.
_TRANSIENT_ODOO_ERRORS = ("SerializationFailure", "LockNotAvailable", "DeadlockDetected", "TransactionRollbackError")
#: Odoo's payment states as invoice statuses.
PAYMENT_STATES = {
    "not_paid": "unpaid",
    "partial": "partial",
    "in_payment": "paid",
    "paid": "paid",
    "reversed": "cancelled",
}
#: The statuses of invoices pushed to Odoo (all but cancelled).
PUSHED_STATUSES = ("unpaid", "partial", "paid", "overpaid")
_ids = itertools.count(1)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _retry_after(headers: Mapping[str, str]) -> float:
    value = _header(headers, "Retry-After")
    try:
        return max(1.0, float(value)) if value else DEFAULT_RETRY_AFTER
    except ValueError:  # an HTTP date: not worth parsing for a retry hint
        return DEFAULT_RETRY_AFTER


class OdooClient:
    """One tenant's Odoo, for one call into the plugin (authenticates once)."""

    def __init__(self, context: PluginContext, settings: OdooSettings) -> None:
        self.context = context
        self.settings = settings
        self.endpoint = f"{settings.url}/jsonrpc"
        self._uid: int | None = None
        self._currencies: dict[str, int | None] = {}

    async def rpc(self, service: str, method: str, args: list[Any], what: str) -> Any:
        """One JSON-RPC call; its ``result``, or :class:`ActionFailed` saying what failed and why."""
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(_ids),
        }
        try:
            response = await self.context.http(
                "POST",
                self.endpoint,
                json=payload,
                headers={"Accept": "application/json"},
                timeout_seconds=self.settings.timeout_seconds,
            )
        except ScopeDenied as exc:
            raise ActionFailed(f"{what}: Guiju may not reach {self.settings.url}: {exc}") from exc
        except ActionFailed:
            raise
        except Exception as exc:  # the host's network errors and timeouts: worth another try
            raise ActionFailed(
                f"{what}: Odoo at {self.settings.url} did not answer ({type(exc).__name__}: {exc})",
                retryable=True,
                retry_after=DEFAULT_RETRY_AFTER,
            ) from exc
        if response.status == 429 or response.status >= 500:
            raise ActionFailed(
                f"{what}: Odoo at {self.settings.url} answered HTTP {response.status}; trying again later",
                retryable=True,
                retry_after=_retry_after(response.headers),
            )
        if response.status != 200:
            raise ActionFailed(
                f"{what}: Odoo at {self.settings.url} answered HTTP {response.status} to {self.endpoint}: "
                "check odoo_url (the address you open Odoo at, without /web)"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ActionFailed(
                f"{what}: the answer from {self.endpoint} is not JSON (it starts {response.body[:60]!r}): "
                "check that odoo_url is your Odoo's address"
            ) from exc
        if not isinstance(body, Mapping):
            raise ActionFailed(f"{what}: the answer from {self.endpoint} is not a JSON-RPC response")
        if isinstance(body.get("error"), Mapping):
            raise self._fault(body["error"], what)
        if "result" not in body:
            raise ActionFailed(f"{what}: the answer from {self.endpoint} has neither result nor error")
        return body["result"]

    def _fault(self, error: Mapping[str, Any], what: str) -> ActionFailed:
        """The failure an Odoo error object stands for."""
        data = error.get("data") if isinstance(error.get("data"), Mapping) else {}
        assert isinstance(data, Mapping)
        name = str(data.get("name") or "")
        message = str(data.get("message") or error.get("message") or "no message").strip()
        short_name = name.rsplit(".", 1)[-1]
        if short_name == "AccessDenied":
            return ActionFailed(
                f"{what}: Odoo refused the credentials of {self.settings.username!r}: check odoo_username, "
                "odoo_api_key (a key from Preferences › Account Security) and odoo_database"
            )
        if short_name in _TRANSIENT_ODOO_ERRORS or "could not serialize access" in message:
            return ActionFailed(f"{what}: Odoo was busy ({message})", retryable=True, retry_after=DEFAULT_RETRY_AFTER)
        if "database" in message and "does not exist" in message:
            return ActionFailed(
                f"{what}: Odoo has no database {self.settings.database!r}: check odoo_database ({message})"
            )
        if short_name == "AccessError":
            return ActionFailed(f"{what}: the Odoo user {self.settings.username!r} may not do this: {message}")
        if short_name in _PERMANENT_ODOO_ERRORS:
            return ActionFailed(f"{what}: Odoo refused it: {message}")
        return ActionFailed(f"{what}: Odoo failed ({name or error.get('message') or 'error'}): {message}")

    async def authenticate(self) -> int:
        """The Odoo user id of the configured login; :class:`ActionFailed` when refused."""
        if self._uid is None:
            odoo = self.settings
            uid = await self.rpc(
                "common", "authenticate", [odoo.database, odoo.username, odoo.api_key, {}], "Logging in to Odoo"
            )
            if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
                raise ActionFailed(
                    f"Logging in to Odoo: Odoo refused the login {odoo.username!r} on database {odoo.database!r}: "
                    "check odoo_username, odoo_api_key (a key from Preferences › Account Security) and odoo_database"
                )
            self._uid = uid
        return self._uid

    async def execute(
        self, model: str, method: str, args: list[Any], kwargs: Mapping[str, Any] | None = None, *, what: str
    ) -> Any:
        """``model.method(*args, **kwargs)`` in Odoo, as the configured user."""
        uid = await self.authenticate()
        odoo = self.settings
        return await self.rpc(
            "object", "execute_kw", [odoo.database, uid, odoo.api_key, model, method, args, dict(kwargs or {})], what
        )

    async def search_one(self, model: str, domain: list[list[Any]], *, what: str) -> int | None:
        """The id of the first record matching ``domain``, or ``None``."""
        found = await self.execute(model, "search", [domain], {"limit": 1}, what=what)
        if not isinstance(found, list):
            raise ActionFailed(f"{what}: Odoo's search answered {found!r}, not a list of ids")
        return int(found[0]) if found else None

    async def create(self, model: str, values: Mapping[str, Any], *, what: str) -> int:
        """Create one record; its id."""
        created = await self.execute(model, "create", [dict(values)], what=what)
        if isinstance(created, list) and len(created) == 1:
            created = created[0]
        if isinstance(created, bool) or not isinstance(created, int):
            raise ActionFailed(f"{what}: Odoo's create answered {created!r}, not an id")
        return created

    async def upsert_partner(
        self, name: str, ref: str | None, extra: Mapping[str, Any] | None = None, *, update: bool = True
    ) -> tuple[int, bool]:
        """The partner with ``ref`` (or, without one, named ``name``): written when ``update``, created
        when missing. Returns its id and whether it was created."""
        what = f"Partner {ref or name}"
        domain = [["ref", "=", ref]] if ref else [["name", "=", name]]
        values: dict[str, Any] = {"name": name, **(extra or {})}
        if ref:
            values["ref"] = ref
        partner_id = await self.search_one("res.partner", domain, what=what)
        if partner_id is None:
            return await self.create("res.partner", values, what=what), True
        if update:
            await self.execute("res.partner", "write", [[partner_id], values], what=what)
        return partner_id, False

    async def currency_id(self, code: str, what: str) -> int:
        """The id of the active currency ``code`` (USD, CNY…)."""
        if code not in self._currencies:
            self._currencies[code] = await self.search_one("res.currency", [["name", "=", code]], what=what)
        currency = self._currencies[code]
        if currency is None:
            raise ActionFailed(f"{what}: Odoo has no active currency {code}: activate it under Accounting › Currencies")
        return currency


def _client(context: PluginContext) -> OdooClient:
    return OdooClient(context, require_odoo(context))


def _context(call: ActionCall) -> PluginContext:
    if call.context is None:
        raise ActionFailed("the Odoo actions need a host with plugin API 1.3 or later")
    return call.context


def _tax_ids(entity: Entity, rate: Decimal, kind: str, warnings: list[str], where: str) -> list[Any] | None:
    """The ``tax_ids`` command for a line at ``rate``: none at 0, the entity's mapped tax at its
    standard rate; ``None`` (Odoo's default) otherwise, with a warning."""
    if rate == 0:
        return [[6, 0, []]]
    tax_id = entity.odoo_sale_tax_id if kind == "receivable" else entity.odoo_purchase_tax_id
    if tax_id is not None and rate == entity.tax_rate:
        return [[6, 0, [tax_id]]]
    setting = "odoo_sale_tax_id" if kind == "receivable" else "odoo_purchase_tax_id"
    warnings.append(
        f"{where}: no Odoo tax for {rate * 100:g}% of entity {entity.code} (set {setting} for its standard rate): "
        "Odoo applies its default taxes"
    )
    return None


# --- actions -----------------------------------------------------------------------------------


async def upsert_partners(call: ActionCall) -> dict[str, Any]:
    """The action ``odoo_upsert_partners``."""
    context = _context(call)
    client = _client(context)
    partners = call.input.get("partners")
    problems = []
    if not isinstance(partners, list) or not partners:
        problems.append("partners: give at least one partner")
        partners = []
    for index, partner in enumerate(partners, start=1):
        if not isinstance(partner, Mapping) or not str(partner.get("name") or "").strip():
            problems.append(f"partner {index}: name is required")
    if problems:
        raise ActionFailed("Cannot upsert partners: " + "; ".join(problems))
    results = []
    for partner in partners:
        name = str(partner["name"]).strip()
        ref = str(partner["ref"]).strip() if partner.get("ref") not in (None, "") else None
        extra = {key: partner[key] for key in PARTNER_FIELDS if partner.get(key) not in (None, "")}
        odoo_id, created = await client.upsert_partner(name, ref, extra)
        results.append({"ref": ref or "", "name": name, "odoo_id": odoo_id, "created": created})
    return {"partners": results}


async def _order_lines(client: OdooClient, order: Order, settings: Settings, warnings: list[str]) -> list[Any]:
    """The sale order's ``order_line`` commands; every line without a product is a problem."""
    problems = []
    commands: list[Any] = []
    for line in order.lines:
        what = f"Order {order.number} line {line.line_id}"
        product_id = None
        if line.sku:
            product_id = await client.search_one("product.product", [["default_code", "=", line.sku]], what=what)
        product_id = product_id or settings.odoo_default_product_id
        if product_id is None:
            problems.append(
                f"line {line.line_id}: no Odoo product "
                + (f"has the Internal Reference {line.sku!r}" if line.sku else "(the line has no sku)")
                + "; set odoo_default_product_id for lines without one"
            )
            continue
        values: dict[str, Any] = {
            "product_id": product_id,
            "name": line.description or line.sku or line.line_id,
            "product_uom_qty": float(line.quantity),
            "price_unit": float(line.unit_price),
        }
        taxes = _tax_ids(order.entity, line.tax_rate, "receivable", warnings, f"line {line.line_id}")
        if taxes is not None:
            values["tax_id"] = taxes
        commands.append([0, 0, values])
    if problems:
        raise ActionFailed(f"Cannot push order {order.number} to Odoo: " + "; ".join(problems))
    return commands


async def push_sale_order(call: ActionCall) -> dict[str, Any]:
    """The action ``odoo_push_sale_order``."""
    context = _context(call)
    settings = load_settings(context)
    client = _client(context)
    raw, record_id = await order_from_input(context, call.input)
    order = parse_order(raw, settings, record_id)
    what = f"Sale order {order.number}"
    domain: list[list[Any]] = [["client_order_ref", "=", order.number]]
    if order.entity.odoo_company_id:
        domain.append(["company_id", "=", order.entity.odoo_company_id])
    warnings: list[str] = []
    existing = await client.search_one("sale.order", domain, what=what)
    if existing is not None:
        return {"order_number": order.number, "odoo_id": existing, "created": False, "warnings": warnings}
    lines = await _order_lines(client, order, settings, warnings)
    partner_id, _ = await client.upsert_partner(order.customer.name, order.customer.ref, update=False)
    values: dict[str, Any] = {
        "partner_id": partner_id,
        "client_order_ref": order.number,
        "date_order": f"{order.date.isoformat()} 00:00:00",
        "order_line": lines,
    }
    if order.entity.odoo_company_id:
        values["company_id"] = order.entity.odoo_company_id
    odoo_id = await client.create("sale.order", values, what=what)
    return {"order_number": order.number, "odoo_id": odoo_id, "created": True, "warnings": warnings}


async def _push_invoice(
    client: OdooClient, settings: Settings, invoice: Invoice, post: bool, warnings: list[str]
) -> tuple[int, bool]:
    what = f"Invoice {invoice.number}"
    entity = settings.entity(invoice.entity)
    if entity is None:
        raise ActionFailed(f"{what}: its entity {invoice.entity!r} is not in the settings")
    move_type = "out_invoice" if invoice.kind == "receivable" else "in_invoice"
    domain: list[list[Any]] = [["move_type", "=", move_type], ["ref", "=", invoice.number]]
    if entity.odoo_company_id:
        domain.append(["company_id", "=", entity.odoo_company_id])
    existing = await client.search_one("account.move", domain, what=what)
    if existing is not None:
        return existing, False
    lines = invoice.lines()
    if not lines:
        raise ActionFailed(f"{what}: the invoice record has no readable lines")
    commands = []
    for line in lines:
        values: dict[str, Any] = {
            "name": line.description or line.sku or line.line_id,
            "quantity": float(line.quantity),
            "price_unit": float(line.unit_price),
        }
        taxes = _tax_ids(entity, line.tax_rate, invoice.kind, warnings, f"{what} line {line.line_id}")
        if taxes is not None:
            values["tax_ids"] = taxes
        commands.append([0, 0, values])
    currency_id = await client.currency_id(invoice.currency, what)
    ref = invoice.text("counterparty_ref") or None
    partner_id, _ = await client.upsert_partner(invoice.counterparty, ref, update=False)
    move: dict[str, Any] = {
        "move_type": move_type,
        "partner_id": partner_id,
        "ref": invoice.number,
        "invoice_origin": invoice.text("order_number"),
        "currency_id": currency_id,
        "invoice_line_ids": commands,
    }
    issue, due = invoice.issue_date, invoice.due_date
    if issue:
        move["invoice_date"] = issue.isoformat()
    if due:
        move["invoice_date_due"] = due.isoformat()
    if entity.odoo_company_id:
        move["company_id"] = entity.odoo_company_id
    odoo_id = await client.create("account.move", move, what=what)
    if post:
        await client.execute("account.move", "action_post", [[odoo_id]], what=f"{what}: posting")
    return odoo_id, True


async def push_invoices(call: ActionCall) -> dict[str, Any]:
    """The action ``odoo_push_invoices``."""
    context = _context(call)
    settings = load_settings(context)
    client = _client(context)
    entity = call.input.get("entity")
    if entity is not None and settings.entity(str(entity)) is None:
        raise ActionFailed(f"unknown entity {entity!r}: the entities are {', '.join(settings.entities)}")
    entities = [str(entity)] if entity is not None else list(settings.entities)
    numbers = call.input.get("numbers")
    invoices: list[Invoice] = []
    if numbers is not None:
        unknown = []
        for number in dict.fromkeys(str(number) for number in numbers):
            found = await read_invoices(context, settings.invoices_collection, {"number": number})
            invoices += [i for i in found if i.entity in entities]
            if not found:
                unknown.append(number)
        if unknown:
            raise ActionFailed("Cannot push: there is no invoice " + ", ".join(unknown))
    else:
        # Read per entity and status: the host returns at most READ_LIMIT records a read.
        for code in entities:
            for status in PUSHED_STATUSES:
                invoices += await read_invoices(
                    context, settings.invoices_collection, {"entity": code, "status": status}
                )
    invoices = [invoice for invoice in invoices if not invoice.cancelled]
    invoices.sort(key=lambda invoice: invoice.number)
    await client.authenticate()  # wrong credentials fail the action once, not once per invoice

    pushed: list[dict[str, Any]] = []
    failures: list[str] = []
    warnings: list[str] = []
    for invoice in invoices:
        if invoice.odoo_id is not None:
            pushed.append({"number": invoice.number, "odoo_id": invoice.odoo_id, "created": False})
            continue
        try:
            odoo_id, created = await _push_invoice(client, settings, invoice, bool(call.input.get("post")), warnings)
        except ActionFailed as exc:
            if exc.retryable:
                raise
            failures.append(str(exc))
            continue
        await context.write_record(settings.invoices_collection, {"odoo_id": odoo_id}, record_id=invoice.id)
        pushed.append({"number": invoice.number, "odoo_id": odoo_id, "created": created})
    if failures:
        done = ", ".join(item["number"] for item in pushed) or "none"
        raise ActionFailed(
            f"{len(failures)} invoice(s) were not pushed to Odoo (pushed: {done}): " + "; ".join(failures)
        )
    return {"invoices": pushed, "warnings": warnings}


async def sync_payments(call: ActionCall) -> dict[str, Any]:
    """The action ``odoo_sync_payments``: Odoo's payment state of each pushed invoice still open,
    written back."""
    context = _context(call)
    settings = load_settings(context)
    client = _client(context)
    entity = call.input.get("entity")
    if entity is not None and settings.entity(str(entity)) is None:
        raise ActionFailed(f"unknown entity {entity!r}: the entities are {', '.join(settings.entities)}")
    entities = [str(entity)] if entity is not None else list(settings.entities)
    invoices = {
        invoice.odoo_id: invoice
        for invoice in await read_open_invoices(context, settings.invoices_collection, entities)
        if invoice.odoo_id is not None
    }
    await client.authenticate()  # a wrong setting shows even when nothing is to be read
    updated: list[dict[str, Any]] = []
    warnings: list[str] = []
    if not invoices:
        return {"updated": updated, "unchanged": 0, "warnings": warnings}
    moves = await client.execute(
        "account.move",
        "search_read",
        [[["id", "in", sorted(invoices)]]],
        {"fields": ["name", "state", "payment_state", "amount_total", "amount_residual"]},
        what="Reading payment states",
    )
    if not isinstance(moves, list):
        raise ActionFailed(f"Reading payment states: Odoo answered {moves!r}, not a list of invoices")
    found: set[int] = set()
    for move in moves:
        if not isinstance(move, Mapping) or not isinstance(move.get("id"), int) or move["id"] not in invoices:
            continue
        invoice = invoices[move["id"]]
        found.add(move["id"])
        state = str(move.get("payment_state") or "not_paid")
        status = "cancelled" if move.get("state") == "cancel" else PAYMENT_STATES.get(state, invoice.status)
        odoo_total = amount_of(move.get("amount_total"))
        paid = max(ZERO, odoo_total - amount_of(move.get("amount_residual")))
        if odoo_total != invoice.total:
            warnings.append(
                f"invoice {invoice.number}: Odoo's total is {odoo_total}, the record's {invoice.total} "
                "(different taxes?)"
            )
        changes: dict[str, Any] = {"paid_amount": as_json_number(paid), "status": status}
        if isinstance(move.get("name"), str) and move["name"] not in ("", "/"):
            changes["odoo_number"] = move["name"]
        if any(invoice.values.get(key) != value for key, value in changes.items()):
            await context.write_record(settings.invoices_collection, changes, record_id=invoice.id)
            updated.append(
                {
                    "number": invoice.number,
                    "odoo_id": move["id"],
                    "payment_state": state,
                    "paid_amount": as_json_number(paid),
                    "status": status,
                }
            )
    for odoo_id in sorted(set(invoices) - found):
        warnings.append(f"invoice {invoices[odoo_id].number}: Odoo has no invoice {odoo_id} any more")
    return {"updated": updated, "unchanged": len(found) - len(updated), "warnings": warnings}


async def check_odoo(context: PluginContext) -> tuple[bool, str]:
    """Whether the configured Odoo accepts the credentials (``True, ""`` when none is configured)."""
    odoo, problems = odoo_settings(context)
    if odoo is None:
        return (False, "Odoo settings incomplete: " + "; ".join(problems)) if problems else (True, "")
    try:
        await OdooClient(context, odoo).authenticate()
    except ActionFailed as exc:
        return False, str(exc)
    return True, f"Odoo at {odoo.url} accepts {odoo.username}"


PARTNER_FIELDS = ("email", "phone", "vat", "street", "city", "zip", "is_company", "company_id")
UPSERT_PARTNERS_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "partners": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "ref": {"type": ["string", "null"], "description": "Your code for the partner: found by it."},
                    "email": {"type": ["string", "null"]},
                    "phone": {"type": ["string", "null"]},
                    "vat": {"type": ["string", "null"], "description": "Tax id (统一社会信用代码 / BR number)."},
                    "street": {"type": ["string", "null"]},
                    "city": {"type": ["string", "null"]},
                    "zip": {"type": ["string", "null"]},
                    "is_company": {"type": ["boolean", "null"]},
                    "company_id": {"type": ["integer", "null"], "description": "Odoo company owning the partner."},
                },
                "required": ["name"],
            },
        }
    },
    "required": ["partners"],
}
UPSERT_PARTNERS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "partners": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "ref": {"type": "string"},
                    "name": {"type": "string"},
                    "odoo_id": {"type": "integer"},
                    "created": {"type": "boolean"},
                },
                "required": ["ref", "name", "odoo_id", "created"],
            },
        }
    },
    "required": ["partners"],
}
PUSH_SALE_ORDER_INPUT = ORDER_INPUT_SCHEMA
PUSH_SALE_ORDER_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_number": {"type": "string"},
        "odoo_id": {"type": "integer"},
        "created": {"type": "boolean", "description": "False when Odoo had the order already."},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["order_number", "odoo_id", "created", "warnings"],
}
PUSH_INVOICES_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entity": {"type": "string", "description": "Only this entity's invoices (default: all)."},
        "numbers": {"type": "array", "items": {"type": "string"}, "description": "Only these invoices."},
        "post": {"type": "boolean", "default": False, "description": "Post (confirm) them in Odoo; else drafts."},
    },
}
PUSH_INVOICES_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "number": {"type": "string"},
                    "odoo_id": {"type": "integer"},
                    "created": {"type": "boolean"},
                },
                "required": ["number", "odoo_id", "created"],
            },
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["invoices", "warnings"],
}
SYNC_PAYMENTS_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"entity": {"type": "string", "description": "Only this entity's invoices (default: all)."}},
}
SYNC_PAYMENTS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "updated": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "number": {"type": "string"},
                    "odoo_id": {"type": "integer"},
                    "payment_state": {"type": "string"},
                    "paid_amount": {"type": "number"},
                    "status": {"type": "string"},
                },
                "required": ["number", "odoo_id", "payment_state", "paid_amount", "status"],
            },
        },
        "unchanged": {"type": "integer"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["updated", "unchanged", "warnings"],
}
