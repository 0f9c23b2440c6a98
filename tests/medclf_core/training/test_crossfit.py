"""medclf_core.training.crossfit: the small-data head (C by group-aware CV, every image in the final fit)."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.training.crossfit import (MIN_CALIBRATION_PER_CLASS, SMALL_DATA_IMAGES, calibrate_out_of_fold,
                                           cross_fit, group_folds, use_cross_fit)


def _blobs(n_per_class: int, k: int = 2, d: int = 16, sep: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    x = rng.normal(size=(len(y), d)) * 3.0 + 5.0
    x[:, :k] += sep * np.eye(k)[y] * 3.0
    return x, y


def test_folds_are_stratified_and_keep_every_group_whole():
    y = np.array([0] * 30 + [1] * 30)
    groups = [[i, i + 1] for i in range(0, 60, 2)]   # pairs of near-duplicates
    fold = group_folds(y, groups, seed=3)
    assert fold.max() + 1 == 5 and (fold >= 0).all()
    for g in groups:
        assert len(set(fold[g])) == 1
    for f in range(5):
        assert abs(int((y[fold == f] == 0).sum()) - int((y[fold == f] == 1).sum())) <= 2


def test_too_few_images_of_a_class_is_a_plain_error():
    with pytest.raises(ValueError, match="at least two images"):
        group_folds(np.array([0, 0, 0, 1]), [[0], [1], [2], [3]], seed=0)


@pytest.mark.parametrize("k", [2, 3])
def test_the_final_head_reproduces_the_logistic_regression_on_raw_features(k):
    """Kernel and bias act on raw features (standardisation folded in) through a softmax, as the Dense layer does."""
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(25, k=k)
    cf = cross_fit(x[None], y, [[i] for i in range(len(y))], num_classes=k, seed=0)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    ref = LogisticRegression(C=cf.C, max_iter=2000).fit((x - mu) / sd, y).predict_proba((x - mu) / sd)
    z = x @ cf.kernel + cf.bias
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), ref, atol=1e-4)
    assert cf.C == min(cf.cv_log_loss, key=cf.cv_log_loss.get)
    assert cf.oof.shape == (len(y), k) and np.allclose(cf.oof.sum(1), 1)


def test_out_of_fold_predictions_never_saw_their_image():
    """Labels that are pure noise: in-sample the head fits them, out of fold it is at chance."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 200))
    y = np.repeat([0, 1], 40)
    cf = cross_fit(x[None], y, [[i] for i in range(80)], num_classes=2, seed=0, grid=(10.0,))
    assert (cf.oof.argmax(1) == y).mean() < 0.7
    z = x @ cf.kernel + cf.bias
    assert (z.argmax(1) == y).mean() == 1.0


def test_augmented_views_train_but_only_the_image_is_scored():
    x, y = _blobs(20)
    views = np.stack([x, x + 0.01, x - 0.01])
    cf = cross_fit(views, y, [[i] for i in range(len(y))], num_classes=2, seed=0)
    assert cf.oof.shape == (len(y), 2) and cf.kernel.shape == (x.shape[1], 2)


def test_the_small_data_recipe_applies_below_the_named_size_to_linear_heads_only():
    assert use_cross_fit(80, 0) and not use_cross_fit(SMALL_DATA_IMAGES, 0) and not use_cross_fit(80, 64)
    assert not use_cross_fit(80, 0, fine_tune_epochs=2) and not use_cross_fit(80, 0, below=0)


def test_few_images_per_class_fall_back_to_the_stated_rule():
    n = MIN_CALIBRATION_PER_CLASS - 1
    y = np.repeat([0, 1], n)
    oof = np.where(y[:, None] == 1, [[0.001, 0.999]], [[0.999, 0.001]])  # near-perfect: would sharpen
    cal = calibrate_out_of_fold(y, oof, 1, folds=5)
    assert cal.temperature == 1.0 and cal.threshold == 0.5
    assert "rule" in cal.calibration_fitted_on and "rule" in cal.threshold_rule


def test_enough_out_of_fold_predictions_are_calibrated_but_never_sharpened():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], MIN_CALIBRATION_PER_CLASS * 2)
    p1 = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.05, len(y)), 0.01, 0.99)  # under-confident
    cal = calibrate_out_of_fold(y, np.stack([1 - p1, p1], 1), 1, folds=5)
    assert cal.temperature == 1.0  # T < 1 would fit better: bounded at 1
    assert cal.threshold == 0.5 and "rule" in cal.threshold_rule
    p1 = np.where(rng.random(len(y)) < 0.8, np.where(y == 1, 0.99, 0.01), np.where(y == 1, 0.01, 0.99))
    assert calibrate_out_of_fold(y, np.stack([1 - p1, p1], 1), 1, folds=5).temperature > 1.5  # over-confident
