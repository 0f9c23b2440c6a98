"""medclf_core.trust.selective: the risk-coverage curve, its area, and the table at fixed coverages.

Small examples are worked out by hand in the comments; the orderings are checked against the oracle
(errors deferred first) and its reverse, and the edge cases (ties, no images, one class, refused
images) give plain results that JSON can hold (None, never NaN)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medclf_core.trust.metrics import decide
from medclf_core.trust.selective import (deferral_caption, deferral_scores, deferral_sentence, risk_coverage,
                                         selective_prediction)


def _binary(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def test_hand_worked_curve_and_table():
    """Six images, P(pos) and threshold 0.5; wrong: #1 (margin 0.05) and #4 (margin 0.3). Kept longest first
    (largest margin): #0 .45 ok, #5 .4 ok, #4 .3 WRONG, #3 .2 ok, #2 .1 ok, #1 .05 WRONG."""
    y = np.array([0, 1, 0, 1, 0, 1])
    p1 = np.array([0.05, 0.45, 0.4, 0.7, 0.8, 0.9])
    probs = _binary(p1)
    y_pred = decide(probs, 0.5, 1)
    s = selective_prediction(y, probs, y_pred, threshold=0.5, positive=1, coverages=(1.0, 0.5), bootstrap=0)
    c = s["orderings"]["confidence"]
    acc = [1, 1, 2 / 3, 3 / 4, 4 / 5, 4 / 6]
    assert c["curve"]["accuracy"] == pytest.approx(acc, abs=1e-5)
    assert c["curve"]["n_kept"] == [1, 2, 3, 4, 5, 6] and c["curve"]["coverage"][-1] == 1.0
    assert c["aurc"] == pytest.approx(np.mean(1 - np.array(acc)))
    # oracle: 4 right kept first -> risks 0,0,0,0,1/5,2/6
    assert c["aurc_oracle"] == pytest.approx((1 / 5 + 2 / 6) / 6)
    assert c["excess_aurc"] == pytest.approx(c["aurc"] - c["aurc_oracle"]) and c["excess_aurc"] > 0
    full, half = c["table"]
    assert full == {**full, "coverage": 1.0, "n_kept": 6, "accuracy": pytest.approx(4 / 6),
                    "sensitivity": pytest.approx(2 / 3), "specificity": pytest.approx(2 / 3)}
    # coverage 0.5 keeps #0 (neg ok), #5 (pos ok), #4 (neg, called pos: wrong)
    assert half["n_kept"] == 3 and half["accuracy"] == pytest.approx(2 / 3)
    assert half["sensitivity"] == 1.0 and half["specificity"] == pytest.approx(1 / 2)
    assert s["orderings"]["unfamiliar"] is None and s["n_refused"] == 0 and s["accepted_coverage"] == 1.0


def test_confidence_is_the_distance_to_the_operating_threshold_in_log_odds():
    """At threshold 0.8, P = 0.79 is closest to the decision (deferred first); P = 0.99 (3.2 log-odds above it)
    is kept longer than P = 0.5 (1.4 below); multi-class uses the top probability."""
    sc = deferral_scores(_binary([0.79, 0.5, 0.99]), threshold=0.8, positive=1)["confidence"]
    assert np.argmax(sc) == 0 and np.argmin(sc) == 2
    assert sc[1] == pytest.approx(-np.log(4))  # |logit(0.5) - logit(0.8)| = log 4
    multi = np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.5, 0.5, 0.0]])
    assert np.argmax(deferral_scores(multi, threshold=None, positive=None)["confidence"]) == 0


def test_a_mistake_far_below_a_high_threshold_is_deferred_before_sure_positive_calls():
    """Threshold 0.77: a pneumonia film called NORMAL at P = 0.15 is 0.62 from the threshold and every PNEUMONIA call
    at most 0.23, so the plain distance kept the mistake longest and deferred right answers first (accuracy fell
    from 1.0 as soon as it was answered). In log-odds the mistake (2.9) is less sure than P = 0.995 (4.1)."""
    p1 = np.array([0.15, 0.995, 0.999, 0.9995, 0.002, 0.001])
    y = np.array([1, 1, 1, 1, 0, 0])
    probs = _binary(p1)
    s = selective_prediction(y, probs, decide(probs, 0.77, 1), threshold=0.77, positive=1, bootstrap=0)
    c = s["orderings"]["confidence"]
    assert c["curve"]["accuracy"] == pytest.approx([1, 1, 1, 1, 1, 5 / 6], abs=1e-5)  # the mistake is deferred first
    assert c["excess_aurc"] == pytest.approx(0)
    plain = -np.abs(p1 - 0.77)  # the old rule: the mistake has the lowest score, kept to the end
    assert risk_coverage(y == decide(probs, 0.77, 1), plain)["curve"]["accuracy"][-2] < 1
    # P stuck at 0 or 1 stays finite (clipped to [1e-6, 1 - 1e-6])
    assert np.isfinite(deferral_scores(_binary([0.0, 1.0]), threshold=0.77, positive=1)["confidence"]).all()


def test_perfect_ordering_reaches_the_oracle_and_others_do_not():
    rng = np.random.default_rng(1)
    correct = (rng.random(300) < 0.8).astype(float)
    perfect = risk_coverage(correct, 1 - correct)  # errors have the highest deferral score
    assert perfect["aurc"] == pytest.approx(perfect["aurc_oracle"]) and perfect["excess_aurc"] == pytest.approx(0)
    random = risk_coverage(correct, rng.random(300))
    worst = risk_coverage(correct, correct)
    assert perfect["aurc"] < random["aurc"] < worst["aurc"]
    assert random["aurc"] == pytest.approx(1 - correct.mean(), abs=0.05)  # random: flat at the error rate


def test_ties_are_deferred_together_and_file_order_does_not_matter():
    """Every score equal: at any coverage the expected accuracy is the overall accuracy."""
    correct = np.array([1, 0, 1, 1], dtype=float)
    r = risk_coverage(correct, np.zeros(4))
    assert r["curve"]["accuracy"] == pytest.approx([0.75] * 4) and r["aurc"] == pytest.approx(0.25)
    y, p1 = np.array([0, 1, 0, 1, 1, 0]), np.array([0.9, 0.9, 0.1, 0.1, 0.6, 0.4])  # two tied pairs
    perm = np.array([5, 3, 1, 0, 4, 2])
    a, b = (selective_prediction(y[i], _binary(p1[i]), decide(_binary(p1[i]), 0.5, 1), threshold=0.5, positive=1,
                                 coverages=(1.0, 0.5), bootstrap=0) for i in (np.arange(6), perm))
    assert a["orderings"] == b["orderings"]
    # coverage 0.5 keeps one image of each tied pair (0.9: one right, one wrong; 0.1: the same): half of each
    row = a["orderings"]["confidence"]["table"][1]
    assert row["n_kept"] == 3 and row["accuracy"] == pytest.approx(0.5)


def test_refused_images_are_deferred_first():
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.9, 0.95, 0.1])  # the last is wrong and confidently so: refused
    probs = _binary(p1)
    s = selective_prediction(y, probs, decide(probs, 0.5, 1), threshold=0.5, positive=1, refused=[
        False, False, None, False, True], ood_score=[1.0, 2.0, None, 0.5, 9.0], coverages=(1.0, 0.8), bootstrap=0)
    assert s["n_refused"] == 1 and s["accepted_coverage"] == pytest.approx(0.8)
    for o in s["orderings"].values():
        full, rest = o["table"]
        assert full["accuracy"] == pytest.approx(0.8) and full["includes_refused"]
        assert rest["n_kept"] == 4 and rest["accuracy"] == 1.0 and not rest["includes_refused"]
    assert deferral_sentence(s, coverage=0.8).startswith("deferring 1 image (20%): the 1 refused: accuracy")
    # without a score the image counts as the most unfamiliar: with the refused one gone, it goes next
    assert s["orderings"]["unfamiliar"]["curve"]["accuracy"][:3] == pytest.approx([1, 1, 1])


def test_no_images_and_one_class_give_none_not_nan():
    empty = selective_prediction([], np.zeros((0, 2)), [], threshold=0.5, positive=1, ood_score=[], bootstrap=20)
    o = empty["orderings"]["confidence"]
    assert empty["n"] == 0 and empty["accepted_coverage"] is None and o["aurc"] is None
    assert all(r["accuracy"] is None and r["n_kept"] == 0 for r in o["table"])
    probs = _binary([0.1, 0.2, 0.7])  # negatives only: sensitivity has no denominator
    one = selective_prediction([0, 0, 0], probs, decide(probs, 0.5, 1), threshold=0.5, positive=1, bootstrap=20)
    row = one["orderings"]["confidence"]["table"][0]
    assert row["sensitivity"] is None and row["specificity"] == pytest.approx(2 / 3)
    assert row["ci95"]["sensitivity"] is None and row["ci95"]["specificity"] is not None
    for result in (empty, one):
        json.dumps(result, allow_nan=False)  # raises on NaN or infinity


def test_bootstrap_intervals_hold_the_estimate_and_repeat():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p1 = np.clip(y * 0.6 + rng.random(120) * 0.5 - 0.05, 0, 1)
    probs = _binary(p1)
    args = dict(threshold=0.5, positive=1, bootstrap=200, seed=3)
    a = selective_prediction(y, probs, decide(probs, 0.5, 1), **args)
    assert a == selective_prediction(y, probs, decide(probs, 0.5, 1), **args)
    for row in a["orderings"]["confidence"]["table"]:
        for m in ("accuracy", "sensitivity", "specificity"):
            lo, hi = row["ci95"][m]
            assert 0 <= lo <= row[m] <= hi <= 1, (row["coverage"], m)


def test_the_sentence_and_caption():
    probs = _binary([0.1, 0.48, 0.9, 0.2, 0.8, 0.3, 0.7, 0.6, 0.05, 0.95])
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 1])  # #1 (margin 0.02) is the only error
    s = selective_prediction(y, probs, decide(probs, 0.5, 1), threshold=0.5, positive=1, bootstrap=0)
    assert deferral_sentence(s) == "deferring the least confident image (10%): accuracy 0.900 -> 1.000 (n 9 of 10)"
    assert deferral_sentence(s, "unfamiliar") is None
    assert deferral_caption(s).startswith("Deferring the least confident image (10%)")
    assert "not available" in deferral_caption(s, "unfamiliar")


def test_the_sentence_counts_the_images_really_deferred():
    """The walk-through's 14 images, 2 refused: deferring "10%" keeps round(0.9 x 14) = 13, so 1 image is deferred
    (7%), one of the refused; the other refused image is still answered. The sentence said "10% (the 2 refused
    first, ...)"."""
    y = np.array([0] * 7 + [1] * 7)
    p1 = np.array([0.1, 0.2, 0.05, 0.3, 0.01, 0.995, 0.6, 0.9, 0.95, 0.99, 0.999, 0.2, 0.3, 0.7])
    refused = [False] * 5 + [True, False, False, False, False, False, True, False, False]
    probs = _binary(p1)
    s = selective_prediction(y, probs, decide(probs, 0.77, 1), threshold=0.77, positive=1, refused=refused,
                             bootstrap=0)
    line = deferral_sentence(s)
    assert line.startswith("deferring 1 image (7%): 1 of the 2 refused (1 refused image still answered, with "
                           "the model's output): accuracy ") and line.endswith("(n 13 of 14)")
    assert "the 2 refused first" not in line and "10%" not in line
    # 3 of 20 refused, 2 deferred at 90%: all of them refused; at 80%, 4 deferred: the 3 refused, then 1 more
    y, p1 = np.array([0, 1] * 10), np.linspace(0.02, 0.98, 20)
    s = selective_prediction(y, _binary(p1), decide(_binary(p1), 0.5, 1), threshold=0.5, positive=1,
                             refused=[i < 3 for i in range(20)], bootstrap=0)
    assert deferral_sentence(s).startswith("deferring 2 images (10%): 2 of the 3 refused (1 refused image still")
    assert deferral_sentence(s, coverage=0.8).startswith(
        "deferring 4 images (20%): the 3 refused, then the 1 least confident: accuracy ")
    # too few images for 10% to be one image
    s = selective_prediction([0, 1, 1], _binary([0.1, 0.9, 0.8]), [0, 1, 1], threshold=0.5, positive=1, bootstrap=0)
    assert deferral_sentence(s) == "10% of 3 images is less than one image: none deferred, accuracy 1.000 (n 3 of 3)"
