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

from medclf_core.formatting import is_number, percent
from medclf_core.io.dicom_header import AGE_COMPUTED_FROM
from medclf_core.registry.validation import is_whole_number
from medclf_core.trust.colour import colour_applies, colour_reason
from medclf_core.trust.metrics import evaluate_probabilities
from medclf_core.trust.ood import NEAR_REASON, OODGate, feature_reason, header_reason
from medclf_core.trust.plane import plane_reason
from medclf_core.trust.mr_sequence import sequence_reason
from medclf_core.trust.population import age_reason, body_part_reason, router_reason
from medclf_core.trust.resolution import small_image_reason

#: The DICOM header facts the "not for this image" checks read (modality, body part, the patient's age, whether
#: the MR image is diffusion or angiography): what :meth:`~medclf_core.inference.predictor.Predictor.dicom_facts`
#: passes on from a decoded file's non-identifying header fields (:func:`medclf_core.io.deid.safe_metadata`).
HEADER_FACTS = ("Modality", "BodyPartExamined", "PatientAge", AGE_COMPUTED_FROM, "ImageType", "AngioFlag",
                "DiffusionBValue", "DiffusionDirectionality")

#: The fields of a result whose images could not be checked: no ``ood.npz`` for the model (and no
#: contradicting DICOM header). ``"ood": None`` means "not checked", never "in distribution"; likewise
#: ``"unfamiliar": None`` (no gate, or a version-1 gate without the unfamiliar tier).
NOT_CHECKED = {"ood": None, "ood_score": None, "ood_reason": None,
               "unfamiliar": None, "unfamiliar_score": None, "unfamiliar_reason": None, "unfamiliar_checks": []}


def verdict(gate: OODGate | None, features: np.ndarray | None, intended_use: Mapping | None = None,
            dicom: Mapping | None = None, *, score: float | None = None,
            router: Mapping[str, float] | None = None, chroma: float | None = None,
            size: Sequence[int] | None = None, input_side: int | None = None) -> dict:
    """The two-tier OOD fields of one result: refused (``ood``) or shown with a caution (``unfamiliar``).

    - ``ood`` (refused, no finding) is True when the features are above the gate's refuse
      threshold, the DICOM header contradicts the card's ``intended_use`` (modality, body part,
      ``PatientAge`` outside ``age_years``, a diffusion or angiography image on a structural-MRI model:
      :func:`~medclf_core.trust.mr_sequence.sequence_reason`), or the modality ``router``'s probabilities
      (``{"CT": p, "MRI": p, "XRAY": p}``) confidently name another modality
      (:func:`~medclf_core.trust.population.router_reason`), or the router's body-part probe (its ``"HEAD"``)
      puts a head model's image elsewhere (:func:`~medclf_core.trust.population.body_part_reason`), or the
      original pixels' mean ``chroma`` shows a colour image on a model whose card declares CT / MR / X-ray
      (:func:`~medclf_core.trust.colour.colour_reason`); False when the feature gate ran and
      nothing refused; **None ("not checked")** when the model has no gate and nothing refused.
    - ``unfamiliar`` (finding shown with a caution) is True when the score is between the gate's unfamiliar and
      refuse thresholds, when ``size`` (height, width) has a shorter side under half ``input_side``
      (:func:`~medclf_core.trust.resolution.small_image_reason`), or when the router's plane probe puts the image in
      a plane the card does not declare (:func:`~medclf_core.trust.plane.plane_reason`); else False, or None without
      the gate's tier. A refused image is not also unfamiliar. ``unfamiliar_score`` is the gate's score,
      ``unfamiliar_reason`` plain fragments, ``unfamiliar_checks`` what made it so (``features``, ``size``, ``plane``).
    - ``ood_score`` is the gate's distance, ``ood_reason`` the refusal's plain reason,
      ``ood_checks`` the checks that ran (``"features"``, ``"dicom_header"``, ``"modality_router"``, ``"colour"``),
      ``ood_refused_by`` those that refused (empty when none did; :func:`ood_message` words the refusal by them).

    ``score`` is the gate's score of ``features`` when the caller has already computed it.
    """
    out = dict(NOT_CHECKED)
    checks, reasons = [], []  # reasons: (the check that refused, its plain reason)
    if gate is not None and (features is not None or score is not None):
        score = float(gate.score(np.asarray(features)[None])[0] if score is None else score)
        checks.append("features")
        tier = gate.tier(score)
        out["ood_score"] = score if np.isfinite(score) else None
        out["ood"] = tier == "refuse"
        if out["ood"]:
            reasons.append(("features", feature_reason(score, gate.threshold) if np.isfinite(score)
                            else "its features could not be computed as numbers"))
        if gate.near_threshold is not None:
            out["unfamiliar"] = tier == "unfamiliar"
            out["unfamiliar_score"] = out["ood_score"]
            if out["unfamiliar"]:
                out["unfamiliar_reason"] = NEAR_REASON.format(score=score, threshold=gate.near_threshold)
    if intended_use and dicom:
        checks.append("dicom_header")
        reasons += [("dicom_header", r) for r in (header_reason(intended_use, dicom), age_reason(intended_use, dicom),
                                                  sequence_reason(intended_use, dicom)) if r]
    if intended_use and router:
        checks.append("modality_router")
        reasons += [("modality_router", r) for r in (router_reason(intended_use, router),
                                                     body_part_reason(intended_use, router)) if r]
    if chroma is not None and colour_applies(intended_use):
        checks.append("colour")
        reasons += [("colour", r) for r in (colour_reason(intended_use, chroma),) if r]
    out["ood"] = True if reasons else out["ood"]
    _caution(out, {"size": small_image_reason(size, input_side), "plane": plane_reason(intended_use, router)})
    out["ood_reason"] = "; ".join(r for _, r in reasons) or None
    out["ood_checks"], out["ood_refused_by"] = checks, list(dict.fromkeys(c for c, _ in reasons))
    return out


def _caution(out: dict, more: dict[str, str | None]) -> None:
    """The unfamiliar tier's fields once the refusal is known: a refused image has no caution; else the feature
    tier's, and beside it each other caution of ``more`` (``{check: its reason or None}``: the small image, the
    plane), in that order."""
    if out["ood"]:
        out["unfamiliar"], out["unfamiliar_reason"] = (False if out["unfamiliar"] is not None else None), None
        out["unfamiliar_checks"] = []
        return
    out["unfamiliar_checks"] = ["features"] if out["unfamiliar"] else []
    for check, reason in more.items():
        if reason:
            out["unfamiliar"], out["unfamiliar_checks"] = True, [*out["unfamiliar_checks"], check]
            out["unfamiliar_reason"] = "; ".join(r for r in (out["unfamiliar_reason"], reason) if r)


def unfamiliar_message(result: Mapping, other_source: Mapping | Sequence[Mapping] | None = None) -> str | None:
    """The plain caution shown beside an unfamiliar result's finding (None when not unfamiliar).

    ``other_source`` is one recorded other-source evaluation (``{"dataset", "n", "metrics": {"accuracy"}}``,
    :func:`medclf_core.registry.evaluations.list_evaluations`) or all of them; their accuracy is quoted, the
    lowest and the highest when there are several (a clinician should hear the worst figure, not the newest).
    """
    if result.get("unfamiliar") is not True:
        return None
    checks = result.get("unfamiliar_checks") or ["features"]  # results written before the size check
    parts = dict(zip(checks, (result.get("unfamiliar_reason") or "").split("; "), strict=False))  # checks' order
    what = []
    if "features" in checks:
        what.append("unlike this model's training images" + _other_source_accuracy(other_source))
    if "size" in checks:
        what.append(f"small ({parts['size']})" if parts.get("size") else "small")
    text = f"Caution: this image is {' and '.join(what)}, so the finding is less certain." if what else ""
    if "plane" in checks:  # the plane check's reason is a sentence of its own
        plane = parts.get("plane") or "it looks like a slice in a plane this model cannot judge"
        text = (f"{text} {plane[0].upper()}{plane[1:]}" if text else f"Caution: {plane}") + \
            ": a finding on such a slice says little."
    return text


def _other_source_accuracy(records: Mapping | Sequence[Mapping] | None) -> str:
    """" (on 256 images from another source, its accuracy was 52.3%)", or with several records the range
    " (on other sources, its accuracy was 52.3% on 256 images to 93.1% on 87)"; "" with none usable."""
    records = [records] if isinstance(records, Mapping) else list(records or [])
    usable = sorted((float(r["metrics"]["accuracy"]), int(r["n"])) for r in records
                    if isinstance(r, Mapping) and is_whole_number(r.get("n")) and r["n"] > 0
                    and isinstance(r.get("metrics"), Mapping) and is_number(r["metrics"].get("accuracy")))
    if not usable:
        return ""
    (low, n_low), (high, n_high) = usable[0], usable[-1]
    if len(usable) == 1:
        return f" (on {n_low} images from another source, its accuracy was {percent(low)})"
    return f" (on other sources, its accuracy was {percent(low)} on {n_low} images to {percent(high)} on {n_high})"


#: The checks that read the DICOM header (modality, body part, the patient's age), not the pixels: a refusal by them
#: says the model is not meant for this image, not that the image looks unlike the training images.
HEADER_CHECKS = frozenset({"dicom_header"})
NOT_FOR_THIS_IMAGE = "This model is not for this image"
LOOKS_UNLIKE = "This image does not look like the images this model was trained on"


def ood_lead_in(result: Mapping) -> str:
    """The words before a refusal's reason, by the checks that refused (``ood_refused_by``): "This model is not for
    this image" for the header's facts only, "This image does not look like the images this model was trained on"
    for what the pixels show (the feature gate, the router, colour; also a result that does not say), both when
    both refused.

    >>> ood_lead_in({"ood_refused_by": ["dicom_header"]}), ood_lead_in({"ood_refused_by": ["features"]})[:24]
    ('This model is not for this image', 'This image does not look')
    """
    by = set(result.get("ood_refused_by") or ())
    if by and by <= HEADER_CHECKS:
        return NOT_FOR_THIS_IMAGE
    if by & HEADER_CHECKS:
        return f"{NOT_FOR_THIS_IMAGE}, and it does not look like the images this model was trained on"
    return LOOKS_UNLIKE


def refusal_heading(result: Mapping) -> str:
    """The few words a refused image's heading gives after its name, by the checks that refused it, as
    :func:`ood_lead_in`: "not for this model" when only the header's facts refused it (an adult on a children's
    model), else "not an image this model knows".

    >>> refusal_heading({"ood_refused_by": ["dicom_header"]}), refusal_heading({"ood_refused_by": ["colour"]})
    ('not for this model', 'not an image this model knows')
    """
    return "not for this model" if ood_lead_in(result) == NOT_FOR_THIS_IMAGE else "not an image this model knows"


def ood_message(result: Mapping) -> str | None:
    """The plain warning the app shows for a flagged result (None when not flagged): :func:`ood_lead_in`, then
    the reason."""
    if result.get("ood") is not True:
        return None
    return (f"{ood_lead_in(result)}: {result.get('ood_reason') or 'it is out of distribution'}. "
            "The model's answer is not shown as a finding.")


def ood_block(y_true, probs, ood: Sequence, class_names: list[str], *, threshold: float | None = None,
              positive: int | None = None, bootstrap: int = 1000, seed: int = 0,
              unfamiliar: Sequence | None = None, groups: Sequence | None = None) -> dict:
    """``evaluate``'s ``"ood"`` entry: how many images were flagged, and the metrics without them.

    ``ood`` holds each image's flag (True, False, or None = not checked); ``unfamiliar`` (optional) each
    image's caution flag. Returns ``{"checked", "n", "n_flagged", "fraction_flagged", "coverage", "n_unfamiliar",
    "n_not_checked", "metrics_without_flagged"}`` (``coverage``: the share *not* refused, whose metrics follow);
    ``metrics_without_flagged`` is :func:`~medclf_core.trust.metrics.evaluate_probabilities` over
    the images that were not flagged (None when none are left or nothing was checked), its intervals resampling
    ``groups`` (a key per image) when given.
    """
    flags = list(ood)
    n = len(flags)
    checked = [f for f in flags if f is not None]
    n_flagged = int(sum(1 for f in checked if f))
    out = {"checked": bool(checked), "n": n, "n_flagged": n_flagged,
           "fraction_flagged": (n_flagged / n) if n else None,
           "coverage": (1 - n_flagged / n) if n else None,
           "n_unfamiliar": None if unfamiliar is None else int(sum(1 for u in unfamiliar if u is True)),
           "n_not_checked": n - len(checked),
           "metrics_without_flagged": None}
    keep = np.array([f is not True for f in flags], dtype=bool)
    if checked and keep.any():
        out["metrics_without_flagged"] = evaluate_probabilities(
            np.asarray(y_true)[keep], np.asarray(probs)[keep], class_names, threshold=threshold, positive=positive,
            bootstrap=bootstrap, seed=seed, groups=None if groups is None else np.asarray(groups)[keep])
    return out
