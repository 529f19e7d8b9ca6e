"""A local Odoo speaking the external JSON-RPC API (``POST /jsonrpc``), for the plugin's tests.

It implements ``common.authenticate`` and ``object.execute_kw`` (``search``, ``search_read``,
``read``, ``create``, ``write``, and ``action_post`` on invoices) over an in-memory store of
``res.partner``, ``product.product``, ``res.currency``, ``sale.order`` and ``account.move``, with
Odoo's answers: ``authenticate`` answers ``false`` for a wrong login or key, other calls with wrong
credentials fail with ``odoo.exceptions.AccessDenied``, an unknown model is a ``UserError``, an
unknown field a ``ValueError`` ("Invalid field"), a missing record a ``MissingError`` and broken
business rules a ``ValidationError``, all in Odoo's error envelope (HTTP 200, ``code`` 200,
``"Odoo Server Error"``). ``mode`` switches the server to misbehave: ``"502"``, ``"429"``,
``"garbage"`` (HTML with 200), ``"no_result"``, ``"slow"`` or ``"serialization"``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DATABASE = "acme-prod"
LOGIN = "finance@acme.example"
API_KEY = "9f2c1e7a4b3d5c6e8f0a1b2c3d4e5f6a7b8c9d0e"
UID = 7

#: The fields each model knows; many2one fields are read back as ``[id, display_name]``.
FIELDS: dict[str, set[str]] = {
    "res.partner": {"id", "name", "ref", "email", "phone", "vat", "street", "city", "zip", "is_company", "company_id"},
    "product.product": {"id", "name", "default_code"},
    "res.currency": {"id", "name", "active"},
    "sale.order": {"id", "name", "partner_id", "client_order_ref", "date_order", "company_id", "order_line", "state"},
    "account.move": {
        "id",
        "name",
        "move_type",
        "partner_id",
        "ref",
        "invoice_origin",
        "currency_id",
        "invoice_date",
        "invoice_date_due",
        "company_id",
        "invoice_line_ids",
        "state",
        "payment_state",
        "amount_total",
        "amount_residual",
    },
}
LINE_FIELDS = {
    "sale.order": {"product_id", "name", "product_uom_qty", "price_unit", "tax_id"},
    "account.move": {"product_id", "name", "quantity", "price_unit", "tax_ids", "account_id"},
}
MANY2ONE = {"partner_id", "company_id", "currency_id", "product_id"}
#: Odoo taxes of the fake: id → rate in percent.
TAXES = {1: 13.0, 2: 13.0, 3: 6.0}


class OdooFault(Exception):
    """An exception the server answers as Odoo's error envelope."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass
class FakeOdoo:
    """The server's state: its records, what it was asked, and how it should misbehave."""

    port: int = 0
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    mode: str | None = None
    slow_seconds: float = 1.5
    #: Message of a ValidationError the next ``create`` of ``account.move`` raises.
    refuse_next_move: str | None = None
    _next_id: int = 100
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.records = {model: {} for model in FIELDS}
            self.calls.clear()
            self.mode = None
            self.refuse_next_move = None
            self.add("res.currency", {"name": "USD", "active": True})
            self.add("res.currency", {"name": "CNY", "active": True})
            self.add("res.currency", {"name": "HKD", "active": True})
            self.add("product.product", {"name": "Widget", "default_code": "W-1"})
            self.add("product.product", {"name": "Trade goods", "default_code": "GOODS"})

    def add(self, model: str, values: dict[str, Any]) -> int:
        self._next_id += 1
        self.records[model][self._next_id] = {"id": self._next_id, **values}
        return self._next_id

    def find(self, model: str, **where: Any) -> list[dict[str, Any]]:
        return [r for r in self.records[model].values() if all(r.get(k) == v for k, v in where.items())]

    def pay(self, move_id: int, amount: float) -> None:
        """Register a payment of ``amount`` on an invoice, as Odoo's reconciliation would."""
        move = self.records["account.move"][move_id]
        move["amount_residual"] = round(move["amount_total"] - amount, 2)
        move["payment_state"] = "paid" if move["amount_residual"] <= 0 else "partial"

    # --- JSON-RPC ---------------------------------------------------------------------------------

    def answer(self, request: Any) -> Any:
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or request.get("method") != "call":
            raise OdooFault("werkzeug.exceptions.BadRequest", "Invalid JSON-RPC request")
        params = request.get("params") or {}
        service, method, args = params.get("service"), params.get("method"), params.get("args") or []
        if service == "common" and method == "authenticate":
            database, login, key = args[0], args[1], args[2]
            self._check_database(database)
            return UID if (login, key) == (LOGIN, API_KEY) else False
        if service == "object" and method == "execute_kw":
            database, uid, key, model, model_method = args[:5]
            call_args = args[5] if len(args) > 5 else []
            kwargs = args[6] if len(args) > 6 else {}
            self._check_database(database)
            if uid != UID or key != API_KEY:
                raise OdooFault("odoo.exceptions.AccessDenied", "Access Denied")
            if self.mode == "serialization":
                raise OdooFault(
                    "psycopg2.errors.SerializationFailure",
                    "could not serialize access due to concurrent update",
                )
            self.calls.append((model, model_method, json.dumps(call_args)[:200]))
            return self._execute(model, model_method, call_args, kwargs)
        raise OdooFault("builtins.KeyError", f"'{service}.{method}'")

    def _check_database(self, database: str) -> None:
        if database != DATABASE:
            raise OdooFault(
                "psycopg2.OperationalError",
                f'connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
                f'FATAL:  database "{database}" does not exist\n',
            )

    def _execute(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if model not in FIELDS:
            raise OdooFault("odoo.exceptions.UserError", f"Object {model} doesn't exist")
        with self._lock:
            if method == "search":
                ids = [r["id"] for r in self._matching(model, args[0])]
                limit = kwargs.get("limit")
                return ids[:limit] if limit else ids
            if method == "search_read":
                fields = kwargs.get("fields") or sorted(FIELDS[model])
                return [self._read(model, r, fields) for r in self._matching(model, args[0])]
            if method == "read":
                fields = kwargs.get("fields") or (args[1] if len(args) > 1 else sorted(FIELDS[model]))
                found = []
                for record_id in args[0]:
                    if record_id not in self.records[model]:
                        raise OdooFault(
                            "odoo.exceptions.MissingError",
                            f"Record does not exist or has been deleted.\n(Record: {model}({record_id},), User: {UID})",
                        )
                    found.append(self._read(model, self.records[model][record_id], fields))
                return found
            if method == "create":
                values = args[0]
                if isinstance(values, list):
                    return [self._create(model, v) for v in values]
                return self._create(model, values)
            if method == "write":
                ids, values = args[0], args[1]
                self._check_fields(model, values)
                for record_id in ids:
                    if record_id not in self.records[model]:
                        raise OdooFault("odoo.exceptions.MissingError", "Record does not exist or has been deleted.")
                    self.records[model][record_id].update(values)
                return True
            if method == "action_post" and model == "account.move":
                for record_id in args[0]:
                    move = self.records[model][record_id]
                    if not move.get("invoice_line_ids"):
                        raise OdooFault("odoo.exceptions.UserError", "You need to add a line before posting.")
                    prefix = "INV" if move["move_type"] == "out_invoice" else "BILL"
                    move["state"] = "posted"
                    move["name"] = f"{prefix}/2026/{record_id:05d}"
                return True
        raise OdooFault("builtins.AttributeError", f"The method '{method}' does not exist on the model '{model}'")

    def _check_fields(self, model: str, values: dict[str, Any]) -> None:
        for name in values:
            if name not in FIELDS[model]:
                raise OdooFault("builtins.ValueError", f"Invalid field '{name}' on model '{model}'")

    def _matching(self, model: str, domain: list[Any]) -> list[dict[str, Any]]:
        conditions = [term for term in domain if isinstance(term, list)]
        for name, _, _ in conditions:
            if name not in FIELDS[model]:
                raise OdooFault("builtins.ValueError", f"Invalid field {model}.{name} in leaf ('{name}', ...)")

        def holds(record: dict[str, Any], name: str, operator: str, value: Any) -> bool:
            if operator == "=":
                return bool(record.get(name) == value)
            if operator == "in":
                return record.get(name) in value
            if operator == "!=":
                return bool(record.get(name) != value)
            raise OdooFault("builtins.ValueError", f"Invalid leaf ('{name}', '{operator}', {value!r})")

        return [
            record
            for record in sorted(self.records[model].values(), key=lambda r: r["id"])
            if all(holds(record, *condition) for condition in conditions)
        ]

    def _read(self, model: str, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        self._check_fields(model, dict.fromkeys(fields))
        read: dict[str, Any] = {"id": record["id"]}
        for name in fields:
            value = record.get(name, False)
            if name in MANY2ONE and isinstance(value, int) and not isinstance(value, bool):
                value = [value, f"{name} {value}"]
            read[name] = value
        return read

    def _create(self, model: str, values: dict[str, Any]) -> int:
        self._check_fields(model, values)
        record = dict(values)
        if model == "res.partner" and not record.get("name"):
            raise OdooFault(
                "odoo.exceptions.ValidationError",
                "Contacts require a name",
            )
        if model in LINE_FIELDS:
            key = "order_line" if model == "sale.order" else "invoice_line_ids"
            if not record.get("partner_id") or record["partner_id"] not in self.records["res.partner"]:
                raise OdooFault(
                    "odoo.exceptions.ValidationError",
                    "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n"
                    f"- Delete: another model requires the record being deleted. If possible, archive it instead.\n\n"
                    f"Model: {model} ({model})\nField: Customer (partner_id)\n",
                )
            lines = []
            total = 0.0
            for command in record.get(key) or []:
                if not (isinstance(command, list) and len(command) == 3 and command[0] == 0):
                    raise OdooFault("builtins.ValueError", f"Unsupported command {command!r}")
                line = command[2]
                for name in line:
                    if name not in LINE_FIELDS[model]:
                        line_model = "sale.order.line" if model == "sale.order" else "account.move.line"
                        raise OdooFault("builtins.ValueError", f"Invalid field '{name}' on model '{line_model}'")
                if model == "sale.order" and not line.get("product_id"):
                    raise OdooFault(
                        "odoo.exceptions.ValidationError", "Missing required fields on accountable sale order line."
                    )
                quantity = line.get("quantity", line.get("product_uom_qty", 1))
                amount = round(quantity * line.get("price_unit", 0), 2)
                taxes = line.get("tax_ids", line.get("tax_id")) or []
                tax_ids = taxes[0][2] if taxes else []
                total += amount + round(sum(amount * TAXES[t] / 100 for t in tax_ids), 2)
                lines.append(line)
            record[key] = lines
            if model == "account.move":
                if self.refuse_next_move is not None:
                    message, self.refuse_next_move = self.refuse_next_move, None
                    raise OdooFault("odoo.exceptions.ValidationError", message)
                if record.get("move_type") not in ("out_invoice", "in_invoice", "out_refund", "in_refund", "entry"):
                    raise OdooFault(
                        "builtins.ValueError", f"Wrong value for account.move.move_type: {record.get('move_type')!r}"
                    )
                record.update(state="draft", name="/", payment_state="not_paid")
                record.update(amount_total=round(total, 2), amount_residual=round(total, 2))
            else:
                record.update(state="draft", name=f"S{self._next_id + 1:05d}")
        return self.add(model, record)


def _envelope(request_id: Any, fault: OdooFault) -> dict[str, Any]:
    # Odoo's own shape (odoo.http.serialize_exception), answered with HTTP 200.
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": 200,
            "message": "Odoo Server Error",
            "data": {
                "name": fault.name,
                "debug": f"Traceback (most recent call last):\n  ...\n{fault.name}: {fault.message}\n",
                "message": fault.message,
                "arguments": [fault.message],
                "context": {},
            },
        },
    }


@contextmanager
def running_odoo() -> Iterator[FakeOdoo]:
    """Serve a :class:`FakeOdoo` on 127.0.0.1 on a free port while the block runs."""
    odoo = FakeOdoo()
    odoo.reset()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's hook name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, answer = self._answer(body)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the "slow" mode's point)

        def _answer(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            if self.path != "/jsonrpc":
                return 404, {"Content-Type": "text/html"}, b"<html><body>404: Not Found</body></html>"
            mode = odoo.mode
            if mode == "502":
                return 502, {"Content-Type": "text/html"}, b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            if mode == "429":
                return 429, {"Content-Type": "text/html", "Retry-After": "7"}, b"Too Many Requests"
            if mode == "garbage":
                return 200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html><body>Odoo is starting</body></html>"
            if mode == "slow":
                time.sleep(odoo.slow_seconds)
            request = json.loads(body)
            request_id = request.get("id") if isinstance(request, dict) else None
            if mode == "no_result":
                return (
                    200,
                    {"Content-Type": "application/json"},
                    json.dumps({"jsonrpc": "2.0", "id": request_id}).encode(),
                )
            try:
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": odoo.answer(request)}
            except OdooFault as fault:
                answer = _envelope(request_id, fault)
            return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    odoo.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield odoo
    finally:
        server.shutdown()
        server.server_close()
