"""Axial, sagittal or coronal: a plane probe on the modality router's features, so a finding on a plane the model
cannot judge comes with a caution.

The shipped brain model calls nearly every sagittal slice tumour: its training set held about 11 sagittal or coronal
slices without a tumour against about 290 with one, and on MedPix it called 28 of 28 sagittal non-tumour slices
tumour (docs/BENCHMARKS.md, "The brain model by plane"). A card that declares the planes its model can judge
(``intended_use.planes``, e.g. ``["axial"]``) gets the unfamiliar tier's caution on an image the probe puts in
another plane: the finding is still shown, with why (there its tumour calls are nearly all right; it is a negative
it cannot tell).

The probe is a multinomial logistic regression on the bundled imaging-modality model's penultimate features (the
trunk the router runs anyway), fitted on MedPix's planes by ``configs/make_plane_probe.py`` and kept beside that
model as ``plane.npz``. The router adds each plane's probability to an image's probabilities (keys :data:`PLANES`,
upper case); :func:`plane_reason` words the caution. ``bench/plane_probe.py`` measured the rule.

Example (a probe fitted on three made-up clusters)::

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(c, 0.5, (40, 3)) for c in (np.eye(3) * 3)])
    >>> probe = fit_plane_probe(x, np.repeat([0, 1, 2], 40), source="example")
    >>> p = load_plane_probe(probe.save(tempfile.mkdtemp()).parent).probabilities(np.array([[0.0, 3.0, 0.0]]))
    >>> max(p[0], key=p[0].get)
    'SAGITTAL'
    >>> plane_reason({"planes": ["axial"]}, {"MRI": 0.99, "AXIAL": 0.05, "SAGITTAL": 0.93, "CORONAL": 0.02})
    'it looks like a sagittal slice (plane check P = 93.0%), and this model can judge axial slices only'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core.formatting import percent
from medclf_core.io.atomic import read_versioned_npz, write_npz

PLANE_FILE = "plane.npz"
#: The router's keys for the probe's plane probabilities, in the probe's class order.
PLANES = ("AXIAL", "SAGITTAL", "CORONAL")
#: An image is put in a plane when the probe gives that plane at least this (bench/plane_probe.py).
MIN_P_PLANE = 0.7
VERSION = 1
log = logging.getLogger(__name__)


@dataclass
class PlaneProbe:
    """``P(plane) = softmax(features @ coef.T + intercept)`` over :data:`PLANES`, with what it was fitted on."""

    coef: np.ndarray  # (3, D)
    intercept: np.ndarray  # (3,)
    n: int
    source: str
    fitted: str
    for_model: str = ""  # the modality model's card "created": a retrained router makes the probe stale

    def probabilities(self, features) -> list[dict[str, float]]:
        """One ``{"AXIAL": p, "SAGITTAL": p, "CORONAL": p}`` per row of ``(N, D)`` router features."""
        z = np.asarray(features, dtype=np.float64) @ self.coef.astype(np.float64).T + self.intercept
        z = np.exp(z - z.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        return [{k: float(v) for k, v in zip(PLANES, row, strict=True)} for row in p]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/plane.npz`` atomically (temporary file, then rename)."""
        return write_npz(Path(folder) / PLANE_FILE, version=np.int32(VERSION), coef=self.coef.astype(np.float32),
                         intercept=self.intercept.astype(np.float64), n=np.int64(self.n), source=np.str_(self.source),
                         fitted=np.str_(self.fitted), for_model=np.str_(self.for_model))


def fit_plane_probe(features, plane, *, source: str, for_model: str = "", c: float = 0.1) -> PlaneProbe:
    """A multinomial logistic regression (L2, ``C`` = ``c``, balanced classes) of the plane (0 axial, 1 sagittal,
    2 coronal) on router features ``(N, D)``. ``c`` 0.1: of 0.03, 0.1 and 1, tied best on MedPix's head MRIs by 5-fold
    cross-validation grouped by case (``bench/plane_probe.py``); ``source`` and ``for_model`` are kept in the file."""
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(features, dtype=np.float64), np.asarray(plane, dtype=int)
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, y)
    if list(model.classes_) != [0, 1, 2]:
        raise ValueError("The plane probe needs images of all three planes.")
    return PlaneProbe(coef=model.coef_.astype(np.float32), intercept=model.intercept_.astype(np.float64), n=len(y),
                      source=source, fitted=datetime.now(UTC).isoformat(timespec="seconds"), for_model=for_model)


def load_plane_probe(folder: str | os.PathLike, for_model: str | None = None) -> PlaneProbe | None:
    """The probe kept in ``folder/plane.npz``, or None when there is none or when ``for_model`` is given and the
    probe was fitted on another modality model's features (logged: refit it with configs/make_plane_probe.py); a
    damaged file raises :class:`~medclf_core.errors.ModelError` with a plain message."""
    path = Path(folder) / PLANE_FILE
    if not path.is_file():
        return None
    probe = read_versioned_npz(path, VERSION, "plane probe", lambda z: PlaneProbe(
        coef=z["coef"], intercept=np.asarray(z["intercept"]), n=int(z["n"]), source=str(z["source"]),
        fitted=str(z["fitted"]), for_model=str(z["for_model"])))
    if for_model is not None and probe.for_model != for_model:
        log.warning("The plane probe in %s was fitted for the modality model of %s, not this one (%s): not used; "
                    "refit it with configs/make_plane_probe.py.", path.parent, probe.for_model or "unknown", for_model)
        return None
    return probe


def plane_reason(intended_use: Mapping | None, probabilities: Mapping[str, float] | None,
                 min_p: float = MIN_P_PLANE) -> str | None:
    """The caution's reason when the card declares ``intended_use.planes`` and the router's plane probe puts the
    image in another plane with P >= ``min_p``; None otherwise (no declaration, no probe, no confident plane)."""
    planes = {str(p).upper() for p in (intended_use or {}).get("planes") or []}
    p = {k: float(v) for k, v in (probabilities or {}).items() if k in PLANES}
    if not planes or len(p) < len(PLANES):
        return None
    plane = max(p, key=p.get)
    if plane in planes or p[plane] < min_p:
        return None
    judged = " and ".join(sorted(x.lower() for x in planes))
    return (f"it looks like a {plane.lower()} slice (plane check P = {percent(p[plane])}), and this model can "
            f"judge {judged} slices only")
