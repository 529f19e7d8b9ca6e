"""Structured JSON logs carrying the request id, tenant id, actor and message id of the current context.

Secrets never reach a log: any field whose name looks like a secret is masked, whatever logs it.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from tenants.context import current_tenant_id

request_id_var: ContextVar[str | None] = ContextVar("guiju_request_id", default=None)
actor_var: ContextVar[str | None] = ContextVar("guiju_actor", default=None)
# The Dramatiq message a worker thread is processing (see services.broker.TenantLogContext).
message_id_var: ContextVar[str | None] = ContextVar("guiju_message_id", default=None)
# Filled in during a request (who, which tenant) and read by every log line of that request, even
# from tasks that the framework spawned after the request began.
request_log_context: ContextVar[dict[str, str] | None] = ContextVar("guiju_request_log_context", default=None)

SECRET_MARKERS = ("password", "secret", "token", "authorization", "cookie", "csrf", "api_key")
MASK = "***"
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(value: Any, key: str = "") -> Any:
    """Mask values stored under secret-looking keys, recursively."""
    if key and any(marker in key.lower() for marker in SECRET_MARKERS):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        shared = request_log_context.get() or {}
        tenant_id = current_tenant_id() or shared.get("tenant_id")
        actor = actor_var.get() or shared.get("actor")
        if request_id:
            payload["request_id"] = request_id
        if tenant_id:
            payload["tenant_id"] = str(tenant_id)
        if actor:
            payload["actor"] = actor
        message_id = message_id_var.get()
        if message_id:
            payload["message_id"] = message_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = redact(value, key)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, dramatiq's) through the JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Each request is logged once, by services.http.RequestContextMiddleware, with its ids.
    logging.getLogger("uvicorn.access").disabled = True
