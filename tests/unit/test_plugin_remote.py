"""Remote plugins: the signature of requests between the host and a plugin, and the protocol's
bodies and answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from email.utils import formatdate

import pytest
from guiju_sdk import (
    ACTION_PATH,
    HEALTH_PATH,
    ActionFailed,
    Health,
    NonceCache,
    SignatureInvalid,
    action_request_body,
    parse_action_answer,
    parse_health_answer,
    sign,
    verify,
)
from guiju_sdk.remote import action_url, health_url

SECRET = b"s3cret-shared-with-the-plugin"
BODY = b'{"input":{"code":"A1"}}'
NOW = 1_750_000_000
NONCE = "0123456789abcdef0123456789abcdef"


def refused(headers: dict[str, str], body: bytes = BODY, **kwargs: object) -> str:
    """The reason ``verify`` refuses the request."""
    options: dict[str, object] = {"nonces": NonceCache(), "now": NOW, **kwargs}
    secret = options.pop("secret", SECRET)
    with pytest.raises(SignatureInvalid) as caught:
        verify(secret, headers, body, **options)  # type: ignore[arg-type]
    return caught.value.reason


def test_the_signature_is_the_documented_hmac() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW, nonce=NONCE)
    expected = hmac.new(SECRET, f"{NOW}.{NONCE}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers == {
        "X-Guiju-Timestamp": str(NOW),
        "X-Guiju-Nonce": NONCE,
        "X-Guiju-Signature": f"v1={expected}",
    }


def test_the_worked_example_of_the_docs() -> None:
    # docs/plugins.md computes this signature step by step for partners in other languages.
    body = action_request_body(
        input={"code": "A1"}, idempotency_key="e-1:0", tenant_id="t-1", execution_id="e-1", config={}
    )
    assert (
        body == b'{"input":{"code":"A1"},"idempotency_key":"e-1:0","tenant_id":"t-1","execution_id":"e-1","config":{}}'
    )
    headers = sign(b"whsec_example", body, timestamp=1700000000, nonce="6f1c2a9e4b7d8c3f0a5e9b2d1c4f7a8e")
    assert headers["X-Guiju-Signature"] == "v1=b0c39f2f7d2aa38cc855bcb4b7d5b0e179880dc1ea144cc0f4394d4ac2b5276d"


def test_a_signed_request_verifies_and_fresh_nonces_differ() -> None:
    first, second = sign(SECRET, BODY), sign(SECRET, BODY)
    assert first["X-Guiju-Nonce"] != second["X-Guiju-Nonce"] and len(first["X-Guiju-Nonce"]) == 32
    nonces = NonceCache()
    verify(SECRET, first, BODY, nonces=nonces)
    verify(SECRET, second, BODY, nonces=nonces)
    assert len(nonces) == 2
    with pytest.raises(ValueError, match="32 lower-case hex digits"):
        sign(SECRET, BODY, nonce="not-hex")


def test_a_tampered_body_or_another_secret_is_a_bad_signature() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW, nonce=NONCE)
    assert refused(headers, body=BODY.replace(b"A1", b"A2")) == "bad_signature"
    assert refused(headers, secret=b"another secret") == "bad_signature"
    moved = {**headers, "X-Guiju-Timestamp": str(NOW + 1)}  # the timestamp is signed too
    assert refused(moved) == "bad_signature"


def test_stale_and_future_timestamps_are_refused() -> None:
    old = sign(SECRET, BODY, timestamp=NOW - 301, nonce=NONCE)
    future = sign(SECRET, BODY, timestamp=NOW + 301, nonce=NONCE)
    assert refused(old) == "stale_timestamp"
    assert refused(future) == "stale_timestamp"
    with pytest.raises(SignatureInvalid, match="ahead of"):
        verify(SECRET, future, BODY, nonces=NonceCache(), now=NOW)
    # Within the tolerance, either way.
    verify(SECRET, sign(SECRET, BODY, timestamp=NOW - 300, nonce=NONCE), BODY, nonces=NonceCache(), now=NOW)
    verify(SECRET, sign(SECRET, BODY, timestamp=NOW + 300, nonce=NONCE), BODY, nonces=NonceCache(), now=NOW)
    assert refused(sign(SECRET, BODY, timestamp=NOW - 31, nonce=NONCE), tolerance_seconds=30) == "stale_timestamp"


def test_a_replay_is_refused() -> None:
    nonces = NonceCache()
    headers = sign(SECRET, BODY, timestamp=NOW, nonce=NONCE)
    verify(SECRET, headers, BODY, nonces=nonces, now=NOW)
    assert refused(headers, nonces=nonces, now=NOW + 10) == "replayed"


def test_a_forged_or_stale_request_does_not_use_up_the_nonce() -> None:
    nonces = NonceCache()
    genuine = sign(SECRET, BODY, timestamp=NOW, nonce=NONCE)
    forged = {**genuine, "X-Guiju-Signature": "v1=" + "0" * 64}
    assert refused(forged, nonces=nonces) == "bad_signature"
    stale = sign(SECRET, BODY, timestamp=NOW - 3600, nonce=NONCE)
    assert refused(stale, nonces=nonces) == "stale_timestamp"
    assert len(nonces) == 0
    verify(SECRET, genuine, BODY, nonces=nonces, now=NOW)  # the genuine request still passes


def test_two_secrets_while_rotating() -> None:
    old, new = b"the old secret", b"the new secret"
    nonces = NonceCache()
    verify([new, old], sign(old, BODY), BODY, nonces=nonces)
    verify([new, old], sign(new, BODY), BODY, nonces=nonces)
    assert refused(sign(b"neither", BODY, timestamp=NOW), secret=[new, old]) == "bad_signature"
    with pytest.raises(ValueError, match="non-empty"):
        verify([], sign(new, BODY), BODY, nonces=nonces)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in sign(SECRET, BODY).items()}
    verify(SECRET, headers, BODY, nonces=NonceCache())
    shouting = {name.upper(): value for name, value in sign(SECRET, BODY).items()}
    verify(SECRET, shouting, BODY, nonces=NonceCache())


def test_missing_and_malformed_headers() -> None:
    headers = sign(SECRET, BODY, timestamp=NOW, nonce=NONCE)
    for name in headers:
        assert refused({k: v for k, v in headers.items() if k != name}) == "missing_header"
    assert refused({**headers, "X-Guiju-Timestamp": "soon"}) == "malformed"
    assert refused({**headers, "X-Guiju-Timestamp": "-5"}) == "malformed"
    assert refused({**headers, "X-Guiju-Nonce": "short"}) == "malformed"
    assert refused({**headers, "X-Guiju-Nonce": NONCE.upper()}) == "malformed"
    assert refused({**headers, "X-Guiju-Signature": headers["X-Guiju-Signature"].removeprefix("v1=")}) == "malformed"
    assert refused({**headers, "X-Guiju-Signature": "v2=" + "a" * 64}) == "malformed"


def test_the_nonce_cache_forgets_what_left_the_window_and_stays_bounded() -> None:
    nonces = NonceCache(max_entries=3)
    assert nonces.remember("a", until=100, now=0)
    assert not nonces.remember("a", until=100, now=50)
    assert nonces.remember("a", until=300, now=101)  # "a" left its window at 100
    for nonce, until in (("b", 400), ("c", 500), ("d", 600)):
        assert nonces.remember(nonce, until=until, now=102)
    assert len(nonces) == 3
    # Full: the nonce closest to leaving the window ("a") was forgotten first.
    assert nonces.remember("a", until=700, now=103)
    assert not nonces.remember("d", until=600, now=103)


def test_the_nonce_cache_is_thread_safe() -> None:
    nonces = NonceCache()
    accepted: list[bool] = []

    def claim() -> None:
        accepted.append(nonces.remember(NONCE, until=NOW + 300, now=NOW))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(accepted) == [False] * 15 + [True]


def test_the_action_request() -> None:
    assert ACTION_PATH == "/actions/{name}" and HEALTH_PATH == "/health"
    assert action_url("https://plugin.example.com/guiju/", "push_order") == (
        "https://plugin.example.com/guiju/actions/push_order"
    )
    assert health_url("https://plugin.example.com/guiju") == "https://plugin.example.com/guiju/health"
    body = action_request_body(
        input={"code": "A1"},
        idempotency_key="exec-1:0",
        tenant_id="t-1",
        execution_id="exec-1",
        config={"base_url": "https://erp.example"},
    )
    assert json.loads(body) == {
        "input": {"code": "A1"},
        "idempotency_key": "exec-1:0",
        "tenant_id": "t-1",
        "execution_id": "exec-1",
        "config": {"base_url": "https://erp.example"},
    }


def failure(status: int, body: bytes, retry_after: str | float | None = None) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        parse_action_answer(status, body, retry_after)
    return caught.value


def error(message: str, retryable: bool = True, retry_after: float | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "retryable": retryable, "retry_after": retry_after}}).encode()


def test_an_output_is_read() -> None:
    assert parse_action_answer(200, b'{"output": {"erp_id": "7"}}') == {"erp_id": "7"}
    assert parse_action_answer(200, b'{"output": null}') == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", 'without a JSON object holding "output"'),
        (b"\xff\xfe", 'without a JSON object holding "output"'),
        (b"[]", 'without a JSON object holding "output"'),
        (b'{"result": {}}', 'without a JSON object holding "output"'),
        (b'{"output": [1]}', '"output" is list, not a JSON object'),
    ],
)
def test_garbage_with_200_fails_permanently(body: bytes, message: str) -> None:
    failed = failure(200, body)
    assert message in str(failed) and not failed.retryable


def test_429_and_5xx_are_retryable_and_honour_retry_after() -> None:
    busy = failure(429, error("ERP busy", retry_after=None), "30")
    assert (str(busy), busy.retryable, busy.retry_after) == ("the plugin answered 429: ERP busy", True, 30.0)
    down = failure(503, b"<html>Service Unavailable</html>")
    assert down.retryable and down.retry_after is None
    assert str(down) == "the plugin answered 503 without a Guiju error"
    # The longer of the error's retry_after and the Retry-After header.
    assert failure(500, error("later", retry_after=90.0), "30").retry_after == 90.0
    assert failure(502, error("later", retry_after=5), 60).retry_after == 60.0
    dated = failure(503, error("maintenance"), formatdate(NOW + 120, usegmt=True))
    assert dated.retryable and dated.retry_after is not None
    assert failure(503, error("later"), "garbage").retry_after is None


def test_a_plugin_may_say_a_5xx_is_not_worth_retrying() -> None:
    failed = failure(500, error("the order does not exist in the ERP", retryable=False))
    assert not failed.retryable and failed.retry_after is None


def test_other_4xx_are_permanent() -> None:
    for status in (400, 401, 404, 422):
        failed = failure(status, error("bad input", retryable=True), "30")
        assert (str(failed), failed.retryable, failed.retry_after) == (
            f"the plugin answered {status}: bad input",
            False,
            None,
        )
    assert not failure(302, b"").retryable  # a signed call is not redirected


def test_the_health_answer() -> None:
    assert parse_health_answer(200, b'{"ok": true, "message": ""}') == Health(True, "")
    assert parse_health_answer(200, b'{"ok": false, "message": "Set the ERP token"}') == Health(
        False, "Set the ERP token"
    )
    assert parse_health_answer(200, b'{"ok": "yes"}') == Health(
        False, 'the plugin\'s health check answered without a boolean "ok"'
    )
    assert parse_health_answer(503, b"") == Health(False, "the plugin's health check answered 503")
