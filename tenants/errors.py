"""Errors as problem+json (RFC 9457), each with a stable ``code`` a client can rely on."""

from __future__ import annotations

from typing import Any

import msgspec


class FieldProblem(msgspec.Struct, frozen=True):
    """One validation problem: where (a JSON pointer into the input), a stable code and a message."""

    pointer: str
    code: str
    message: str


class ProblemError(Exception):
    """An error a client sees as ``application/problem+json``."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.code = code or self.code
        self.status = status or self.status
        self.title = title or self.title
        self.errors = errors or []
        self.headers = headers or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://guiju.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [msgspec.structs.asdict(e) for e in self.errors]
        return body


class ValidationProblem(ProblemError):
    status = 422
    code = "validation_failed"
    title = "The input is not valid"


class Unauthorized(ProblemError):
    status = 401
    code = "not_authenticated"
    title = "Sign in first"


class Forbidden(ProblemError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(ProblemError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(ProblemError):
    status = 410
    code = "gone"
    title = "No longer valid"


class RateLimited(ProblemError):
    status = 429
    code = "rate_limited"
    title = "Too many attempts"
