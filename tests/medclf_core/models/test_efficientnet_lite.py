"""EfficientNet-Lite0: the converted ImageNet weights classify photos, and the registry's model is that trunk."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.models.architectures import build_model, get_architecture
from medclf_core.models.efficientnet_lite import LITE_WEIGHTS_ENV, efficientnet_lite0_imagenet, lite0_weights_path


def _imagenet_input(image):
    import cv2

    return cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype("float32")[None]


@pytest.fixture(scope="module")
def lite0_imagenet():
    return efficientnet_lite0_imagenet()


@pytest.mark.parametrize("photo, classes", [("chelsea", set(range(281, 286))),  # a tabby: ImageNet's cats
                                            ("coffee", {967, 968})])             # espresso, cup
def test_lite0_conversion_classifies_natural_photos(lite0_imagenet, photo, classes):
    """The converted weights are the ImageNet model, not just the right shapes: a cat is a cat."""
    from skimage import data

    probs = lite0_imagenet.predict(_imagenet_input(getattr(data, photo)()), verbose=0)[0]
    top5 = set(np.argsort(probs)[::-1][:5].tolist())
    assert top5 & classes, f"top 5 {sorted(top5)} hold none of {sorted(classes)}"
    assert int(np.argmax(probs)) in classes


def test_lite0_pretrained_features_match_the_imagenet_trunk(lite0_imagenet):
    """The registry's pretrained model is the same trunk, frozen, with a fresh head on ``gap``."""
    from skimage import data

    model = build_model("efficientnet_lite0", 2, 224, 3)
    assert model.pretrained and get_architecture("efficientnet_lite0").is_pretrained
    assert not [layer.name for layer in model.layers if layer.trainable and layer.weights
                and layer.name not in ("predictions", "head_dense")]
    x = _imagenet_input(data.chelsea())
    import keras

    ours = keras.Model(model.inputs, model.get_layer("gap").output).predict(x, verbose=0)
    ref = keras.Model(lite0_imagenet.inputs, lite0_imagenet.get_layer("gap").output).predict(x, verbose=0)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert model.get_layer("top_relu").output.shape[1:] == (7, 7, 1280)


def test_lite0_grayscale_repeats_the_channel_inside_the_model():
    gray = build_model("efficientnet_lite0", 2, 64, 1)
    rgb = build_model("efficientnet_lite0", 2, 64, 3)
    rgb.get_layer("predictions").set_weights(gray.get_layer("predictions").get_weights())
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(gray.predict(x, verbose=0), rgb.predict(np.repeat(x, 3, axis=-1), verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_lite0_weights_file_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(LITE_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match=LITE_WEIGHTS_ENV):
        lite0_weights_path()
