"""Markdown written by a workspace (a step's instructions) as safe HTML.

CommonMark without raw HTML: any tag in the text shows as text, and links keep to http(s), mailto
and relative addresses (markdown-it's link check refuses ``javascript:`` and the like). Headings
start at h3, under the page's own.

Images (``![alt](/api/v1/files/<id>/content)``) are shown only where asked (``photos=True``: a
step's guide) and only from the workspace's own files, loaded lazily; any other image is a link
(the pages' policy loads nothing from elsewhere).
"""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup

OPTIONS = {"html": False, "linkify": False, "typographer": False}
FILE_IMAGE = re.compile(r"^/api/v1/files/[0-9a-fA-F-]{36}/content$")
_md = MarkdownIt("commonmark", OPTIONS)
_md.disable(["image"])
_md_photos = MarkdownIt("commonmark", OPTIONS)


def _heading_open(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    level = min(6, int(tokens[idx].tag[1]) + 2)
    return f"<h{level}>"


def _heading_close(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    level = min(6, int(tokens[idx].tag[1]) + 2)
    return f"</h{level}>\n"


def _image(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    if FILE_IMAGE.match(src):
        lazy = 'loading="lazy" decoding="async"'
        return f'<img class="sop-photo" src="{escapeHtml(src)}" alt="{escapeHtml(alt)}" {lazy}>'
    return f'<a href="{escapeHtml(src)}">{escapeHtml(alt or src)}</a>'


for _instance in (_md, _md_photos):
    _instance.add_render_rule("heading_open", _heading_open)
    _instance.add_render_rule("heading_close", _heading_close)
_md_photos.add_render_rule("image", _image)


def render_markdown(text: str, *, photos: bool = False) -> Markup:
    """``text`` (Markdown) as HTML that is safe to put in a page; with ``photos``, its images of the
    workspace's files are shown (lazily)."""
    md = _md_photos if photos else _md
    return Markup(md.render(text or ""))  # noqa: S704 - markdown-it escapes; raw HTML is off
