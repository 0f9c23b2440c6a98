"""medclf_core.server.text: user text escaped for Streamlit's Markdown, checked by rendering it with a
CommonMark renderer with GFM tables and strikethrough (markdown-it-py, which Streamlit's dependency rich
brings) and by the escapes that Streamlit's own extensions (math, shortcodes, directives, bare links) need.
The browser test (tests/e2e/test_no_outside_requests.py) checks the same on the real pages."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from medclf_core.server.text import md_escape, md_escape_frame

HOSTILE = {
    "markdown image": "![x](http://host.test/x.png)",
    "scheme-relative image": "![x](http:host.test)",
    "reference image": "![x][r]\n\n[r]: http://host.test/r.png",
    "link": "[click](http://host.test)",
    "html image": "<img src='http://host.test/h.png'>",
    "html tag": "<b>bold</b><script>alert(1)</script>",
    "autolink": "<https://host.test/a>",
    "bare url": "see https://host.test/b now",
    "www link": "www.host.test",
    "email autolink": "someone@host.test",
    "latex": "$x^2$ and $$\\href{http://host.test}{y}$$",
    "emoji shortcode": ":smile: :hospital:",
    "material directive": ":material/warning: :material/open_in_new:",
    "colour directive": ":red[danger] :blue-background[x]",
    "emphasis": "**bold** __bold__ *it* _it_ ~~strike~~",
    "code": "`code` ```block```",
    "heading": "# Heading\n## two",
    "list and quote": "- item\n1. one\n> quote",
    "table": "| a | b |\n|---|---|\n| 1 | 2 |",
    "entity": "&lt;img src=x&gt; &#60;",
    "backslash": "C:\\path\\![x](http://host.test)",
}


def _render(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def _visible_text(html: str) -> str:
    import html as html_lib

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html)).strip()


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_text_renders_as_itself(kind):
    text = HOSTILE[kind]
    html = _render(md_escape(text))
    # no element but paragraphs and line breaks: no image, link, tag, emphasis, code, heading, list or table
    assert set(re.findall(r"<(\w+)", html)) <= {"p", "br"}, (kind, html)
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', html)), html
    assert " ".join(_visible_text(html).split()) == " ".join(text.split()), (kind, html)


@pytest.mark.parametrize("kind", ["latex", "emoji shortcode", "material directive", "colour directive",
                                  "www link", "bare url"])
def test_streamlit_only_syntax_is_broken_up(kind):
    """Streamlit's own extensions (math, shortcodes, :material/: icons, colours, www-links) need their marker
    escaped: ``$``, the colon before a word or a slash, the dot after ``www``."""
    out = md_escape(HOSTILE[kind])
    assert not re.search(r"(?<!\\)\$", out), out
    assert not re.search(r"(?<!\\):(?=/|[A-Za-z_+-]+[:/\[])", out), out
    assert not re.search(r"(?i)(?<![\\\w])www\.", out), out


@pytest.mark.parametrize("name", ["normal_IM-0411-0001.jpeg", "NORMAL", "chest-xray-pneumonia", "tiny.v2_run",
                                  "P 0.5: 12 images", "2024-01-02"])
def test_plain_names_stay_readable(name):
    out = md_escape(name)
    assert out == name or _visible_text(_render(out)) == name
    assert "\\" not in md_escape("normal_IM-0411-0001.jpeg")


def test_anything_is_made_text():
    assert md_escape(None) == "None"
    assert _visible_text(_render(md_escape(0.5))) == "0.5"
    assert md_escape(ValueError("a [b](c)")) == "a \\[b\\]\\(c\\)"


def test_a_frame_for_st_table_has_every_text_escaped_and_numbers_kept():
    frame = pd.DataFrame({"![c](http://h.test)": ["<img src=x>", None], "n": [12, 3]},
                         index=pd.Index(["**a**", "b"], name="$x$"))
    out = md_escape_frame(frame)
    assert list(out.columns) == [md_escape("![c](http://h.test)"), "n"]
    assert list(out.index) == [md_escape("**a**"), "b"] and out.index.name == md_escape("$x$")
    assert out.iloc[0, 0] == md_escape("<img src=x>") and pd.isna(out.iloc[1, 0])
    assert list(out["n"]) == [12, 3]
    assert frame.iloc[0, 0] == "<img src=x>"  # the caller's frame is left as it was
