"""Class-activation heat maps (Grad-CAM, Grad-CAM++, Score-CAM) and overlays: where the model looked.

:func:`heatmaps` computes one map per image, for a batch of images of any size,
and returns each map at its image's size, scaled to [0, 1]. All methods run on a
*read-only logits view* of the user's model (its final activation made linear):

- the class score is the logit (before softmax), as Grad-CAM prescribes, because
  gradients of a saturated softmax vanish. The logits are centred (minus their
  mean), which changes neither the softmax nor the predicted class. The view
  reuses the model's own layers and variables, so the user's model is never cloned
  or mutated (the app shares loaded models across sessions);
- the target layer is chosen by name: the model card's ``cam_layer``, else the
  architecture's registered layer (``conv5_block3_out`` for ResNet-50: the last
  block *output*, not an inner convolution), else the last spatial layer;
- a model saved as ``Sequential`` or with nested sub-models is rebuilt once as a
  flat functional copy (tf-keras-vis can only reach layers of a flat graph);
  a model that cannot be flattened raises :class:`ModelError` saying why;
- each CAM cell is placed on the image where its receptive field is centred
  (:func:`cam_geometry`): unpadded convolutions shift the grid inwards.

Engines: Grad-CAM and Grad-CAM++ run by default as one traced graph with
tf-keras-vis 0.8.7's formulas (``engine="compiled"``, about the cost of a
prediction); ``engine="tf-keras-vis"`` runs the library itself, eagerly, 3-15x
slower, and gives the same maps (tested). Score-CAM (Faster-Score-CAM, channel
cap) is medclf's own (:func:`_scorecam_raw`): tf-keras-vis's weights each mask by
the post-softmax score with no baseline, which made it blind to the target class
(the chest model's NORMAL and PNEUMONIA maps differed by 4/255 on average). Each
mask is weighted by the drop of the target's probability when its region of the
image is blanked (a deletion, not the paper's insertion on a blank: see
:func:`_scorecam_raw` for why). :func:`gradcam_tape` is a plain ``tf.GradientTape`` Grad-CAM kept as a
reference: the tests check tf-keras-vis against it. :func:`overlay` blends a map
on the original with an OpenCV colour map.

Faithfulness: :func:`deletion_faithfulness` scores a map by a deletion curve
(Petsiuk et al. 2018) against random order: how much faster the class score falls
when the map's hottest regions are blanked first than when random regions are.
:meth:`medclf_core.inference.predictor.Predictor.explain` is the way from a prediction to a
map (and its score) for the app and the CLI.

Example::

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

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from medclf_core.errors import ModelError, brief
from medclf_core.io.images import to_model_input

METHODS = ("gradcam", "gradcam++", "scorecam")
# "compiled": Grad-CAM / Grad-CAM++ as one traced TensorFlow graph (forward + pruned backward),
# the tf-keras-vis 0.8.7 formulas ported; "tf-keras-vis": the library itself, run eagerly
# (3-15x slower, kept as the reference the compiled path is tested against). Score-CAM
# always runs through tf-keras-vis: its cost is its forward passes, which run compiled.
ENGINES = ("compiled", "tf-keras-vis")
# Faster-Score-CAM: only the activation channels with the largest spatial spread
# are used as masks. Each channel costs one forward pass per image.
SCORECAM_MAX_CHANNELS = 16
LOGITS_LAYER = "medclf_logits"

# user model -> {"flat": flat model, "logits": {cam layer: logits view}}; weak, so a
# dropped model frees its views.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# logits view -> {(layer, method): traced CAM function}
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- model views

def resolve_model(model) -> tuple[object, str | None]:
    """``(keras model, card cam layer or None)`` for a model, a run folder or a run name.

    Example: ``resolve_model("models/chest_xray")`` loads the run and returns its card's layer.
    """
    if isinstance(model, str | os.PathLike):
        from medclf_core.registry.store import load_run

        keras_model, card = load_run(model)
        return keras_model, card.get("cam_layer")
    return model, None


def is_flat_functional(model) -> bool:
    """True for a functional graph with no Sequential and no nested sub-model inside."""
    import keras

    if isinstance(model, keras.Sequential) or not hasattr(model, "_nodes_by_depth"):
        return False
    return not any(isinstance(layer, keras.Model) for layer in model.layers)


def _fresh_copy(layer):
    """A new layer with the same config; weights are copied once it is built."""
    try:
        return layer.__class__.from_config(layer.get_config())
    except Exception as exc:  # custom layers without a faithful config
        raise ModelError(f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied to flatten the model "
                         f"for a heat map ({brief(exc)}).") from None


def _apply_flat(model, inputs, copies: list):
    """Run ``inputs`` (symbolic) through fresh copies of ``model``'s layers, nested models inlined."""
    import keras

    def rebuild(op):
        if isinstance(op, keras.Model):
            return lambda *args, **kwargs: _apply_flat(op, args[0], copies)
        fresh = _fresh_copy(op)
        copies.append((op, fresh))
        return fresh

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = rebuild(layer)(x)
        return x
    if not hasattr(model, "_run_through_graph") or not hasattr(model, "_nodes_by_depth"):
        raise ModelError(f"'{model.name}' is a subclassed Keras model (Python code, no layer graph); "
                         "heat maps need a functional model whose layers can be reached by name.")
    return model._run_through_graph(inputs, operation_fn=rebuild)


def flatten_model(model):
    """The model itself if it is flat functional, else a flat functional copy with the same weights.

    A ``Sequential`` model or one holding nested sub-models (e.g. ``Model(x, head(resnet(x)))``)
    is rebuilt layer by layer, so every inner layer (``conv5_block3_out``) is reachable by
    name. The original is left untouched.

    Example: ``flatten_model(keras.Sequential([...])).layers`` lists the same layer names.
    """
    import keras

    if is_flat_functional(model):
        return model
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_nodes_by_depth"):
        raise ModelError(f"'{model.name}' is a subclassed Keras model (Python code, no layer graph); "
                         "heat maps need a functional or Sequential model whose layers can be reached by name.")
    try:
        input_shape = tuple(model.input_shape[1:])
    except (AttributeError, ValueError):
        raise ModelError("The model has not been built (its input shape is unknown), so no heat map "
                         "can be computed.") from None
    copies: list = []
    inputs = keras.Input(input_shape, name="image")
    try:
        outputs = _apply_flat(model, inputs, copies)
        flat = keras.Model(inputs, outputs, name=model.name)
        for original, fresh in copies:
            fresh.set_weights(original.get_weights())
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"This model's layers cannot be flattened into one graph for a heat map "
                         f"({brief(exc)}).") from None
    return flat


def find_cam_layer(model, preferred: str | None = None) -> str:
    """The layer whose activations the heat map is computed on.

    In order: ``preferred`` (the model card's ``cam_layer``) if the model has it; the
    architecture's registered layer when the model's name is a registered architecture;
    else the last layer with a spatial (4-D) output.

    Example: ``find_cam_layer(resnet)`` -> ``"conv5_block3_out"``.
    """
    from medclf_core.models.architectures import ARCHITECTURES

    names = [layer.name for layer in model.layers]
    registered = ARCHITECTURES[model.name].cam_layer if model.name in ARCHITECTURES else None
    for candidate in (preferred, registered):
        if candidate and candidate in names:
            return candidate
    for layer in reversed(model.layers[1:]):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer.name
    raise ModelError("This model has no convolutional layer, so no heat map can be computed.")


def _classifier_head(model):
    """The final Dense layer (``predictions`` by convention)."""
    import keras

    names = [layer.name for layer in model.layers]
    head = model.get_layer("predictions") if "predictions" in names else model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ModelError(f"The model's last layer ('{head.name}', {type(head).__name__}) is not a dense "
                         "classifier; class-activation maps need one.")
    return head


def _logits_layer_class():
    import keras

    class HeadLogits(keras.layers.Layer):
        """The head Dense's affine part with a linear activation, on the head's own variables.

        A one-unit (sigmoid) head gives two logits ``[-z/2, z/2]``, whose softmax equals
        ``[1 - sigmoid(z), sigmoid(z)]``, so every model looks like a K>=2 class model.
        """

        def __init__(self, dense, **kwargs):
            super().__init__(**kwargs)
            self._dense_ref = [dense]  # a list: no sub-layer tracking, no change to the head

        def call(self, features):
            dense = self._dense_ref[0]
            z = keras.ops.matmul(keras.ops.cast(features, "float32"), keras.ops.cast(dense.kernel, "float32"))
            if dense.use_bias:
                z = z + keras.ops.cast(dense.bias, "float32")
            if dense.units == 1:
                z = keras.ops.concatenate([-z / 2.0, z / 2.0], axis=-1)
            return z - keras.ops.mean(z, axis=-1, keepdims=True)

        def compute_output_shape(self, input_shape):
            units = self._dense_ref[0].units
            return (input_shape[0], 2 if units == 1 else units)

    return HeadLogits


def logits_view(model, cam_layer: str | None = None):
    """``(view, layer name)``: a flat model sharing ``model``'s layers whose output is the class logits.

    This is the "final activation made linear" that tf-keras-vis needs, done without
    cloning or mutating the model (``ReplaceToLinear`` would change the shared head's
    activation in place). Views are cached per model and layer.

    Example: ``view, layer = logits_view(model, "conv3"); view(x)`` -> logits (N, K).
    """
    import keras

    try:
        entry = _VIEWS.get(model)
    except TypeError:  # unhashable model object: no cache
        entry = None
    if entry is None:
        flat = flatten_model(model)
        entry = {"flat": None if flat is model else flat, "logits": {}}  # no strong ref to the weak key
        try:
            _VIEWS[model] = entry
        except TypeError:
            pass
    flat = entry["flat"] or model
    layer = find_cam_layer(flat, cam_layer)
    if layer not in entry["logits"]:
        head = _classifier_head(flat)
        logits = _logits_layer_class()(head, name=LOGITS_LAYER)(head.input)
        entry["logits"][layer] = keras.Model(flat.inputs, logits, name=f"{flat.name}_logits")
    return entry["logits"][layer], layer


def cam_view(model, cam_layer: str | Sequence[str] | None = None):
    """``(logits view, [layer names])`` for :func:`heatmaps`.

    ``cam_layer`` is a layer name, ``None`` (see :func:`find_cam_layer`), or a list of
    names: an ensemble's card lists each member's copy of the layer, and the map is
    the sum of the members' maps, which is Grad-CAM of the ensemble's mean logit.

    Example: ``cam_view(ensemble, ["m1_block4_relu", "m2_block4_relu"])[1]`` -> both names.
    """
    names = [cam_layer] if cam_layer is None or isinstance(cam_layer, str) else list(cam_layer)
    if not names:
        names = [None]
    view, first = logits_view(model, names[0])
    layers = [first]
    for name in names[1:]:
        layer = find_cam_layer(view, name)
        if layer not in layers:
            layers.append(layer)
    if len({_spatial(view, layer) for layer in layers}) > 1:
        raise ModelError("The heat-map layers (" + ", ".join(layers) + ") have different sizes, so their maps "
                         "cannot be combined.")
    return view, layers


# ----------------------------------------------------------------------------- maps

def model_batch(model, images: Sequence[np.ndarray]) -> np.ndarray:
    """Float32 model input (N, S, S, C) from uint8 images of any size, via :func:`to_model_input`."""
    size, channels = int(model.input_shape[1]), int(model.input_shape[3])
    return np.stack([to_model_input(im, size, channels) for im in images]).astype("float32")


def _class_indices(class_index, n: int) -> np.ndarray | None:
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


def _compiled_cam_function(view, layers: tuple[str, ...], method: str):
    """A cached ``tf.function(x, indices) -> raw CAMs`` for Grad-CAM or Grad-CAM++.

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

    cache = _COMPILED.get(view) if _is_weakref_key(view) else None
    if cache is None:
        cache = {}
        if _is_weakref_key(view):
            _COMPILED[view] = cache
    key = (layers, method)
    if key in cache:
        return cache[key]
    both = keras.Model(view.inputs, [[view.get_layer(layer).output for layer in layers], view.output])
    # batch dimension None: one trace serves every batch size (plain Python branching on `method` only)
    signature = [tf.TensorSpec([None, *(int(d) for d in view.input_shape[1:])], tf.float32),
                 tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=signature, autograph=False)
    def run(x, indices):
        with tf.GradientTape() as tape:
            all_acts, logits = both(x, training=False)
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            score = tf.gather(logits, tf.where(indices < 0, predicted, indices), axis=1, batch_dims=1)
        cams = []
        for acts, grads in zip(all_acts, tape.gradient(score, all_acts), strict=True):
            if method == "gradcam":
                weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            else:
                second, third = grads ** 2, grads ** 3
                global_sum = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
                denominator = 2.0 * second + third * global_sum
                alphas = second / (denominator + tf.cast(second == 0.0, second.dtype))
                alpha_sum = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
                alphas = alphas / (alpha_sum + tf.cast(alpha_sum == 0.0, alpha_sum.dtype))
                weights = tf.reduce_sum(tf.nn.relu(grads) * alphas, axis=(1, 2), keepdims=True)
            cams.append(tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)))
        return tf.add_n(cams)

    cache[key] = run
    return run


def _is_weakref_key(obj) -> bool:
    try:
        weakref.ref(obj)
        hash(obj)
        return True
    except TypeError:
        return False


def _raw_cams(view, layers: Sequence[str], x: np.ndarray, method: str, indices, max_channels: int,
              engine: str = "compiled") -> np.ndarray:
    """CAMs at the layers' resolution (N, h, w), ReLU applied, not scaled; summed over ``layers``."""
    if method == "scorecam":
        return sum(_scorecam_raw(view, layer, x, indices, max_channels) for layer in layers)
    if engine == "compiled":
        chosen = np.full(len(x), -1, np.int32) if indices is None else np.asarray(indices, np.int32)
        return _compiled_cam_function(view, tuple(layers), method)(x, chosen).numpy()
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


def _acts_and_logits(view, layer: str):
    """A cached model ``x -> (activations of layer, logits)`` on the view's own layers."""
    import keras

    cache = _COMPILED.get(view) if _is_weakref_key(view) else None
    if cache is None:
        cache = {}
        if _is_weakref_key(view):
            _COMPILED[view] = cache
    key = ((layer,), "acts+logits")
    if key not in cache:
        cache[key] = keras.Model(view.inputs, [view.get_layer(layer).output, view.output])
    return cache[key]


def _scorecam_raw(view, layer: str, x: np.ndarray, indices, max_channels: int,
                  predict_batch: int = 64) -> np.ndarray:
    """Score-CAM (Faster-Score-CAM) on one layer: ``relu(sum_k w_k A_k)`` with ``w_k`` the *drop of
    the target's probability* when channel ``k``'s region of the image is blanked.

    As in the paper (Wang et al. 2020, eq. 5-8), each of the ``max_channels`` channels with
    the largest spatial spread (Faster-Score-CAM) is placed on the input grid (as the map
    is, :func:`cam_geometry`) and min-max scaled to a [0, 1] mask ``H_k``; the weight is
    ``w_k = P_c(x) - P_c(x - (x - b) * H_k)``, with ``P_c`` the target's post-softmax
    probability and ``b`` the image's own mean value (per channel, the blank of
    :func:`deletion_faithfulness`): how much of the target's score the region ``H_k`` accounts
    for, *in the context of the rest of the image*.

    Why deletion, not the paper's insertion ``P_c(b + (x - b) * H_k) - P_c(b)`` (the region shown
    alone on the blank), which medclf used before: a flat blank is far from any training
    image, and what a model reads on it is not what it reads in the image. On the issue-15
    pattern task (disc or square on noise, ``bn_cnn``) some runs read the blank as "square"
    with p = 1.0, so no region could raise that probability; and some learnt "disc" as "no
    square in the noise": the disc shown alone on the blank *lowered* the disc logit (-1.8 to
    -4.6, centred logits) while blanking it in the image lowered it too (3.9 to 1.3). Insertion
    maps were on the pattern for only 0.50-0.78 of the test images on 3 of 12 such models
    (0.72-0.91 with the centred logit; a blurred baseline, sigma 5, or all channels instead of
    16 did not fix it); deletion was on the pattern for 1.0 of the images on all 12
    (probability or centred logit).
    The probability, not the centred logit: with the logit, the 3-class localisation model's
    maps of two classes differed by 0.026 on average (Grad-CAM's by 0.115), with the
    probability by 0.103 (``test_explain``'s class-specificity criterion).

    Why not tf-keras-vis's ``Scorecam``: it weights each mask ``x * H_k`` by the target's
    probability with *no reference*, so every weight is positive; when the probability is
    near 0 or 1 for every mask (saturated) the weights are nearly equal and the map is
    close to the plain sum of the channels, *whatever the class*; and for two classes the
    weights are ``p_k`` and ``1 - p_k``, two positive mixtures of the same channels. That
    gave the chest model's NORMAL and PNEUMONIA maps 4/255 of mean difference. A difference
    of probabilities makes the weights signed and class-specific: for two classes
    ``p_0 = 1 - p_1``, so ``w_k(NORMAL) = -w_k(PNEUMONIA)`` and the maps are
    ``relu(S)`` and ``relu(-S)`` (the evidence for one class is the evidence against the other).
    The blank is the image's mean, not black: the chest model reads dark, mostly-black inputs
    as PNEUMONIA.

    Cost: one forward pass per channel and image (the image's own score comes with its
    activations). One image's channels are chosen from that image alone, so a map never
    depends on the batch; every masked input of the batch goes through the model in
    ``predict_batch`` chunks.
    """
    acts_model = _acts_and_logits(view, layer)
    acts, logits = (np.asarray(a, np.float32) for a in acts_model.predict_on_batch(x))
    targets = np.argmax(logits, axis=1) if indices is None else np.asarray(indices, np.int64)
    n, h, w, channels = acts.shape
    cap = min(max_channels, channels) if max_channels and max_channels > 0 else channels
    size_y, size_x = int(x.shape[1]), int(x.shape[2])
    geometry = cam_geometry(view, layer)
    chosen, deleted = [], []
    for i in range(n):
        spread = acts[i].reshape(-1, channels).std(axis=0)
        top = np.argsort(-spread, kind="stable")[:cap]
        chosen.append(top)
        blank = np.broadcast_to(x[i].reshape(-1, x.shape[-1]).mean(axis=0), x.shape[1:]).astype(np.float32)
        for k in top:
            mask = _place_on_grid(acts[i, :, :, k], size_y, size_x, geometry, size_y, cv2.BORDER_REPLICATE)
            low, high = float(mask.min()), float(mask.max())
            mask = (mask - low) / (high - low) if high - low > 1e-12 else np.zeros_like(mask)
            deleted.append(x[i] - (x[i] - blank) * mask[..., None])
    batch = np.asarray(deleted, np.float32).reshape(-1, *x.shape[1:])
    scores = np.concatenate([np.asarray(view.predict_on_batch(batch[s:s + predict_batch]), np.float64)
                             for s in range(0, len(batch), predict_batch)])
    scores = _softmax(scores).reshape(n, cap, -1)
    own = _softmax(logits)   # the image's own score comes with its activations
    cams = np.zeros((n, h, w), np.float32)
    for i in range(n):
        weights = own[i, targets[i]] - scores[i, :, targets[i]]
        cams[i] = np.maximum(np.tensordot(acts[i][..., chosen[i]], weights, axes=([2], [0])), 0.0)
    return cams


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _spatial(view, layer: str) -> tuple[int, int]:
    shape = view.get_layer(layer).output.shape
    return int(shape[1]), int(shape[2])


def _layer_geometry(op, in_shape, out_shape) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``((stride_y, stride_x), (offset_y, offset_x))`` with input centre = stride * output index + offset.

    Known for convolutions, poolings, zero padding and cropping; layers that keep the
    spatial size are identities; anything else returns None (geometry unknown).
    """
    import keras

    spatial_in, spatial_out = tuple(in_shape[1:3]), tuple(out_shape[1:3])
    if isinstance(op, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = op.padding
        return (1.0, 1.0), (-float(top), -float(left))
    if isinstance(op, keras.layers.Cropping2D):
        (top, _), (left, _) = op.cropping
        return (1.0, 1.0), (float(top), float(left))
    kernel = getattr(op, "kernel_size", None) or getattr(op, "pool_size", None)
    strides = getattr(op, "strides", None)
    if kernel is not None and strides is not None and len(kernel) == 2 and None not in spatial_in:
        dilation = getattr(op, "dilation_rate", (1, 1))
        geometry = []
        for n, k, s, d in zip(spatial_in, kernel, strides, dilation):
            k_eff = d * (k - 1) + 1
            pad_before = max((-(-n // s) - 1) * s + k_eff - n, 0) // 2 if op.padding == "same" else 0
            geometry.append((float(s), (k_eff - 1) / 2.0 - pad_before))
        return (geometry[0][0], geometry[1][0]), (geometry[0][1], geometry[1][1])
    if spatial_in == spatial_out:
        return (1.0, 1.0), (0.0, 0.0)
    return None


def cam_geometry(view, layer: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Where the layer's grid cells sit on the model input: ``(stride, offset)`` per axis, or None.

    Walks back from the layer to the input along first inputs (branches of a residual
    block agree). Valid-padding networks (``simple_cnn``) have their grid shifted
    inwards by several pixels; a plain resize would misplace the map by that much.

    Example: ``cam_geometry(simple_cnn_48px, "conv3")`` -> ``((4.0, 4.0), (8.5, 8.5))``.
    """
    import keras

    stride, offset = np.ones(2), np.zeros(2)  # input = stride * cam index + offset, composed
    tensor = view.get_layer(layer).output
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        op = history.operation
        if isinstance(op, keras.layers.InputLayer):
            return (float(stride[0]), float(stride[1])), (float(offset[0]), float(offset[1]))
        node = op._inbound_nodes[history.node_index]
        if not node.input_tensors:
            return None
        parent = node.input_tensors[0]
        if len(parent.shape) != 4:
            return None
        geometry = _layer_geometry(op, parent.shape, tensor.shape)
        if geometry is None:
            return None
        s, c = np.asarray(geometry[0]), np.asarray(geometry[1])
        stride, offset = s * stride, s * offset + c
        tensor = parent


def to_image_heatmap(cam: np.ndarray, image: np.ndarray, geometry=None, input_size: int | None = None) -> np.ndarray:
    """A raw CAM placed on the image's (H, W) grid and scaled to [0, 1] by its peak.

    With ``geometry`` (from :func:`cam_geometry`) and the model's ``input_size``, each
    CAM cell is put where its receptive field is centred; without, the CAM is simply
    stretched over the image. A constant image has nothing to localise: its map is all
    zeros (any structure would come from padding at the borders, not from the image).

    Example: ``to_image_heatmap(np.ones((4, 4)), np.zeros((50, 60), np.uint8)).shape`` -> (50, 60).
    """
    h, w = image.shape[:2]
    if np.ptp(image) == 0:
        return np.zeros((h, w), np.float32)
    return _normalise(_place_on_grid(cam, h, w, geometry, input_size))


def _place_on_grid(cam: np.ndarray, h: int, w: int, geometry=None, input_size: int | None = None,
                   border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """A layer-resolution map placed on an (h, w) grid (see :func:`to_image_heatmap`), not scaled.

    ``border``: what lies outside the grid's reach: 0 (``BORDER_CONSTANT``, for a heat map)
    or the nearest cell (``BORDER_REPLICATE``, for a Score-CAM mask).
    """
    cam = np.nan_to_num(np.asarray(cam, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if geometry is None or not input_size:
        return cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    (stride_y, stride_x), (offset_y, offset_x) = geometry
    scale_y, scale_x = h / input_size, w / input_size  # model input pixel -> image pixel (centres)
    to_image = np.float32([[scale_x * stride_x, 0, scale_x * (offset_x + 0.5) - 0.5],
                           [0, scale_y * stride_y, scale_y * (offset_y + 0.5) - 0.5]])
    return cv2.warpAffine(cam, to_image, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0.0)


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
    always runs medclf's own implementation (:func:`_scorecam_raw`: tf-keras-vis's is class-blind
    on a saturated softmax). ``inputs``: the images already prepared for the model (N, S, S, C),
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
    indices = _class_indices(class_index, len(images))
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
    indices = _class_indices(class_index, len(images))
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


def _normalise(cam: np.ndarray) -> np.ndarray:
    """ReLU then divide by the peak; an all-zero (or all-negative) map stays all zeros."""
    cam = np.maximum(np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0), 0)
    peak = cam.max() if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 1e-12 else np.zeros_like(cam, dtype=np.float32)


@dataclass(frozen=True)
class Explanation:
    """One heat map and what it explains (:meth:`medclf_core.inference.predictor.Predictor.explain`).

    ``heatmap``: float32 (H, W) in [0, 1] at the image's size. ``faithfulness``: see
    :func:`deletion_faithfulness` (None when not computed or undefined); ``deletion``:
    its curves, or None.
    """

    heatmap: np.ndarray
    method: str
    class_index: int
    class_name: str
    faithfulness: float | None = None
    deletion: dict | None = None


# ----------------------------------------------------------------------------- faithfulness

DELETION_STEPS = 10          # blank 10%, 20%, ... 100% of the pixels
DELETION_RANDOM_ORDERS = 3   # random orders averaged for the reference curve
DELETION_GRID = 16           # pixels are deleted by cells of a 16 x 16 grid on the model input


def deletion_faithfulness(predict, inputs: np.ndarray, maps: Sequence[np.ndarray], class_index, *,
                          steps: int = DELETION_STEPS, random_orders: int = DELETION_RANDOM_ORDERS,
                          seed: int = 0, grid: int = DELETION_GRID, images_per_call: int = 16) -> list[dict]:
    """How well each heat map ranks the pixels its class depends on: a deletion curve against random order.

    The deletion metric of Petsiuk et al. 2018 (RISE), normalised by a random baseline.
    For each image, its model input's pixels are *blanked* in ``steps`` equal steps
    (10%, 20%, ... 100%) in the map's order, hottest first, and the target class's score
    is read after each step, kept as a running minimum (a score that rises again once the
    evidence is gone measures the blanking, not the map: grey cells forming new shapes,
    an image gone mostly grey); the area under that curve (fraction blanked 0..1,
    trapezoids, measured above the score of the fully blank image, where every curve
    ends; a score below it counts as 0) is ``auc_map``. The same with ``random_orders`` random orders (seeded, curves
    averaged) gives ``auc_random``. Then::

        faithfulness = (auc_random - auc_map) / auc_random

    Higher is better: 1 means the score fell to the blank image's at the first step, 0
    means the map is no better than a random order, below 0 means worse than random
    (the map points away from what the model uses). With a blank scoring 0 for the
    class this is exactly Petsiuk's deletion AUC, normalised by random order's.
    ``None`` (with a ``note``) when the test cannot tell: the blank image scores the
    class at least as high as the image (e.g. a flat grey chest film reads PNEUMONIA
    to the chest model, so no deletion can lower that score), or random deletion does
    not lower the score at all.

    - *Blank* means the pixel takes the image's own mean value (per channel) of the
      model input: a flat grey carrying no structure. Not black, which on a radiograph
      is itself a strong signal (background), and not a blurred copy, which keeps the
      coarse shapes a model can still read.
    - Pixels are deleted by cells of a ``grid`` x ``grid`` partition of the model input
      (16 x 16: 7 px cells at 112 px), ranked by their mean heat; each map is resized to
      the model input first, as the image is (:func:`medclf_core.io.images.to_model_input`).
      Random orders delete the same cells, so both curves delete the same kind of region.
      Equal heat values (the zeros left by the ReLU) are ordered randomly (seeded).
    - The score is whatever ``predict`` returns for the class (probabilities, for the
      Predictor: the model's own output).

    ``predict``: callable, float32 (M, S, S, C) -> scores (M, K). ``inputs``: the
    prepared model inputs (N, S, S, C). ``maps``: N heat maps of any size. ``class_index``:
    one int or one per image. All the blanked inputs of up to ``images_per_call`` images
    (``2 + (steps - 1) * (1 + random_orders)`` each: 38 by default) go to ``predict`` in
    one call.

    Returns one dict per image: ``faithfulness``, ``auc_map``, ``auc_random``, ``score``
    (the image's), ``blank_score``, ``fractions`` (steps + 1 values, 0..1), ``curve_map``,
    ``curve_random`` (scores at those fractions), ``blank`` (``"image mean"``) and ``note``
    (why ``faithfulness`` is None, else None).

    Example: ``deletion_faithfulness(model.predict_on_batch, x, maps, 1)[0]["faithfulness"]`` -> 0.62.
    """
    inputs = np.asarray(inputs, np.float32)
    if inputs.ndim != 4 or len(inputs) != len(maps):
        raise ValueError("inputs must be (N, S, S, C) with one heat map per input.")
    if steps < 1 or random_orders < 1:
        raise ValueError("steps and random_orders must be at least 1.")
    indices = _class_indices(class_index, len(inputs))
    if indices is None:
        raise ValueError("class_index is required: the class whose score is deleted.")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    out: list[dict] = []
    for start in range(0, len(inputs), images_per_call):
        batch, layout = [], []
        for i in range(start, min(start + images_per_call, len(inputs))):
            variants = _deletion_inputs(inputs[i], maps[i], steps, random_orders, seed, grid)
            layout.append((len(batch), len(variants)))
            batch.extend(variants)
        scores = np.asarray(predict(np.stack(batch).astype(np.float32)), np.float64)
        for i, (first, count) in zip(range(start, start + len(layout)), layout, strict=True):
            s = scores[first:first + count, int(indices[i])]
            out.append(_deletion_summary(s, steps, random_orders, fractions))
    return out


def format_faithfulness(value: float | None) -> str:
    """A faithfulness score as shown to people: two decimals, "n/a" when there is none, and no "-0.00"
    for a score that rounds to zero.

    >>> format_faithfulness(0.4173), format_faithfulness(-0.0012), format_faithfulness(None)
    ('0.42', '0.00', 'n/a')
    """
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{round(float(value), 2) + 0.0:.2f}"  # + 0.0 turns -0.0 into 0.0


def _deletion_inputs(x: np.ndarray, heatmap: np.ndarray, steps: int, random_orders: int, seed: int,
                     grid: int) -> list:
    """``[x, fully blank, map step 1..steps-1, random order 1 step 1..steps-1, ...]`` for one image.

    Pixels are deleted by cells of a ``grid`` x ``grid`` partition of the model input, ranked by
    their mean heat (ties in random order): the map's order and the random orders then delete
    the same kind of region. Single pixels scattered at random would add a salt-and-pepper
    texture that moves the score by itself and make any map look better or worse than random.
    """
    size_y, size_x, channels = x.shape
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0)
    if heat.shape != (size_y, size_x):
        interp = cv2.INTER_AREA if heat.size > size_y * size_x else cv2.INTER_LINEAR
        heat = cv2.resize(heat, (size_x, size_y), interpolation=interp)
    rows = np.minimum(np.arange(size_y) * grid // size_y, grid - 1)
    cols = np.minimum(np.arange(size_x) * grid // size_x, grid - 1)
    cell_of = (rows[:, None] * grid + cols[None, :]).ravel()          # cell of each pixel
    cell_heat = np.bincount(cell_of, heat.ravel(), grid * grid) / np.maximum(np.bincount(cell_of, None, grid * grid), 1)
    rng = np.random.default_rng(seed)
    orders = [np.lexsort((rng.random(grid * grid), -cell_heat))]
    orders += [rng.permutation(grid * grid) for _ in range(random_orders)]
    blank = x.reshape(-1, channels).mean(axis=0)
    counts = [int(round(grid * grid * j / steps)) for j in range(1, steps)]
    variants = [x, np.broadcast_to(blank, x.shape).astype(np.float32)]
    for order in orders:
        rank = np.empty(grid * grid, np.int64)
        rank[order] = np.arange(grid * grid)
        pixel_rank = rank[cell_of]
        for n in counts:
            v = x.reshape(-1, channels).copy()
            v[pixel_rank < n] = blank
            variants.append(v.reshape(x.shape))
    return variants


def _deletion_summary(s: np.ndarray, steps: int, random_orders: int, fractions: np.ndarray) -> dict:
    inner = s[2:].reshape(1 + random_orders, steps - 1)
    curves = np.concatenate([np.full((1 + random_orders, 1), s[0]), inner,
                             np.full((1 + random_orders, 1), s[1])], axis=1)
    # running minimum: once the score has fallen, a later rise (the grey cells themselves forming
    # new shapes) is credited to neither order
    curves = np.minimum.accumulate(curves, axis=1)
    curve_map, curve_random = curves[0], curves[1:].mean(axis=0)
    floor = float(s[1])  # the score of the fully blank image, where both curves end
    # a score below the blank image's counts as fully deleted, so faithfulness stays <= 1
    auc_map = float(np.trapezoid(np.maximum(curve_map - floor, 0.0), fractions))
    auc_random = float(np.trapezoid(np.maximum(curve_random - floor, 0.0), fractions))
    note = None
    if float(s[0]) <= floor + 1e-6:
        note = "the blank image scores this class as high as the image itself: deletion cannot test this map"
    elif auc_random <= 1e-6:
        note = "the class score does not fall when pixels are blanked at random: nothing to compare with"
    faith = None if note else (auc_random - auc_map) / auc_random
    return {"faithfulness": None if faith is None else float(faith), "auc_map": auc_map, "auc_random": auc_random,
            "score": float(s[0]), "blank_score": floor, "fractions": [float(f) for f in fractions],
            "curve_map": [float(v) for v in curve_map], "curve_random": [float(v) for v in curve_random],
            "blank": "image mean", "note": note}


# ----------------------------------------------------------------------------- display

def overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4,
            colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """RGB uint8 image: the heat map in colour blended over the (grayscale or RGB) original.

    ``opacity`` 0 shows the original only, 1 the colour map only.

    Example: ``overlay(xray, maps[0], opacity=0.4).shape`` -> (H, W, 3).
    """
    base = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    base = base[..., :3].astype(np.uint8)
    if base.shape[2] == 1:
        base = np.repeat(base, 3, axis=2)
    if heatmap.shape != base.shape[:2]:
        heatmap = cv2.resize(heatmap, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), colormap), cv2.COLOR_BGR2RGB)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(colour, opacity, base, 1.0 - opacity, 0.0)


def save_png(path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")
