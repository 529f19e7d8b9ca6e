"""The translation catalogs: every text the code marks, and every piece of advice zxcvbn can give,
is translated in both languages; and the locale of a request is negotiated sensibly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import zxcvbn
from babel.messages.extract import extract_from_dir, extract_from_file

import services
import tenants
from services.web.i18n import catalog, negotiate, translate
from tenants.models import LOCALES

PLACEHOLDER = re.compile(r"\{(\w+)\}")


TEMPLATES = "**/templates/**.html"


def _extracted(path: Path, keywords: dict[str, None]) -> set[str]:
    if path.is_dir():
        found = extract_from_dir(
            str(path),
            # As babel.cfg: Python files through the extractor that also finds the errors' words.
            method_map=[("**.py", "services.web.problem_texts:extract"), (TEMPLATES, "jinja2")],
            options_map={TEMPLATES: {"trim_blocks": "true", "lstrip_blocks": "true"}},
            keywords=keywords,
        )
        return {str(message) for _file, _line, message, _comments, _context in found if isinstance(message, str)}
    return {str(message) for _line, message, _comments, _context in extract_from_file("python", str(path), keywords)}


def code_messages() -> set[str]:
    """The texts the code marks (``translate``, ``N_``), the words of its errors (services and the
    tenants kernel) and the templates' ``_(...)``."""
    keywords: dict[str, None] = {"translate": None, "N_": None, "_": None}
    return _extracted(Path(services.__file__).parent, keywords) | _extracted(Path(tenants.__file__).parent, keywords)


def zxcvbn_messages() -> set[str]:
    return _extracted(Path(zxcvbn.__file__).parent / "feedback.py", {"_": None})


def test_the_extractor_finds_the_texts() -> None:
    # Guards the two tests below against passing on an empty extraction.
    assert "Use at least {count} characters." in code_messages()
    assert "Skip to content" in code_messages()  # from a template
    assert "The procedure has no step '{key}'." in code_messages()  # an error's detail, with a value
    assert "Not found" in code_messages()  # an error class's title (tenants/errors.py)
    assert len(zxcvbn_messages()) >= 25


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("source", ["code", "zxcvbn"])
def test_every_text_is_translated(locale: str, source: str) -> None:
    texts = code_messages() if source == "code" else zxcvbn_messages()
    translated = catalog(locale)
    missing = sorted(t for t in texts if not translated.get(t, "").strip())
    assert missing == [], f"translate these in services/web/translations/{locale} (make messages): {missing}"


@pytest.mark.parametrize("locale", LOCALES)
def test_translations_keep_their_placeholders(locale: str) -> None:
    for message, text in catalog(locale).items():
        assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(message)), message


def test_translate_fills_placeholders_and_falls_back_to_english() -> None:
    assert translate("Use at least {count} characters.", "zh-CN", count=10) == "请至少使用 10 个字符。"
    assert translate("Use at least {count} characters.", "en", count=12) == "Use at least 12 characters."
    assert translate("Not in any catalog.", "zh-CN") == "Not in any catalog."


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en-US,en;q=0.9", "en"),
        ("zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("fr-FR, en;q=0.5", "en"),
        ("en;q=0.2, zh-Hans-CN;q=0.9", "zh-CN"),
        ("de, fr", "zh-CN"),
        ("en;q=0, zh;q=0", "zh-CN"),
        ("*", "zh-CN"),
        (";;, q=x, =,", "zh-CN"),
        ("", "zh-CN"),
        (None, "zh-CN"),
    ],
)
def test_accept_language_negotiation(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected
