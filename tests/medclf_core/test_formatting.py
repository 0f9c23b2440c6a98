"""medclf_core.formatting: every figure printed one way (n/a, decimals, percentages, no -0.00, n with a metric)."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.formatting import MIN_RELIABLE_N, is_number, metric_with_n, number, percent, rounded


@pytest.mark.parametrize("value,digits,expected", [
    (0.96412, 3, "0.964"), (0.85, 3, "0.850"), (1, 3, "1.000"), (0.4173, 2, "0.42"),
    (-0.0012, 2, "0.00"), (-0.0004, 3, "0.000"), (-0.25, 2, "-0.25"),   # no "-0.00", a real negative kept
    (np.float32(0.5), 3, "0.500"), (np.float64(0.12345), 4, "0.1235"),
    (None, 3, "n/a"), (float("nan"), 3, "n/a"), (float("inf"), 2, "n/a"), ("0.5", 3, "n/a"), (True, 3, "n/a"),
])
def test_number(value, digits, expected):
    assert number(value, digits=digits) == expected


@pytest.mark.parametrize("value,expected", [
    (0.9641, "96.4%"), (1, "100.0%"), (0.0, "0.0%"), (np.float32(0.25), "25.0%"), (None, "n/a"), (float("nan"), "n/a"),
])
def test_percent(value, expected):
    assert percent(value) == expected


def test_percent_and_number_print_what_the_pages_printed_before():
    """app_ui.fmt printed f"{v:.3f}" / f"{v:.1%}"; explain's faithfulness printed two decimals: unchanged."""
    for v in (0.0, 0.0005, 0.12345, 0.5, 0.99951, 1.0):
        assert number(v) == f"{v:.3f}" and percent(v) == f"{v:.1%}"
        assert number(v, digits=2) == f"{round(v, 2):.2f}"


def test_rounded_keeps_numbers_sortable():
    assert rounded(0.85312) == 0.853 and isinstance(rounded(0.85312), float)
    assert rounded(12) == 12 and rounded(None) is None and rounded("x") == "x"


def test_is_number():
    assert is_number(0) and is_number(np.float32(1.5)) and is_number(-2.0)
    assert not any(is_number(v) for v in (None, True, False, "1", float("nan"), float("-inf"), [1]))


def test_too_few_images_is_said_below_the_reliable_n():
    assert "too few images" in metric_with_n(0.9, None, MIN_RELIABLE_N - 1)
    assert "too few images" not in metric_with_n(0.9, None, MIN_RELIABLE_N)


@pytest.mark.parametrize("args,kwargs,expected", [
    ((1.0, (1.0, 1.0), 12), {}, "1.000 (n = 12, too few images for a reliable figure)"),
    ((0.5, (0.2, 0.8), 29), {}, "0.500 (n = 29, too few images for a reliable figure)"),
    ((0.964, (0.951, 0.977), 779), {}, "0.964 (95% CI 0.951-0.977, n = 779)"),
    ((1.0, (1.0, 1.0), 200), {}, "1.000 (n = 200)"),
    ((1.0, (0.99991, 1.0), 200), {}, "1.000 (n = 200)"),
    ((0.9, (0.85, 0.95), None), {}, "0.900 (95% CI 0.850-0.950)"),
    ((0.9, None, None), {}, "0.900"),
    ((0.9, None, 30), {}, "0.900 (n = 30)"),
    ((None, (0.1, 0.2), 50), {}, "n/a"),
    ((float("nan"), None, 50), {}, "n/a"),
    ((0.964, (0.951, 0.977), 779), {"pct": True}, "96.4% (95% CI 95.1%-97.7%, n = 779)"),
    ((0.9, [0.8, None], 40), {}, "0.900 (n = 40)"),
])
def test_metric_with_n(args, kwargs, expected):
    assert metric_with_n(*args, **kwargs) == expected


def test_metric_with_n_never_prints_a_zero_width_interval():
    for n in (None, 5, 30, 1000):
        for v in (0.0, 0.5, 1.0):
            text = metric_with_n(v, (v, v), n)
            assert f"{v:.3f}-{v:.3f}" not in text and f"({v:.3f}-" not in text
