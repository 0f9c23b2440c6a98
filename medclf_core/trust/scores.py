"""Feature scores of "how unlike the training images" beside the gate's plain Mahalanobis distance (numpy only).

Each score is "higher = less like the training images", on penultimate features ``(N, D)``:

- :func:`relative_mahalanobis` (Ren et al. 2021, "A simple fix to Mahalanobis distance"): the squared
  class-conditional distance of the gate minus the squared distance from one background Gaussian of all
  training features, which cancels the directions every image varies in (scanner, contrast);
- :func:`knn_score` (Sun et al. 2022): the distance to the k-th nearest training feature after L2
  normalisation, no Gaussian assumed;
- :func:`energy_score` (Liu et al. 2020): ``-logsumexp`` of the classifier's logits.

``bench/ood_scores.py`` compares them on the bundled models; :mod:`medclf_core.trust.ood` uses the chosen
one for the "unfamiliar source" tier.

Example::

    >>> rng = np.random.default_rng(0)
    >>> bank = rng.normal(size=(300, 6))
    >>> unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    >>> near, far = knn_score(unit, np.r_[bank[:1] * 1.01, [[0, 0, 0, 0, 0, 0.001]]], k=1)
    >>> bool(near < far)
    True
    >>> energy_score(np.array([[5.0, 0.0], [0.0, 0.0]])).round(3).tolist()
    [-5.007, -0.693]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Gaussian:
    """A mean and a shrunk covariance kept as leading eigenvectors plus a floor (as the gate keeps its own)."""

    mean: np.ndarray          # (D,)
    components: np.ndarray    # (D, R)
    eigenvalues: np.ndarray   # (R,)
    floor: float

    def distance2(self, features) -> np.ndarray:
        """``(N,)`` squared Mahalanobis distance from the mean (float64)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"features must have shape (N, {len(self.mean)}), not {x.shape}")
        diff = x - self.mean.astype(np.float64)
        z = diff @ self.components.astype(np.float64)
        inside = (z ** 2 / self.eigenvalues.astype(np.float64)).sum(1)
        rest = np.maximum((diff ** 2).sum(1) - (z ** 2).sum(1), 0.0) / self.floor
        return inside + rest


def fit_background(features) -> Gaussian:
    """One Gaussian of all training features (Ledoit-Wolf shrinkage), the background of relative Mahalanobis."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"The background needs at least two finite feature rows (N, D); got {x.shape}.")
    mean = x.mean(axis=0)
    lw = LedoitWolf(assume_centered=True).fit(x - mean)
    cov = lw.covariance_
    d = cov.shape[0]
    floor = max(float(lw.shrinkage_) * float(np.mean(np.var(x, axis=0))), 1e-6 * float(np.trace(cov)) / d, 1e-12)
    lam, vec = np.linalg.eigh(cov)
    keep = lam > floor * (1 + 1e-4)
    return Gaussian(mean.astype(np.float32), vec[:, keep][:, ::-1].astype(np.float32),
                    lam[keep][::-1].astype(np.float32), floor)


def relative_mahalanobis(gate, background: Gaussian, features) -> np.ndarray:
    """``min_k d_k(x)^2 - d_0(x)^2``: the gate's squared class distance minus the background's (Ren et al. 2021)."""
    return gate.score(features) ** 2 - background.distance2(features)


def knn_score(unit_bank: np.ndarray, features, k: int = 10) -> np.ndarray:
    """Distance to the ``k``-th nearest row of ``unit_bank`` (L2-normalised training features), after
    normalising ``features`` the same way (Sun et al. 2022). Non-finite or all-zero rows score inf."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    bank = np.asarray(unit_bank, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != bank.shape[1]:
        raise ValueError(f"features must have shape (N, {bank.shape[1]}), not {x.shape}")
    k = max(1, min(int(k), len(bank)))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    ok = np.isfinite(x).all(axis=1) & (norms[:, 0] > 0)
    unit = np.where(ok[:, None], x / np.where(norms > 0, norms, 1.0), 0.0)
    d2 = np.maximum(2.0 - 2.0 * unit @ bank.T, 0.0)           # |u - v|^2 for unit vectors
    kth = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1]) if len(x) else np.zeros(0)
    return np.where(ok, kth, np.inf)


def energy_score(logits) -> np.ndarray:
    """``-logsumexp(logits)`` per row (Liu et al. 2020): higher = less confident = less familiar."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
