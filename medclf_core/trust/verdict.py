"""The out-of-distribution verdict of each result, the warning shown for it, and the count over a folder.

- :func:`verdict`: the ``ood`` / ``ood_score`` / ``ood_reason`` / ``ood_checks`` fields of one
  result, from the gate's score of its features (:mod:`medclf_core.trust.ood`, features from
  :mod:`medclf_core.trust.features`) and its DICOM header against the card's intended use
  (see :data:`NOT_CHECKED` for the "not checked" convention).
- :func:`ood_message`: the plain warning the app shows for a flagged result.
- :func:`ood_block`: the ``"ood"`` entry of a folder evaluation
  (:func:`medclf_core.inference.folder.evaluate_folder`): how many images were flagged, and
  the metrics without them.

What training does at the end (and :func:`medclf_core.training.refit.refit_trust`), with the
trust layer's modules; the Predictor then reads the gate and the temperature back::

    >>> from medclf_core.trust import calibration, features, ood                        # doctest: +SKIP
    >>> f_train, _ = features.features_and_probabilities(model, train_ds)               # doctest: +SKIP
    >>> f_val, p_val = features.features_and_probabilities(model, val_ds, views=tta)    # doctest: +SKIP
    >>> gate = ood.fit_gate(f_train, y_train, f_val)                                    # doctest: +SKIP
    >>> t = calibration.fit_temperature(y_val, p_val)                                   # doctest: +SKIP
    >>> p_cal = calibration.apply_temperature(p_val, t)  # choose the threshold on these # doctest: +SKIP
    >>> threshold = choose_threshold(y_val, p_cal, positive)                            # doctest: +SKIP
    >>> card["ood"] = gate.summary(); gate.save(run_folder)                             # doctest: +SKIP
    >>> card["calibration"] = calibration.calibration_entry(t, y_val, p_val, threshold=threshold,
    ...                                                     stored_predictions="calibrated")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medclf_core.trust.ood import OODGate, feature_reason, header_reason
from medclf_core.trust.metrics import evaluate_probabilities

#: The fields of a result whose images could not be checked: no ``ood.npz`` for the model (and no
#: contradicting DICOM header). ``"ood": None`` means "not checked", never "in distribution".
NOT_CHECKED = {"ood": None, "ood_score": None, "ood_reason": None}


def verdict(gate: OODGate | None, features: np.ndarray | None, intended_use: Mapping | None = None,
            dicom: Mapping | None = None, *, score: float | None = None) -> dict:
    """The OOD fields of one result.

    ``{"ood": True|False|None, "ood_score": float|None, "ood_reason": str|None, "ood_checks": [...]}``:

    - ``ood`` is True when the features are above the gate's threshold or the DICOM
      header contradicts the card's ``intended_use``; False when the feature gate ran
      and nothing flagged; **None ("not checked")** when the model has no gate
      (no ``ood.npz``) and the header did not flag.
    - ``ood_score`` is the gate's distance (None without a gate), ``ood_reason`` a plain
      sentence fragment (None unless flagged), ``ood_checks`` the checks that ran
      (``"features"``, ``"dicom_header"``).

    ``score`` is the gate's score of ``features`` when the caller has already computed it
    (a batch at once: :meth:`OODGate.score`).
    """
    out = dict(NOT_CHECKED)
    checks, reasons = [], []
    if gate is not None and (features is not None or score is not None):
        score = float(gate.score(np.asarray(features)[None])[0] if score is None else score)
        checks.append("features")
        out["ood_score"] = score if np.isfinite(score) else None
        out["ood"] = bool(score > gate.threshold)
        if out["ood"]:
            reasons.append(feature_reason(score, gate.threshold) if np.isfinite(score)
                           else "its features could not be computed as numbers")
    if intended_use and dicom:
        checks.append("dicom_header")
        reason = header_reason(intended_use, dicom)
        if reason:
            out["ood"] = True
            reasons.append(reason)
    out["ood_reason"] = "; ".join(reasons) or None
    out["ood_checks"] = checks
    return out


def ood_message(result: Mapping) -> str | None:
    """The plain warning the app shows for a flagged result (None when not flagged)."""
    if result.get("ood") is not True:
        return None
    return ("This image does not look like the images this model was trained on: "
            f"{result.get('ood_reason') or 'it is out of distribution'}. "
            "The model's answer is not shown as a finding.")


def ood_block(y_true, probs, ood: Sequence, class_names: list[str], *, threshold: float | None = None,
              positive: int | None = None, bootstrap: int = 1000, seed: int = 0) -> dict:
    """``evaluate``'s ``"ood"`` entry: how many images were flagged, and the metrics without them.

    ``ood`` holds each image's flag (True, False, or None = not checked). Returns
    ``{"checked", "n", "n_flagged", "fraction_flagged", "n_not_checked", "metrics_without_flagged"}``;
    ``metrics_without_flagged`` is :func:`~medclf_core.trust.metrics.evaluate_probabilities` over
    the images that were not flagged (None when none are left or nothing was checked).
    """
    flags = list(ood)
    n = len(flags)
    checked = [f for f in flags if f is not None]
    n_flagged = int(sum(1 for f in checked if f))
    out = {"checked": bool(checked), "n": n, "n_flagged": n_flagged,
           "fraction_flagged": (n_flagged / n) if n else None, "n_not_checked": n - len(checked),
           "metrics_without_flagged": None}
    keep = np.array([f is not True for f in flags], dtype=bool)
    if checked and keep.any():
        out["metrics_without_flagged"] = evaluate_probabilities(
            np.asarray(y_true)[keep], np.asarray(probs)[keep], class_names, threshold=threshold, positive=positive,
            bootstrap=bootstrap, seed=seed)
    return out
