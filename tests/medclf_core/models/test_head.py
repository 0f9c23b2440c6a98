"""medclf_core.models.head: the one classifier head, its layer names (the contract with transfer and the gate)."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.models.architectures import ARCHITECTURES, build_model
from medclf_core.models.head import classifier_head


def _head_model(num_classes, dense_units, dropout):
    import keras

    inputs = keras.Input((8,), name="features")
    return keras.Model(inputs, classifier_head(inputs, num_classes, dense_units, dropout))


@pytest.mark.parametrize("dense_units, dropout, names", [(0, 0.0, ["predictions"]),
                                                         (0, 0.2, ["head_dropout", "predictions"]),
                                                         (16, 0.5, ["head_dense", "head_dropout", "predictions"])])
def test_optional_layers_and_their_names(dense_units, dropout, names):
    model = _head_model(3, dense_units, dropout)
    assert [layer.name for layer in model.layers[1:]] == names
    assert model.output_shape == (None, 3)
    if dense_units:
        assert model.get_layer("head_dense").units == dense_units
    if dropout:
        assert model.get_layer("head_dropout").rate == pytest.approx(dropout)


def test_softmax_in_float32_even_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _head_model(2, 4, 0.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("head_dense").compute_dtype == "float16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    probs = model.predict(np.random.default_rng(0).normal(size=(5, 8)).astype("float32"), verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_ends_in_this_head(arch):
    model = build_model(arch, 2, 32, 1, weights=None)
    head = model.get_layer("predictions")
    assert head.output.shape[-1] == 2 and head.dtype_policy.compute_dtype == "float32"
    assert head.get_config()["activation"] == "softmax"
