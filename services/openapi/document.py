"""Every operation's real error responses, as ``application/problem+json``, in one place.

Litestar documents a handler's success response and, for any handler with parameters, a 400 in its
own error shape, which this API never sends. Here each operation's client errors are derived from
what its handler is, and the domain errors its service raises are added from
:mod:`services.openapi.operations`:

- it needs a signed-in caller (the ``principal`` dependency): 401 ``not_authenticated``;
- it writes with a session (``principal`` or ``optional_principal`` on POST/PUT/PATCH/DELETE):
  403 ``csrf_failed``;
- it has path parameters: 404 ``not_found`` (a value of the wrong form matches no route);
- it reads a JSON body: 400 (the body is not JSON), 413, 415 and 422 ``validation_failed``;
- it reads a multipart upload: 400, 413 and 422;
- it has query parameters, or path parameters with bounds: 422 ``validation_failed``.

Its security follows too: the session (with its CSRF token on writes) and, where the route names the
scope a token needs (``tenants.scopes``), an OAuth 2.0 token with that scope.

Litestar applies them when it builds the document: the error responses as the handler's
``responses`` (so that the ``Problem`` schema lands in the components), the rest through the
handler's ``operation_class``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from litestar import Litestar
from litestar._kwargs import KwargsModel
from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Example,
    OAuthFlow,
    OAuthFlows,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition
from msgspec import Meta

from services.http import PROBLEM_MEDIA_TYPE, SAFE_METHODS, SESSION_COOKIE
from services.openapi import operations
from services.web.scope_texts import SCOPE_TEXTS
from tenants.errors import FieldProblem
from tenants.scopes import SCOPES, required_scope

SESSION_SCHEME = "session"
CSRF_SCHEME = "csrf"
OAUTH2_SCHEME = "oauth2"
# The OAuth 2.0 endpoints, on the API's own server.
AUTHORIZATION_URL = "/oauth/authorize"
TOKEN_URL = "/oauth/token"  # noqa: S105 (an address, not a secret)

# The title a client sees for each status (the classes of tenants.errors) and what it means here.
STATUS_TEXT: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The request cannot be read (the body is not what its media type says)."),
    401: ("Sign in first", "No valid session or token, or the credentials are wrong."),
    403: ("Not allowed", "The caller may not do this."),
    404: ("Not found", "No such resource in the caller's workspace."),
    409: ("Conflict", "The request conflicts with the current state of the resource."),
    410: ("No longer valid", "The link's token has expired, was used or was never valid."),
    413: ("Too large", "The body is larger than this operation accepts."),
    415: ("Unsupported media type", "The body's Content-Type is not one this operation reads."),
    422: ("The input is not valid", "The input is not valid; `errors` lists every problem, not only the first."),
    429: ("Too many attempts", "Too many attempts; try again after the number of seconds in `Retry-After`."),
}

JSON_BODY_PROBLEMS: dict[int, tuple[str, ...]] = {
    400: ("malformed_json", "bad_request"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    422: ("validation_failed",),
}
UPLOAD_PROBLEMS: dict[int, tuple[str, ...]] = {
    400: ("bad_request",),
    413: ("file_too_large", "payload_too_large"),
    422: ("validation_failed",),
}


class Problem(msgspec.Struct, kw_only=True):
    """An error, as application/problem+json (RFC 9457) with a stable ``code``; each response
    lists the codes it carries (see tenants.errors.ProblemError.to_problem)."""

    type: Annotated[str, Meta(description="https://guiju.dev/problems/ followed by the code")]
    title: str
    status: Annotated[int, Meta(ge=400, le=599)]
    code: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*$", description="A stable code a client can rely on")]
    detail: str = ""
    instance: Annotated[str, Meta(description="The path of the request")] = ""
    errors: Annotated[list[FieldProblem], Meta(description="Every problem of the input (422)")] = []


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's schemas of msgspec structs, saying ``additionalProperties: false`` for the request
    bodies that refuse unknown fields (``forbid_unknown_fields``), as the decoder does."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def components() -> Components:
    """The credentials: a session's cookie and, on writes, its CSRF token; or an OAuth 2.0 token."""
    scopes = {scope: SCOPE_TEXTS[scope] for scope in SCOPES}
    return Components(
        security_schemes={
            OAUTH2_SCHEME: SecurityScheme(
                type="oauth2",
                description=(
                    "An access token, sent as `Authorization: Bearer <token>`. It reaches the operations "
                    "whose scope it holds, within what its user's role allows; operations that list no "
                    "`oauth2` requirement take no token. Writes made with a token need no CSRF token."
                ),
                flows=OAuthFlows(
                    authorization_code=OAuthFlow(
                        authorization_url=AUTHORIZATION_URL,
                        token_url=TOKEN_URL,
                        refresh_url=TOKEN_URL,
                        scopes=scopes,
                    ),
                    client_credentials=OAuthFlow(token_url=TOKEN_URL, scopes=scopes),
                ),
            ),
            SESSION_SCHEME: SecurityScheme(
                type="apiKey",
                name=SESSION_COOKIE,
                security_scheme_in="cookie",
                description="The session cookie set by sign-up, sign-in and accepting an invitation.",
            ),
            CSRF_SCHEME: SecurityScheme(
                type="apiKey",
                name="X-CSRF-Token",
                security_scheme_in="header",
                description="The session's `csrf_token`: required on every write made with the session cookie.",
            ),
        },
    )


@dataclass
class OperationErrors:
    """What one operation may answer besides success, and how it authenticates and reads its body."""

    problems: dict[int, list[str]] = field(default_factory=dict)
    security: list[SecurityRequirement] | None = None
    body: operations.Body | None = None

    def add(self, status: int, codes: Iterable[str]) -> None:
        known = self.problems.setdefault(status, [])
        known.extend(code for code in codes if code not in known)


def operation_key(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def derive_errors(method: str, path: str, handler: HTTPRouteHandler, kwargs: KwargsModel) -> OperationErrors:
    """The problems an operation answers with, from its handler's signature and the registry."""
    key = operation_key(method, path)
    signature = handler.parsed_fn_signature.parameters
    writes = method.upper() not in SAFE_METHODS
    found = OperationErrors(body=operations.BODIES.get(key))
    if "data" in signature:
        found.body = "json"

    session: SecurityRequirement = {SESSION_SCHEME: [], CSRF_SCHEME: []} if writes else {SESSION_SCHEME: []}
    # A token is the other way in, where the route names the scope it needs (tenants.scopes).
    scope = required_scope(handler.opt, method)
    token: list[SecurityRequirement] = [{OAUTH2_SCHEME: [scope]}] if scope else []
    if "principal" in signature:
        found.add(401, ["not_authenticated"])
        found.security = [session, *token]
    elif "optional_principal" in signature:
        # Anonymous, or with a session (and then, on a write, its CSRF token).
        found.security = [{}, session, *token]
    else:
        found.security = []
    if writes and ("principal" in signature or "optional_principal" in signature):
        found.add(403, ["csrf_failed"])
    if "principal" in signature or "optional_principal" in signature:
        # What a Bearer token meets (services.oauth.principals): refused where the route takes no
        # token, short of the route's scope, or over its app's rate limit.
        found.add(401, ["invalid_token"])
        found.add(403, ["insufficient_scope"] if scope else ["token_not_accepted"])
        if scope:
            found.add(429, ["api_rate_limited"])

    if "{" in path:
        found.add(404, ["not_found"])
    # A body the handler reads itself (json_object) has its own problems in the registry.
    if found.body == "json":
        for status, codes in JSON_BODY_PROBLEMS.items():
            found.add(status, codes)
    elif found.body == "upload":
        for status, codes in UPLOAD_PROBLEMS.items():
            found.add(status, codes)
    if kwargs.expected_query_params or any(
        _constrained(signature.get(p.field_name)) for p in kwargs.expected_path_params
    ):
        found.add(422, ["validation_failed"])
    for status, codes in operations.DOMAIN_PROBLEMS.get(key, {}).items():
        found.add(status, codes)
    return found


def _constrained(parameter: FieldDefinition | None) -> bool:
    """A path parameter with bounds: a value of the right form but out of them is a 422."""
    bounds = ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern")
    kwarg = parameter.kwarg_definition if parameter is not None else None
    return kwarg is not None and any(getattr(kwarg, name, None) is not None for name in bounds)


def problem_response(status: int, codes: list[str]) -> ResponseSpec:
    title, meaning = STATUS_TEXT[status]
    return ResponseSpec(
        Problem,
        description=f"{meaning} Codes: {', '.join(f'`{code}`' for code in codes)}.",
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
        examples=[
            Example(
                summary=code,
                value={"type": f"https://guiju.dev/problems/{code}", "title": title, "status": status, "code": code},
            )
            for code in codes
        ],
    )


def _request_body(body: operations.Body) -> RequestBody | None:
    if body == "upload":
        return RequestBody(
            required=True,
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["file"],
                        properties={
                            "file": Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream")
                        },
                    )
                )
            },
        )
    if body == "json_object":
        return RequestBody(
            required=True,
            content={"application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))},
        )
    return None


def complete_operation(operation: Operation, key: str, errors: OperationErrors) -> None:
    """What Litestar cannot know: no client error but the real ones, security, the bodies a
    handler reads itself, media types beyond JSON."""
    # Litestar writes its responses as objects, never references.
    responses = {code: r for code, r in (operation.responses or {}).items() if isinstance(r, OpenAPIResponse)}
    # Every client error of this API is problem+json and listed in ``errors``; Litestar adds a 400
    # in its own shape to any operation with parameters.
    for code in [c for c in responses if c.startswith("4") and int(c) not in errors.problems]:
        del responses[code]
    for code, response in responses.items():
        if code.startswith("4"):
            _name_examples_by_code(response)
    if "429" in responses:
        responses["429"].headers = {
            "Retry-After": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
                description="Seconds until another attempt may succeed.",
            )
        }
    for status, replaced in operations.SUCCESS_CONTENT.get(key, {}).items():
        responses[str(status)].content = _content(replaced)
    for status, added in operations.ALTERNATIVE_CONTENT.get(key, {}).items():
        response = responses[str(status)]
        response.content = {**(response.content or {}), **_content(added)}
    success = next((responses[c] for c in responses if c.startswith("2")), None)
    for status, description in operations.MORE_SUCCESS.get(key, {}).items():
        if success is not None:
            responses[str(status)] = OpenAPIResponse(
                description=description, content=success.content, headers=success.headers
            )
    operation.responses = dict(sorted(responses.items()))
    operation.security = errors.security
    if operation.request_body is None and errors.body is not None:
        operation.request_body = _request_body(errors.body)


def _content(schemas: Mapping[str, Schema]) -> dict[str, OpenAPIMediaType]:
    return {media_type: OpenAPIMediaType(schema=schema) for media_type, schema in schemas.items()}


def _name_examples_by_code(response: OpenAPIResponse) -> None:
    # Litestar keys examples by their id and also writes the id into each, which OpenAPI does not
    # allow: key them by code (the summary) and leave the id out.
    for media in (response.content or {}).values():
        if media.examples:
            media.examples = {
                str(example.summary): dataclasses.replace(example, id=None)
                for example in media.examples.values()
                if isinstance(example, Example)
            }


def _documented(key: str, errors: OperationErrors) -> type[Operation]:
    # A dataclass of its own: only then does the generated __init__ call __post_init__.
    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            complete_operation(self, key, errors)

    return DocumentedOperation


def document_operations(app: Litestar) -> None:
    """Give every documented operation of ``app`` its real error responses (applied when the
    document is built, on the first request for it)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, kwargs) in route.route_handler_map.items():
            if method in ("HEAD", "OPTIONS") or not handler.resolve_include_in_schema():
                continue
            key = operation_key(method, route.path_format or "/")
            errors = derive_errors(method, route.path_format or "/", handler, kwargs)
            handler.responses = {
                **{status: problem_response(status, codes) for status, codes in errors.problems.items()},
                **(handler.responses or {}),
            }
            handler.operation_class = _documented(key, errors)


def documented_operations(document: Mapping[str, Any]) -> list[str]:
    """``METHOD /path`` of every operation of an OpenAPI document (as a dict)."""
    methods = {"get", "put", "post", "patch", "delete"}
    return [
        operation_key(method, path)
        for path, item in document.get("paths", {}).items()
        for method in item
        if method in methods
    ]
