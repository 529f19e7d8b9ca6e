"""Bad input at the HTTP edge, on SQLite and PostgreSQL alike: bodies that are not JSON, U+0000 in
any text, numbers beyond the database's integers, bodies of another media type, and the security
headers every answer carries."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy import func, select

from services.accounts.models import User
from services.db import open_session
from tests.conftest import PASSWORD, Api, World, signup_body
from tests.integration.test_webhooks_inbound import _webhook_automation

JSON = {"Content-Type": "application/json"}
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def json_body_routes(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every route whose handler takes a body in its ``data`` parameter, with its
    path parameters filled in: read from the app's route table, so a new route cannot escape."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if "data" not in handler.parsed_fn_signature.parameters:
                continue
            for method in sorted(handler.http_methods):
                found.append((method, _filled(route.path)))
    return found


def optional_body_paths(app: Litestar) -> set[str]:
    """Path formats of the routes whose body may be left out (``data: T | None = None``)."""
    return {
        route.path
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if (data := handler.parsed_fn_signature.parameters.get("data")) is not None
        and (data.is_optional or data.has_default)
    }


def _filled(path_format: str) -> str:
    samples = {"uuid": str(uuid.uuid4()), "int": "1", "str": "sample"}
    return re.sub(r"\{(\w+)(?::(\w+))?\}", lambda m: samples.get(m.group(2) or "str", "sample"), path_format)


def nested(levels: int) -> bytes:
    """A JSON value nesting ``levels`` objects and arrays inside each other."""
    return b'{"a":[' * (levels // 2) + (b"{}" if levels % 2 else b"") + b"]}" * (levels // 2)


def codes_at(response: Any) -> set[tuple[str, str]]:
    return {(e["pointer"], e["code"]) for e in response.json().get("errors", [])}


async def signed_in_client(world: World) -> tuple[Api, dict[str, Any]]:
    return await world.signup()


# ---------------------------------------------------------------- malformed bodies


MALFORMED: dict[str, tuple[bytes, str]] = {
    "a thousand levels deep": (b"[" * 1000 + b"]" * 1000, "too_deeply_nested"),
    "objects a thousand levels deep": (nested(1000), "too_deeply_nested"),
    "not UTF-8 inside a text": (b'{"display_name": "\xff\xfe tea"}', "invalid_utf8"),
    "not UTF-8 outside a text": (b'{"display_name": 1}\xc3', "invalid_utf8"),
    "truncated": (b'{"email": "li@example.com", "pass', "malformed_json"),
    "empty": (b"", "malformed_json"),
    "only blanks": (b" \r\n", "malformed_json"),
}


async def test_every_json_route_answers_malformed_bodies_with_400(world: World) -> None:
    api, _ = await signed_in_client(world)
    routes = json_body_routes(world.app)
    assert ("POST", "/api/v1/auth/signup") in routes and len(routes) > 30
    answers: dict[tuple[str, str, str], tuple[int, str, str]] = {}
    for method, path in routes:
        for name, (body, _code) in MALFORMED.items():
            response = await api.request(method, path, content=body, headers=JSON)
            answers[(method, path, name)] = (
                response.status_code,
                response.headers.get("content-type", ""),
                response.json().get("code", "") if response.content else "",
            )
    expected = {
        (method, path, name): (400, "application/problem+json", code)
        for method, path in routes
        for name, (_body, code) in MALFORMED.items()
    }
    # Where the body may be left out, an empty one is no body: the route answers as it would
    # without one (here: its random id is not found).
    optional = {re.sub(r"\{[^}]+\}", "*", path) for path in optional_body_paths(world.app)}
    assert optional == {"/api/v1/webhooks/*/rotate-secret"}
    for method, path in routes:
        if re.sub(r"/[0-9a-f-]{36}", "/*", path) in optional:
            status, media_type, _code = answers[(method, path, "empty")]
            assert (status, media_type) == (404, "application/problem+json"), path
            expected[(method, path, "empty")] = answers[(method, path, "empty")]
    assert {k: v for k, v in answers.items() if v != expected[k]} == {}


async def test_the_nesting_limit_is_64_levels(world: World) -> None:
    api = await world.client()
    body = signup_body()
    at_limit = json.dumps({**body, "display_name": json.loads(nested(63))}).encode()
    over_limit = json.dumps({**body, "display_name": json.loads(nested(64))}).encode()
    # 63 levels inside the body's own object: 64 in all, read and then judged by the schema.
    within = await api.post("/api/v1/auth/signup", content=at_limit, headers=JSON)
    assert within.status_code == 422 and codes_at(within) == {("/display_name", "wrong_type")}
    beyond = await api.post("/api/v1/auth/signup", content=over_limit, headers=JSON)
    assert beyond.status_code == 400 and beyond.json()["code"] == "too_deeply_nested"
    assert "64" in beyond.json()["detail"]


async def test_the_inbound_webhook_refuses_malformed_payloads_with_400_and_logs_them(world: World) -> None:
    api, _ = await signed_in_client(world)
    automation_id, path, _secret = await _webhook_automation(api, verify=False)
    sender = await world.client()
    cases = [
        (b"[" * 1000 + b"]" * 1000, 400, "too_deeply_nested"),
        (b'{"code": "\xff"}', 400, "invalid_utf8"),
        (b'{"code": ', 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"code": "A\\u0000B", "x\\u0000": 1}', 422, "validation_failed"),
    ]
    for body, status, code in cases:
        response = await sender.client.post(path, content=body, headers=JSON)
        assert (response.status_code, response.json()["code"]) == (status, code), body[:40]
    nul = await sender.client.post(path, content=cases[-1][0], headers=JSON)
    assert codes_at(nul) == {("/code", "nul_character"), ("/x\x00", "nul_character")}
    accepted = await sender.client.post(path, content=b'{"code": "A-1"}', headers=JSON)
    assert accepted.status_code == 202, accepted.text
    listed = await api.get(f"/api/v1/automations/{automation_id}/webhook/deliveries")
    # Newest first: the accepted call, the second U+0000 call, then the cases in reverse.
    assert [d["code"] for d in listed.json()] == [None, "validation_failed", *reversed([c for _b, _s, c in cases])]


# ---------------------------------------------------------------- U+0000


async def test_nul_in_a_json_body_is_422_listing_every_text_and_creates_nothing(world: World) -> None:
    api = await world.client()
    body = signup_body(display_name="Li\x00Wei", company_name="\x00Tea")
    body["extra\x00"] = {"nested": ["ok", "bad\x00"], "a/b": "\x00"}
    response = await api.post("/api/v1/auth/signup", body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert codes_at(response) == {
        ("/display_name", "nul_character"),
        ("/company_name", "nul_character"),
        ("/extra\x00", "nul_character"),
        ("/extra\x00/nested/1", "nul_character"),
        ("/extra\x00/a~1b", "nul_character"),
    }
    assert "set-cookie" not in response.headers
    async with open_session(system=True) as db:
        assert await db.scalar(select(func.count()).select_from(User).where(User.email == body["email"])) == 0


async def test_nul_deep_in_a_signed_in_write_is_422_with_its_pointer(world: World) -> None:
    api, _ = await signed_in_client(world)
    step = {"kind": "task", "key": "pick", "title": "Pick\x00", "owner": {"kind": "role", "role": "member"}}
    response = await api.post(
        "/api/v1/procedures",
        {"key": "pick", "title": "Pick", "definition": {"start": "pick", "steps": [step]}},
    )
    assert response.status_code == 422, response.text
    assert codes_at(response) == {("/definition/steps/0/title", "nul_character")}
    listed = await api.get("/api/v1/procedures")
    assert listed.status_code == 200 and listed.json() == []


async def test_nul_in_query_and_path_parameters_is_422(world: World) -> None:
    api, _ = await signed_in_client(world)
    audit = await api.get("/api/v1/audit", params={"subject_type": "run\x00", "subject_id": "\x00"})
    assert audit.status_code == 422, audit.text
    assert codes_at(audit) == {("/query/subject_type", "nul_character"), ("/query/subject_id", "nul_character")}
    plugin = await api.get("/api/v1/marketplace/plugins/mess%00aging")
    assert plugin.status_code == 422, plugin.text
    assert codes_at(plugin) == {("/path/name", "nul_character")}
    installed = await api.get("/api/v1/plugins/mess%00aging")
    assert installed.status_code == 422, installed.text


# ---------------------------------------------------------------- integers beyond the database's


async def test_the_audit_list_bounds_before_seq_to_bigint(world: World) -> None:
    api, _ = await signed_in_client(world)
    for value in (INT64_MAX + 1, 10**30, 0, -1):
        response = await api.get("/api/v1/audit", params={"before_seq": value})
        assert response.status_code == 422, (value, response.text)
        assert {p for p, _c in codes_at(response)} == {"/query/before_seq"}
    audited = await api.post(
        "/api/v1/collections",
        {"key": "orders", "name": "Orders", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    assert audited.status_code == 201, audited.text
    largest = await api.get("/api/v1/audit", params={"before_seq": INT64_MAX})
    assert largest.status_code == 200, largest.text
    assert len(largest.json()["items"]) >= 1


async def test_page_sizes_and_numeric_ids_beyond_the_database_are_4xx(world: World) -> None:
    api, _ = await signed_in_client(world)
    automation_id, _path, _secret = await _webhook_automation(api, verify=False)
    for limit in (INT64_MAX + 1, -1, 0, 10**6):
        response = await api.get(f"/api/v1/automations/{automation_id}/executions", params={"limit": limit})
        assert response.status_code == 422, (limit, response.text)
        assert {p for p, _c in codes_at(response)} == {"/query/limit"}

    procedure = await api.post(
        "/api/v1/procedures",
        {
            "key": "pick",
            "title": "Pick",
            "definition": {
                "start": "pick",
                "steps": [{"kind": "task", "key": "pick", "title": "Pick", "owner": {"kind": "role", "role": "owner"}}],
            },
        },
    )
    assert procedure.status_code == 201, procedure.text
    procedure_id, version_id = procedure.json()["id"], procedure.json()["draft_version_id"]
    published = await api.post(
        f"/api/v1/procedures/{procedure_id}/versions/{version_id}/publish", {"change_note": "first"}
    )
    assert published.status_code == 200, published.text
    run = await api.post("/api/v1/runs", {"procedure_id": procedure_id})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    for step_id in (INT32_MAX + 1, INT64_MAX + 1, -1):
        claimed = await api.post(f"/api/v1/runs/{run_id}/steps/{step_id}/start")
        assert 400 <= claimed.status_code < 500 and claimed.status_code != 415, (step_id, claimed.text)
        resolved = await api.post(f"/api/v1/runs/{run_id}/exceptions/{step_id}/resolve", {"outcome": "resume"})
        assert 400 <= resolved.status_code < 500 and resolved.status_code != 415, (step_id, resolved.text)
    for step_id in (INT32_MAX + 1, INT64_MAX + 1):
        comment = await api.post(f"/api/v1/runs/{run_id}/comments", {"body": "hi", "step_id": step_id})
        assert comment.status_code == 422 and ("/step_id", "out_of_range") in codes_at(comment), comment.text
        raised = await api.post(f"/api/v1/runs/{run_id}/exceptions", {"kind": "other", "step_id": step_id})
        assert raised.status_code == 422 and "/step_id" in {p for p, _c in codes_at(raised)}, raised.text

    collection = await api.post(
        "/api/v1/collections",
        {"key": "orders", "name": "Orders", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    assert collection.status_code == 201, collection.text
    records = f"/api/v1/collections/{collection.json()['id']}/records"
    record = await api.post(records, {"values": {"code": "A-1"}})
    assert record.status_code == 201, record.text
    for version in (INT32_MAX + 1, INT64_MAX + 1):
        patched = await api.patch(f"{records}/{record.json()['id']}", {"values": {"code": "B"}, "version": version})
        assert patched.status_code == 422 and "/version" in {p for p, _c in codes_at(patched)}, patched.text
    for limit in (INT64_MAX + 1, -1):
        page = await api.get(records, params={"limit": limit})
        assert page.status_code == 422, page.text


async def test_a_task_cursor_with_a_step_number_beyond_the_column_is_422(world: World) -> None:
    api, _ = await signed_in_client(world)
    for step_id in (INT32_MAX + 1, INT64_MAX + 1, -(2**70), 0):
        forged = [None, str(uuid.uuid4()), step_id]
        cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        response = await api.get("/api/v1/my/tasks", params={"cursor": cursor})
        assert response.status_code == 422, (step_id, response.text)
        assert codes_at(response) == {("/query/cursor", "invalid_cursor")}
    fine = base64.urlsafe_b64encode(json.dumps([None, str(uuid.uuid4()), INT32_MAX]).encode()).decode()
    assert (await api.get("/api/v1/my/tasks", params={"cursor": fine})).status_code == 200


async def test_cursors_nested_deep_or_holding_nul_are_invalid_cursors(world: World) -> None:
    api, _ = await signed_in_client(world)
    collection = await api.post(
        "/api/v1/collections",
        {"key": "orders", "name": "Orders", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    records = f"/api/v1/collections/{collection.json()['id']}/records"
    deep = base64.urlsafe_b64encode(b"[" * 100 + b"]" * 100).decode()  # past the 64 levels, within 500 characters
    nul = base64.urlsafe_b64encode(json.dumps(["code", "A\x00", str(uuid.uuid4())]).encode()).decode()
    for path, params, pointer in [
        ("/api/v1/my/tasks", {"cursor": deep}, "/query/cursor"),
        ("/api/v1/runs", {"cursor": deep}, "/query/cursor"),
        ("/api/v1/notifications", {"cursor": deep}, "/query/cursor"),
        (records, {"cursor": deep}, "/query/cursor"),
        (records, {"sort": "code", "cursor": nul}, "/query/cursor"),
    ]:
        response = await api.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        assert codes_at(response) == {(pointer, "invalid_cursor")}, path


async def test_a_records_cursor_holding_a_value_of_the_wrong_kind_for_its_sort_is_422(world: World) -> None:
    api, _ = await signed_in_client(world)
    fields = [
        {"key": "code", "label": "Code", "type": "text"},
        {"key": "qty", "label": "Qty", "type": "number"},
        {"key": "due", "label": "Due", "type": "date"},
        {"key": "paid", "label": "Paid", "type": "boolean"},
    ]
    collection = await api.post("/api/v1/collections", {"key": "lots", "name": "Lots", "fields": fields})
    assert collection.status_code == 201, collection.text
    records = f"/api/v1/collections/{collection.json()['id']}/records"
    for values in ({"code": "A", "qty": 1, "due": "2026-01-02", "paid": True}, {"code": "B", "qty": 2}):
        assert (await api.post(records, {"values": values})).status_code == 201

    def forged(spec: str, value: Any) -> str:
        raw = json.dumps([spec, value, str(uuid.uuid4())]).encode()
        return base64.urlsafe_b64encode(raw).decode()

    wrong = [
        ("qty", 10**309),  # past a double
        ("qty", "1e999"),
        ("qty", True),
        ("-qty", "12"),
        ("due", 20260102),
        ("paid", "yes"),
        ("code", {"a": 1}),
        ("created_at", 5),
        ("created_at", "2026-01-02T00:00:00"),  # no offset
        ("-updated_at", "not a time"),
    ]
    for spec, value in wrong:
        response = await api.get(records, params={"sort": spec, "cursor": forged(spec, value)})
        assert response.status_code == 422, (spec, value, response.text)
        assert codes_at(response) == {("/query/cursor", "invalid_cursor")}, (spec, value)
    for spec in ("qty", "-qty", "due", "paid", "code", "created_at", "-updated_at"):
        first = await api.get(records, params={"sort": spec, "limit": 1})
        assert first.status_code == 200, first.text
        cursor = first.json()["next_cursor"]
        assert cursor, spec
        second = await api.get(records, params={"sort": spec, "limit": 1, "cursor": cursor})
        assert second.status_code == 200, (spec, second.text)
        assert [r["id"] for r in second.json()["items"]] != [r["id"] for r in first.json()["items"]], spec


# ---------------------------------------------------------------- media types


OTHER_MEDIA_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/html"]


async def test_every_json_route_answers_other_media_types_with_415(world: World) -> None:
    api, _ = await signed_in_client(world)
    answers: dict[tuple[str, str, str], tuple[int, str]] = {}
    routes = json_body_routes(world.app)
    for method, path in routes:
        for media_type in [*OTHER_MEDIA_TYPES, ""]:
            headers = {"Content-Type": media_type} if media_type else {}
            response = await api.request(method, path, content=b"{}", headers=headers)
            answers[(method, path, media_type)] = (response.status_code, response.json().get("code", ""))
    assert {k: v for k, v in answers.items() if v != (415, "unsupported_media_type")} == {}


async def test_json_media_types_with_a_charset_or_suffix_are_read(world: World) -> None:
    api = await world.client()
    for media_type in ("application/json; charset=utf-8", "application/merge-patch+json", "Application/JSON"):
        body = json.dumps(signup_body()).encode()
        response = await api.post("/api/v1/auth/signup", content=body, headers={"Content-Type": media_type})
        assert response.status_code == 201, (media_type, response.text)


async def test_a_cross_site_form_cannot_sign_anyone_in(world: World) -> None:
    _owner, body = await world.signup()
    email = body["user"]["email"]
    credentials = json.dumps({"email": email, "password": PASSWORD})
    for media_type in [*OTHER_MEDIA_TYPES, ""]:
        headers = {"Content-Type": media_type} if media_type else {}
        victim = await world.client()
        login = await victim.post("/api/v1/auth/login", content=credentials.encode(), headers=headers)
        assert login.status_code == 415, (media_type, login.text)
        assert login.headers["accept-post"] == "application/json"
        assert "set-cookie" not in login.headers
        assert (await victim.get("/api/v1/auth/session")).status_code == 401
        new_account = signup_body()
        signup = await victim.post("/api/v1/auth/signup", content=json.dumps(new_account).encode(), headers=headers)
        assert signup.status_code == 415, (media_type, signup.text)
        assert "set-cookie" not in signup.headers
        async with open_session(system=True) as db:
            count = select(func.count()).select_from(User).where(User.email == new_account["email"])
            assert await db.scalar(count) == 0
    real = await (await world.client()).post("/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert real.status_code == 200 and "guiju_session" in real.headers["set-cookie"]


async def test_uploads_still_take_multipart(world: World) -> None:
    api, _ = await signed_in_client(world)
    uploaded = await api.post("/api/v1/files", files={"file": ("note.txt", b"tea", "text/plain")})
    assert uploaded.status_code == 201, uploaded.text
    as_json = await api.post("/api/v1/files", {"file": "tea"})
    assert as_json.status_code == 422, as_json.text


# ---------------------------------------------------------------- headers


async def test_pages_carry_a_policy_with_a_fresh_nonce_their_scripts_use(world: World) -> None:
    api = await world.client()
    nonces = []
    for path in ("/verify-email", "/reset-password", "/invitations/accept", "/verify-email"):
        page = await api.get(path, params={"token": "t"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] in ("no-referrer", "same-origin", "strict-origin-when-cross-origin")
        directives = [part.strip().partition(" ") for part in page.headers["content-security-policy"].split(";")]
        policy = {name: value for name, _blank, value in directives}
        nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_-]{16,})'", policy["script-src"])
        assert nonce is not None, policy
        nonces.append(nonce.group(1))
        assert policy["default-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
        assert policy["form-action"] == "'self'"
        assert page.headers["referrer-policy"] == "no-referrer"  # the token is in the address
        # Scripts come from our own static files; any inline script or style carries the nonce.
        tags = re.findall(r"<(script|style)([^>]*)>", page.text)
        assert any(tag == "script" and 'src="/static/' in attributes for tag, attributes in tags)
        inline = [attributes for tag, attributes in tags if "src=" not in attributes]
        assert all(f'nonce="{nonce.group(1)}"' in attributes for attributes in inline)
    assert len(set(nonces)) == len(nonces)


async def test_every_answer_is_nosniff_and_signed_in_ones_are_not_stored(world: World) -> None:
    anonymous = await world.client()
    for path in ("/healthz", "/api/v1/nowhere", "/api/v1/tenant", "/docs/openapi.json"):
        response = await anonymous.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "no-store" not in response.headers.get("cache-control", ""), path

    signup = await anonymous.post("/api/v1/auth/signup", signup_body())
    assert signup.status_code == 201 and signup.headers["cache-control"] == "no-store"
    for path in ("/api/v1/auth/session", "/api/v1/tenant", "/api/v1/audit", "/api/v1/procedures"):
        response = await anonymous.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["cache-control"] == "no-store", path
        assert response.headers["x-content-type-options"] == "nosniff", path
    uploaded = await anonymous.post("/api/v1/files", files={"file": ("note.txt", b"tea", "text/plain")})
    download = await anonymous.get(f"/api/v1/files/{uploaded.json()['id']}/content")
    assert download.headers["cache-control"] == "no-store"
    assert download.headers["content-security-policy"] == "sandbox"
    logout = await anonymous.post("/api/v1/auth/logout")
    assert logout.status_code == 204 and logout.headers["cache-control"] == "no-store"
    assert (await anonymous.get("/api/v1/auth/session")).status_code == 401


async def test_the_api_docs_page_has_a_policy_of_its_own_that_lets_it_run(world: World) -> None:
    api = await world.client()
    docs = await api.get("/docs/")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert docs.headers["x-content-type-options"] == "nosniff"
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', docs.text):
        served = await api.get(asset)
        assert served.status_code == 200, asset
        kind = "javascript" if asset.endswith(".js") else "css"
        assert kind in served.headers["content-type"], (asset, served.headers["content-type"])
