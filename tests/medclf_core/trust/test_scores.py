"""medclf_core.trust.scores: relative Mahalanobis, k-NN on normalised features and energy, against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.trust.ood import fit_gate
from medclf_core.trust.scores import energy_score, fit_background, knn_score, relative_mahalanobis


def _data(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 1, 3.0, -3.0) + rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    return x, y


def test_background_distance_is_the_direct_mahalanobis():
    from sklearn.covariance import LedoitWolf

    x, _ = _data()
    bg = fit_background(x)
    cov = LedoitWolf(assume_centered=True).fit(x - x.mean(0)).covariance_
    probe = _data(20, seed=1)[0] + 1.0
    diff = probe - x.mean(0)
    direct = np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
    np.testing.assert_allclose(bg.distance2(probe), direct, rtol=2e-3)
    with pytest.raises(ValueError):
        fit_background(x[:1])


def test_relative_mahalanobis_is_class_minus_background():
    x, y = _data()
    gate = fit_gate(x, y, _data(50, seed=2)[0])
    bg = fit_background(x)
    probe = _data(30, seed=3)[0]
    np.testing.assert_allclose(relative_mahalanobis(gate, bg, probe), gate.score(probe) ** 2 - bg.distance2(probe))
    # between the two classes, on the background's main axis: near the background, far from both classes
    middle = np.zeros((1, x.shape[1]))
    assert relative_mahalanobis(gate, bg, middle)[0] > np.percentile(relative_mahalanobis(gate, bg, probe), 90)


def test_knn_score_ranks_by_distance_on_the_unit_sphere_and_refuses_nan():
    x, _ = _data()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    probe = np.r_[x[:3] * 5.0, -x[:3].mean(0, keepdims=True) + np.eye(8)[:1] * 50, np.full((1, 8), np.nan)]
    s = knn_score(unit, probe, k=1)
    assert np.allclose(s[:3], 0.0, atol=1e-6)  # a training feature scaled: same direction, distance 0
    assert s[3] > s[:3].max() and s[4] == np.inf
    direct = np.sort(np.linalg.norm(unit - probe[3] / np.linalg.norm(probe[3]), axis=1))[4]
    assert knn_score(unit, probe[3:4], k=5)[0] == pytest.approx(direct, rel=1e-6)
    with pytest.raises(ValueError):
        knn_score(unit, np.zeros((1, 3)))


def test_energy_is_minus_logsumexp_and_higher_when_unsure():
    z = np.array([[10.0, -10.0], [0.1, 0.0], [1000.0, 999.0]])
    e = energy_score(z)
    np.testing.assert_allclose(e[:2], -np.log(np.exp(z[:2]).sum(1)))
    assert np.isfinite(e[2]) and e[2] == pytest.approx(-(1000 + np.log1p(np.exp(-1.0))))
    assert e[1] > e[0]
