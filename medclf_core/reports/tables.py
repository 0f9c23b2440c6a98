"""Tables as people read them: column widths that fit what the columns hold, so no header or value is cut off.

A data grid (Streamlit's ``st.dataframe``) draws every column at a fixed width and cuts off what does not fit;
:func:`fitted_widths` gives each column the width of its longest text (its header included), within limits,
and the grid scrolls sideways instead of clipping. No Streamlit here: the pages turn the widths into their
column configuration.

    >>> fitted_widths({"file": ["a.png"], "P(PNEUMONIA)": [0.9731]})
    {'file': 80, 'P(PNEUMONIA)': 122}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PX_PER_CHAR = 7.5  # the data grid's default font, an average character
PADDING_PX = 32    # cell padding and the sort arrow
MIN_PX, MAX_PX = 80, 1800


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def text_width(text: str, *, min_px: int = MIN_PX, max_px: int = MAX_PX) -> int:
    """Pixels that show ``text`` whole in a data-grid cell, within ``min_px`` .. ``max_px``.

    >>> text_width(""), text_width("out of distribution"), text_width("x" * 1000)
    (80, 174, 1800)
    """
    return int(min(max(round(len(text) * PX_PER_CHAR) + PADDING_PX, min_px), max_px))


def fitted_widths(columns: Mapping[str, Iterable], **limits) -> dict[str, int]:
    """``{column: pixels}`` for ``{column: values}`` (a pandas DataFrame works: ``dict(df.items())``): the
    width of the longest of the header and the values as shown, within ``limits`` (``min_px``, ``max_px``)."""
    return {str(name): text_width(max([str(name), *(_text(v) for v in values)], key=len), **limits)
            for name, values in columns.items()}
