"""The OpenAPI document: every operation's client errors are problem+json, derived and registered
in one place, with the security, bodies and media types the API really has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.app import create_app
from services.openapi import operations
from services.openapi.document import documented_operations
from services.settings import Settings
from services.web.scope_texts import SCOPE_TEXTS
from tenants.errors import FieldProblem, ValidationProblem
from tenants.scopes import SCOPES
from tests.unit.test_route_scopes import TOKEN_REFUSED

PROBLEM_REF = "#/components/schemas/Problem"
METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(var_dir=tmp, database_url=f"sqlite+aiosqlite:///{tmp}/unused.db", secret_key="t" * 48)
    return create_app(settings).openapi_schema.to_schema()


def each_operation(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_registry_names_only_operations_of_the_document(document: dict[str, Any]) -> None:
    known = set(documented_operations(document))
    registered = {
        *operations.DOMAIN_PROBLEMS,
        *operations.BODIES,
        *operations.SUCCESS_CONTENT,
        *operations.ALTERNATIVE_CONTENT,
        *operations.MORE_SUCCESS,
    }
    assert registered - known == set()
    assert len(known) > 100


def test_every_client_error_is_problem_json_with_its_codes(document: dict[str, Any]) -> None:
    for key, operation in each_operation(document):
        errors = {status: r for status, r in operation["responses"].items() if status.startswith("4")}
        for status, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (key, status)
            media = response["content"]["application/problem+json"]
            assert media["schema"] == {"$ref": PROBLEM_REF}, (key, status)
            codes = list(media["examples"])
            assert codes, (key, status)
            assert all(f"`{code}`" in response["description"] for code in codes), (key, status)
            assert all(example["value"]["status"] == int(status) for example in media["examples"].values())


def test_errors_follow_from_what_the_handler_is(document: dict[str, Any]) -> None:
    for key, operation in each_operation(document):
        method = key.split(" ", 1)[0]
        responses = operation["responses"]
        security = operation.get("security") or []
        if {"session": []} in security or {"session": [], "csrf": []} in security:
            if {} not in security:  # the session is required, not optional
                assert "not_authenticated" in responses["401"]["content"]["application/problem+json"]["examples"]
            if method != "GET":
                assert {"session": [], "csrf": []} in security, key
                assert "csrf_failed" in responses["403"]["content"]["application/problem+json"]["examples"], key
        if "{" in key:
            assert "404" in responses, key
        body = operation.get("requestBody", {}).get("content", {})
        if "application/json" in body and key not in operations.BODIES:
            assert {"400", "413", "415", "422"} <= set(responses), key
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "422" in responses, key
        if not body and not operation.get("parameters"):
            assert not {"400", "413", "415"} & set(responses), key


def test_uploads_exports_and_throttles_have_their_real_shapes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    export = paths["/api/v1/collections/{collection_id}/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
    upload = paths["/api/v1/files"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    login = paths["/api/v1/auth/login"]["post"]
    assert "Retry-After" in login["responses"]["429"]["headers"]
    assert "invalid_credentials" in login["responses"]["401"]["content"]["application/problem+json"]["examples"]
    assert login["security"] == []  # no session needed to sign in
    assert document["components"]["securitySchemes"]["session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "guiju_session",
        "description": document["components"]["securitySchemes"]["session"]["description"],
    }


def test_request_bodies_refuse_unknown_fields_as_the_decoder_does(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["SignupIn"]["additionalProperties"] is False
    assert schemas["RecordIn"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["RecordOut"]
    signup = schemas["SignupIn"]["properties"]
    assert signup["email"]["format"] == "email"
    assert signup["industry"]["enum"] == ["ecommerce", "foreign_trade", "clinic", "general"]
    assert signup["password"]["minLength"] == 10


def test_a_real_problem_matches_the_problem_schema(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": PROBLEM_REF, "components": document["components"]},
    )
    problem = ValidationProblem(errors=[FieldProblem(pointer="/email", code="invalid_email", message="no @")])
    validator.validate(problem.to_problem(instance="/api/v1/auth/signup"))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"status_code": 400, "detail": "Litestar's own shape"})


def test_the_oauth2_scheme_offers_every_scope_on_our_own_endpoints(document: dict[str, Any]) -> None:
    oauth2 = document["components"]["securitySchemes"]["oauth2"]
    assert oauth2["type"] == "oauth2"
    code_flow = oauth2["flows"]["authorizationCode"]
    assert code_flow["authorizationUrl"] == "/oauth/authorize"
    assert code_flow["tokenUrl"] == code_flow["refreshUrl"] == "/oauth/token"
    assert oauth2["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    for flow in oauth2["flows"].values():
        assert flow["scopes"] == {scope: SCOPE_TEXTS[scope] for scope in SCOPES}
        assert list(flow["scopes"]) == list(SCOPES)


def test_each_operation_takes_a_token_with_its_scope_or_none(document: dict[str, Any]) -> None:
    scoped = 0
    for key, operation in each_operation(document):
        method, path = key.split(" ", 1)
        security = operation.get("security") or []
        tokens = [requirement["oauth2"] for requirement in security if "oauth2" in requirement]
        if not path.startswith("/api/v1/") or key in TOKEN_REFUSED:
            assert tokens == [], key
            continue
        # The session still works, with its CSRF token on writes; a token is the alternative.
        session = {"session": []} if method == "GET" else {"session": [], "csrf": []}
        assert security[0] == session, key
        assert len(tokens) == 1 and len(tokens[0]) == 1, key
        assert security[1] == {"oauth2": tokens[0]}, key
        scope = tokens[0][0]
        assert scope in SCOPES, key
        if method == "GET":
            assert scope.endswith((":read", ":manage")), key
        scoped += 1
    assert scoped > 100
    paths = document["paths"]
    assert paths["/api/v1/audit"]["get"]["security"][1] == {"oauth2": ["audit:read"]}
    assert paths["/api/v1/collections/{collection_id}/records"]["post"]["security"][1] == {"oauth2": ["records:write"]}
    assert paths["/api/v1/auth/session"]["get"]["security"] == [{"session": []}]
    assert paths["/healthz"]["get"].get("security") in (None, [])
