"""The API's OpenAPI 3.1 document, with every operation's real errors, and the ``/docs`` page."""

from __future__ import annotations

from litestar import Router
from litestar.openapi import OpenAPIConfig

from services.http import CSP_OPT
from services.json_body import MAX_JSON_DEPTH
from services.openapi.docs_page import DOCS_CSP, SwaggerPage
from services.openapi.document import StrictStructSchemaPlugin, components, document_operations

DOCS_PATH = "/docs"
# Where the document itself is served (Litestar's JSON render plugin under DOCS_PATH).
OPENAPI_JSON_PATH = f"{DOCS_PATH}/openapi.json"


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Guiju API",
        version=version,
        description=(
            "SOPs that run as software. Every error is application/problem+json (RFC 9457) with a stable "
            "`code`; each operation lists the statuses and codes it answers with. Sign in with "
            "`POST /api/v1/auth/login`: the session cookie authenticates, and every write also sends the "
            "session's `csrf_token` in the `X-CSRF-Token` header. An app calls with an OAuth 2.0 access "
            "token instead (`Authorization: Bearer <token>`, no CSRF token): each operation names the "
            "scope it needs, and those that name none take no token. Request bodies are JSON, sent with "
            "`Content-Type: application/json` (415 `unsupported_media_type` otherwise), valid UTF-8 and "
            f"nested at most {MAX_JSON_DEPTH} levels deep (400 `malformed_json`, `invalid_utf8`, "
            "`too_deeply_nested`); no text, query or path parameter may hold U+0000 (422 `nul_character`)."
        ),
        path=DOCS_PATH,
        openapi_router=Router(
            path=DOCS_PATH,
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            opt={CSP_OPT: DOCS_CSP},
        ),
        render_plugins=[SwaggerPage(path="/")],
        components=components(),
    )


__all__ = ["DOCS_PATH", "OPENAPI_JSON_PATH", "StrictStructSchemaPlugin", "document_operations", "openapi_config"]
