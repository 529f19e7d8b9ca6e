"""A step's instructions are Markdown written by a workspace: shown as HTML, never as its raw HTML."""

from __future__ import annotations

from services.web.markdown import render_markdown


def test_markdown_is_rendered_without_raw_html_or_script_links() -> None:
    html = str(
        render_markdown("# Pack\n\n**Tape** every box <img src=x onerror=alert(1)>\n\n[go](javascript:alert(1))")
    )
    assert "<h3>Pack</h3>" in html and "<strong>Tape</strong>" in html
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript:' not in html


def test_lists_and_safe_links_stay() -> None:
    html = str(render_markdown("1. one\n2. two\n\n[guide](https://example.com/a?b=1&c=2)"))
    assert "<ol>" in html and "<li>one</li>" in html
    assert 'href="https://example.com/a?b=1&amp;c=2"' in html
    assert str(render_markdown("")) == ""


def test_a_guide_shows_photos_of_the_workspaces_files_lazily() -> None:
    file_url = "/api/v1/files/0190f0a4-7b3c-7e6f-8a1b-2c3d4e5f6a7b/content"
    text = f"![Box taped]({file_url})\n\n![logo](https://example.com/x.png) ![x](javascript:alert(1))"
    html = str(render_markdown(text, photos=True))
    assert f'<img class="sop-photo" src="{file_url}" alt="Box taped" loading="lazy" decoding="async">' in html
    assert '<a href="https://example.com/x.png">logo</a>' in html and html.count("<img") == 1
    assert '="javascript:' not in html  # shown as text, never a link or an image
    assert "<img" not in str(render_markdown(f"![Box]({file_url})"))  # elsewhere: no images
