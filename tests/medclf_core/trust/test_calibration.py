"""medclf_core.trust.calibration: temperature scaling, threshold mapping, ECE and reliability bins."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.trust.calibration import (apply_temperature, calibration_entry, expected_calibration_error,
                                           fit_temperature, map_threshold, negative_log_likelihood, reliability_bins,
                                           stored_probabilities, stored_temperature, temperature_of)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _synthetic(n=4000, k=3, true_t=2.5, seed=0):
    """Labels drawn from softmax(logits); the 'model' reports softmax(logits * true_t): over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, k))
    p_true = _softmax(logits)
    y = np.array([rng.choice(k, p=row) for row in p_true])
    return y, _softmax(logits * true_t), p_true


def test_apply_temperature_equals_softmax_of_scaled_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (20, 4))
    probs = _softmax(logits)
    for t in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(apply_temperature(probs, t), _softmax(logits / t), atol=1e-9)
    np.testing.assert_array_equal(apply_temperature(probs, None), probs)
    # argmax never changes
    assert (apply_temperature(probs, 7.0).argmax(1) == probs.argmax(1)).all()
    with pytest.raises(ValueError):
        apply_temperature(probs, 0.0)


def test_fit_temperature_recovers_the_overconfidence():
    y, over, _ = _synthetic()
    t = fit_temperature(y, over)
    assert t == pytest.approx(2.5, rel=0.12)
    assert negative_log_likelihood(y, over, t) < negative_log_likelihood(y, over, 1.0)
    # and sharpens an under-confident model
    y2, under, _ = _synthetic(true_t=0.5, seed=3)
    assert fit_temperature(y2, under) == pytest.approx(0.5, rel=0.12)


def test_fit_temperature_degenerate_inputs():
    assert fit_temperature([1], np.array([[0.2, 0.8]])) == 1.0
    with pytest.raises(ValueError):
        fit_temperature([0, 1, 1], np.array([[0.2, 0.8], [0.5, 0.5]]))
    # perfectly separable, confident and right: sharpening is allowed but it stays in bounds
    t = fit_temperature([0, 1], np.array([[0.9, 0.1], [0.1, 0.9]]))
    assert 0.05 <= t <= 1.0


def test_map_threshold_keeps_every_binary_decision():
    rng = np.random.default_rng(2)
    p1 = rng.uniform(0, 1, 2000)
    probs = np.stack([1 - p1, p1], axis=1)
    for t_raw in (0.14, 0.5, 0.83):
        for temp in (0.4, 1.7, 5.0):
            t_cal = map_threshold(t_raw, temp)
            cal = apply_temperature(probs, temp)
            np.testing.assert_array_equal(probs[:, 1] >= t_raw, cal[:, 1] >= t_cal)
    assert map_threshold(0.3, 1.0) == 0.3 and map_threshold(None, 2.0) is None
    assert map_threshold(0.3, 2.0) > 0.3  # softening pulls a low threshold towards 0.5


def test_ece_known_values():
    # all confidence 0.9, all right: |1 - 0.9| = 0.1
    p = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(np.zeros(10, int), p) == pytest.approx(0.1)
    # half right at 0.9 -> |0.5 - 0.9|
    y = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(y, p) == pytest.approx(0.4)
    # two bins: 0.6 (2 of 2 right) and 0.95 (1 of 2 right): (2*0.4 + 2*0.45) / 4
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.95, 0.05]])
    assert expected_calibration_error([0, 0, 0, 1], p, n_bins=10) == pytest.approx((0.8 + 0.9) / 4)
    assert expected_calibration_error([], np.zeros((0, 2))) is None


def test_calibration_lowers_ece_and_bins_add_up():
    y, over, _ = _synthetic(seed=5)
    before = expected_calibration_error(y, over)
    after = expected_calibration_error(y, apply_temperature(over, fit_temperature(y, over)))
    assert before > 0.08 and after < 0.03
    b = reliability_bins(y, over, n_bins=15)
    assert len(b["edges"]) == 16 and sum(b["count"]) == len(y)
    assert all((c is None) == (n == 0) for c, n in zip(b["confidence"], b["count"], strict=True))


def test_calibration_entry_records_the_threshold_on_raw_probabilities():
    y, over, _ = _synthetic(n=400, k=2, seed=3)
    t = fit_temperature(y, over)
    threshold = map_threshold(0.3, t)  # a threshold on calibrated probabilities
    e = calibration_entry(t, y, over, threshold=threshold, stored_predictions="calibrated")
    assert e["temperature"] == t and e["n"] == 400 and e["stored_predictions"] == "calibrated"
    assert e["threshold_uncalibrated"] == pytest.approx(0.3)
    assert e["val_nll"][1] < e["val_nll"][0] and e["val_ece"][1] < e["val_ece"][0]
    assert calibration_entry(t, y, over)["threshold_uncalibrated"] is None


@pytest.mark.parametrize("calibration, expected", [(None, None), ({}, None), ({"temperature": "x"}, None),
                                                   ({"temperature": 0}, None), ({"temperature": float("nan")}, None),
                                                   ({"temperature": "2.5"}, 2.5)])
def test_temperature_of_a_card(calibration, expected):
    assert temperature_of({"calibration": calibration}) == expected


def test_stored_probabilities_scale_only_by_what_is_not_yet_applied():
    raw = np.array([[0.8, 0.2], [0.3, 0.7]])
    names = {"class_names": ["PNEUMONIA", "NORMAL"], "positive_class": "PNEUMONIA"}
    card = {**names, "calibration": {"temperature": 2.0, "stored_predictions": "raw"}}
    assert stored_temperature(card) is None
    np.testing.assert_allclose(stored_probabilities(card, raw), apply_temperature(raw, 2.0, positive=0))
    # evaluation.json already holds probabilities scaled by 2.0 and a later refit gave 3.0: scale by 3 / 2
    card = {**names, "calibration": {"temperature": 3.0, "stored_predictions": "calibrated",
                                     "stored_temperature": 2.0}}
    assert stored_temperature(card) == 2.0
    stored = apply_temperature(raw, 2.0, positive=0)
    np.testing.assert_allclose(stored_probabilities(card, stored), apply_temperature(raw, 3.0, positive=0),
                               atol=1e-12)
    np.testing.assert_allclose(stored_probabilities({"class_names": ["a", "b"]}, raw), raw)  # uncalibrated card


def test_a_lower_bound_of_one_never_sharpens_a_near_perfect_validation_set():
    """Issue 24: 12 validation images all on the right side gave T = 0.05 (every probability 0% or 100%)."""
    y = np.array([0] * 6 + [1] * 6)
    p1 = np.array([0.2, 0.1, 0.3, 0.12, 0.25, 0.4, 0.88, 0.7, 0.9, 0.65, 0.8, 0.95])
    probs = np.stack([1 - p1, p1], axis=1)
    assert fit_temperature(y, probs) < 0.2                 # unbounded: sharpened towards certainty
    assert fit_temperature(y, probs, lower=1.0) == 1.0     # bounded: the model's own probabilities
    over = np.array([[0.999, 0.001]] * 5 + [[0.001, 0.999]] * 5 + [[0.999, 0.001]] * 2)
    assert fit_temperature(np.array([0] * 5 + [1] * 7), over, lower=1.0) > 1.0  # softening still allowed
