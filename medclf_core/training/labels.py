"""A run's labels: each item's integer label, every labelled image of the run, balanced class weights.

Shared by the fit (:mod:`~medclf_core.training.fitting`, :mod:`~medclf_core.training.head_phase`), the
final evaluation (:mod:`~medclf_core.training.evaluate`) and the run (:mod:`~medclf_core.training.run`).
"""

from __future__ import annotations

import numpy as np

from medclf_core.training.session import TrainingSession


def labels_of(items) -> np.ndarray:
    """The integer labels of dataset items."""
    return np.array([it.label for it in items], dtype=int)


def all_items(s: TrainingSession) -> list:
    """Every labelled image of the run: the train, then the validation, then the test split."""
    return [*s.splits["train"], *s.splits["val"], *s.splits["test"]]


def class_weight_for(labels: list[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced class weights (n / (k * count)) when ``mode`` is on, or auto and imbalanced (>= 1.5:1).

    >>> class_weight_for([0] * 10 + [1] * 30, 2, "auto")
    {0: 2.0, 1: 0.6666666666666666}
    >>> class_weight_for([0, 1, 0, 1], 2, "auto") is None
    True
    """
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    if mode == "off" or counts.min() == 0:
        return None
    if mode == "auto" and counts.max() / counts.min() < 1.5:
        return None
    weights = counts.sum() / (n_classes * counts)
    return {i: float(w) for i, w in enumerate(weights)}
