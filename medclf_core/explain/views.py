"""Read-only logits views of a user's model: what every CAM method runs on.

- The class score is the logit (before softmax), as Grad-CAM prescribes, because
  gradients of a saturated softmax vanish. The logits are centred (minus their
  mean), which changes neither the softmax nor the predicted class. The view
  reuses the model's own layers and variables, so the user's model is never cloned
  or mutated (the app shares loaded models across sessions).
- The target layer is chosen by name: the model card's ``cam_layer``, else the
  architecture's registered layer (``conv5_block3_out`` for ResNet-50: the last
  block *output*, not an inner convolution), else the last spatial layer
  (:func:`find_cam_layer`).
- A model saved as ``Sequential`` or with nested sub-models is rebuilt once as a
  flat functional copy (tf-keras-vis can only reach layers of a flat graph);
  a model that cannot be flattened raises :class:`ModelError` saying why.

Views are cached per model (weakly: a dropped model frees its views), and the traced
functions of each view in :func:`view_cache`.

Example::

    >>> from medclf_core.models.architectures import build_model
    >>> model = build_model("simple_cnn", 2, 32, 1)
    >>> view, layers = cam_view(model, "conv3")
    >>> layers, view.output_shape
    (['conv3'], (None, 2))
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence

from medclf_core.errors import ModelError, brief
from medclf_core.models.architectures import ARCHITECTURES
from medclf_core.models.graph import copy_weights, fresh_layer, has_layer_graph, replay_layers
from medclf_core.registry.store import load_run

LOGITS_LAYER = "medclf_logits"

# user model -> {"flat": flat model, "logits": {cam layer: logits view}}; weak, so a
# dropped model frees its views.
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# logits view -> {key: traced CAM function or sub-model}
_PER_VIEW: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolve_model(model) -> tuple[object, str | None]:
    """``(keras model, card cam layer or None)`` for a model, a run folder or a run name.

    Example: ``resolve_model("models/chest_xray")`` loads the run and returns its card's layer.
    """
    if isinstance(model, str | os.PathLike):
        keras_model, card = load_run(model)
        return keras_model, card.get("cam_layer")
    return model, None


def is_flat_functional(model) -> bool:
    """True for a functional graph with no Sequential and no nested sub-model inside."""
    import keras

    if isinstance(model, keras.Sequential) or not has_layer_graph(model):
        return False
    return not any(isinstance(layer, keras.Model) for layer in model.layers)


def _fresh_copy(layer):
    """A new layer with the same config; weights are copied once it is built."""
    try:
        return fresh_layer(layer)
    except Exception as exc:  # custom layers without a faithful config
        raise ModelError(f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied to flatten the model "
                         f"for a heat map ({brief(exc)}).") from None


def flatten_model(model):
    """The model itself if it is flat functional, else a flat functional copy with the same weights.

    A ``Sequential`` model or one holding nested sub-models (e.g. ``Model(x, head(resnet(x)))``)
    is rebuilt layer by layer (:func:`medclf_core.models.graph.replay_layers`), so every inner
    layer (``conv5_block3_out``) is reachable by name. The original is left untouched.

    Example: ``flatten_model(keras.Sequential([...])).layers`` lists the same layer names.
    """
    import keras

    if is_flat_functional(model):
        return model
    if not isinstance(model, keras.Sequential) and not has_layer_graph(model):
        raise ModelError(f"'{model.name}' is a subclassed Keras model (Python code, no layer graph); "
                         "heat maps need a functional or Sequential model whose layers can be reached by name.")
    try:
        input_shape = tuple(model.input_shape[1:])
    except (AttributeError, ValueError):
        raise ModelError("The model has not been built (its input shape is unknown), so no heat map "
                         "can be computed.") from None
    inputs = keras.Input(input_shape, name="image")
    try:
        outputs, copies = replay_layers(model, inputs, _fresh_copy)
        flat = keras.Model(inputs, outputs, name=model.name)
        copy_weights(copies)
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
            # the head's own Dense, read and never changed; Keras 3 still tracks it as a sub-layer
            # (Layer.__setattr__ wraps the list in a TrackedList), so the view shares its variables
            self._dense_ref = [dense]

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
    """``(logits view, [layer names])`` for :func:`medclf_core.explain.cams.heatmaps`.

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
    if len({spatial_size(view, layer) for layer in layers}) > 1:
        raise ModelError("The heat-map layers (" + ", ".join(layers) + ") have different sizes, so their maps "
                         "cannot be combined.")
    return view, layers


def spatial_size(view, layer: str) -> tuple[int, int]:
    """``(height, width)`` of a layer's output grid."""
    shape = view.get_layer(layer).output.shape
    return int(shape[1]), int(shape[2])


def view_cache(view) -> dict:
    """The dict where traced functions and sub-models of one view are kept (a fresh, unkept one for a
    view that cannot be a weak key)."""
    try:
        weakref.ref(view)
        hash(view)
    except TypeError:
        return {}
    return _PER_VIEW.setdefault(view, {})


def view_forward(view):
    """``view(x, training=False)`` as one cached ``tf.function`` whose batch dimension is None: traced once
    per view for every batch size, and shared by Score-CAM's masked passes and the faithfulness check's
    deletion curves (both run the logits view of :func:`cam_view`), so the second of them traces nothing."""
    cache = view_cache(view)
    if "forward" not in cache:
        import tensorflow as tf

        spec = tf.TensorSpec([None, *(int(d) for d in view.input_shape[1:])], tf.float32)

        @tf.function(input_signature=[spec], autograph=False)
        def forward(x):
            return view(x, training=False)

        cache["forward"] = forward
    return cache["forward"]
