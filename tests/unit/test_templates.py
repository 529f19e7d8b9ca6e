"""Every template compiles, and no template holds words a person reads outside ``_(...)``: text
between tags and the attributes people hear or see (alt, title, placeholder, aria-label…) must come
from the catalogs, in both languages."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import nodes

from services.web.templating import shared_environment, template_dirs

# Where an expression ({{ … }}, a tag's output) stood in the template's literal text.
HOLE = "\x00"
READ_ATTRIBUTES = frozenset({"alt", "title", "placeholder", "aria-label", "aria-description", "label", "content"})
WORDS = re.compile(r"[A-Za-z]{2,}|[\u3400-\u9fff]")
# Literal text allowed: the language switch names each language in itself, and a few symbols.
ALLOWED = frozenset({"中文", "English"})


def templates() -> list[tuple[str, Path]]:
    found = []
    for directory in template_dirs():
        for path in sorted(directory.rglob("*.html")):
            found.append((path.relative_to(directory).as_posix(), path))
    return found


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._skip += 1
        for name, value in attrs:
            if name in READ_ATTRIBUTES and value and not (tag == "meta" and name == "content"):
                self._check(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._check(data)

    def _check(self, text: str) -> None:
        for piece in text.split(HOLE):
            piece = piece.strip()
            if piece and piece not in ALLOWED and WORDS.search(piece):
                self.found.append(piece)


def _outputs(node: nodes.Node) -> list[nodes.Output]:
    """The template's output in order, leaving out ``{% set x %}…{% endset %}`` bodies: they build
    markup (a control's attributes), not text."""
    found: list[nodes.Output] = []
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Output):
            found.append(child)
        elif not isinstance(child, nodes.AssignBlock):
            found += _outputs(child)
    return found


def literal_text(source: str) -> list[str]:
    """The words of a template's literal text that no ``_(...)`` covers."""
    pieces: list[str] = []
    for output in _outputs(shared_environment().parse(source)):
        for child in output.nodes:
            pieces.append(child.data if isinstance(child, nodes.TemplateData) else HOLE)
    # Tags ({% if %}, {% for %}) between literal pieces are holes too: join with one.
    reader = _Reader()
    reader.feed(HOLE.join(pieces))
    reader.close()
    return reader.found


def test_templates_are_found() -> None:
    names = [name for name, _ in templates()]
    assert "web/app.html" in names and "accounts/login.html" in names


@pytest.mark.parametrize(("name", "path"), templates(), ids=[name for name, _ in templates()])
def test_a_template_compiles_and_translates_every_word(name: str, path: Path) -> None:
    shared_environment().get_template(name)
    untranslated = literal_text(path.read_text(encoding="utf-8"))
    assert untranslated == [], f"{name}: put these through _(...) and the catalogs: {untranslated}"


def test_the_check_finds_literal_words() -> None:
    assert literal_text('<p>Hello there</p><img alt="A photo" src="x">') == ["Hello there", "A photo"]
    assert literal_text('<p>{{ _("Hello") }}</p><p title="{{ _(\'Hi\') }}">{{ name }} · 3</p>') == []
    assert literal_text("<p>你好</p>") == ["你好"]
    assert literal_text('<script src="/x.js"></script><svg><path d="M3 11l9-8"/></svg>') == []
