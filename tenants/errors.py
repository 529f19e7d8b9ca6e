"""Errors as problem+json (RFC 9457), each with a stable ``code`` a client can rely on.

The words of an error are message ids of the translation catalogs, worded in the reader's
language when the answer is made: a detail names its variable parts as ``{placeholders}`` and
takes their values as keyword arguments, which the error keeps::

    raise NotFound("No procedure has the key {key}.", key=key)

``detail`` (and ``str(error)``) is the English text; :meth:`ProblemError.to_problem` words the
title, the detail and each field problem's message with a ``words`` function (a message id to
its text in one language, such as ``services.web.i18n.translate`` bound to a locale). A detail,
a title and a field problem's message are therefore literal texts, never f-strings: a unit test
scans the code for it and `make messages` extracts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

#: A message id → its text in the reader's language (the English id itself by default).
Words = Callable[[str], str]


def english(message: str) -> str:
    """The English text of a message id: the id itself."""
    return message


def fill(text: str, params: Mapping[str, object]) -> str:
    """``text`` with its ``{placeholders}`` filled from ``params`` (a text without params is left as is)."""
    return text.format(**params) if params else text


class FieldProblem(msgspec.Struct, frozen=True, dict=True):
    """One validation problem: where (a JSON pointer into the input), a stable code and a message.

    ``message`` is the English text. One made with :meth:`of` also keeps its message id and the
    values of its placeholders (outside the encoded fields), so :meth:`worded` can say it in
    another language.
    """

    pointer: str
    code: str
    message: str

    @classmethod
    def of(cls, pointer: str, code: str, message: str, **params: Any) -> FieldProblem:
        """A problem whose ``message`` names its variable parts: ``of("/name", "too_long",
        "at most {max} characters", max=100)``."""
        problem = cls(pointer=pointer, code=code, message=fill(message, params))
        msgspec.structs.force_setattr(problem, "_message_id", message)
        msgspec.structs.force_setattr(problem, "_params", dict(params))
        return problem

    @classmethod
    def said(cls, pointer: str, code: str, message: str) -> FieldProblem:
        """A problem whose ``message`` the service already worded in the reader's language (a
        password's advice, in the language of the form that sent it): it is never translated again."""
        problem = cls(pointer=pointer, code=code, message=message)
        msgspec.structs.force_setattr(problem, "_message_id", None)
        return problem

    @property
    def message_id(self) -> str | None:
        """The message id of ``message`` (None for a message already worded in its reader's language)."""
        message_id: str | None = self.__dict__.get("_message_id", self.message)
        return message_id

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.__dict__.get("_params", {})
        return params

    def moved(self, pointer: str, code: str | None = None) -> FieldProblem:
        """The same problem at another pointer (and code, if given), its words kept."""
        if self.message_id is None:
            return FieldProblem.said(pointer, code or self.code, self.message)
        return FieldProblem.of(pointer, code or self.code, self.message_id, **self.params)

    def worded(self, words: Words = english) -> str:
        """The message in the language of ``words`` (a message that is not ours stays as it is)."""
        return self.message if self.message_id is None else fill(words(self.message_id), self.params)


class ProblemError(Exception):
    """An error a client sees as ``application/problem+json``.

    ``detail`` is a message id whose ``{placeholders}`` are filled from ``params`` (the keyword
    arguments other than the ones named here, which placeholders therefore never use).
    """

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
        **params: Any,
    ) -> None:
        self.message_id = detail
        self.params: dict[str, Any] = params
        self.detail = fill(detail, params) if detail else detail
        super().__init__(self.detail or title or self.title)
        self.code = code or self.code
        self.status = status or self.status
        self.title = title or self.title
        self.errors = errors or []
        self.headers = headers or {}

    def worded_title(self, words: Words = english) -> str:
        return words(self.title)

    def worded_detail(self, words: Words = english) -> str | None:
        """The detail in the language of ``words``; None when there is none."""
        return fill(words(self.message_id), self.params) if self.message_id else None

    def worded(self, words: Words = english) -> str:
        """What went wrong in one sentence: the detail, else the title."""
        return self.worded_detail(words) or self.worded_title(words)

    def to_problem(self, instance: str | None = None, words: Words = english) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://guiju.dev/problems/{self.code}",
            "title": self.worded_title(words),
            "status": self.status,
            "code": self.code,
        }
        detail = self.worded_detail(words)
        if detail:
            body["detail"] = detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [{"pointer": e.pointer, "code": e.code, "message": e.worded(words)} for e in self.errors]
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
