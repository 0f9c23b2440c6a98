"""medclf_core.trust.body_part: the router's head-or-not probe, fitted, kept and read back."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.trust.body_part import BODY_PART_FILE, BodyPartProbe, fit_probe, load_probe


def _clusters(n: int = 60, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(1.5, 1, (n, d)), rng.normal(-1.5, 1, (n, d))])
    return x, np.repeat([1, 0], n)


def test_a_fitted_probe_tells_the_two_apart_and_reads_back_the_same(tmp_path):
    x, y = _clusters()
    probe = fit_probe(x, y, source="two clusters")
    assert probe.n == 120 and probe.n_head == 60 and probe.source == "two clusters"
    held_out, truth = _clusters(seed=1)
    assert np.mean((probe.p_head(held_out) >= 0.5) == truth) > 0.95
    back = load_probe(probe.save(tmp_path).parent)
    np.testing.assert_allclose(back.p_head(held_out), probe.p_head(held_out), rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [BODY_PART_FILE]  # written by rename: no temporary file left


def test_no_probe_is_none_and_a_damaged_or_newer_one_is_a_plain_error(tmp_path):
    assert load_probe(tmp_path) is None
    (tmp_path / BODY_PART_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="damaged"):
        load_probe(tmp_path)
    np.savez(tmp_path / BODY_PART_FILE, version=np.int32(99))
    with pytest.raises(ModelError, match="newer medclf"):
        load_probe(tmp_path)


def test_p_head_stays_a_probability_for_extreme_features():
    probe = BodyPartProbe(coef=np.ones(3, np.float32), intercept=0.0, n=2, n_head=1, source="", fitted="")
    p = probe.p_head(np.array([[1e6] * 3, [-1e6] * 3, [0.0] * 3]))
    assert np.isfinite(p).all() and p[0] > 0.99 and p[1] < 0.01 and p[2] == pytest.approx(0.5)


def test_a_probe_fitted_for_another_modality_model_is_not_used(tmp_path, caplog):
    x, y = _clusters()
    fit_probe(x, y, source="s", for_model="2026-01-01T00:00:00+00:00").save(tmp_path)
    assert load_probe(tmp_path, for_model="2026-01-01T00:00:00+00:00").for_model == "2026-01-01T00:00:00+00:00"
    assert load_probe(tmp_path).for_model == "2026-01-01T00:00:00+00:00"  # not asked: read as it is
    with caplog.at_level("WARNING"):
        assert load_probe(tmp_path, for_model="2027-01-01T00:00:00+00:00") is None
    assert "refit it with configs/make_body_part.py" in caplog.text
