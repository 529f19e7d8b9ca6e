"""Remote plugins: a plugin that runs as its own HTTP service, in any language.

The protocol (docs/plugins.md, "Remote plugins", describes it for implementers in other languages):

- The host calls an action with ``POST {endpoint}/actions/{name}`` (:data:`ACTION_PATH`) and the JSON
  body ``{"input": {...}, "idempotency_key": str, "tenant_id": str, "execution_id": str,
  "config": {...}}`` (:func:`action_request_body`). The plugin answers ``200 {"output": {...}}``, or a
  4xx/5xx with ``{"error": {"message": str, "retryable": bool, "retry_after": float | null}}``
  (:func:`parse_action_answer` reads the answer as the host does).
- The host checks a plugin's health with ``GET {endpoint}/health`` (:data:`HEALTH_PATH`); the plugin
  answers ``200 {"ok": bool, "message": str}`` (:func:`parse_health_answer`).
- Every request (the body of a GET is empty) is signed with the secret the host and the plugin
  share: the headers ``X-Guiju-Timestamp`` (unix seconds), ``X-Guiju-Nonce`` (128 random bits,
  32 lower-case hex digits) and ``X-Guiju-Signature: v1=<hex>``, where ``<hex>`` is the lower-case hex
  HMAC-SHA256, keyed with the secret, of ``f"{timestamp}.{nonce}.".encode() + body``
  (:func:`sign`). The receiver checks them with :func:`verify`: the timestamp within
  ``tolerance_seconds`` of its clock, the signature, and that the nonce was not seen before.
"""

from __future__ import annotations

import heapq
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from hashlib import sha256
from typing import Any, Literal
from urllib.parse import quote

from guiju_sdk.types import ActionFailed, Health

TIMESTAMP_HEADER = "X-Guiju-Timestamp"
NONCE_HEADER = "X-Guiju-Nonce"
SIGNATURE_HEADER = "X-Guiju-Signature"
#: The scheme of the signature: the header's value is ``v1=<hex>``.
SIGNATURE_VERSION = "v1"
#: How far (seconds) a request's timestamp may be from the receiver's clock, either way.
DEFAULT_TOLERANCE_SECONDS = 300

#: The path, under the plugin's endpoint, the host POSTs an action's call to.
ACTION_PATH = "/actions/{name}"
#: The path, under the plugin's endpoint, the host GETs to check the plugin's health.
HEALTH_PATH = "/health"
#: The longest error message of a plugin's answer the host keeps (it is shown to people).
MAX_ERROR_MESSAGE = 1_000

#: Why :func:`verify` refused a request: the values of :attr:`SignatureInvalid.reason`.
SignatureProblem = Literal["missing_header", "malformed", "stale_timestamp", "bad_signature", "replayed"]

_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(rf"{SIGNATURE_VERSION}=([0-9a-f]{{64}})")


class SignatureInvalid(Exception):
    """A request's signature headers do not hold; ``reason`` says why, as a stable code:

    - ``missing_header``: a signature header is absent;
    - ``malformed``: a header is not as the scheme writes it;
    - ``stale_timestamp``: the timestamp is further than the tolerance from the receiver's clock;
    - ``bad_signature``: the signature does not match the body with any of the secrets;
    - ``replayed``: the nonce was seen before, within the tolerance window.
    """

    def __init__(self, reason: SignatureProblem, message: str) -> None:
        super().__init__(message)
        self.reason: SignatureProblem = reason


def _secrets(secret: bytes | Sequence[bytes]) -> list[bytes]:
    # bytes is itself a Sequence (of ints): one secret, not several.
    found = [bytes(secret)] if isinstance(secret, bytes | bytearray) else [bytes(s) for s in secret]
    if not found or not all(found):
        raise ValueError("a signing secret is non-empty bytes")
    return found


def signature(secret: bytes, timestamp: int, nonce: str, body: bytes) -> str:
    """The lower-case hex HMAC-SHA256 of ``f"{timestamp}.{nonce}.".encode() + body`` keyed with
    ``secret`` (without the ``v1=`` prefix)."""
    return hmac.new(secret, f"{timestamp}.{nonce}.".encode() + body, sha256).hexdigest()


def sign(secret: bytes, body: bytes, *, timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The headers that sign a request carrying ``body`` (``b""`` for a GET): the timestamp (now
    unless given), the nonce (a fresh random one unless given) and the signature."""
    [key] = _secrets(secret)
    when = int(time.time()) if timestamp is None else timestamp
    once = secrets.token_hex(16) if nonce is None else nonce
    if not _NONCE.fullmatch(once):
        raise ValueError(f"a nonce is 32 lower-case hex digits, got {once!r}")
    return {
        TIMESTAMP_HEADER: str(when),
        NONCE_HEADER: once,
        SIGNATURE_HEADER: f"{SIGNATURE_VERSION}={signature(key, when, once, body)}",
    }


class NonceCache:
    """The nonces of accepted requests, each remembered until its timestamp leaves the tolerance
    window (after which :func:`verify` refuses the request as stale anyway). Thread-safe, in memory.

    It holds at most ``max_entries`` nonces: when full, the ones closest to leaving the window are
    forgotten first. Size it above the requests one receiver accepts within ``2 x tolerance``; a
    receiver running several processes shares one cache among them (e.g. in Redis) or accepts that
    a replay may reach another process.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("a nonce cache holds at least one nonce")
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []  # a heap: the soonest to expire first
        self._lock = threading.Lock()

    def remember(self, nonce: str, *, until: float, now: float) -> bool:
        """Remember ``nonce`` until the time ``until``; ``False`` when it is remembered already
        (a replay), ``True`` when it was not."""
        with self._lock:
            self._forget_expired(now)
            if nonce in self._expiry:
                return False
            while len(self._expiry) >= self.max_entries:
                _, oldest = heapq.heappop(self._by_expiry)
                self._expiry.pop(oldest, None)
            self._expiry[nonce] = until
            heapq.heappush(self._by_expiry, (until, nonce))
            return True

    def _forget_expired(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] < now:
            _, nonce = heapq.heappop(self._by_expiry)
            self._expiry.pop(nonce, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


def verify(
    secret: bytes | Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    nonces: NonceCache,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a signed request's ``headers`` (any case) against ``body``; raises
    :class:`SignatureInvalid` with its ``reason`` when they do not hold.

    ``secret`` may be several secrets (while rotating: the new one and the old one); a signature by
    any of them is accepted. The timestamp and the signature are checked before the nonce is
    remembered, so a stale or forged request cannot use up the nonce of a genuine one.
    """
    keys = _secrets(secret)
    by_name = {name.lower(): value for name, value in headers.items()}
    found: dict[str, str] = {}
    for header in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER):
        value = by_name.get(header.lower())
        if value is None:
            raise SignatureInvalid("missing_header", f"the header {header} is missing")
        found[header] = value.strip()
    raw_timestamp, nonce = found[TIMESTAMP_HEADER], found[NONCE_HEADER]
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise SignatureInvalid("malformed", f"{TIMESTAMP_HEADER} is unix seconds, got {raw_timestamp[:40]!r}")
    if not _NONCE.fullmatch(nonce):
        raise SignatureInvalid("malformed", f"{NONCE_HEADER} is 32 lower-case hex digits, got {nonce[:40]!r}")
    signed = _SIGNATURE.fullmatch(found[SIGNATURE_HEADER])
    if signed is None:
        raise SignatureInvalid(
            "malformed", f"{SIGNATURE_HEADER} is '{SIGNATURE_VERSION}=' followed by 64 lower-case hex digits"
        )
    timestamp = int(raw_timestamp)
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_seconds:
        direction = "ahead of" if timestamp > clock else "behind"
        raise SignatureInvalid(
            "stale_timestamp",
            f"the timestamp is {abs(clock - timestamp):.0f} s {direction} this clock (at most {tolerance_seconds} s)",
        )
    # Every secret is tried, so the time taken does not tell which one matched.
    matches = [hmac.compare_digest(signature(key, timestamp, nonce, body), signed.group(1)) for key in keys]
    if not any(matches):
        raise SignatureInvalid("bad_signature", "the signature does not match the request")
    if not nonces.remember(nonce, until=timestamp + tolerance_seconds, now=clock):
        raise SignatureInvalid("replayed", "this nonce was used already: the request is a replay")


# ---------------------------------------------------------------- the protocol


def action_url(endpoint: str, name: str) -> str:
    """The URL the host POSTs action ``name`` of the plugin at ``endpoint`` to."""
    return endpoint.rstrip("/") + ACTION_PATH.format(name=quote(name, safe=""))


def health_url(endpoint: str) -> str:
    """The URL the host GETs to check the health of the plugin at ``endpoint``."""
    return endpoint.rstrip("/") + HEALTH_PATH


def action_request_body(
    *,
    input: Mapping[str, Any],
    idempotency_key: str,
    tenant_id: str,
    execution_id: str,
    config: Mapping[str, Any],
) -> bytes:
    """The JSON body (UTF-8) of an action's call: its ``input``, the ``idempotency_key`` (the same
    on every retry of this action of this execution), the ``tenant_id``, the ``execution_id`` and
    the tenant's ``config`` of the plugin (secret settings left out)."""
    document = {
        "input": dict(input),
        "idempotency_key": idempotency_key,
        "tenant_id": tenant_id,
        "execution_id": execution_id,
        "config": dict(config),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _seconds(value: object) -> float | None:
    """A non-negative, finite number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _retry_after_header(value: str | float | None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date (RFC 9110), as seconds from now."""
    if value is None or isinstance(value, int | float):
        return _seconds(value)
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


def parse_action_answer(status: int, body: bytes, retry_after: str | float | None = None) -> dict[str, Any]:
    """Read a remote plugin's answer to an action's call: its output, or :class:`ActionFailed`.

    - ``200`` with ``{"output": {...}}``: the output (``null`` reads as ``{}``);
    - ``429`` or ``5xx``: retryable, unless the error says ``"retryable": false``; retried after the
      error's ``retry_after`` or the ``Retry-After`` header (``retry_after``, seconds or an HTTP
      date), the longer of the two;
    - any other status, or a ``200`` whose body is not JSON or has no ``output`` object: permanent.

    The message is the error's ``message`` when the body carries one.
    """
    document = _json(body)
    if status == 200:
        if not isinstance(document, dict) or "output" not in document:
            raise ActionFailed('the plugin answered 200 without a JSON object holding "output"')
        output = document["output"]
        if output is None:
            return {}
        if not isinstance(output, dict):
            raise ActionFailed(f'the plugin\'s "output" is {type(output).__name__}, not a JSON object')
        return output
    error = document.get("error") if isinstance(document, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message.strip():
        text = f"the plugin answered {status}: {message.strip()[:MAX_ERROR_MESSAGE]}"
    else:
        text = f"the plugin answered {status} without a Guiju error"
    if status == 429 or 500 <= status <= 599:
        retryable = not (isinstance(error, dict) and error.get("retryable") is False)
        said = _seconds(error.get("retry_after")) if isinstance(error, dict) else None
        waits = [w for w in (said, _retry_after_header(retry_after)) if w is not None]
        raise ActionFailed(text, retryable=retryable, retry_after=max(waits) if waits and retryable else None)
    raise ActionFailed(text)


def parse_health_answer(status: int, body: bytes) -> Health:
    """Read a remote plugin's answer to ``GET /health``: ``200 {"ok": bool, "message": str}``;
    anything else is unhealthy, with a message saying what came back."""
    document = _json(body)
    if status != 200:
        return Health(False, f"the plugin's health check answered {status}")
    if not isinstance(document, dict) or not isinstance(document.get("ok"), bool):
        return Health(False, 'the plugin\'s health check answered without a boolean "ok"')
    message = document.get("message")
    return Health(document["ok"], message[:MAX_ERROR_MESSAGE] if isinstance(message, str) else "")
