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
    assert _charts(at) == 5  # counts, normalised, at the threshold, ROC, reliability
    assert any("stored test-split predictions carry no out-of-distribution flags" in i.value for i in at.info)
    assert any("Expected calibration error" in c.value for c in at.caption)
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
    assert _charts(at) == 5
    assert "Out-of-distribution check" in [h.value for h in at.subheader]
    assert at.subheader[-1].value == "Misclassified images"


def _evaluate_folder(page, folder):
    """The Evaluate page on a dataset folder, evaluated."""
    at = page("evaluate")
    at.run()
    at.radio(key="eval_source").set_value("folder")
    at.run()
    at.text_input(key="eval_folder").set_value(str(folder))
    at.button(key="eval_go").click()
    at.run()
    return at


def test_a_refitted_model_shows_flagged_images_metrics_without_them_and_calibration(refitted_env, page):
    at = _evaluate_folder(page, CHEST_SAMPLE)
    assert not at.exception and not at.error
    assert any("of 80 images" in m.value and "do not look like the images" in m.value for m in at.markdown)
    side = [d.value for d in at.dataframe if "without the flagged" in d.value.columns]
    assert side and {"all images", "without the flagged"} <= set(side[0].columns)
    assert any("temperature-scaled (T = " in c.value for c in at.caption)
    assert _charts(at) == 5
    # the own test split: calibrated stored predictions, no flags stored
    at.radio(key="eval_source").set_value("own")
    at.run()
    assert not at.exception
    assert any("carry no out-of-distribution flags" in i.value for i in at.info)


def test_an_older_model_says_not_checked_and_uncalibrated(older_env, page):
    at = _evaluate_folder(page, CHEST_SAMPLE)
    assert not at.exception and not at.error
    assert any("no out-of-distribution gate" in i.value for i in at.info)
    assert any("not calibrated" in c.value for c in at.caption)


def test_a_class_folder_named_like_markdown_is_shown_as_text(app_env, page, tmp_path):
    """Issue 17: a folder name must never become a link or an image in every visitor's browser."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(CHEST_SAMPLE / "NORMAL", data / "NORMAL")
    shutil.copytree(CHEST_SAMPLE / "PNEUMONIA", data / "![p](https:example.com)")
    at = _evaluate_folder(page, data)
    assert not at.exception
    shown = at.error[0].value
    assert "example" in shown and "](" not in shown and "![" not in shown  # escaped: no Markdown image


def test_the_misclassified_maps_can_be_checked_for_faithfulness(app_env, page):
    """On request (it costs ~38 predictions per map): a mean faithfulness and one score per map caption."""
    at = page("evaluate")
    at.run()
    assert not at.exception and at.subheader[-1].value == "Misclassified images"
    assert not any(c.value.startswith("Mean faithfulness") for c in at.caption)   # not computed unasked
    at.button(key="eval-faithfulness").click()
    at.run()
    assert not at.exception
    mean = [c for c in at.caption if c.value.startswith("Mean faithfulness")]
    assert len(mean) == 1 and "random" in mean[0].proto.help
    at.run()
    assert not [b for b in at.button if b.key == "eval-faithfulness"]           # done: the button is gone
    assert len([c for c in at.caption if c.value.startswith("Mean faithfulness")]) == 1   # cached
