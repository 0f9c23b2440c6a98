r"""User text shown as itself on a page: the one escaping path for everything a user, a file or a model card
put into a string that Streamlit renders as Markdown (markdown, captions, alerts, headers, widget labels,
image captions, progress and spinner texts, and the cells of ``st.table``).

Streamlit's Markdown turns ``![x](http://host/x.png)`` into an image the browser fetches, ``<https://host>``
and ``www.host`` into links, ``$...$`` into LaTeX, ``:smile:`` into an emoji and ``:material/icon:`` into an
icon; :func:`md_escape` backslash-escapes every character that starts any of them, so the reader sees the
text exactly as it was written. Pure: no Streamlit import (it only knows the dialect).

    >>> print(md_escape("![x](http://host/x.png) <img src=x> www.host :smile: $x$"))
    \!\[x\]\(http\://host/x.png\) \<img src=x\> www\.host \:smile: \$x\$
    >>> md_escape("normal_IM-0411-0001.jpeg")
    'normal_IM-0411-0001.jpeg'
"""

from __future__ import annotations

import re

# Characters that make Markdown anywhere in a line: links and images, HTML, code, emphasis, tables, strikethrough,
# math, Streamlit's :color[...] directives, entities, and e-mail autolinks.
_MD_ANYWHERE = re.compile(r"([\\`*{}\[\]()!|<>~$&@])")
# https://... autolinks, :material/icons: and :emoji: shortcodes; a colon before a space or a digit is text
_MD_COLON = re.compile(r":(?=/|[A-Za-z_+-]+[:/])")
# An underscore is emphasis only at a word's edge (CommonMark): snake_case file names stay as they are.
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Headings, lists, quotes and rules only at the start of a line.
_MD_LINE_START = re.compile(r"(?m)^([ \t]*)(\d*)([#+\-=.)])")
_MD_WWW = re.compile(r"(?i)\b(www)\.")  # GFM links a bare www.example.com


def md_escape(text) -> str:
    """``text`` (anything; ``str()`` of it) shown as itself through st.markdown/caption/subheader/... and widget
    labels: every character that would make Markdown there is backslash-escaped (a file named ``![p](https:x)``
    is no image, ``**a**`` no bold, ``<img src=...>`` no tag), while harmless punctuation such as the ``-``,
    ``.`` and ``_`` of ``normal_IM-0411-0001.jpeg`` is left as it is."""
    out = _MD_ANYWHERE.sub(r"\\\1", str(text))
    out = _MD_COLON.sub(r"\\:", out)
    out = _MD_UNDERSCORE.sub(r"\\_", out)
    out = _MD_LINE_START.sub(lambda m: m.group(1) + m.group(2) + "\\" + m.group(3), out)
    return _MD_WWW.sub(r"\1\\.", out)


def md_escape_frame(frame):
    """A copy of a pandas DataFrame for ``st.table`` (whose cells and headers are Markdown): every text cell,
    column name and index label through :func:`md_escape`; numbers and missing values as they are."""
    out = frame.copy()
    out = out.map(lambda v: md_escape(v) if isinstance(v, str) else v)
    out.columns = [md_escape(c) if isinstance(c, str) else c for c in out.columns]
    out.index = out.index.map(lambda v: md_escape(v) if isinstance(v, str) else v)
    if isinstance(out.index.name, str):
        out.index.name = md_escape(out.index.name)
    return out
