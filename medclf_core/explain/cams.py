"""Class-activation heat maps (Grad-CAM, Grad-CAM++, Score-CAM): where the model looked.

:func:`heatmaps` computes one map per image, for a batch of images of any size,
and returns each map at its image's size, scaled to [0, 1]. All methods run on a
*read-only logits view* of the user's model (its final activation made linear,
:mod:`medclf_core.explain.views`), and each CAM cell is placed on the image where
its receptive field is centred (:mod:`medclf_core.explain.geometry`).

Engines: Grad-CAM and Grad-CAM++ run by default as one traced graph with
tf-keras-vis 0.8.7's formulas (``engine="compiled"``, about the cost of a
prediction); ``engine="tf-keras-vis"`` runs the library itself, eagerly, 3-15x
slower, and gives the same maps (tested). Score-CAM (Faster-Score-CAM, channel
cap) is medclf's own (:func:`medclf_core.explain.scorecam.scorecam_raw`): tf-keras-vis's
weights each mask by the post-softmax score with no baseline, which made it blind to the
target class (the chest model's NORMAL and PNEUMONIA maps differed by 4/255 on average).
:func:`gradcam_tape` is a plain ``tf.GradientTape`` Grad-CAM kept as a reference: the
tests check tf-keras-vis against it. How much a map can be trusted is
:mod:`medclf_core.explain.faithfulness`; drawing it is :mod:`medclf_core.explain.render`.
:meth:`medclf_core.inference.predictor.Predictor.explain` is the way from a prediction to a
map (and its score) for the app and the CLI.

Example::

    >>> from medclf_core.explain.render import overlay
    >>> from medclf_core.models.architectures import build_model
    >>> model = build_model("simple_cnn", 2, 32, 1)  # tiny and untrained: the map's form, not its meaning
    >>> pixels = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)
    >>> maps = heatmaps(model, [pixels], method="gradcam++", cam_layer="conv3")
    >>> maps[0].shape, bool(maps[0].min() >= 0 and maps[0].max() <= 1)
    ((48, 64), True)
    >>> overlay(pixels, maps[0], opacity=0.4).shape
    (48, 64, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medclf_core.explain.geometry import cam_geometry, to_image_heatmap
from medclf_core.explain.scorecam import scorecam_raw
from medclf_core.explain.views import cam_view, resolve_model, view_cache
from medclf_core.io.images import to_model_input

METHODS = ("gradcam", "gradcam++", "scorecam")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}  # as shown to people
# "compiled": Grad-CAM / Grad-CAM++ as one traced TensorFlow graph (forward + pruned backward),
# the tf-keras-vis 0.8.7 formulas ported; "tf-keras-vis": the library itself, run eagerly
# (3-15x slower, kept as the reference the compiled path is tested against). Score-CAM
# always runs medclf's own implementation (scorecam.py): its cost is its forward passes.
ENGINES = ("compiled", "tf-keras-vis")
# Faster-Score-CAM: only the activation channels with the largest spatial spread
# are used as masks. Each channel costs one forward pass per image.
SCORECAM_MAX_CHANNELS = 16


def model_batch(model, images: Sequence[np.ndarray]) -> np.ndarray:
    """Float32 model input (N, S, S, C) from uint8 images of any size, via :func:`to_model_input`."""
    size, channels = int(model.input_shape[1]), int(model.input_shape[3])
    return np.stack([to_model_input(im, size, channels) for im in images]).astype("float32")


def class_indices(class_index, n: int) -> np.ndarray | None:
    """``class_index`` (None, one int, or one int per image) as one int64 per image; None stays None."""
    if class_index is None:
        return None
    if np.ndim(class_index) == 0:
        return np.full(n, int(class_index), dtype=np.int64)
    indices = np.asarray(class_index, dtype=np.int64)
    if indices.shape != (n,):
        raise ValueError(f"class_index must be None, one int, or one int per image ({n}).")
    return indices


def _score(indices: np.ndarray | None, *, unit_value: bool = False):
    """tf-keras-vis score: the logit of the given (or the predicted) class per image.

    ``unit_value`` keeps the gradient but makes the value 0 (``z - stop_gradient(z)``):
    Grad-CAM++ multiplies by ``exp(score)``, a per-image constant that the [0, 1]
    scaling removes anyway but that overflows to inf for logits above ~88.
    """
    import tensorflow as tf

    def score(output):
        idx = tf.argmax(output, axis=1) if indices is None else tf.constant(indices)
        z = tf.gather(output, tf.cast(idx, tf.int32), axis=1, batch_dims=1)
        return z - tf.stop_gradient(z) if unit_value else z

    return score


def _check_class_range(indices: np.ndarray | None, num_classes: int) -> None:
    if indices is not None and ((indices < 0) | (indices >= num_classes)).any():
        raise ValueError(f"class_index must be in 0..{num_classes - 1}.")


def _compiled_cam_function(view, layers: tuple[str, ...]):
    """A cached ``tf.function(x, indices) -> raw CAMs (2, N, h, w)``: Grad-CAM's and Grad-CAM++'s, from one
    forward and one backward pass (the two differ only in how they weight the same gradients, so one trace
    serves both and switching between them traces nothing).

    With several ``layers`` (the members of an ensemble) the maps are summed: one
    backward pass gives every member's gradients of the shared (mean) logit.

    Same formulas as tf-keras-vis 0.8.7 (``Gradcam._calculate_cam`` and
    ``GradcamPlusPlus.__call__``), traced once: the forward pass runs as a graph like
    ``predict`` and the backward pass is pruned to the path from the logit to the
    layer. ``indices`` < 0 means the predicted class. For Grad-CAM++ the
    ``exp(score)`` factor is 1 (see :func:`_score`): a per-image constant that the
    [0, 1] scaling removes.
    """
    import keras
    import tensorflow as tf

    cache = view_cache(view)
    key = (layers, "gradcam and gradcam++")
    if key in cache:
        return cache[key]
    both = keras.Model(view.inputs, [[view.get_layer(layer).output for layer in layers], view.output])
    # batch dimension None: one trace serves every batch size
    signature = [tf.TensorSpec([None, *(int(d) for d in view.input_shape[1:])], tf.float32),
                 tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=signature, autograph=False)
    def run(x, indices):
        with tf.GradientTape() as tape:
            all_acts, logits = both(x, training=False)
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            score = tf.gather(logits, tf.where(indices < 0, predicted, indices), axis=1, batch_dims=1)
        plain, plus = [], []
        for acts, grads in zip(all_acts, tape.gradient(score, all_acts), strict=True):
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            plain.append(tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)))
            second, third = grads ** 2, grads ** 3
            global_sum = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
            denominator = 2.0 * second + third * global_sum
            alphas = second / (denominator + tf.cast(second == 0.0, second.dtype))
            alpha_sum = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
            alphas = alphas / (alpha_sum + tf.cast(alpha_sum == 0.0, alpha_sum.dtype))
            weights = tf.reduce_sum(tf.nn.relu(grads) * alphas, axis=(1, 2), keepdims=True)
            plus.append(tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)))
        return tf.stack([tf.add_n(plain), tf.add_n(plus)])

    cache[key] = run
    return run


def _raw_cams(view, layers: Sequence[str], x: np.ndarray, method: str, indices, max_channels: int,
              engine: str = "compiled") -> np.ndarray:
    """CAMs at the layers' resolution (N, h, w), ReLU applied, not scaled; summed over ``layers``."""
    if method == "scorecam":
        return sum(scorecam_raw(view, layer, x, indices, max_channels) for layer in layers)
    if engine == "compiled":
        chosen = np.full(len(x), -1, np.int32) if indices is None else np.asarray(indices, np.int32)
        return _compiled_cam_function(view, tuple(layers))(x, chosen).numpy()[0 if method == "gradcam" else 1]
    return sum(_raw_cams_one(view, layer, x, method, indices) for layer in layers)


def _raw_cams_one(view, layer: str, x: np.ndarray, method: str, indices) -> np.ndarray:
    """tf-keras-vis Grad-CAM / Grad-CAM++ on one layer (the ``tf-keras-vis`` engine)."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

    common = {"penultimate_layer": layer, "seek_penultimate_conv_layer": False,
              "expand_cam": False, "normalize_cam": False}
    if method == "gradcam":
        return np.asarray(Gradcam(view, clone=False)(_score(indices), x, **common))
    return np.asarray(GradcamPlusPlus(view, clone=False)(_score(indices, unit_value=True), x, **common))


def heatmaps(model, images: Sequence[np.ndarray], method: str = "gradcam", class_index=None,
             cam_layer: str | None = None, batch_size: int = 16,
             max_channels: int = SCORECAM_MAX_CHANNELS, engine: str = "compiled",
             inputs: np.ndarray | None = None) -> list[np.ndarray]:
    """Heat maps in [0, 1], one float32 (H, W) array per image, each at its image's size.

    ``model``: a loaded Keras model, or a run folder / run name (its card's
    ``cam_layer`` is then used). ``images``: uint8 arrays (H, W) or (H, W, C) of any
    size. ``method``: ``"gradcam"``, ``"gradcam++"`` or ``"scorecam"``
    (Faster-Score-CAM on at most ``max_channels`` channels; one forward pass per
    channel and image). ``class_index``: None for each image's predicted class, an
    int, or one int per image. Images are processed ``batch_size`` at a time; a map
    does not depend on the batch it was computed in. ``engine``: ``"compiled"``
    (default; Grad-CAM and Grad-CAM++ as one traced graph, about the cost of a
    prediction) or ``"tf-keras-vis"`` (the library run eagerly; same maps, slower); Score-CAM
    always runs medclf's own implementation (:func:`~medclf_core.explain.scorecam.scorecam_raw`:
    tf-keras-vis's is class-blind on a saturated softmax). ``inputs``: the images already prepared for the model (N, S, S, C),
    as :meth:`medclf_core.inference.predictor.Predictor.prepare` gives them, so they are not prepared a
    second time; ``images`` then only give each map's size.

    Example::

        >>> from medclf_core.models.architectures import build_model
        >>> model = build_model("simple_cnn", 2, 32, 1)
        >>> xray, xray2 = np.eye(40, dtype=np.uint8) * 200, np.full((20, 30), 90, np.uint8)
        >>> maps = heatmaps(model, [xray, xray2], method="gradcam", cam_layer="conv3")
        >>> maps[0].shape == xray.shape[:2], maps[1].shape == xray2.shape[:2]
        (True, True)
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method '{method}'; choose from {', '.join(METHODS)}.")
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine '{engine}'; choose from {', '.join(ENGINES)}.")
    keras_model, card_layer = resolve_model(model)
    view, layers = cam_view(keras_model, cam_layer or card_layer)
    indices = class_indices(class_index, len(images))
    _check_class_range(indices, int(view.output_shape[-1]))
    geometry, size = cam_geometry(view, layers[0]), int(view.input_shape[1])
    if inputs is not None:
        inputs = np.asarray(inputs)
        expected = (len(images), *(int(d) for d in view.input_shape[1:]))
        if inputs.shape != expected:
            raise ValueError(f"inputs must be the prepared images, shape {expected}, not {inputs.shape}.")
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        chunk_indices = None if indices is None else indices[start:start + batch_size]
        x = model_batch(view, chunk) if inputs is None else inputs[start:start + batch_size].astype("float32")
        cams = _raw_cams(view, layers, x, method, chunk_indices, max_channels, engine)
        out.extend(to_image_heatmap(cam, im, geometry, size) for im, cam in zip(chunk, cams, strict=True))
    return out


def gradcam_tape(model, images: Sequence[np.ndarray], class_index=None, cam_layer: str | None = None) -> list[np.ndarray]:
    """Reference Grad-CAM with a plain ``tf.GradientTape`` (no tf-keras-vis), same output format.

    Kept to check :func:`heatmaps` against the textbook computation:
    ``relu(sum_k mean_xy(d logit / d A_k) * A_k)`` on the same layer.

    Example: ``np.allclose(gradcam_tape(m, ims)[0], heatmaps(m, ims)[0], atol=1e-4)``.
    """
    import keras
    import tensorflow as tf

    keras_model, card_layer = resolve_model(model)
    view, layers = cam_view(keras_model, cam_layer or card_layer)
    indices = class_indices(class_index, len(images))
    both = keras.Model(view.inputs, [[view.get_layer(layer).output for layer in layers], view.output])
    x = tf.convert_to_tensor(model_batch(view, images))
    with tf.GradientTape() as tape:
        all_acts, logits = both(x, training=False)
        idx = tf.argmax(logits, axis=1) if indices is None else tf.constant(indices)
        score = tf.gather(logits, tf.cast(idx, tf.int32), axis=1, batch_dims=1)
    cams = 0.0  # an ensemble: the members' maps of the shared logit, summed
    for acts, grads in zip(all_acts, tape.gradient(score, all_acts), strict=True):
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = cams + tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)).numpy()
    geometry, size = cam_geometry(view, layers[0]), int(view.input_shape[1])
    return [to_image_heatmap(cam, im, geometry, size) for im, cam in zip(images, cams, strict=True)]

