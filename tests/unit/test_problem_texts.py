"""The words of API errors are message ids of both catalogs: every detail, title and field message
given where an error is made is a literal (never an f-string or a concatenation), names its
variable parts as placeholders given with it, and is translated in zh-CN and en."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from litestar import Request

from services.web.i18n import catalog, reader_locale, remember_reader
from services.web.problem_texts import DETAIL_CALLS, RESERVED, ProblemText, problem_texts
from tenants.errors import FieldProblem, NotFound, ProblemError, ValidationProblem
from tenants.models import LOCALES

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("services", "tenants", "plugins")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _sources() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


@cache
def _found() -> list[tuple[str, ProblemText]]:
    return [(f"{p.relative_to(ROOT)}:{t.line}", t) for p in _sources() for t in problem_texts(p.read_text())]


def test_the_scan_finds_the_errors() -> None:
    # Guards the tests below against passing on an empty scan.
    found = _found()
    assert sum(t.role == "detail" and t.kind == "literal" for _, t in found) > 180
    assert sum(t.role == "message" and t.kind == "literal" for _, t in found) > 150
    assert any(t.role == "title" and t.text == "Not found" for _, t in found)


def test_no_error_text_is_built_in_place() -> None:
    built = [f"{where} {t.role}: {t.text}" for where, t in _found() if t.kind == "built"]
    assert built == [], "write a literal with {placeholders} and pass their values as keyword arguments"


def test_placeholders_are_given() -> None:
    wrong = []
    for where, t in _found():
        if t.kind != "literal" or t.params is None:
            continue
        named = set(PLACEHOLDER.findall(t.text)) if t.params else set()
        if named != set(t.params) or named & RESERVED:
            wrong.append(f"{where}: {t.text!r} names {sorted(named)}, given {sorted(t.params)}")
    assert wrong == []


@pytest.mark.parametrize("locale", LOCALES)
def test_every_error_text_is_in_the_catalog(locale: str) -> None:
    translated = catalog(locale)
    missing = sorted(
        {t.text for _, t in _found() if t.kind == "literal" and t.text and not translated.get(t.text, "").strip()}
    )
    assert missing == [], f"run make messages and translate these in {locale}: {missing}"


def test_every_error_class_is_scanned() -> None:
    """A new subclass of an error in the family is named in DETAIL_CALLS, so its words are found."""
    unknown = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name not in DETAIL_CALLS | {"SignInRequired"}:
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & DETAIL_CALLS:
                    unknown.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert unknown == []


def test_the_scan_reports_a_built_text() -> None:
    source = 'raise NotFound(f"No run {run_id}.")\nraise Conflict("Taken: " + key)\nFieldProblem("/a", "c", f"{x}")\n'
    assert [(t.role, t.kind) for t in problem_texts(source)] == [
        ("detail", "built"),
        ("detail", "built"),
        ("message", "built"),
    ]


def test_an_error_is_worded_in_any_language_later() -> None:
    error = ValidationProblem(
        "The procedure has no step '{key}'.",
        code="step_not_found",
        errors=[FieldProblem.of("/steps/0", "too_long", "at most {MAX_NAME_LENGTH} characters", MAX_NAME_LENGTH=200)],
        key="pick",
    )
    assert str(error) == error.detail == "The procedure has no step 'pick'."
    zh = error.to_problem("/x", words=lambda m: catalog("zh-CN").get(m, m))
    assert zh["detail"] == "流程中没有步骤「pick」。"
    assert zh["title"] == "输入有误"
    assert zh["errors"] == [{"pointer": "/steps/0", "code": "too_long", "message": "最多 200 个字符"}]
    en = error.to_problem("/x")
    assert en["detail"] == "The procedure has no step 'pick'." and en["title"] == "The input is not valid"
    assert en["errors"][0]["message"] == "at most 200 characters" == error.errors[0].message
    moved = error.errors[0].moved("/name")
    assert moved.pointer == "/name" and moved.worded(lambda m: catalog("zh-CN").get(m, m)) == "最多 200 个字符"


def test_a_text_that_is_not_ours_is_passed_on() -> None:
    error = ProblemError("Expected `int`, got `str`", code="bad_request")
    assert error.worded(lambda m: catalog("zh-CN").get(m, m)) == "Expected `int`, got `str`"
    assert NotFound().worded(lambda m: catalog("zh-CN").get(m, m)) == "未找到"


@pytest.mark.parametrize(
    ("own", "tenant", "header", "expected"),
    [
        ("en", "zh-CN", "zh-CN", "en"),  # the person's own setting first
        (None, "en", "zh-CN,zh;q=0.9", "zh-CN"),  # then what the request asks for
        (None, "en", "fr", "en"),  # then the workspace's default
        (None, None, None, "zh-CN"),  # then the platform's
    ],
)
def test_the_language_of_an_error_answer(
    own: str | None, tenant: str | None, header: str | None, expected: str
) -> None:
    headers = [(b"accept-language", header.encode())] if header else []
    request: Request[Any, Any, Any] = Request({"type": "http", "headers": headers, "state": {}})  # type: ignore[typeddict-item]
    if own or tenant:
        remember_reader(request, own, tenant)
    assert reader_locale(request) == expected
