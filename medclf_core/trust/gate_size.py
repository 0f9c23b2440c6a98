"""Whether a run's out-of-distribution check was fitted on enough images, in plain words.

The gate (:mod:`medclf_core.trust.ood`) learns what the training images look like from the training split's
features and sets its cuts on the validation split's scores. On a few dozen images those cuts rest on a handful
of scores: a 40-image CT/MRI run (gate fitted on 28 training and 6 validation images) let a chest X-ray through
as "MRI" with no caution. Nothing here changes the gate; the notice only says how far it can be trusted.

>>> small_gate_notice({"n_train": 28, "n_val": 6})[:73]
'The out-of-distribution check was fitted on only 28 training and 6 valida'
>>> small_gate_notice({"n_train": 1527, "n_val": 329}) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_GATE_VAL_IMAGES = 30  # fewer validation images than this: the gate's cuts rest on too few scores


def small_gate_notice(ood: Mapping | None) -> str | None:
    """A plain warning when the gate (a card's ``"ood"`` entry, or ``OODGate.summary()``) was fitted on fewer
    than :data:`MIN_GATE_VAL_IMAGES` validation images; None when it had enough, or when the sizes are unknown."""
    if not isinstance(ood, Mapping):
        return None
    n_train, n_val = ood.get("n_train"), ood.get("n_val")
    if not (isinstance(n_val, int) and isinstance(n_train, int)) or n_val >= MIN_GATE_VAL_IMAGES:
        return None  # unknown sizes (or a damaged card's texts): nothing to say
    return (f"The out-of-distribution check was fitted on only {n_train} training and {n_val} validation images "
            f"(fewer than {MIN_GATE_VAL_IMAGES} validation images): its thresholds rest on too few images to catch "
            "every other kind of image. An image unlike the training data (another body part or modality) may "
            "get a confident answer with no caution; check that each image is the kind the model was trained on.")
