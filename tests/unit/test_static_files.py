"""``/static``: gzip for clients that accept it, a year's ``immutable`` caching for the addresses the
pages use (the file's hash in ``v``), and revalidation for any other address."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from services.web.static_files import IMMUTABLE, REVALIDATE, static_router
from services.web.templating import STATIC_DIR, static_url


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(Litestar(route_handlers=[static_router()])) as test_client:
        yield test_client


def test_a_hashed_address_is_cached_for_good_and_gzipped(client: TestClient[Litestar]) -> None:
    answer = client.get(static_url("app/app.css"), headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in answer.headers["vary"].lower()
    # httpx decodes the body; the bytes on the wire are the gzip of the file.
    assert answer.content == (STATIC_DIR / "app" / "app.css").read_bytes()
    assert int(answer.headers["content-length"]) < len(answer.content) / 3
    assert answer.headers["content-type"].startswith("text/css")


def test_a_client_without_gzip_gets_the_file_as_it_is(client: TestClient[Litestar]) -> None:
    answer = client.get(static_url("vendor/htmx.org/dist/htmx.min.js"), headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert answer.content == (STATIC_DIR / "vendor/htmx.org/dist/htmx.min.js").read_bytes()


@pytest.mark.parametrize("query", ["", "?v=0123456789ab", "?v=", "?v=a&v=b"])
def test_any_other_address_of_a_file_is_revalidated(client: TestClient[Litestar], query: str) -> None:
    answer = client.get(f"/static/app/app.js{query}")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == REVALIDATE


def test_a_missing_file_is_not_cached_and_nothing_outside_is_read(client: TestClient[Litestar]) -> None:
    assert client.get("/static/app/nothing.css?v=0123456789ab").status_code == 404
    outside = client.get("/static/../web/templating.py")
    assert outside.status_code == 404
    assert "cache-control" not in outside.headers or outside.headers["cache-control"] != IMMUTABLE
