"""Head or not: a body-part probe on the modality router's features, so a brain model refuses a spine MRI.

A PNG or JPEG carries no ``BodyPartExamined``, and neither the modality router (CT / MRI / X-ray) nor a model's
feature gate tells a head from a spine: the shipped brain model gave a finding for 71.5% of MedPix MRIs of other
body parts (docs/BENCHMARKS.md, "The refuse tier's factor"). The probe is a logistic regression on the bundled
imaging-modality model's penultimate features (the frozen trunk the router runs anyway), fitted on MedPix's body
locations by ``configs/make_body_part.py`` and kept beside that model as ``body_part.npz``. The router adds its
``P(head)`` to each image's probabilities (key :data:`HEAD`);
:func:`medclf_core.trust.population.body_part_reason` refuses below :data:`MAX_P_HEAD` for a model whose card
declares head body parts only. ``bench/body_part_probe.py`` measured the rule: grouped by case, it refuses 46% of
MedPix MRIs of other body parts and 2.8% of head MRIs, and 0-0.7% of web brain MRIs it never saw.

Example (a probe fitted on two made-up clusters)::

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(2, 1, (50, 4)), rng.normal(-2, 1, (50, 4))])
    >>> probe = fit_probe(x, np.repeat([1, 0], 50), source="example")
    >>> folder = tempfile.mkdtemp()
    >>> load_probe(probe.save(folder).parent).p_head(np.array([[2.0] * 4, [-2.0] * 4])).round(2).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core.io.atomic import read_versioned_npz, write_npz

BODY_PART_FILE = "body_part.npz"
#: The router's key for the probe's probability that the image shows a head.
HEAD = "HEAD"
#: A model for the head refuses an image whose P(head) is below this (bench/body_part_probe.py).
MAX_P_HEAD = 0.1
VERSION = 1
log = logging.getLogger(__name__)


@dataclass
class BodyPartProbe:
    """``P(head) = sigmoid(features @ coef + intercept)``, with what it was fitted on."""

    coef: np.ndarray
    intercept: float
    n: int
    n_head: int
    source: str
    fitted: str
    for_model: str = ""  # the modality model's card "created": a retrained router makes the probe stale

    def p_head(self, features) -> np.ndarray:
        """``(N,)`` P(head) of ``(N, D)`` router features."""
        z = np.asarray(features, dtype=np.float64) @ self.coef.astype(np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/body_part.npz`` atomically (temporary file, then rename)."""
        return write_npz(Path(folder) / BODY_PART_FILE, version=np.int32(VERSION), coef=self.coef.astype(np.float32),
                         intercept=np.float64(self.intercept), n=np.int64(self.n), n_head=np.int64(self.n_head),
                         source=np.str_(self.source), fitted=np.str_(self.fitted), for_model=np.str_(self.for_model))


def fit_probe(features, is_head, *, source: str, for_model: str = "") -> BodyPartProbe:
    """A logistic regression (L2 strength by 5-fold cross-validated log-loss, so its probabilities are not
    flattened; balanced classes) of head (1) against other body parts (0) on router features ``(N, D)``.
    ``source`` says which images, ``for_model`` which modality model (its card's ``created``) gave the features;
    both are kept in the file."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV

    x, y = np.asarray(features, dtype=np.float64), np.asarray(is_head, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices about future defaults
        model = LogisticRegressionCV(Cs=10, max_iter=3000, class_weight="balanced", scoring="neg_log_loss").fit(x, y)
    return BodyPartProbe(coef=model.coef_[0].astype(np.float32), intercept=float(model.intercept_[0]), n=len(y),
                         n_head=int(y.sum()), source=source,
                         fitted=datetime.now(UTC).isoformat(timespec="seconds"), for_model=for_model)


def load_probe(folder: str | os.PathLike, for_model: str | None = None) -> BodyPartProbe | None:
    """The probe kept in ``folder/body_part.npz``, or None when there is none or when ``for_model`` is given and
    the probe was fitted on another modality model's features (logged: refit it with configs/make_body_part.py);
    a damaged file raises :class:`~medclf_core.errors.ModelError` with a plain message."""
    path = Path(folder) / BODY_PART_FILE
    if not path.is_file():
        return None
    probe = read_versioned_npz(path, VERSION, "body-part probe", lambda z: BodyPartProbe(
        coef=z["coef"], intercept=float(z["intercept"]), n=int(z["n"]), n_head=int(z["n_head"]),
        source=str(z["source"]), fitted=str(z["fitted"]), for_model=str(z["for_model"])))
    if for_model is not None and probe.for_model != for_model:
        log.warning("The body-part probe in %s was fitted for the modality model of %s, not this one (%s): not used; "
                    "refit it with configs/make_body_part.py.", path.parent, probe.for_model or "unknown", for_model)
        return None
    return probe
