"""HTTP plumbing shared by every service's routes: the per-request transaction, the principal,
CSRF, cookies, request ids, problem+json errors, the rules every request's input meets and the
security headers every answer carries."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, Final, get_args, get_origin
from urllib.parse import parse_qsl, quote

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.connection.base import empty_receive, empty_send
from litestar.datastructures import Cookie, UploadFile
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.params import BodyKwarg
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
from litestar.typing import FieldDefinition
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import begin_writing, database
from services.json_body import (
    JSON_MEDIA_TYPES_TEXT,
    check_no_nul,
    decode_json_body,
    empty_body_problem,
    is_json_media_type,
    pointer_token,
    texts_nul_problems,
)
from services.logs import request_id_var, request_log_context
from services.settings import Settings
from services.validation import decode_all, problem_code
from tenants.errors import FieldProblem, ProblemError, Unauthorized, ValidationProblem, Words, english

log = logging.getLogger("guiju.http")

SESSION_COOKIE = "guiju_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBLEM_MEDIA_TYPE = "application/problem+json"


# ---------------------------------------------------------------- dependencies


async def provide_db(request: Request[Any, Any, Any]) -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request: committed after the handler, rolled back if anything raised.

    On SQLite a request that may write takes the write lock when it begins: a transaction that
    reads and then writes (a savepoint around a change, a check before an update) would otherwise
    fail at once with "database is locked" whenever the embedded worker committed in between.
    """
    session = database().session()
    try:
        await session.begin()
        if request.method not in SAFE_METHODS:
            await begin_writing(session)
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


def provide_settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_key(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def session_cookie(raw_token: str, settings: Settings) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=raw_token,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        max_age=settings.session_ttl_hours * 3600,
    )


def expired_session_cookie(settings: Settings) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE, value="", path="/", httponly=True, secure=settings.cookie_secure, samesite="lax", max_age=0
    )


# ---------------------------------------------------------------- errors


#: How an error answer is worded: a request's reader's language and that language's words.
ProblemWording = Callable[[ASGIConnection[Any, Any, Any, Any]], tuple[str, Words]]


def _english(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, Words]:
    return "en", english


_wording: ProblemWording = _english


def word_problems_with(wording: ProblemWording) -> None:
    """Word every error answer with ``wording``: the app gives the catalogs'
    (``services.web.i18n.problem_wording``); until then, the English message ids."""
    global _wording
    _wording = wording


def problem_response(request: Request[Any, Any, Any], error: ProblemError) -> Response[Any]:
    """``error`` as problem+json, its title, detail and messages in the reader's language; the
    ``code``s stay as they are."""
    locale, words = _wording(request)
    return Response(
        content=error.to_problem(instance=str(request.url.path), words=words),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={**error.headers, "Content-Language": locale},
    )


def handle_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[Any]:
    return problem_response(request, exc)


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar stops at the first problem; decode the cached body again to list every one."""
    field = _body_field(request)
    # The body was read (and cached on the connection) before decoding failed.
    raw = getattr(request, "_body", None)
    if field is not None and isinstance(raw, bytes):
        if not raw.strip() and not (field.is_optional or field.has_default):
            return problem_response(request, empty_body_problem())
        try:
            decode_all(_struct_type(field), raw)
        except ValidationProblem as problem:
            return problem_response(request, problem)
    extra = exc.extra if isinstance(exc.extra, list) else []
    return problem_response(
        request,
        ValidationProblem(
            errors=[_field_problem(item) for item in extra] or None,
            detail=exc.detail,
        ),
    )


def _field_problem(item: Any) -> FieldProblem:
    if isinstance(item, dict):
        key = item.get("key") or ""
        message = str(item.get("message", ""))
        # A parameter's pointer says where it came from, as in `/query/limit`; a body's field is `/name`.
        source = str(getattr(item.get("source"), "value", item.get("source") or ""))
        where = f"/{source}" if source and source != "body" else ""
        pointer = f"{where}/{pointer_token(key)}" if key else ""
        return FieldProblem(pointer=pointer, code=problem_code(message), message=message)
    return FieldProblem(pointer="", code="invalid", message=str(item))


def _body_field(request: Request[Any, Any, Any]) -> FieldDefinition | None:
    try:
        return request.route_handler.parsed_fn_signature.parameters.get("data")
    except Exception:  # the route is unknown or has no body
        return None


def _struct_type(field: FieldDefinition) -> Any:
    annotation = field.annotation
    # JSONBody[T] is Annotated[T, ...]: the struct type is its first argument.
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    # An optional body (``T | None``) is checked as its struct.
    members = [arg for arg in get_args(annotation) if arg is not type(None)]
    if members and len(members) == len(get_args(annotation)) - 1 == 1:
        annotation = members[0]
    return annotation


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, NotFoundException):
        problem = ProblemError("No such resource.", status=404, code="not_found", title="Not found")
    elif isinstance(exc, MethodNotAllowedException):
        problem = ProblemError(
            "This address does not take {method} requests.",
            status=405,
            code="method_not_allowed",
            title="Method not allowed",
            method=request.method,
        )
    elif isinstance(exc, NotAuthorizedException):
        problem = Unauthorized(exc.detail)
    elif exc.status_code == 413:  # past request_max_body_size
        problem = ProblemError(exc.detail, status=413, code="payload_too_large", title="Too large")
    elif exc.status_code >= 500:
        log.error("server error", exc_info=exc)
        problem = ProblemError(
            "Something went wrong on our side.", status=500, code="internal_error", title="Internal error"
        )
    else:
        problem = ProblemError(exc.detail, status=exc.status_code, code="bad_request")
    return problem_response(request, problem)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=exc)
    return problem_response(
        request,
        ProblemError(
            "Something went wrong on our side; nothing was changed.",
            status=500,
            code="internal_error",
            title="Internal error",
        ),
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProblemError: handle_problem,
    ValidationException: handle_validation,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


# ---------------------------------------------------------------- middleware


class RequestContextMiddleware:
    """Gives every request an id (kept from ``X-Request-ID`` when sane) and logs one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if 8 <= len(incoming) <= 64 and incoming.replace("-", "").isalnum() else uuid.uuid4().hex
        id_token = request_id_var.set(request_id)
        shared: dict[str, str] = {}
        ctx_token = request_log_context.set(shared)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            request_log_context.reset(ctx_token)
            request_id_var.reset(id_token)


def content_disposition(name: str) -> str:
    """An attachment's ``Content-Disposition``: an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def read_upload(request: Request[Any, Any, Any], field: str = "file") -> tuple[str, str, bytes]:
    """The file sent as multipart/form-data in ``field``: its name, content type and bytes (422
    ``required`` when there is none)."""
    upload = (await request.form()).get(field)
    if not isinstance(upload, UploadFile):
        raise ValidationProblem(
            "Send the file as multipart/form-data in the field `{field}`.",
            errors=[FieldProblem(pointer=f"/{field}", code="required", message="a file is required")],
            field=field,
        )
    try:
        data = await upload.read()
    finally:
        await upload.close()
    return upload.filename, upload.content_type, data


# ---------------------------------------------------------------- request input


class JsonRequest(Request[Any, Any, Any]):
    """The app's request class: whatever reads a JSON body reads it through :func:`decode_json_body`
    (UTF-8, the nesting limit, no U+0000) instead of Litestar's plain decoder."""

    __slots__ = ("_checked_json",)

    def __init__(self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send) -> None:
        super().__init__(scope, receive, send)
        self._checked_json: Any = Empty

    async def json(self) -> Any:
        if self._checked_json is Empty:
            self._checked_json = decode_json_body(await self.body())
        return self._checked_json


def takes_json_body(handler: Any) -> bool:
    """Whether a route handler reads a JSON body: it has a ``data`` parameter that is not a form or MessagePack."""
    if not isinstance(handler, HTTPRouteHandler):
        return False
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return False
    body = field.kwarg_definition
    return not isinstance(body, BodyKwarg) or body.media_type == RequestEncodingType.JSON


def _unsupported_media_type(method: str) -> ProblemError:
    accept = {"POST": "Accept-Post", "PATCH": "Accept-Patch"}.get(method)
    return ProblemError(
        "Send the body as JSON, with the header Content-Type: application/json ({JSON_MEDIA_TYPES_TEXT}).",
        status=415,
        code="unsupported_media_type",
        title="Unsupported media type",
        headers={accept: "application/json"} if accept else None,
        JSON_MEDIA_TYPES_TEXT=JSON_MEDIA_TYPES_TEXT,
    )


def _parameter_nul_problems(scope: Scope) -> list[FieldProblem]:
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True, errors="replace")
    texts = [(f"/query/{pointer_token(name)}", f"{name}{value}") for name, value in query]
    path_params = scope.get("path_params", {}).items()
    texts += [(f"/path/{pointer_token(name)}", value) for name, value in path_params if isinstance(value, str)]
    return texts_nul_problems(texts)


class RequestInputMiddleware(ASGIMiddleware):
    """Rules every request's input meets before any handler, dependency or sign-in runs.

    - A route that takes a JSON body takes nothing else: any other Content-Type, or none with a
      body, is 415. A browser posts a cross-site form only as a form or text/plain, so this is also
      what keeps a forged form from signing a victim in (login CSRF).
    - No query or path parameter holds U+0000 (422, every one listed).
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        check_no_nul(_parameter_nul_problems(scope))
        if takes_json_body(scope.get("route_handler")):
            request: Request[Any, Any, Any] = Request(scope, receive, send)
            content_type = request.headers.get("content-type")
            # Without a Content-Type, only an empty body passes (and meets the body's own rules).
            sent_wrong_type = not is_json_media_type(content_type) if content_type else bool(await request.body())
            if sent_wrong_type:
                raise _unsupported_media_type(request.method)
        await next_app(scope, receive, send)


# ---------------------------------------------------------------- security headers

#: A route handler's ``opt`` key for its own Content-Security-Policy (``{nonce}`` is replaced by the
#: response's nonce); a response that sets the header itself keeps it.
CSP_OPT: Final = "content_security_policy"
PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
    # A photo chosen for upload is previewed from the browser's own copy (a blob: address); the
    # stylesheet draws its checkmarks and select arrows as data: SVG images (never scripts).
    "img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_REFERRER_POLICY: Final = "same-origin"
_CSP_NONCE_KEY = "csp_nonce"
_PRIVATE_KEY = "private_response"
#: A route handler's ``opt`` key: its answer to a signed-in caller may stay in that caller's own
#: browser cache (an immutable thumbnail), as its own ``Cache-Control: private, …`` says.
PRIVATE_CACHE_OPT: Final = "private_cache"


def csp_nonce(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """This response's Content-Security-Policy nonce: a page's inline ``<script>`` or ``<style>``
    runs only with ``nonce="<this value>"``. Fresh for every response."""
    return _scope_nonce(connection.scope)


def _scope_nonce(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    nonce = state.get(_CSP_NONCE_KEY)
    if not isinstance(nonce, str):
        nonce = state[_CSP_NONCE_KEY] = secrets.token_urlsafe(18)
    return nonce


def mark_private(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """The answer to this request is for one signed-in caller: no cache may keep it."""
    connection.scope.setdefault("state", {})[_PRIVATE_KEY] = True


def security_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` of a response with the security headers it lacks (headers it set itself win)."""
    present = {name.lower() for name, _ in headers}
    added: list[tuple[bytes, bytes]] = []
    if b"x-content-type-options" not in present:
        added.append((b"x-content-type-options", b"nosniff"))
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    if content_type.split(b";", 1)[0].strip().lower() == b"text/html":
        if b"content-security-policy" not in present:
            handler = scope.get("route_handler")
            policy = str(getattr(handler, "opt", {}).get(CSP_OPT, PAGE_CSP))
            added.append((b"content-security-policy", policy.replace("{nonce}", _scope_nonce(scope)).encode()))
        if b"referrer-policy" not in present:
            added.append((b"referrer-policy", PAGE_REFERRER_POLICY.encode()))
    if scope.get("state", {}).get(_PRIVATE_KEY) or b"set-cookie" in present:
        own = next((v for k, v in headers if k.lower() == b"cache-control"), b"")
        handler = scope.get("route_handler")
        browser_only = getattr(handler, "opt", {}).get(PRIVATE_CACHE_OPT) and own.startswith(b"private")
        if not browser_only or b"set-cookie" in present:
            headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
            added.append((b"cache-control", b"no-store"))
    return [*headers, *added]


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` to every answer, errors and unknown routes included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = security_headers(scope, list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)
