"""Worker logs: every line logged while a message is processed is JSON carrying the message's
tenant, the request id behind it and its message id, including Dramatiq's own lines."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from services.broker import REQUEST_ID_OPTION, build_broker
from services.logs import JsonFormatter, message_id_var, request_id_var

QUEUE = "log-context"
log = logging.getLogger("guiju.test.worker_logs")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, formatted as the worker formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


@pytest.fixture
def broker() -> Iterator[dramatiq.Broker]:
    """A private in-process broker built like the application's, with its own worker."""
    private = build_broker(None)
    yield private
    private.close()


def _run(broker: dramatiq.Broker) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(QUEUE, timeout=10_000)  # type: ignore[attr-defined]  # StubBroker
    finally:
        worker.stop()


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_of_a_message_carries_tenant_request_and_message_ids(
    broker: dramatiq.Broker, json_lines: io.StringIO
) -> None:
    tenant = uuid.uuid4()
    attempts: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=1, min_backoff=10, max_backoff=10)
    def flaky(*, tenant_id: str) -> None:
        attempts.append(1)
        log.info("working", extra={"attempt": len(attempts)})
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        log.warning("done")

    rid = request_id_var.set("req-from-the-api")
    try:
        message = flaky.send(tenant_id=str(tenant))
    finally:
        request_id_var.reset(rid)
    assert message.options[REQUEST_ID_OPTION] == "req-from-the-api"
    _run(broker)

    lines = [line for line in _parsed(json_lines) if message.message_id in (line.get("message_id"), line["message"])]
    loggers = {line["logger"] for line in lines}
    # Ours, the worker's unhandled-error line and the retry middleware's notice.
    assert "guiju.test.worker_logs" in loggers
    assert any(name.startswith("dramatiq.worker") for name in loggers)
    assert any(name.startswith("dramatiq.middleware.retries") for name in loggers)
    assert len(attempts) == 2
    for line in lines:
        assert line["tenant_id"] == str(tenant), line
        assert line["request_id"] == "req-from-the-api", line
        assert line["message_id"] == message.message_id, line
    # The context ends with the message: nothing leaks into the test's thread.
    assert message_id_var.get() is None and request_id_var.get() is None


def test_work_without_a_request_uses_its_message_id_and_passes_it_on(
    broker: dramatiq.Broker, json_lines: io.StringIO
) -> None:
    tenant = uuid.uuid4()

    @dramatiq.actor(broker=broker, queue_name=QUEUE)
    async def follow_up(*, tenant_id: str) -> None:
        log.info("follow-up ran")  # async actors run on the AsyncIO loop: the context goes with them

    @dramatiq.actor(broker=broker, queue_name=QUEUE)
    def first(*, tenant_id: str) -> None:
        log.info("first ran")
        follow_up.send(tenant_id=tenant_id)

    message = first.send(tenant_id=str(tenant))
    assert REQUEST_ID_OPTION not in message.options
    _run(broker)

    by_message = {line["message"]: line for line in _parsed(json_lines) if line["logger"] == log.name}
    first_line, follow_line = by_message["first ran"], by_message["follow-up ran"]
    assert first_line["message_id"] == first_line["request_id"] == message.message_id
    assert follow_line["request_id"] == message.message_id  # the chain keeps the id it started with
    assert follow_line["message_id"] not in (None, message.message_id)
    assert {first_line["tenant_id"], follow_line["tenant_id"]} == {str(tenant)}
    assert all(line["actor"].startswith("actor:") for line in (first_line, follow_line))
