"""Plain warnings about a site calibration before it is saved (:func:`site_warnings`).

A site record (:func:`medclf_core.trust.sites.site_calibration`) says how the card's calibration (``before``) and
the site's (``after``, cross-fitted: every image judged by a fit that did not see it) did on the site's images.
Saving one that does worse, or that was fitted on too little, would put a worse threshold in front of clinicians
under the site's name. Each warning is ``{"kind", "text", "confirm"}``; ``confirm`` True (the kinds in
:data:`CONFIRM_KINDS`: the checked figure misses the target, the site's calibration is worse than the card's,
the images are the model's own training images) means saving needs an explicit "save anyway" (the page's
checkbox, the CLI's ``--force``). The others say how far to trust the figures.

Example::

    >>> rec = {"n_per_class": {"NORMAL": 15, "PNEUMONIA": 15}, "positive_class": "PNEUMONIA",
    ...        "target": {"metric": "sensitivity", "value": 0.95},
    ...        "cross_fit": [{"threshold": 0.746}, {"threshold": 0.9998}],
    ...        "before": {"n": 30, "ece": 0.1, "sensitivity": 0.933, "n_positive": 15},
    ...        "after": {"n": 30, "ece": 0.1, "sensitivity": 0.733, "n_positive": 15}}
    >>> [w["kind"] for w in site_warnings(rec)]
    ['misses_target', 'worse', 'halves_disagree', 'few_positives']
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from medclf_core.formatting import number

CONFIRM_KINDS = ("misses_target", "worse", "training_images")
#: A saved site calibration's check in words, by the kind of warning it was saved over
#: (:data:`CONFIRM_KINDS`).
SAVED_OVER = {"misses_target": "its checked sensitivity misses the target",
              "worse": "it did worse than the model card's calibration on the site's images",
              "training_images": "it was fitted on the model's own training images"}
ECE_MARGIN = 0.02  # a worse ECE by less than this is within what a small set's ECE moves by on its own
THRESHOLD_SPREAD = 0.15  # the two halves' thresholds further apart than this: the threshold rests on a few images


def _warning(kind: str, text: str) -> dict:
    return {"kind": kind, "text": text, "confirm": kind in CONFIRM_KINDS}


def _ci(m: Mapping, key: str) -> str:
    interval = (m.get("ci95") or {}).get(key)
    return f" (95% CI {number(interval[0])}-{number(interval[1])})" if interval else ""


def positives_needed(target: float) -> int:
    """The fewest images of the positive class that can show a sensitivity of ``target`` with one miss allowed:
    ``ceil(1 / (1 - target))`` (20 for 0.95)."""
    return math.ceil(round(1.0 / (1.0 - float(target)), 9))


def site_warnings(rec: Mapping, overlap: Mapping | None = None) -> list[dict]:
    """The warnings about the site record ``rec`` (see the module), in this order: the checked sensitivity misses
    the target; the site's calibration is worse than the card's (lower sensitivity, or an ECE worse by more than
    :data:`ECE_MARGIN`); the cross-fit halves' thresholds disagree; too few positive images for the target; and,
    given ``overlap`` (:func:`medclf_core.inference.overlap.training_overlap` of the images), that they are the
    model's training images. Empty when there is nothing to say."""
    before, after = rec.get("before") or {}, rec.get("after") or {}
    target = (rec.get("target") or {}).get("value")
    out = []
    sens = after.get("sensitivity")
    if target is not None and sens is not None and sens < target:
        out.append(_warning("misses_target", (
            "Checked on held-back halves, the site calibration's sensitivity is "
            f"{number(sens)}{_ci(after, 'sensitivity')}, below the target of {number(target, 2)}: on new images of "
            "this site it would miss more "
            f"{rec.get('positive_class')} cases than the target allows.")))
    worse = []
    if sens is not None and before.get("sensitivity") is not None and sens < before["sensitivity"]:
        worse.append(f"sensitivity {number(before['sensitivity'])} with the card's, {number(sens)} with the site's")
    if after.get("ece") is not None and before.get("ece") is not None and after["ece"] > before["ece"] + ECE_MARGIN:
        worse.append(f"ECE {number(before['ece'])} with the card's, {number(after['ece'])} with the site's")
    if worse:
        out.append(_warning("worse", "On these images the site calibration does worse than the model card's: "
                            + "; ".join(worse) + ". Keeping the card's calibration is the safer choice."))
    thresholds = [f.get("threshold") for f in rec.get("cross_fit") or []]
    if len(thresholds) == 2 and None not in thresholds and abs(thresholds[0] - thresholds[1]) > THRESHOLD_SPREAD:
        out.append(_warning("halves_disagree", (
            f"The thresholds fitted on the two halves disagree widely ({number(thresholds[0])} and "
            f"{number(thresholds[1])}): the threshold rests on a few images and would move with other images "
            "of the site.")))
    n_pos = (rec.get("n_per_class") or {}).get(rec.get("positive_class"))
    if target is not None and n_pos is not None and n_pos < positives_needed(target):
        need = positives_needed(target)
        out.append(_warning("few_positives", (
            f"Only {n_pos} images of {rec.get('positive_class')}: a sensitivity of {number(target, 2)} allows one "
            f"miss in {need}, which fewer than {need} positive images cannot show; the threshold then rests on "
            f"the lowest one or two scores (each half of the check has about {n_pos // 2}). Use at least {need} "
            f"images of {rec.get('positive_class')}, better several times that.")))
    if overlap and overlap.get("message"):
        out.append(_warning("training_images", f"{overlap['message']} A calibration fitted on them is not "
                            "this site's: it sees the model at its most certain."))
    return out


def needs_confirmation(warnings: list[Mapping] | None) -> bool:
    """Whether saving needs an explicit "save anyway" (any warning of a :data:`CONFIRM_KINDS` kind)."""
    return any(w.get("confirm") for w in warnings or [])


def check_note(record: Mapping) -> str | None:
    """What the site's own check found, for every place that names the site's calibration: the sensitivity
    on held-back halves against the target, and the warnings it was saved over (None for a record without a
    check, e.g. a multi-class model's, or one written before checks).

    >>> check_note({"target": {"value": 0.95}, "after": {"sensitivity": 0.7333, "n_positive": 15},
    ...             "warnings": [{"kind": "misses_target", "confirm": True}, {"kind": "few_positives"}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    'checked on held-back halves: sensitivity 0.733 (n = 15, target 0.95);
     saved over a warning: its checked sensitivity misses the target'
    """
    after, target = record.get("after") or {}, (record.get("target") or {}).get("value")
    parts = []
    if target is not None and after.get("sensitivity") is not None:
        parts.append(f"checked on held-back halves: sensitivity {number(after['sensitivity'])} "
                     f"(n = {after.get('n_positive')}, target {number(target, 2)})")
    over = [SAVED_OVER.get(w.get("kind"), str(w.get("kind"))) for w in record.get("warnings") or []
            if isinstance(w, Mapping) and w.get("confirm")]
    if over:
        parts.append(f"saved over {'a warning' if len(over) == 1 else 'warnings'}: " + "; ".join(over))
    return "; ".join(parts) or None


def site_row(record: Mapping) -> dict:
    """One row of the Models page's site calibrations: what a reviewer needs to judge the site's fit at a glance.

    >>> site_row({"site": "north", "date": "2026-12-08T10:00:00+00:00", "n": 100, "temperature": 1.2,
    ...           "threshold": 0.41, "target": {"value": 0.95}, "after": {"sensitivity": 0.96, "n_positive": 50}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'site': 'north', 'date': '2026-12-08', 'images': 100, 'temperature': '1.2', 'threshold': '0.410',
     'check': 'checked on held-back halves: sensitivity 0.960 (n = 50, target 0.95)'}
    """
    threshold = record.get("threshold")
    return {"site": str(record.get("site")), "date": str(record.get("date") or "")[:10], "images": record.get("n"),
            "temperature": f"{float(record.get('temperature') or float('nan')):.3g}",
            "threshold": number(threshold) if threshold is not None else "argmax",
            "check": check_note(record) or "not recorded"}
