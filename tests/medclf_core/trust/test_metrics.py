"""medclf_core.trust.metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.registry.card import positive_class_index, threshold_rule_text
from medclf_core.trust.metrics import THRESHOLD_RULES, choose_threshold, decide, evaluate_probabilities

CLASSES = ["NORMAL", "PNEUMONIA"]


def _binary(scores):
    s = np.asarray(scores, dtype=float)
    return np.stack([1 - s, s], axis=1)


def test_binary_hand_computed():
    y = [0, 0, 0, 1, 1, 1, 1]
    p = _binary([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7])
    r = evaluate_probabilities(y, p, CLASSES, threshold=0.5, bootstrap=0)
    # predicted: 0 1 0 1 0 1 1 -> TN=2 FP=1 FN=1 TP=3
    assert r["confusion_matrix"] == [[2, 1], [1, 3]]
    assert r["accuracy"] == pytest.approx(5 / 7)
    assert r["sensitivity"] == pytest.approx(3 / 4) and r["specificity"] == pytest.approx(2 / 3)
    assert r["per_class"]["PNEUMONIA"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
    assert r["per_class"]["NORMAL"]["precision"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    # AUC by counting pairs: positives {.8,.4,.9,.7} vs negatives {.1,.6,.3}: 11 of 12 pairs ordered (.4 < .6 is the one miss)
    assert r["auc"] == pytest.approx(11 / 12)
    assert r["positive_class"] == "PNEUMONIA"


def test_threshold_changes_decision():
    y = [0, 1]
    p = _binary([0.3, 0.35])
    assert evaluate_probabilities(y, p, CLASSES, threshold=0.5, bootstrap=0)["accuracy"] == 0.5
    assert evaluate_probabilities(y, p, CLASSES, threshold=0.32, bootstrap=0)["accuracy"] == 1.0


def test_multiclass_hand_computed():
    y = [0, 1, 2, 2]
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .6, .3], [.1, .2, .7]])
    r = evaluate_probabilities(y, p, ["CT", "MRI", "XRAY"], bootstrap=0)
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert r["threshold"] is None and "sensitivity" not in r
    assert r["per_class"]["MRI"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["XRAY"]["recall"] == pytest.approx(0.5)
    assert 0 < r["auc"] <= 1 and set(r["roc"]) == {"CT", "MRI", "XRAY"}


def test_youden_threshold_separates_separable_data():
    y = np.array([0] * 5 + [1] * 5)
    p = _binary([.1, .2, .25, .3, .45, .5, .7, .8, .85, .9])
    t = choose_threshold(y, p, positive=1)
    assert 0.45 < t <= 0.5
    assert evaluate_probabilities(y, p, CLASSES, threshold=t, bootstrap=0)["accuracy"] == 1.0


def test_sensitivity_target_threshold():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = _binary([.1, .5, .6, .2, .7, .8, .9])
    t = choose_threshold(y, p, positive=1, method="sensitivity", target_sensitivity=1.0)
    assert t == pytest.approx(0.2)
    assert decide(p, t, 1)[y == 1].all()


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = _binary(np.clip(y * 0.6 + rng.normal(0.2, 0.25, 200), 0, 1))
    r = evaluate_probabilities(y, p, CLASSES, bootstrap=300)
    lo, hi = r["ci95"]["accuracy"]
    assert lo < r["accuracy"] < hi and hi - lo < 0.2
    lo, hi = r["ci95"]["auc"]
    assert lo < r["auc"] < hi


def test_intervals_resample_whole_groups_when_images_of_one_patient_err_together():
    """Ten patients of 20 images; one patient's images are all wrong. By image the 20 mistakes look like 20
    independent draws; by patient they are one draw, and the interval must be wider (and say how many groups)."""
    y = np.tile([0, 1], 100)
    probs = _binary(np.where(y == 1, 0.9, 0.1))
    probs[:20] = probs[:20, ::-1]  # patient 0: every image wrong
    groups = np.repeat([f"patient{i}" for i in range(10)], 20)
    by_image = evaluate_probabilities(y, probs, CLASSES, bootstrap=400)
    by_patient = evaluate_probabilities(y, probs, CLASSES, bootstrap=400, groups=groups)
    assert by_patient["accuracy"] == by_image["accuracy"] == 0.9
    assert by_patient["n_groups"] == 10 and "n_groups" not in by_image
    (lo_i, hi_i), (lo_p, hi_p) = by_image["ci95"]["accuracy"], by_patient["ci95"]["accuracy"]
    assert lo_p <= lo_i and hi_p >= hi_i and (hi_p - lo_p) > 1.5 * (hi_i - lo_i)
    assert hi_p == 1.0  # a resample without patient 0 has no mistake at all


def test_groups_of_one_image_give_an_image_bootstrap():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    probs = _binary(np.clip(y * 0.5 + rng.normal(0.25, 0.25, 300), 0, 1))
    by_image = evaluate_probabilities(y, probs, CLASSES, bootstrap=500)["ci95"]["accuracy"]
    singletons = evaluate_probabilities(y, probs, CLASSES, bootstrap=500, groups=np.arange(300))["ci95"]["accuracy"]
    assert np.allclose(by_image, singletons, atol=0.02)  # the same distribution, other draws


@pytest.mark.parametrize("names,expected", [(["NORMAL", "PNEUMONIA"], 1), (["no", "yes"], 1), (["tumour", "normal"], 0),
                                            (["cat", "dog"], 1), (["a", "b", "c"], None)])
def test_positive_class_follows_the_card_rule(names, expected):
    assert positive_class_index(names) == expected
    probs = np.full((2, len(names)), 1.0 / len(names))
    r = evaluate_probabilities([0, 1], probs, names, bootstrap=0)
    assert r["positive_class"] == (names[expected] if expected is not None else None)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        evaluate_probabilities([0, 1], np.ones((3, 2)) / 2, CLASSES)


def test_sensitivity_specificity_and_matrix_move_with_the_threshold():
    """Moved from plots.threshold_metrics (issue 16): the Evaluate page's slider reads evaluate_probabilities."""
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    at_half = evaluate_probabilities(y, probs, ["NORMAL", "PNEUMONIA"], threshold=0.5, positive=1, bootstrap=0)
    assert at_half["confusion_matrix"] == [[1, 1], [1, 1]]
    assert at_half["sensitivity"] == 0.5 and at_half["specificity"] == 0.5
    low = evaluate_probabilities(y, probs, ["NORMAL", "PNEUMONIA"], threshold=0.3, positive=1, bootstrap=0)
    assert low["sensitivity"] == 1.0 and low["specificity"] == 0.5
    assert decide(probs, 0.3, 1).tolist() == [0, 1, 1, 1]
    multi = evaluate_probabilities([0, 1, 2], np.eye(3), ["a", "b", "c"], bootstrap=0)
    assert multi["accuracy"] == 1.0 and multi.get("sensitivity") is None


@pytest.mark.parametrize("method", ["youden", "balanced"])
def test_threshold_sits_in_the_middle_of_a_separating_gap_not_on_the_edge(method):
    # A validation split the model separates with a wide gap (as a near-perfect model's is): the old rule put
    # the threshold on the least certain positive (0.94), so any shift off-source lost sensitivity.
    rng = np.random.default_rng(0)
    neg = rng.uniform(0.001, 0.05, 60)
    pos = rng.uniform(0.94, 0.999, 40)
    y = np.array([0] * 60 + [1] * 40)
    t = choose_threshold(y, _binary(np.concatenate([neg, pos])), positive=1, method=method)
    logit = np.log(t / (1 - t))
    gap = np.log(np.array([neg.max(), pos.min()]) / (1 - np.array([neg.max(), pos.min()])))
    assert gap[0] < logit < gap[1]
    assert abs(logit - gap.mean()) < 0.25 * (gap[1] - gap[0])


def test_positive_class_zero_gets_the_same_midpoint():
    y = np.array([0] * 5 + [1] * 5)
    p = _binary([.1, .2, .25, .3, .45, .5, .7, .8, .85, .9])
    assert choose_threshold(1 - y, p[:, ::-1], positive=0, method="youden") == pytest.approx(
        choose_threshold(y, p, positive=1, method="youden"))


def test_the_threshold_rule_says_each_part_once():
    """The card's rule already says "validation split" and "on calibrated probabilities"; "on" said them again."""
    on = "validation split, calibrated probabilities"
    balanced = threshold_rule_text({"chosen_for": THRESHOLD_RULES["balanced"], "on": on})
    assert balanced == f"Operating threshold: {THRESHOLD_RULES['balanced']}."
    youden = threshold_rule_text({"chosen_for": THRESHOLD_RULES["youden"], "on": on})
    # the rule ends in its own brackets: the rest follows after a semicolon, not in a second pair
    assert youden.endswith("separates); calibrated probabilities.") and youden.count("validation split") == 1
    site = threshold_rule_text({"chosen_for": "sensitivity 0.95 on the site's images",
                                "on": "the images of site 'st marys', site-calibrated probabilities"})
    assert site.endswith("(the images of site 'st marys', site-calibrated probabilities).")
    assert threshold_rule_text({"on": on}) is None


def test_a_two_class_evaluation_gives_sensitivity_and_specificity_intervals():
    """Walk-through, session 21: the Evaluate page's table gave sensitivity 0.933 on 15 positives with no interval
    (only accuracy and AUC had one). The intervals hold the point figures and are wider for fewer images."""
    import numpy as np

    from medclf_core.trust.metrics import evaluate_probabilities

    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 15)
    p1 = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.25, len(y)), 0, 1)
    m = evaluate_probabilities(y, np.stack([1 - p1, p1], 1), ["NORMAL", "PNEUMONIA"], threshold=0.5, positive=1,
                               bootstrap=500)
    (s_lo, s_hi), (c_lo, c_hi) = m["ci95"]["sensitivity"], m["ci95"]["specificity"]
    assert s_lo <= m["sensitivity"] <= s_hi and c_lo <= m["specificity"] <= c_hi
    assert s_hi - s_lo > c_hi - c_lo  # 15 positives against 60 negatives
    multi = evaluate_probabilities(np.array([0, 1, 2] * 10), np.eye(3)[[0, 1, 2] * 10], ["a", "b", "c"], bootstrap=50)
    assert "sensitivity" not in multi["ci95"]
