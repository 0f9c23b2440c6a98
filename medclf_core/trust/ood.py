"""Out-of-distribution (OOD) gate: "this is not an image this model knows" (numpy + scikit-learn, no TensorFlow).

Two checks, both cheap:

1. **Features** (:class:`OODGate`): the class-conditional Mahalanobis distance
   (Lee et al. 2018) of an image's penultimate features (the input of the
   layer named ``predictions``) from the training images: one mean per class,
   one covariance shared by all classes (estimated on the class-centred training
   features with Ledoit-Wolf shrinkage), and ``score = min over classes`` of the
   distance. The threshold is chosen on the *validation* features by a recorded
   rule, by default :data:`DEFAULT_RULE` (the 99th percentile of the validation
   scores, so about 1% of in-distribution images are flagged); a score above it
   flags the image. The gate is stored beside the model as ``ood.npz`` (float32;
   the precision matrix is kept as its leading eigenvectors plus the shrinkage
   floor, so it is exact and at most ``D x D``).
2. **DICOM header** (:func:`header_reason`): the card may declare
   ``"intended_use": {"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}``; a DICOM file
   whose ``Modality`` or ``BodyPartExamined`` contradicts it is out of distribution
   with a plain reason. A missing header field, or a card that declares nothing,
   never flags.

The per-result verdict built on both is :func:`medclf_core.trust.verdict.verdict`.

Example (what training does, on features from ``features_and_probabilities`` in
:mod:`medclf_core.trust.features`; here small random ones)::

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> train_features = rng.normal(size=(200, 4))
    >>> train_labels = (train_features[:, 0] > 0).astype(int)
    >>> gate = fit_gate(train_features, train_labels, rng.normal(size=(50, 4)))
    >>> run_dir = tempfile.mkdtemp()
    >>> gate.save(run_dir).name
    'ood.npz'
    >>> card = {"ood": gate.summary()}
    >>> card["ood"]["percentile"], card["ood"]["n_train"]
    (99.0, 200)
    >>> load_gate(run_dir).flag(np.array([[0.1, 0.0, -0.2, 0.3], [40.0, 40.0, 40.0, 40.0]]))
    array([False,  True])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from statistics import NormalDist

import numpy as np

from medclf_core.io.atomic import read_versioned_npz, write_npz
from medclf_core.registry.store import GATE_FILE

GATE_VERSION = 2  # 2: adds ``near_threshold`` (the "unfamiliar source" tier); version 1 files still load
DEFAULT_PERCENTILE = 99.0
#: The refuse ("not this kind of image") threshold is this multiple of the unfamiliar one (the 99th percentile of
#: the validation scores). Chosen on bench/ood_scores.py: on the brain model, other-source brain MRIs (Sartaj) reach
#: at most 1.80x (95th percentile 1.62x) while chest X-rays start at 2.1x and photographs at 1.8x; on the chest
#: model, other-preprocessing chest films reach 1.10x and brain MRIs start well above 2x.
REFUSE_FACTOR = 1.75
RULE_SEPARATOR = " | refuse: "  # between the two tiers' rules in a two-tier gate's ``rule``
REFUSE_RULE = "{factor:g} x the unfamiliar threshold ({near})"
DEFAULT_RULE = "99th percentile of the validation split's scores"
#: Below this many validation scores the empirical 99th percentile is about the largest score, so roughly
#: 1 in n + 1 new images *like the validation ones* would be refused (1 in 13 for 12 images: a tiny model's
#: tests refused their own kind of image now and then). Then the percentile is read off a log-normal fitted
#: to the scores instead, and never below the empirical one.
MIN_EMPIRICAL_SCORES = 100
METHOD = "class-conditional Mahalanobis distance on the penultimate features, shared Ledoit-Wolf covariance"

FEATURE_REASON = ("its features are far from the model's training images (score {score:.3g} above the "
                  "threshold {threshold:.3g})")
NEAR_REASON = ("unlike this model's training images (score {score:.3g} above {threshold:.3g}, the score only 1% of "
               "its validation images exceed): perhaps another scanner, hospital or preprocessing")

# Modality words a card may use beside DICOM Modality codes.
MODALITY_ALIASES = {
    "XRAY": {"CR", "DX", "DR", "RG"}, "X-RAY": {"CR", "DX", "DR", "RG"}, "RADIOGRAPH": {"CR", "DX", "DR", "RG"},
    "MRI": {"MR"}, "CT": {"CT"}, "ULTRASOUND": {"US"}, "MAMMOGRAPHY": {"MG"},
}


@dataclass
class OODGate:
    """A fitted feature gate; see the module docstring. ``score``/``flag`` take ``(N, D)`` features."""

    means: np.ndarray          # (K', D) class means of the training features (classes with training images)
    classes: np.ndarray        # (K',) class index of each mean
    components: np.ndarray     # (D, R) leading eigenvectors of the shrunk covariance
    eigenvalues: np.ndarray    # (R,) their eigenvalues
    floor: float               # the covariance eigenvalue in every other direction (shrinkage target)
    threshold: float
    rule: str = DEFAULT_RULE
    percentile: float | None = DEFAULT_PERCENTILE
    val_fraction_flagged: float | None = None
    n_train: int = 0
    n_val: int = 0
    shrinkage: float | None = None
    near_threshold: float | None = None  # "unfamiliar source" tier (caution); None in version-1 files

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def near_rule(self) -> str:
        """How the unfamiliar tier's threshold was chosen: the first part of ``rule`` (which
        :func:`with_refuse_tier` writes as ``"unfamiliar: <rule> | refuse: <rule>"``), or all of a one-tier rule."""
        return self.rule.split(RULE_SEPARATOR)[0].removeprefix("unfamiliar: ")

    def score(self, features) -> np.ndarray:
        """``(N,)`` distance to the nearest class mean, in units of the shared covariance (float64)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must have shape (N, {self.dim}), not {x.shape}")
        if not len(x):
            return np.zeros(0)
        v, lam, mu, zm = self._projection
        z = x @ v                                                    # (N, R)
        diff = z[:, None, :] - zm[None, :, :]                        # (N, K, R)
        inside = diff ** 2                                           # squared projections on the components
        d2 = (inside / lam).sum(2)
        if v.shape[1] < self.dim:                                    # the part outside the components
            full = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(2)   # |x - mu_k|^2, (N, K)
            d2 = d2 + np.maximum(full - inside.sum(2), 0.0) / self.floor
        out = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return np.where(np.isfinite(x).all(axis=1), out, np.inf)    # NaN/inf features are never "in distribution"

    @cached_property
    def _projection(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(components, eigenvalues, means, means @ components)`` in float64, made once per gate: the
        components are D x R (13 MB at D = R = 1280), too large to convert again for every image."""
        v = self.components.astype(np.float64)
        mu = self.means.astype(np.float64)
        return v, self.eigenvalues.astype(np.float64), mu, mu @ v

    def flag(self, features) -> np.ndarray:
        """``(N,)`` bool: True where the score is above the (refuse) threshold."""
        return self.score(features) > self.threshold

    def tier(self, score: float) -> str:
        """``"refuse"`` above :attr:`threshold`, ``"unfamiliar"`` above :attr:`near_threshold` (when the gate has
        one), else ``"familiar"``; a non-finite score is refused."""
        if not np.isfinite(score) or score > self.threshold:
            return "refuse"
        if self.near_threshold is not None and score > self.near_threshold:
            return "unfamiliar"
        return "familiar"

    def summary(self) -> dict:
        """The card's ``"ood"`` entry (JSON-ready)."""
        return {"method": METHOD, "file": GATE_FILE, "features": "input of the 'predictions' layer",
                "feature_dim": self.dim, "rule": self.rule, "percentile": self.percentile,
                "threshold": float(self.threshold),
                "val_fraction_flagged": None if self.val_fraction_flagged is None else float(self.val_fraction_flagged),
                "n_train": int(self.n_train), "n_val": int(self.n_val),
                "shrinkage": None if self.shrinkage is None else float(self.shrinkage),
                "components": int(self.components.shape[1]),
                "near_threshold": None if self.near_threshold is None else float(self.near_threshold)}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/ood.npz`` (float32, atomically: temporary file then rename)."""
        return write_npz(
            Path(folder) / GATE_FILE, version=np.int32(GATE_VERSION), means=self.means.astype(np.float32),
            classes=self.classes.astype(np.int32), components=self.components.astype(np.float32),
            eigenvalues=self.eigenvalues.astype(np.float32), floor=np.float64(self.floor),
            threshold=np.float64(self.threshold), rule=np.str_(self.rule),
            percentile=np.float64(np.nan if self.percentile is None else self.percentile),
            val_fraction_flagged=np.float64(np.nan if self.val_fraction_flagged is None else self.val_fraction_flagged),
            n_train=np.int64(self.n_train), n_val=np.int64(self.n_val),
            shrinkage=np.float64(np.nan if self.shrinkage is None else self.shrinkage),
            near_threshold=np.float64(np.nan if self.near_threshold is None else self.near_threshold))


def _nan_none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def load_gate(folder: str | os.PathLike) -> OODGate | None:
    """The gate stored in ``folder/ood.npz``, or None when the run has none.

    A damaged file raises :class:`medclf_core.errors.ModelError` (plain message).
    """
    path = Path(folder) / GATE_FILE
    if not path.is_file():
        return None
    return read_versioned_npz(path, GATE_VERSION, "out-of-distribution gate", lambda z: OODGate(
        means=z["means"], classes=z["classes"], components=z["components"], eigenvalues=z["eigenvalues"],
        floor=float(z["floor"]), threshold=float(z["threshold"]), rule=str(z["rule"]),
        percentile=_nan_none(z["percentile"]), val_fraction_flagged=_nan_none(z["val_fraction_flagged"]),
        n_train=int(z["n_train"]), n_val=int(z["n_val"]), shrinkage=_nan_none(z["shrinkage"]),
        near_threshold=_nan_none(z["near_threshold"]) if "near_threshold" in z.files else None))


def fit_gate(train_features, train_labels, val_features, *, percentile: float = DEFAULT_PERCENTILE,
             threshold: float | None = None, rule: str | None = None,
             refuse_factor: float = REFUSE_FACTOR) -> OODGate:
    """Fit the feature gate on the training split, choose its threshold on the validation split.

    ``train_features`` (N, D) and ``train_labels`` (N,) are the training images'
    penultimate features (unflipped, no augmentation) and classes; ``val_features``
    (M, D) are the validation images' features. Two tiers: the ``percentile`` of the
    validation scores (default: the 99th) is the *unfamiliar* threshold (``near_threshold``,
    a caution) and ``refuse_factor`` times it the *refuse* threshold (``threshold``); unless
    ``threshold`` is given (one tier; then ``rule`` should say how it was chosen). The gate
    records the rule and the fraction of validation images it refuses.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> tr, va = rng.normal(size=(200, 8)), rng.normal(size=(50, 8))
        >>> gate = fit_gate(tr, rng.integers(0, 2, 200), va)
        >>> bool(gate.flag(np.full((1, 8), 10.0))[0]), gate.val_fraction_flagged <= 0.02
        (True, True)
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=int).ravel()
    v = np.asarray(val_features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"train_features must be (N, D) with one label per row; got {x.shape} and {len(y)} labels")
    if v.ndim != 2 or v.shape[1] != x.shape[1]:
        raise ValueError(f"val_features must be (M, {x.shape[1]}), not {v.shape}")
    if len(x) < 2 or not np.isfinite(x).all():
        raise ValueError("The gate needs at least two training feature rows, all finite.")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    cov = lw.covariance_
    d = cov.shape[0]
    mu = float(np.trace(cov)) / d
    floor = max(float(lw.shrinkage_) * float(np.trace(centred.T @ centred / len(centred))) / d, 1e-6 * max(mu, 1e-12),
                1e-12)
    lam, vec = np.linalg.eigh(cov)
    keep = lam > floor * (1 + 1e-4)
    gate = OODGate(means=means.astype(np.float32), classes=classes.astype(np.int32),
                   components=vec[:, keep][:, ::-1].astype(np.float32), eigenvalues=lam[keep][::-1].astype(np.float32),
                   floor=floor, threshold=np.inf, rule=rule or DEFAULT_RULE, percentile=percentile,
                   n_train=len(x), n_val=len(v), shrinkage=float(lw.shrinkage_))
    val_scores = gate.score(v) if len(v) else np.zeros(0)
    if threshold is None:
        if not len(v):
            raise ValueError("The gate's threshold is chosen on validation features; none were given.")
        near, fitted_rule = percentile_threshold(val_scores, percentile)
        if rule is None and (fitted_rule or percentile != DEFAULT_PERCENTILE):
            gate.rule = fitted_rule or f"{percentile:g}th percentile of the validation split's scores"
        return with_refuse_tier(gate, near, refuse_factor, val_scores)
    gate.percentile = None
    gate.rule = rule or "threshold given by the caller"
    gate.threshold = float(threshold)
    gate.val_fraction_flagged = float(np.mean(val_scores > gate.threshold)) if len(v) else None
    return gate


def refuse_factor_problem(factor) -> str | None:
    """Why ``factor`` cannot place the refuse tier (it must be a number >= 1), or None: the one check behind
    ``TrainConfig.validate``, ``refit_trust`` and ``refit-trust --refuse-factor``.

    >>> refuse_factor_problem(2.0) is None, refuse_factor_problem(0.5)
    (True, 'must be at least 1 (the refuse threshold cannot be below the unfamiliar one), not 0.5')
    """
    try:
        fine = float(factor) >= 1
    except (TypeError, ValueError):
        fine = False
    return None if fine else ("must be at least 1 (the refuse threshold cannot be below the unfamiliar one), "
                              f"not {factor}")


def with_refuse_tier(gate: OODGate, near_threshold: float, factor: float = REFUSE_FACTOR,
                     val_scores=None) -> OODGate:
    """The gate with two tiers: ``near_threshold`` (unfamiliar: caution) and ``factor`` times it (refuse).

    Also turns a version-1 gate (one threshold, chosen by the percentile rule) into a two-tier one
    without new statistics: ``with_refuse_tier(old, old.threshold)``. The rule records both thresholds.

    >>> g = with_refuse_tier(fit_gate(np.eye(3).repeat(20, 0), np.arange(60) % 2, np.eye(3)), 10.0, 2.0)
    >>> g.near_threshold, g.threshold, g.tier(5.0), g.tier(15.0), g.tier(25.0)
    (10.0, 20.0, 'familiar', 'unfamiliar', 'refuse')
    """
    if not (np.isfinite(near_threshold) and factor >= 1):
        raise ValueError(f"near_threshold must be finite and factor >= 1 (got {near_threshold}, {factor}).")
    near_rule = gate.near_rule
    gate.near_threshold = float(near_threshold)
    gate.threshold = float(factor * near_threshold)
    gate.rule = (f"unfamiliar: {near_rule}{RULE_SEPARATOR}"
                 + REFUSE_RULE.format(factor=factor, near=f"{near_threshold:.4g}"))
    if val_scores is not None and len(val_scores):
        gate.val_fraction_flagged = float(np.mean(np.asarray(val_scores) > gate.threshold))
    return gate


def percentile_threshold(scores, percentile: float = DEFAULT_PERCENTILE) -> tuple[float, str | None]:
    """``(threshold, rule)``: the ``percentile`` of the finite ``scores``; with fewer than
    :data:`MIN_EMPIRICAL_SCORES` of them, the larger of that and the percentile of a log-normal fitted to
    them, with the rule that says so (None for the plain empirical percentile).

    >>> percentile_threshold(np.linspace(1.0, 2.0, 200))[1] is None
    True
    >>> few = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    >>> t, rule = percentile_threshold(few)
    >>> bool(t > np.percentile(few, 99)), rule.startswith("99th percentile of a log-normal")
    (True, True)
    """
    finite = np.asarray(scores, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    empirical = float(np.percentile(finite, percentile))
    if len(finite) >= MIN_EMPIRICAL_SCORES or len(finite) < 3 or np.any(finite <= 0):
        return empirical, None
    logs = np.log(finite)
    fitted = float(np.exp(logs.mean() + NormalDist().inv_cdf(percentile / 100.0) * logs.std(ddof=1)))
    return max(empirical, fitted), (f"{percentile:g}th percentile of a log-normal fitted to the validation "
                                    f"split's {len(finite)} scores (too few for an empirical percentile)")


# ---------------------------------------------------------------------------- DICOM header check

def _codes(values) -> set[str]:
    if values is None:
        return set()
    if isinstance(values, str):
        values = [values]
    return {str(v).strip().upper() for v in values if str(v).strip()}


def _modalities(declared: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for code in _codes(declared):
        out |= MODALITY_ALIASES.get(code, {code})
    return out


def header_reason(intended_use: Mapping | None, dicom: Mapping | None) -> str | None:
    """A plain reason when a DICOM header contradicts the card's intended use, else None.

    ``intended_use`` is the card's ``"intended_use"`` entry (``modalities``: DICOM
    Modality codes such as ``CR``, ``DX``, ``MR``, ``CT`` or the words ``XRAY``/``MRI``;
    ``body_parts``: BodyPartExamined values such as ``CHEST``, ``HEAD``, ``BRAIN``).
    ``dicom`` holds the file's ``Modality`` and ``BodyPartExamined`` (for example
    :func:`medclf_core.io.deid.safe_metadata`). A field missing on either side never flags.

    Example::

        >>> header_reason({"modalities": ["CR", "DX"], "body_parts": ["CHEST"]},
        ...               {"Modality": "MR", "BodyPartExamined": "HEAD"})
        'the DICOM header says modality MR and body part HEAD; this model is for modality CR or DX and body part CHEST'
    """
    if not intended_use or not dicom:
        return None
    said, wanted = [], []
    mods = _modalities(intended_use.get("modalities"))
    modality = _codes(dicom.get("Modality"))
    if mods and modality and not modality & mods:
        said.append("modality " + "/".join(sorted(modality)))
        wanted.append("modality " + " or ".join(sorted(_codes(intended_use.get("modalities")))))
    parts = _codes(intended_use.get("body_parts"))
    part = _codes(dicom.get("BodyPartExamined"))
    if parts and part and not part & parts:
        said.append("body part " + "/".join(sorted(part)))
        wanted.append("body part " + " or ".join(sorted(parts)))
    if not said:
        return None
    return f"the DICOM header says {' and '.join(said)}; this model is for {' and '.join(wanted)}"


def feature_reason(score: float, threshold: float) -> str:
    return FEATURE_REASON.format(score=score, threshold=threshold)


def score_caption(gate: OODGate, score: float) -> str:
    """The feature score of one image against the gate's tiers, in one plain sentence: each threshold with
    its own value and how it was chosen (the refuse threshold as a multiple of the unfamiliar one).

    >>> g = OODGate(np.zeros((1, 1)), np.zeros(1), np.zeros((1, 0)), np.zeros(0), 1.0, threshold=118.1,
    ...             near_threshold=67.51, rule="unfamiliar: 99th percentile of validation scores | "
    ...             "refuse: 1.75 x the unfamiliar threshold (67.51)")
    >>> score_caption(g, 254.6)
    'Feature score 255; unfamiliar above 67.5 (99th percentile of validation scores), refused above 118 (1.75 x that).'
    """
    text = f"Feature score {score:.3g}; "
    if gate.near_threshold is None:
        return text + f"refused above {gate.threshold:.3g} ({gate.rule})."
    return text + (f"unfamiliar above {gate.near_threshold:.3g} ({gate.near_rule}), refused above "
                   f"{gate.threshold:.3g} ({gate.threshold / gate.near_threshold:.3g} x that).")
