"""A head that does not read burned-in marks: their feature directions projected out (transfer recipe).

Augmented views with the marks inpainted (:mod:`medclf_core.data.erase`) barely move a linear head on
frozen features: the head still sees the marked originals, and a well-separated logistic fit feels
little pull from a pair that differs only by the marks (docs/BENCHMARKS.md, "The recipe change").
What does work on frozen features: cache each training image once more with its marks inpainted,
take the ``k`` leading directions (SVD) of the feature changes ``f(original) - f(inpainted)``, fit
the head on features with those directions projected out (``f P``, ``P = I - V V^T``), and fold the
projection into the head's first Dense kernel (``P W``), so the model keeps its layers and its size
and a mark's change of the features along those directions no longer reaches the logits.

``AugmentConfig.mark_directions`` (an augmentation setting, per preset) is ``k``; 0 turns it off.
The held-out recipe only (the small-data cross-fitted head does not use it).

Example (features where direction 0 carries the marks)::

    >>> rng = np.random.default_rng(0)
    >>> diffs = np.zeros((50, 4), np.float32); diffs[:, 0] = rng.normal(size=50)
    >>> p = mark_projection(diffs, 1)
    >>> np.round(p @ np.array([1.0, 2.0, 3.0, 4.0], np.float32), 3).tolist()
    [0.0, 2.0, 3.0, 4.0]
"""

from __future__ import annotations

import numpy as np

from medclf_core.data.augment import AugmentConfig

FIRST_DENSE = ("head_dense", "predictions")  # the head's first Dense layer on the features, whichever exists


def mark_projection(diffs: np.ndarray, k: int) -> np.ndarray | None:
    """``I - V V^T`` (D x D, float32) for the top ``k`` right singular vectors ``V`` of the feature changes
    ``diffs`` (N x D; rows of zeros, images without marks, left out); None when ``k`` is 0 or nothing changed."""
    changed = diffs[np.abs(diffs).sum(axis=1) > 0]
    if k <= 0 or len(changed) == 0:
        return None
    vt = np.linalg.svd(changed.astype(np.float64), full_matrices=False)[2][:k]
    return (np.eye(diffs.shape[1]) - vt.T @ vt).astype(np.float32)


def session_mark_projection(s, model, train_features: np.ndarray) -> np.ndarray | None:
    """The run's projection (:func:`mark_projection` of ``k = s.augment.mark_directions`` directions), from the
    train split's unaugmented ``train_features`` and one more backbone pass over its images, marks inpainted;
    None when the augmentation does not ask for it. Emits a notice with what it did."""
    k = int(getattr(s.augment, "mark_directions", 0) or 0)
    if k <= 0:
        return None
    import time

    from medclf_core.training.transfer import feature_extractor

    started = time.time()
    paths = [it.path for it in s.splits["train"]]
    clean = unmarked_features(feature_extractor(model, s.spec.feature_layer), paths, image_size=s.cfg.image_size,
                              channels=s.cfg.channels, batch_size=int(s.cfg.batch_size), cancel=s.cancel)
    diffs = train_features - clean
    projection = mark_projection(diffs, k)
    marked = int((np.abs(diffs).sum(axis=1) > 0).sum())
    s.log.emit("notice", message=f"Burned-in marks: {marked} of {len(paths)} training images have some; "
                                 f"{k} feature directions of their inpainting projected out of the head "
                                 f"({time.time() - started:.0f} s).")
    return projection


def unmarked_features(extractor, paths, *, image_size: int, channels: int, batch_size: int,
                      cancel=None) -> np.ndarray:
    """Backbone features (N, D) of ``paths`` with their burned-in marks inpainted (no other change)."""
    from medclf_core.training.transfer import cache_features

    erase = AugmentConfig(rotation=0.0, shift=0.0, zoom=0.0, shear=0.0, horizontal_flip=False, erase_marks=1.0)
    return cache_features(extractor, paths, views=("augment1",), augment=erase, image_size=image_size,
                          channels=channels, batch_size=batch_size, cancel=cancel)[0]


def fold_projection(model, projection: np.ndarray | None) -> None:
    """Replace the head's first Dense kernel ``W`` by ``P W``: the model then computes ``(f P) W + b``."""
    if projection is None:
        return
    names = {layer.name for layer in model.layers}
    layer = model.get_layer(next(n for n in FIRST_DENSE if n in names))
    kernel, *rest = layer.get_weights()
    layer.set_weights([projection @ kernel, *rest])


def project(features: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    """``features @ projection`` over the last axis, or ``features`` itself when there is no projection."""
    return features if projection is None else features @ projection
