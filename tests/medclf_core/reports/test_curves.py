"""A run's training chart: epoch curves, or what a cross-validated head fit has instead (never empty axes)."""

import json

from medclf_core.reports.curves import has_epoch_curves, run_curves

CV_HISTORY = [{"epoch": 0, "phase": "cross_validation", "cv_log_loss": 0.16, "C": 0.0316, "folds": 5, "seconds": 0.8}]
CV_CARD = {"recipe": {"name": "transfer", "cross_validated_head": {
    "C": 0.0316, "folds": 5, "cv_log_loss": {"0.001": 0.27, "0.0316": 0.16, "1": 0.19, "10": 0.23}}}}


def test_a_cross_validated_head_gets_its_cross_validation_not_empty_epoch_axes():
    """Walk-through: after training the bundled sample the accuracy and loss charts were empty axes from -1 to 6."""
    figure, why = run_curves(CV_HISTORY, CV_CARD)
    assert not has_epoch_curves(CV_HISTORY)
    assert "5-fold cross-validation" in why and "no accuracy or loss curves" in why and "C = 0.0316" in why
    spec = json.loads(figure.to_json())
    assert all(t["x"] for t in spec["data"]) and spec["layout"]["xaxis"]["type"] == "log"
    line, kept = spec["data"]
    assert line["x"] == [0.001, 0.0316, 1.0, 10.0] and line["y"] == [0.27, 0.16, 0.19, 0.23]
    assert kept["x"] == [0.0316] and kept["y"] == [0.16]


def test_without_the_card_or_any_curve_a_sentence_replaces_the_chart():
    # the Train page while the run is still being evaluated: the events' record, no card yet
    figure, why = run_curves([{"epoch": 1, "cv_log_loss": 0.16}])
    assert figure is None and "cross-validation" in why and "C =" not in why
    figure, why = run_curves([{"epoch": 0, "seconds": 1.0}])
    assert figure is None and "no training curves" in why
    assert run_curves([]) == (None, None)


def test_epoch_curves_are_drawn_as_before():
    history = [{"epoch": 0, "loss": 0.6, "accuracy": 0.6, "val_loss": 0.7, "val_accuracy": 0.5}]
    figure, why = run_curves(history, CV_CARD)
    assert why is None and {t.name for t in figure.data} == {"train", "val"}
