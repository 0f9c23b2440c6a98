"""The Models page's words for a cross-validated (small-data) run, and a weak out-of-distribution check."""

from __future__ import annotations

from medclf_core.formatting import CROSS_VALIDATION
from medclf_core.registry.card import threshold_rule_text
from medclf_core.trust.card_facts import batch_and_learning_rate_text, ood_check_text, split_counts_text
from medclf_core.trust.calibration import calibration_in_use
from medclf_core.trust.gate_size import MIN_GATE_VAL_IMAGES, small_gate_notice

CV_CARD = {"metrics": {"split": CROSS_VALIDATION, "n": 40},
           "dataset": {"counts": {"train": {"CT": 14, "MRI": 14}, "val": {"CT": 3, "MRI": 3},
                                  "test": {"CT": 3, "MRI": 3}}},
           "config": {"batch_size": 32, "learning_rate": 0.001},
           "ood": {"n_train": 28, "n_val": 6}}


def test_a_cross_validated_card_says_what_its_split_and_settings_were_for():
    """It said "there is no held-out test split" next to "test: CT 3, MRI 3", and "32 / 0.001" although the
    cross-validated head used neither."""
    split = split_counts_text(CV_CARD)
    assert split.startswith("train: CT 14, MRI 14; val: CT 3, MRI 3; test: CT 3, MRI 3")
    assert "only fits the out-of-distribution check" in split and "all 40 images" in split
    assert batch_and_learning_rate_text(CV_CARD).startswith("not used: the head was chosen by cross-validation")
    held_out = {**CV_CARD, "metrics": {"split": "test", "n": 6}}
    assert split_counts_text(held_out) == "train: CT 14, MRI 14; val: CT 3, MRI 3; test: CT 3, MRI 3"
    assert batch_and_learning_rate_text(held_out) == "32 / 0.001"


def test_the_cross_validated_threshold_and_calibration_read_once():
    rule = {"chosen_for": "rule: 0.5, the most probable class of the class-balanced head (a threshold chosen on "
                          "a few dozen out-of-fold predictions follows single images)",
            "on": "rule, not fitted (40 images, cross-validated)"}
    text = threshold_rule_text(rule)
    assert "((" not in text and "))" not in text and text.count("(") == text.count(")") == 2
    assert text.endswith("follows single images); not fitted (40 images, cross-validated).")
    cal = {"calibration": {"method": "temperature scaling", "temperature": 1.0, "n": 40,
                           "fitted_on": "out-of-fold predictions of 5-fold cross-validation (40 images)"}}
    assert calibration_in_use(cal).endswith("cross-validation (40 images)")  # not "... (40 images) (n = 40)"
    held_out = {"calibration": {"method": "temperature scaling", "temperature": 1.0, "n": 779, "fitted_on": "val"}}
    assert calibration_in_use(held_out).endswith("validation split (n = 779)")


def test_a_gate_fitted_on_few_images_is_called_weak():
    """The 40-image CT/MRI run (gate on 28 training / 6 validation images) answered a chest X-ray "MRI" with
    no caution, and nothing said that its check was weak."""
    notice = small_gate_notice(CV_CARD["ood"])
    assert "only 28 training and 6 validation images" in notice and f"fewer than {MIN_GATE_VAL_IMAGES}" in notice
    assert ood_check_text(CV_CARD) == "fitted on 28 training and 6 validation images"  # the page warns once, above
    assert small_gate_notice({"n_train": 200, "n_val": MIN_GATE_VAL_IMAGES}) is None
    assert small_gate_notice({"n_train": "![x](http://x-md.evil.test/x.png)", "n_val": 6}) is None  # a damaged card
    assert ood_check_text({"ood": {"n_train": 200, "n_val": 40}}) == "fitted on 200 training and 40 validation images"
