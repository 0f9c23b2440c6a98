"""Plotly figures for the app."""

import numpy as np
import pytest

from medclf_core.reports import plots


def test_probability_bars_highlight_and_threshold():
    fig = plots.probability_bars({"NORMAL": 0.3, "PNEUMONIA": 0.7}, threshold=0.42, positive="PNEUMONIA")
    bar = fig.data[0]
    assert list(bar.y) == ["NORMAL", "PNEUMONIA"] and list(bar.x) == pytest.approx([30, 70])
    assert bar.marker.color[1] == plots.HIGHLIGHT and bar.marker.color[0] == plots.MUTED
    assert fig.layout.shapes[0].x0 == pytest.approx(42)
    # the line crosses the PNEUMONIA bar (row 1) only: the threshold is on P(PNEUMONIA), not on P(NORMAL)
    line = fig.layout.shapes[0]
    assert (line.yref, line.y0, line.y1) == ("y", pytest.approx(0.55), pytest.approx(1.45))
    first = plots.probability_bars({"yes": 0.7, "no": 0.3}, threshold=0.42, positive="yes").layout.shapes[0]
    assert (first.y0, first.y1) == (pytest.approx(-0.45), pytest.approx(0.45))
    fig = plots.probability_bars({"a": 0.2, "b": 0.5, "c": 0.3}, label="c")
    assert fig.data[0].marker.color[2] == plots.DECIDED_NOT_FINDING and not fig.layout.shapes


def test_the_bars_and_the_threshold_name_the_classes_in_the_cards_plain_words():
    fig = plots.probability_bars({"no": 0.1, "yes": 0.9}, label="yes", threshold=0.77, positive="yes",
                                 class_labels={"no": "no tumour", "yes": "tumour"})
    assert list(fig.data[0].y) == ["no tumour", "tumour"] and fig.data[0].marker.color[1] == plots.HIGHLIGHT
    assert fig.layout.annotations[0].text == "threshold for tumour: 77.0%"


def test_no_red_without_a_finding_and_grey_for_a_refused_image():
    """Walk-through: the modality model (no positive class) drew its top class red, the finding colour, and a
    brain MRI refused by the chest model had its PNEUMONIA 95.6% drawn red under "not a finding"."""
    fig = plots.probability_bars({"CT": 0.92, "MRI": 0.08, "XRAY": 0.000003}, label="CT")
    assert list(fig.data[0].marker.color) == [plots.DECIDED_NOT_FINDING, plots.MUTED, plots.MUTED]
    fig = plots.probability_bars({"NORMAL": 0.044, "PNEUMONIA": 0.956}, label="PNEUMONIA", refused=True)
    assert set(fig.data[0].marker.color) == {plots.MUTED}


def test_a_bar_too_short_to_draw_still_has_its_label():
    """Walk-through: a bar at 2.6e-6 had no label (Plotly draws no text on a bar too short to draw when the text
    is placed "auto"), while the others read "<1%": a short bar's label goes beside it."""
    fig = plots.probability_bars({"CT": 0.92, "MRI": 0.08, "XRAY": 2.6e-6}, label="CT")
    assert list(fig.data[0].text) == ["92.0%", "8.0%", "<1%"]
    assert list(fig.data[0].textposition) == ["auto", "outside", "outside"]


def test_a_decision_below_the_threshold_is_not_drawn_as_a_finding_and_labels_are_capped():
    """Issue 24: NORMAL at P(PNEUMONIA) = 0.62 below 0.75 had its 38% bar drawn red, as if it were the finding."""
    fig = plots.probability_bars({"NORMAL": 0.38, "PNEUMONIA": 0.62}, label="NORMAL", threshold=0.75,
                                 positive="PNEUMONIA")
    colours = list(fig.data[0].marker.color)
    assert colours == [plots.DECIDED_NOT_FINDING, plots.MUTED] and plots.HIGHLIGHT not in colours
    fig = plots.probability_bars({"NORMAL": 0.0004, "PNEUMONIA": 0.9996}, label="PNEUMONIA", threshold=0.75,
                                 positive="PNEUMONIA")
    assert list(fig.data[0].text) == ["<1%", ">99%"] and list(fig.data[0].customdata) == ["<1%", ">99%"]
    assert fig.data[0].marker.color[1] == plots.HIGHLIGHT  # the finding


def test_training_curves_single_and_overlaid():
    h = [{"epoch": 0, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.55},
         {"epoch": 1, "loss": 0.6, "accuracy": 0.7, "val_loss": float("nan"), "val_accuracy": 0.6}]
    fig = plots.training_curves(h)
    assert {t.name for t in fig.data} == {"train", "val"} and len(fig.data) == 4
    loss_val = [t for t in fig.data if t.name == "val" and t.yaxis == "y2"][0]
    assert list(loss_val.x) == [1]  # NaN dropped, epochs shown from 1
    fig = plots.training_curves({"a": h, "b": h[:1]})
    assert {t.name for t in fig.data} == {"a train", "a val", "b train", "b val"}
    assert len(plots.training_curves([]).data) == 0


def test_confusion_matrix_counts_and_normalised():
    cm = [[3, 1], [0, 0]]
    fig = plots.confusion_matrix_figure(cm, ["x", "y"])
    assert np.array(fig.data[0].z).tolist() == cm
    fig = plots.confusion_matrix_figure(cm, ["x", "y"], normalised=True)
    assert np.array(fig.data[0].z).tolist() == [[0.75, 0.25], [0.0, 0.0]]
    assert "75%" in fig.data[0].text[0][0]


def test_roc_figure_with_operating_point():
    roc = {"PNEUMONIA": {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1], "thresholds": [1, 0.5, 0]}}
    fig = plots.roc_figure(roc, auc=0.8, operating_point=(0.5, 0.8))
    assert "AUC 0.800" in fig.layout.title.text
    assert [t.name for t in fig.data] == ["chance", "PNEUMONIA (AUC 0.800)", "threshold"]


def test_metrics_table_rows():
    rows = plots.metrics_table({"accuracy": 0.8, "auc": 0.9, "n": 40, "ci95": {"accuracy": [0.7, 0.9], "auc": None}})
    assert rows[0] == {"metric": "Accuracy", "value": "0.800", "95% interval": "0.700 - 0.900"}
    assert rows[1]["95% interval"] == "" and rows[-1]["value"] == "40"
    # fewer than MIN_RELIABLE_N images (issue 26): no interval that looks precise, a note in its place
    few = plots.metrics_table({"accuracy": 1.0, "threshold": 0.5, "n": 12, "ci95": {"accuracy": [1.0, 1.0]}})
    assert [r["95% interval"] for r in few] == ["none: too few images (n = 12)", "", ""]


@pytest.mark.parametrize("runs", [1, 2, 3])
def test_train_and_validation_curves_never_share_a_colour(runs):
    """Issue 26: solid train and dashed validation were drawn in the same colour."""
    history = [{"epoch": e, "loss": 1.0 / (e + 1), "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}
               for e in range(3)]
    fig = plots.training_curves({f"run{k}": history for k in range(runs)} if runs > 1 else history)
    colours = {t.name: t.line.color for t in fig.data}
    for k in range(runs):
        prefix = f"run{k} " if runs > 1 else ""
        assert colours[prefix + "train"] != colours[prefix + "val"]
    assert len(set(colours.values())) == 2 * runs


def test_reliability_figure_bins_and_ece_in_title():
    p = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    y = np.array([0] * 5 + [1] * 5 + [1] * 10)
    fig = plots.reliability_figure(y, p, n_bins=10)
    acc = [t for t in fig.data if t.name == "accuracy"][0]
    assert list(acc.y) == pytest.approx([1.0, 0.5])  # the 0.6 bin: all right; the 0.9 bin: half
    share = [t for t in fig.data if t.name == "share of images"][0]
    assert sum(share.y) == pytest.approx(1.0)
    assert "ECE 0.400" in fig.layout.title.text  # both bins are 0.4 off the diagonal


def test_the_legend_sits_below_the_plot_with_room_for_every_run():
    """Issue 16: comparing several runs must not cut the legend off or push it into the axis title."""
    h = [{"epoch": 0, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.55}]
    one = plots.training_curves(h, height=400)
    many = plots.training_curves({f"chest-xray-run-{k}": h for k in range(6)}, height=400)
    for fig in (one, many):
        legend, margin = fig.layout.legend, fig.layout.margin
        assert legend.yref == "container" and legend.y == 0 and legend.yanchor == "bottom"
        assert margin.b >= 60 + plots.LEGEND_ROW_PX  # the axis title and at least one legend row
    extra_rows = (many.layout.margin.b - one.layout.margin.b) / plots.LEGEND_ROW_PX
    assert extra_rows >= 2  # 12 entries of ~27 characters do not fit on one row
    assert many.layout.height - one.layout.height == many.layout.margin.b - one.layout.margin.b  # the plot keeps its size
    rel = plots.reliability_figure([0, 1], np.array([[0.8, 0.2], [0.3, 0.7]]), height=380)
    assert rel.layout.legend.yref == "container" and rel.layout.height > 380


def test_risk_coverage_figure_draws_the_ordering_the_oracle_and_the_refusals():
    from medclf_core.trust.metrics import decide
    from medclf_core.trust.selective import selective_prediction

    p1 = np.array([0.1, 0.45, 0.9, 0.2, 0.8, 0.3, 0.7, 0.6, 0.05, 0.95])
    probs = np.stack([1 - p1, p1], axis=1)
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 0])
    sel = selective_prediction(y, probs, decide(probs, 0.5, 1), threshold=0.5, positive=1, bootstrap=0,
                               ood_score=list(np.linspace(0, 1, 10)), refused=[False] * 9 + [True])
    fig = plots.risk_coverage_figure(sel, "unfamiliar")
    curve, oracle, marks = fig.data[1], fig.data[0], fig.data[2]
    o = sel["orderings"]["unfamiliar"]
    assert curve.name == "deferring the most unfamiliar" and list(curve.y) == o["curve"]["accuracy"]
    assert list(marks.x) == [1.0, 0.95, 0.9, 0.8] and list(oracle.y)[-1] == pytest.approx(o["curve"]["accuracy"][-1])
    assert all(a >= b - 1e-5 for a, b in zip(oracle.y, curve.y))  # nothing beats the oracle (5 decimals)
    assert fig.layout.shapes[0].x0 == pytest.approx(0.9) and f"AURC {o['aurc']:.3f}" in fig.layout.title.text
    assert plots.risk_coverage_figure(sel, "confidence").data[1].name == "deferring the least confident"
    low, high = fig.layout.yaxis.range  # accuracy never above 1 (plotly's own range ran to 2 when all were right)
    assert high == 1.02 and 0 <= low <= min(v for t in fig.data for v in t.y if v is not None)
    empty = plots.risk_coverage_figure({**sel, "orderings": {"confidence": None}})
    assert not empty.data and "No curve" in empty.layout.annotations[0].text
