"""Marks' feature directions projected out of a transfer head (medclf_core.training.invariance).

Synthetic features: one direction carries a "mark" that is correlated with the label in training (a
shortcut) and is what inpainting the marks changes; another carries the finding. A head fitted on the
projected features and folded back into its Dense kernel must ignore the mark and still read the finding.
"""

from __future__ import annotations

import numpy as np

from medclf_core.training.invariance import fold_projection, mark_projection, project
from medclf_core.training.transfer import build_head, fit_head


def shortcut_features(n: int = 400, seed: int = 0):
    """``(features, labels, diffs)``: dim 0 a mark (on 90% of positives, 20% of negatives), dim 1 the finding."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    feats = rng.normal(0, 1, (n, 6)).astype(np.float32)
    mark = np.where(rng.random(n) < np.where(y == 1, 0.9, 0.2), 3.0, 0.0).astype(np.float32)
    feats[:, 0] += mark
    feats[:, 1] += 2.0 * (2 * y - 1)
    diffs = np.zeros_like(feats)
    diffs[:, 0] = mark                         # inpainting the mark removes exactly its contribution
    return feats, y, diffs


def test_the_projection_removes_the_leading_directions_only():
    feats, _, diffs = shortcut_features()
    p = mark_projection(diffs, 1)
    assert p.shape == (6, 6) and np.allclose(p, p.T, atol=1e-6) and np.allclose(p @ p, p, atol=1e-5)
    assert np.allclose(p[:, 0], 0, atol=1e-6) and np.allclose(p[1:, 1:], np.eye(5), atol=1e-6)
    assert mark_projection(diffs, 0) is None and mark_projection(np.zeros_like(diffs), 2) is None
    assert project(feats, None) is feats


def test_a_folded_head_ignores_the_mark_and_keeps_the_finding():
    feats, y, diffs = shortcut_features()
    plain = fit_head(feats, y, feats, y, num_classes=2, epochs=30, learning_rate=0.05, seed=0)
    p = mark_projection(diffs, 1)
    head = fit_head(project(feats, p), y, project(feats, p), y, num_classes=2, epochs=30, learning_rate=0.05,
                    seed=0)
    fold_projection(head, p)                   # now the head takes raw features

    def mark_effect(model):
        """Mean |change of log-odds| when the marks are taken away."""
        def log_odds(x):
            p = np.clip(model.predict(x, verbose=0), 1e-7, 1.0)
            return np.log(p[:, 1]) - np.log(p[:, 0])
        return float(np.mean(np.abs(log_odds(feats) - log_odds(feats - diffs))))

    assert mark_effect(plain) > 0.5            # the plain head uses the shortcut
    assert mark_effect(head) < 1e-3            # the folded head does not
    assert np.mean((head.predict(feats, verbose=0)[:, 1] > 0.5) == y) > 0.9   # and still reads the finding


def test_folding_equals_projecting_the_input():
    feats, _, diffs = shortcut_features(50)
    p = mark_projection(diffs, 2)
    head = build_head(6, 2)
    before = head.predict(project(feats, p), verbose=0)
    fold_projection(head, p)
    np.testing.assert_allclose(head.predict(feats, verbose=0), before, atol=1e-5)
    fold_projection(head, None)                 # no projection: nothing changes
    np.testing.assert_allclose(head.predict(feats, verbose=0), before, atol=1e-5)
