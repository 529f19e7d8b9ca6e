"""HTTP plumbing shared by every service's routes: the per-request transaction, the principal,
CSRF, cookies, request ids and problem+json errors."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import Cookie, UploadFile
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.accounts.service import Principal
from services.db import database
from services.errors import FieldProblem, Forbidden, ProblemError, Unauthorized, ValidationProblem
from services.logs import request_id_var, request_log_context
from services.settings import Settings
from services.validation import decode_all

log = logging.getLogger("guiju.http")

SESSION_COOKIE = "guiju_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBLEM_MEDIA_TYPE = "application/problem+json"


# ---------------------------------------------------------------- dependencies


async def provide_db() -> AsyncGenerator[AsyncSession, None]:
    """One transaction per request: committed after the handler, rolled back if anything raised."""
    session = database().session()
    try:
        await session.begin()
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


async def _resolve_principal(request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]) -> Principal | None:
    principal = await accounts.authenticate(db, request.cookies.get(SESSION_COOKIE))
    if principal is None:
        return None
    if request.method not in SAFE_METHODS and not accounts.csrf_ok(principal, request.headers.get(CSRF_HEADER)):
        raise Forbidden(
            "Cookie-authenticated writes must send the session's CSRF token in the X-CSRF-Token header.",
            code="csrf_failed",
        )
    shared = request_log_context.get()
    if shared is not None:
        shared["actor"] = f"user:{principal.user_id}"
        if principal.tenant_id:
            shared["tenant_id"] = str(principal.tenant_id)
    return principal


async def provide_principal(request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]) -> Principal:
    """The signed-in caller; 401 without a valid session, 403 on a cookie write without CSRF."""
    principal = await _resolve_principal(request, db)
    if principal is None:
        raise Unauthorized("Sign in first.", code="not_authenticated")
    return principal


async def provide_optional_principal(
    request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]
) -> Principal | None:
    return await _resolve_principal(request, db)


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


def problem_response(request: Request[Any, Any, Any], error: ProblemError) -> Response[Any]:
    return Response(
        content=error.to_problem(instance=str(request.url.path)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers or None,
    )


def handle_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[Any]:
    return problem_response(request, exc)


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar stops at the first problem; decode the cached body again to list every one."""
    data_type = _body_type(request)
    # The body was read (and cached on the connection) before decoding failed.
    raw = getattr(request, "_body", None)
    if data_type is not None and isinstance(raw, bytes):
        try:
            decode_all(data_type, raw)
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
        return FieldProblem(pointer=f"/{key}" if key else "", code="invalid", message=str(item.get("message", "")))
    return FieldProblem(pointer="", code="invalid", message=str(item))


def _body_type(request: Request[Any, Any, Any]) -> Any:
    try:
        handler = request.route_handler
        field = handler.parsed_fn_signature.parameters.get("data")
    except Exception:  # the route is unknown or has no body
        return None
    if field is None:
        return None
    annotation = getattr(field, "annotation", None)
    # JSONBody[T] is Annotated[T, ...]: the struct type is its first argument.
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, NotFoundException):
        problem = ProblemError("No such resource.", status=404, code="not_found", title="Not found")
    elif isinstance(exc, MethodNotAllowedException):
        problem = ProblemError(exc.detail, status=405, code="method_not_allowed", title="Method not allowed")
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
            f"Send the file as multipart/form-data in the field `{field}`.",
            errors=[FieldProblem(pointer=f"/{field}", code="required", message="a file is required")],
        )
    try:
        data = await upload.read()
    finally:
        await upload.close()
    return upload.filename, upload.content_type, data
