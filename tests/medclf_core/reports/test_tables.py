"""Column widths that fit what a table holds (issue 26: wide tables were cut off)."""

import pytest

from medclf_core.reports import tables


def test_a_column_is_as_wide_as_its_longest_text_header_included():
    widths = tables.fitted_widths({"P(PNEUMONIA)": [0.5, None], "why": ["modality MR, not CR or DX", ""]})
    assert widths["P(PNEUMONIA)"] == tables.text_width("P(PNEUMONIA)")  # the header is the longest
    assert widths["why"] == tables.text_width("modality MR, not CR or DX")
    assert widths["why"] > tables.text_width("why")


@pytest.mark.parametrize("text,expected", [("", tables.MIN_PX), ("x" * 10_000, tables.MAX_PX)])
def test_widths_stay_within_limits(text, expected):
    assert tables.text_width(text) == expected
    assert tables.fitted_widths({"c": [text]}, max_px=300)["c"] <= 300
