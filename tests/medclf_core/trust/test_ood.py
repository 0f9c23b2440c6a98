"""medclf_core.trust.ood: the Mahalanobis feature gate (fit, threshold rule, save/load) and the DICOM header check."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.registry.store import GATE_FILE
from medclf_core.trust.ood import DEFAULT_RULE, fit_gate, header_reason, load_gate


def _clusters(n, d=16, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centres = np.stack([np.full(d, -2.0), np.full(d, 2.0)])
    scale = np.linspace(0.3, 2.0, d)  # anisotropic: Mahalanobis, not Euclidean, is the right distance
    return centres[y] + rng.normal(size=(n, d)) * scale + shift, y


def _direct_scores(x, means, cov):
    prec = np.linalg.inv(cov)
    d = [np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means]
    return np.sqrt(np.min(d, axis=0))


def test_gate_flags_far_images_and_keeps_the_rule():
    xtr, ytr = _clusters(600)
    xva, _ = _clusters(300, seed=1)
    gate = fit_gate(xtr, ytr, xva)
    assert gate.rule.startswith("unfamiliar: " + DEFAULT_RULE) and gate.percentile == 99.0
    assert np.mean(gate.score(xva) > gate.near_threshold) == pytest.approx(0.01, abs=0.01)
    assert gate.val_fraction_flagged <= 0.01  # refused: the loose tier
    xte, _ = _clusters(300, seed=2)
    assert gate.flag(xte).mean() < 0.05  # same distribution: few flagged
    far, _ = _clusters(100, seed=3, shift=6.0)
    assert (gate.score(far) > gate.near_threshold).all()  # another distribution: at least unfamiliar, all
    assert gate.flag(_clusters(100, seed=3, shift=20.0)[0]).all()  # far away: all refused
    # a point between the two clusters along the low-variance axis is far in Mahalanobis terms
    odd = np.zeros((1, 16))
    odd[0, 0] = -2.0 + 3.0  # 10 standard deviations along the 0.3-sd axis of class 0
    odd[0, 1:] = -2.0
    assert gate.tier(float(gate.score(odd)[0])) != "familiar"
    assert gate.score(np.full((1, 16), np.nan))[0] == np.inf
    s = gate.summary()
    assert s["threshold"] == pytest.approx(gate.threshold) and s["n_train"] == 600 and s["n_val"] == 300
    with pytest.raises(ValueError):
        gate.score(np.zeros((2, 5)))


def test_scores_equal_direct_mahalanobis_with_ledoit_wolf_also_when_features_outnumber_images():
    from sklearn.covariance import LedoitWolf

    for n, d in ((400, 12), (30, 64)):  # n > d and n < d (the low-rank path)
        xtr, ytr = _clusters(n, d=d, seed=4)
        gate = fit_gate(xtr, ytr, _clusters(20, d=d, seed=5)[0])
        means = np.stack([xtr[ytr == c].mean(0) for c in (0, 1)])
        cov = LedoitWolf(assume_centered=True).fit(xtr - means[ytr]).covariance_
        x = _clusters(25, d=d, seed=6, shift=0.5)[0]
        np.testing.assert_allclose(gate.score(x), _direct_scores(x, means, cov), rtol=2e-3)
        if n < d:
            assert gate.components.shape[1] < d  # stored compactly


def test_save_load_round_trip_small_float32(tmp_path):
    xtr, ytr = _clusters(300, d=128)
    gate = fit_gate(xtr, ytr, _clusters(60, d=128, seed=1)[0], percentile=95)
    assert "95th percentile" in gate.rule
    path = gate.save(tmp_path)
    assert path == tmp_path / GATE_FILE and path.stat().st_size < 200_000
    back = load_gate(tmp_path)
    assert back.components.dtype == np.float32 and back.rule == gate.rule
    assert back.threshold == gate.threshold and back.val_fraction_flagged == gate.val_fraction_flagged
    x = _clusters(10, d=128, seed=9)[0]
    np.testing.assert_allclose(back.score(x), gate.score(x), rtol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_gate_missing_and_damaged(tmp_path):
    assert load_gate(tmp_path) is None
    (tmp_path / GATE_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="damaged"):
        load_gate(tmp_path)


def test_explicit_threshold_and_bad_inputs():
    xtr, ytr = _clusters(100)
    gate = fit_gate(xtr, ytr, xtr[:10], threshold=3.0, rule="fixed for the test")
    assert gate.threshold == 3.0 and gate.rule == "fixed for the test" and gate.percentile is None
    with pytest.raises(ValueError):
        fit_gate(xtr, ytr[:5], xtr)
    with pytest.raises(ValueError):
        fit_gate(xtr, ytr, xtr[:, :3])
    with pytest.raises(ValueError):
        fit_gate(xtr, ytr, xtr[:0])


@pytest.mark.parametrize("use,header,expected", [
    ({"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}, {"Modality": "MR", "BodyPartExamined": "HEAD"},
     "modality MR and body part HEAD"),
    ({"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}, {"Modality": "DX", "BodyPartExamined": "LEG"},
     "body part LEG"),
    ({"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}, {"Modality": "cr", "BodyPartExamined": "chest "}, None),
    ({"modalities": ["XRAY"]}, {"Modality": "DX"}, None),  # a word for a family of codes
    ({"modalities": ["MRI"]}, {"Modality": "CT"}, "modality CT"),
    ({"modalities": ["CR"], "body_parts": ["CHEST"]}, {"Rows": 10}, None),  # missing fields never flag
    ({"modalities": ["CR"], "body_parts": ["CHEST"]}, {"Modality": "", "BodyPartExamined": ""}, None),
    (None, {"Modality": "MR"}, None),  # a card that declares nothing
    ({"modalities": ["CR"]}, None, None),  # not a DICOM file
])
def test_header_reason(use, header, expected):
    reason = header_reason(use, header)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and reason.startswith("the DICOM header says")


def test_scores_do_not_depend_on_what_was_scored_before():
    """The gate keeps its float64 projection between calls: one batch, image by image, and again give
    the same scores."""
    train, labels = _clusters(200)
    gate = fit_gate(train, labels, _clusters(80, seed=1)[0])
    probe = _clusters(20, seed=3, shift=2.0)[0]
    batch = gate.score(probe)
    one_by_one = np.concatenate([gate.score(row) for row in probe])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-12)
    np.testing.assert_array_equal(gate.score(probe), batch)


def test_a_small_validation_split_does_not_refuse_one_in_n_of_its_own_kind():
    """With 12 validation images the empirical 99th percentile is about their largest score, so about 1 in 13
    new images like them was refused (the cause of a tiny page-test model refusing a chest film now and then).
    The log-normal rule refuses far fewer of them, says so, and still flags the far images."""
    from medclf_core.trust.ood import percentile_threshold

    xtr, ytr = _clusters(200)
    refused_empirical, refused, far_flagged = [], [], []
    for seed in range(1, 21):
        xva, _ = _clusters(12, seed=seed)
        gate = fit_gate(xtr, ytr, xva)
        assert gate.rule.startswith("unfamiliar: 99th percentile of a log-normal fitted to the validation "
                                    "split's 12 scores")
        fresh = gate.score(_clusters(500, seed=100 + seed)[0])
        empirical = float(np.percentile(gate.score(xva), 99))
        refused_empirical.append(np.mean(fresh > empirical))
        refused.append(np.mean(fresh > gate.near_threshold))  # even the unfamiliar tier: few of its own kind
        far_flagged.append(np.mean(gate.score(_clusters(100, seed=200 + seed, shift=6.0)[0]) > gate.near_threshold))
    assert np.mean(refused_empirical) > 0.05  # the old rule: about 1 in n + 1
    assert np.mean(refused) < 0.03 and min(far_flagged) == 1.0
    many = gate.score(_clusters(300, seed=7)[0])
    assert percentile_threshold(many)[1] is None  # enough scores: the plain empirical percentile
