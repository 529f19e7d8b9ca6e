"""Markdown written by a workspace (a step's instructions) as safe HTML.

CommonMark without raw HTML: any tag in the text shows as text, and links keep to http(s), mailto
and relative addresses (markdown-it's link check refuses ``javascript:`` and the like). Headings
start at h3, under the page's own.
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.disable(["image"])


def _heading_open(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    level = min(6, int(tokens[idx].tag[1]) + 2)
    return f"<h{level}>"


def _heading_close(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    level = min(6, int(tokens[idx].tag[1]) + 2)
    return f"</h{level}>\n"


_md.add_render_rule("heading_open", _heading_open)
_md.add_render_rule("heading_close", _heading_close)


def render_markdown(text: str) -> Markup:
    """``text`` (Markdown) as HTML that is safe to put in a page."""
    return Markup(_md.render(text or ""))  # noqa: S704 - markdown-it escapes; raw HTML is off
