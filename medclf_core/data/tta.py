"""Test-time augmentation (TTA): average a model's probabilities over label-preserving views.

A model trained with horizontal flips has learnt that a flipped image has the
same label, so averaging its predictions for an image and its mirror image
cancels part of its left-right noise. Views are named in the model card
(``"tta": ["hflip"]``) and used everywhere the model predicts: training's
validation (so the threshold is chosen on the same probabilities), the
``evaluate`` and ``predict`` commands, and the app. Grad-CAM explains the
un-augmented view.

Only views the model was trained to be invariant to are allowed: ``hflip`` needs
horizontal-flip augmentation, so it is refused for chest X-rays (laterality).

Example::

    >>> import numpy as np
    >>> average_views(lambda x: x.mean(axis=(1, 2, 3))[:, None], np.ones((2, 4, 4, 1)), ["hflip"]).shape
    (2, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# (N, H, W, C) arrays: axis 2 is the image width.
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hflip": lambda batch: batch[:, :, ::-1, :],
}


def check_views(names: Sequence[str] | None, *, horizontal_flip_trained: bool | None = None) -> tuple[str, ...]:
    """The validated, de-duplicated view names; a plain ``ValueError`` for unknown or unsafe ones."""
    out: list[str] = []
    for name in names or ():
        if name not in VIEWS:
            raise ValueError(f"Unknown test-time augmentation '{name}'; choose from {', '.join(VIEWS)}.")
        if name == "hflip" and horizontal_flip_trained is False:
            raise ValueError("Test-time 'hflip' needs a model trained with horizontal flips "
                             "(this augmentation has them off, as for chest X-rays where flips change laterality).")
        if name not in out:
            out.append(name)
    return tuple(out)


def average_views(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                  views: Sequence[str]) -> np.ndarray:
    """Mean of ``predict`` over the original batch and each named view of it."""
    probs = np.asarray(predict(batch), dtype=np.float64)
    for name in views:
        probs = probs + np.asarray(predict(np.ascontiguousarray(VIEWS[name](batch))), dtype=np.float64)
    return probs / (1 + len(views))


def tf_view(name: str, images):
    """The same view on a batched ``tf.Tensor`` (for ``tf.data`` pipelines)."""
    import tensorflow as tf

    if name == "hflip":
        return tf.reverse(images, axis=[2])
    raise ValueError(f"Unknown test-time augmentation '{name}'.")
