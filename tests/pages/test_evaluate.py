"""Evaluate page: metrics, confusion matrices, ROC, live threshold, misclassified images."""

from __future__ import annotations

from helpers import CHEST_SAMPLE


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_own_test_split_shows_confusion_matrix_roc_and_threshold(app_env, page):
    at = page("evaluate")
    at.run()
    assert not at.exception
    assert at.subheader[0].value.startswith("tiny-chest on ")
    metrics = at.dataframe[0].value
    assert "Accuracy" in list(metrics["metric"]) and metrics["95% interval"][0]
    assert _charts(at) == 4  # counts, normalised, at the threshold, ROC
    sens = [m.value for m in at.metric]
    at.slider[0].set_value(0.0)
    at.run()
    assert not at.exception
    assert at.metric[0].value == "100.0%"  # every positive found at threshold 0
    assert at.metric[1].value == "0.0%" or sens[1] == "0.0%"  # and no negative is called negative
    assert at.subheader[-1].value == "Misclassified images"


def test_another_folder_and_a_bad_folder(app_env, page):
    at = page("evaluate")
    at.run()
    at.radio(key="eval_source").set_value("folder")
    at.run()
    at.text_input(key="eval_folder").set_value("/no/such/data")
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and "cannot be evaluated" in at.error[0].value
    at.text_input(key="eval_folder").set_value(str(CHEST_SAMPLE))
    at.button(key="eval_go").click()
    at.run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "tiny-chest on 80 images"
    assert _charts(at) == 4
    assert at.subheader[-1].value == "Misclassified images"
