"""The out-of-distribution gate's input: penultimate features and probabilities in one forward pass.

:func:`feature_model` is a two-output view of a medclf model (``[probabilities, features]``,
the features being the input of the layer named ``predictions``, the classifier of
:mod:`medclf_core.models.head`), so the gate costs no extra forward pass;
:func:`features_and_probabilities` runs it over an array or a ``tf.data`` dataset, with
test-time views averaging the probabilities (the features are those of the unflipped view).
Training and :func:`medclf_core.training.refit.refit_trust` fit the gate and the temperature
on these; the Predictor uses :func:`feature_model` for every image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medclf_core.data.tta import VIEWS, check_views
from medclf_core.errors import ModelError

FEATURE_LAYER = "predictions"


def feature_model(model, layer: str = FEATURE_LAYER):
    """A Keras model with two outputs, ``[probabilities, features]``: the same layers and weights as ``model``,
    the features being the input of the layer named ``layer`` (the classifier). The models are flat
    functional graphs, so this is one forward pass."""
    import keras

    if isinstance(model.outputs, list) and len(model.outputs) == 2:
        return model
    try:
        features = model.get_layer(layer).input
    except ValueError:
        raise ModelError(f"This model has no layer named '{layer}'; its features cannot be checked.") from None
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_with_features")


def _batches(data, batch_size: int) -> Iterable[np.ndarray]:
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield np.asarray(data[start:start + batch_size], dtype=np.float32)
        return
    for batch in data:  # tf.data.Dataset or any iterable of batches: x, (x, y) or (x, y, w)
        x = batch[0] if isinstance(batch, tuple | list) else batch
        yield np.asarray(x, dtype=np.float32)


def features_and_probabilities(model, batch_or_dataset, views: Sequence[str] = (), *,
                               batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, D) float32, probabilities (N, K) float64)`` in one forward pass per view.

    ``model`` is a medclf model (or its :func:`feature_model`); ``batch_or_dataset`` is a
    uint8/float array ``(N, S, S, C)`` of raw pixels, or a batched ``tf.data.Dataset`` of
    ``x`` or ``(x, y)`` (as training's validation dataset). ``views`` are test-time views
    (:mod:`medclf_core.data.tta`): the probabilities are averaged over the image and each view,
    the features are the unflipped image's. The probabilities are the model's own
    (not temperature-scaled).

    Example::

        >>> from medclf_core.models.architectures import build_model
        >>> model = build_model("simple_cnn", 2, 32, 1)  # tiny and untrained
        >>> batch = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
        >>> feats, probs = features_and_probabilities(model, batch, views=["hflip"])
        >>> feats.dtype, len(feats), probs.shape, bool(np.allclose(probs.sum(axis=1), 1))
        (dtype('float32'), 3, (3, 2), True)
    """
    views = check_views(views)
    fm = feature_model(model)
    feats, probs = [], []
    for x in _batches(batch_or_dataset, batch_size):
        p, f = fm.predict_on_batch(x)
        p = np.asarray(p, dtype=np.float64)
        for name in views:
            p = p + np.asarray(fm.predict_on_batch(np.ascontiguousarray(VIEWS[name](x)))[0], dtype=np.float64)
        probs.append(p / (1 + len(views)))
        feats.append(np.asarray(f, dtype=np.float32).reshape(len(x), -1))
    if not probs:
        d = int(np.prod(fm.outputs[1].shape[1:]))
        return np.zeros((0, d), dtype=np.float32), np.zeros((0, int(fm.outputs[0].shape[-1])))
    return np.concatenate(feats), np.concatenate(probs)
