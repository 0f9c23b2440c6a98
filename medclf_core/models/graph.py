"""Rebuilding a Keras layer graph from fresh layer copies: one way, shared by heat maps and ensembles.

Two jobs rebuild a model's graph layer by layer: a heat map needs a *flat* copy of a
``Sequential`` or nested model, so that every inner layer can be reached by name
(:func:`medclf_core.explain.views.flatten_model`), and a seed ensemble replays each
member's trunk with its layers renamed ``m<k>_...`` on one shared input
(:mod:`medclf_core.models.ensemble`). Both call :func:`replay_layers` with their own way of
copying one layer, then :func:`copy_weights`.

The walk needs Keras internals (Keras 3): ``Function._run_through_graph`` (replay a
functional graph with a different operation at each node), ``_nodes_by_depth`` (only a
functional graph has it) and, for :func:`producer`, ``KerasTensor._keras_history`` with
``Operation._inbound_nodes`` (which layer made a tensor, from which inputs). They are read
here only, and ``tests/medclf_core/models/test_graph.py`` fails if Keras drops any of them.

Example::

    >>> import keras
    >>> from medclf_core.models.architectures import build_model
    >>> model = build_model("simple_cnn", 2, 32, 1)
    >>> inputs = keras.Input((32, 32, 1), name="image")
    >>> outputs, copies = replay_layers(model, inputs, lambda layer: fresh_layer(layer, "new_" + layer.name))
    >>> copy = keras.Model(inputs, outputs); copy_weights(copies)
    >>> copy.layers[1].name, len(copies) == len(model.layers) - 1
    ('new_rescale', True)
"""

from __future__ import annotations

from collections.abc import Callable

from medclf_core.errors import ModelError


def has_layer_graph(model) -> bool:
    """True for a functional model (a graph of layers); False for a subclassed one (Python code).

    ``Sequential`` has a graph too once built. Keras has no public test for this: only a
    functional graph (``keras.src.models.functional.Functional``) carries ``_nodes_by_depth``.
    """
    return hasattr(model, "_nodes_by_depth")


def fresh_layer(layer, name: str | None = None):
    """A new, unbuilt layer with ``layer``'s config (and ``name`` if given); weights come with :func:`copy_weights`."""
    config = layer.get_config()
    return layer.__class__.from_config(config if name is None else {**config, "name": name})


def replay_layers(model, inputs, copy_layer: Callable) -> tuple[object, list]:
    """``(outputs, copies)``: symbolic ``inputs`` run through ``copy_layer(layer)`` of each of ``model``'s layers.

    ``Sequential`` models and nested sub-models are inlined, so the new graph is flat: every
    layer of every level gets its own copy. ``copies`` lists ``(original, copy)`` pairs; call
    :func:`copy_weights` once the new model is built. The original model is not touched.
    A subclassed model (no layer graph) raises :class:`ModelError`.
    """
    copies: list = []
    return _replay(model, inputs, copy_layer, copies), copies


def _replay(model, inputs, copy_layer: Callable, copies: list):
    import keras

    def copy_of(op):
        if isinstance(op, keras.Model):
            return lambda *args, **kwargs: _replay(op, args[0], copy_layer, copies)
        fresh = copy_layer(op)
        copies.append((op, fresh))
        return fresh

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = copy_of(layer)(x)
        return x
    if not hasattr(model, "_run_through_graph") or not has_layer_graph(model):
        raise ModelError(f"'{model.name}' is a subclassed Keras model (Python code, no layer graph); "
                         "its layers cannot be copied into a new graph.")
    # Keras' own replay of a functional graph (Function.call uses it with the layers themselves);
    # ``operation_fn`` swaps each layer for its copy. It flattens ``inputs`` itself.
    return model._run_through_graph(inputs, operation_fn=copy_of)


def copy_weights(copies: list) -> None:
    """Give each copy its original's weights (the copies must be built: call after ``keras.Model(...)``)."""
    for original, fresh in copies:
        fresh.set_weights(original.get_weights())


def producer(tensor) -> tuple[object, list] | None:
    """``(layer, input tensors)``: the layer that computed a symbolic tensor and what it was called on.

    None when Keras keeps no history for the tensor. Keras has no public API for this walk:
    each ``KerasTensor`` records ``_keras_history = (operation, node_index, tensor_index)``
    and each operation its calls in ``_inbound_nodes`` (the functional API's own bookkeeping).

    Example: ``producer(model.get_layer("conv3").output)[0].name`` -> ``"conv3"``.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op = history.operation
    return op, list(op._inbound_nodes[history.node_index].input_tensors)
