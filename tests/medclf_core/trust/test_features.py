"""medclf_core.trust.features: features and probabilities in one forward pass, with test-time views."""

from __future__ import annotations

import numpy as np
from helpers import CHEST_SAMPLE

from medclf_core.io.images import load_image, to_model_input
from medclf_core.registry.store import load_run
from medclf_core.trust.features import features_and_probabilities


def _pixels(model, n=6):
    side, ch = model.input_shape[1], model.input_shape[3]
    files = sorted((CHEST_SAMPLE / "NORMAL").iterdir())[:n]
    return np.stack([to_model_input(load_image(f).pixels, side, ch) for f in files])


def test_features_and_probabilities_one_pass(trained_run):
    import tensorflow as tf

    model, _ = load_run(trained_run)
    x = _pixels(model)
    feats, probs = features_and_probabilities(model, x, batch_size=4)
    d = model.get_layer("predictions").input.shape[-1]
    assert feats.shape == (len(x), d) and feats.dtype == np.float32
    np.testing.assert_allclose(probs, model.predict_on_batch(x.astype(np.float32)), atol=1e-5)
    # the features are the classifier's input: the Dense layer applied to them gives the probabilities
    w, b = model.get_layer("predictions").get_weights()
    z = feats @ w + b
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(1, keepdims=True), probs, atol=1e-4)
    # views average the probabilities; the features stay those of the unflipped image
    f2, p2 = features_and_probabilities(model, x, views=["hflip"])
    flipped = model.predict_on_batch(x[:, :, ::-1, :].astype(np.float32))
    np.testing.assert_allclose(p2, (probs + flipped) / 2, atol=1e-5)
    np.testing.assert_allclose(f2, feats, atol=1e-5)
    # a tf.data dataset of (x, y) batches gives the same
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), np.zeros(len(x)))).batch(4)
    f3, p3 = features_and_probabilities(model, ds)
    np.testing.assert_allclose(f3, feats, atol=1e-5)
    np.testing.assert_allclose(p3, probs, atol=1e-5)
    f0, p0 = features_and_probabilities(model, x[:0])
    assert f0.shape == (0, d) and p0.shape == (0, 2)
