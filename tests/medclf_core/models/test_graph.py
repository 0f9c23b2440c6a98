"""medclf_core.models.graph: one way to rebuild a layer graph from fresh copies, on Keras' own internals.

The last test checks the Keras internals the rebuild relies on against the real Keras
classes: if an upgrade drops one, it fails here by name instead of as a broken heat map
or ensemble elsewhere.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.models.graph import copy_weights, fresh_layer, has_layer_graph, producer, replay_layers


def _convnet(keras, name="net"):
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x), name=name)


def _batch():
    return np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 1)).astype("float32")


def test_a_replayed_model_computes_the_same_with_its_own_renamed_layers():
    import keras

    keras.utils.set_random_seed(0)
    model = _convnet(keras)
    inputs = keras.Input((16, 16, 1), name="image")
    outputs, copies = replay_layers(model, inputs, lambda layer: fresh_layer(layer, "m1_" + layer.name))
    copy = keras.Model(inputs, outputs)
    copy_weights(copies)
    assert [layer.name for layer in copy.layers[1:]] == ["m1_conv", "m1_gap", "m1_predictions"]
    assert all(original is not fresh for original, fresh in copies)
    np.testing.assert_allclose(np.asarray(copy(_batch())), np.asarray(model(_batch())), atol=1e-6)
    copy.get_layer("m1_conv").kernel.assign(np.zeros(copy.get_layer("m1_conv").kernel.shape, "float32"))
    assert np.asarray(model.get_layer("conv").kernel).any()   # weights copied, not shared


def test_sequential_and_nested_models_are_inlined_into_one_flat_graph():
    import keras

    keras.utils.set_random_seed(1)
    inner = _convnet(keras, "inner")
    outer_in = keras.Input((16, 16, 1), name="image")
    nested = keras.Model(outer_in, keras.layers.Dense(3, name="outer_head")(inner(outer_in)), name="nested")
    seq = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(2, 3, name="c"),
                            keras.layers.Flatten(name="f")], name="seq")
    for model in (nested, seq):
        inputs = keras.Input((16, 16, 1), name="image")
        outputs, copies = replay_layers(model, inputs, fresh_layer)
        flat = keras.Model(inputs, outputs)
        copy_weights(copies)
        assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
        np.testing.assert_allclose(np.asarray(flat(_batch())), np.asarray(model(_batch())), atol=1e-5)
    assert "conv" in {layer.name for layer in keras.Model(inputs, replay_layers(nested, inputs, fresh_layer)[0]).layers}


def test_a_subclassed_model_has_no_graph_to_replay():
    import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(keras.ops.mean(x, axis=(1, 2)))

    sub = Subclassed()
    sub(np.zeros((1, 16, 16, 1), np.float32))
    assert not has_layer_graph(sub) and has_layer_graph(_convnet(keras))
    with pytest.raises(ModelError, match="subclassed"):
        replay_layers(sub, keras.Input((16, 16, 1)), fresh_layer)


def test_producer_names_the_layer_and_its_inputs():
    import keras

    model = _convnet(keras)
    layer, parents = producer(model.get_layer("gap").output)
    assert layer is model.get_layer("gap") and parents[0] is model.get_layer("conv").output
    first, inputs = producer(model.inputs[0])
    assert isinstance(first, keras.layers.InputLayer) and inputs == []
    assert producer(np.zeros(3)) is None


def test_the_keras_internals_this_module_reads_still_exist():
    """Keras 3 private API read by graph.py (no public equivalent): the replay hook, the graph marker and
    the tensor history. Checked on the real Keras classes and objects, not on a stand-in."""
    import keras
    from keras.src.ops.function import Function

    model = _convnet(keras)
    assert "operation_fn" in inspect.signature(Function._run_through_graph).parameters
    assert isinstance(model, Function) and hasattr(model, "_nodes_by_depth")
    history = model.get_layer("conv").output._keras_history
    assert history.operation is model.get_layer("conv") and isinstance(history.node_index, int)
    node = history.operation._inbound_nodes[history.node_index]
    assert list(node.input_tensors) == [model.inputs[0]]
