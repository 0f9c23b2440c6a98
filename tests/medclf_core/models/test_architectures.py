"""Every registered architecture: flat graph, trains a step, saves, reloads, predicts identically."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import LARGER_LITE

from medclf_core.models.architectures import (ARCHITECTURES, build_model, get_architecture, image_size_choices,
                                             resolve_imagenet_weights)
from medclf_core.registry.store import load_model_file

ARCHS = list(ARCHITECTURES)
SIZE = {"simple_cnn": 32, "bn_cnn": 32, "resnet50": 32, "efficientnet_lite0": 32, "efficientnet_lite1": 32,
        "efficientnet_lite2": 32}


def test_registry_has_the_seed_architectures():
    assert {"simple_cnn", "bn_cnn", "resnet50", "efficientnet_lite0", "efficientnet_lite1",
            "efficientnet_lite2"} <= set(ARCHS)
    for spec in ARCHITECTURES.values():
        assert {"image_size", "channels", "batch_size", "learning_rate", "epochs"} <= set(spec.defaults)


def test_image_size_choices_offer_every_architectures_native_size():
    """A form's sizes include each architecture's native input (Lite1 240, Lite2 260), once each, sorted."""
    native = {int(spec.defaults["image_size"]) for spec in ARCHITECTURES.values()}
    assert {240, 260} <= native
    choices = image_size_choices((64, 224, 64))
    assert choices == sorted(set(choices)) and native <= set(choices) and 64 in choices
    assert image_size_choices() == sorted(native)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="Unknown architecture"):
        get_architecture("vgg99")


# Lite1 and Lite2 are Lite0's trunk with more blocks and channels (test_efficientnet_lite.py checks each one's
# shapes and weights): one channel count each here, Lite0 runs both, which keeps this test's time in bounds.
ONE_CHANNEL_COUNT = dict(zip(LARGER_LITE, (1, 3), strict=True))
BUILD_CASES = [(arch, channels) for arch in ARCHS for channels in (1, 3)
               if ONE_CHANNEL_COUNT.get(arch, channels) == channels]


@pytest.mark.parametrize("arch, channels", BUILD_CASES)
def test_build_train_save_reload_predict(arch, channels, tmp_path):
    import keras

    size = SIZE[arch]
    model = build_model(arch, 3, size, channels, weights=None)
    # flat functional graph: no layer is itself a model (Grad-CAM needs this)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    assert not [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    assert model.input_shape == (None, size, size, channels) and model.output_shape == (None, 3)
    cam = model.get_layer(get_architecture(arch).cam_layer)
    assert len(cam.output.shape) == 4
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, size, size, channels)).astype("float32")
    y = np.array([0, 1, 2, 1])
    # eager: tracing ResNet-50's backward graph costs ~30 s on a 2-core CPU; the maths is the same
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    expected = model.predict(x, verbose=0)
    assert np.allclose(expected.sum(axis=1), 1, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = load_model_file(path)  # safe mode
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_resnet_imagenet_preprocessing_is_fixed_and_bgr():
    model = build_model("resnet50", 2, 32, 3, weights=None)
    layer = model.get_layer("imagenet_preprocess")
    assert not layer.trainable
    kernel, bias = layer.get_weights()
    # output channel 0 (B) reads input channel 2 (R->B swap) and subtracts the B mean
    assert kernel[0, 0, 2, 0] == 1 and kernel[0, 0, 0, 0] == 0
    np.testing.assert_allclose(bias, [-103.939, -116.779, -123.68], rtol=1e-6)


def test_resnet_freezing_with_local_weights_file(tmp_path):
    """A local weights file is accepted; early layers freeze, the head and conv5 train."""
    import keras

    donor = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.weights.h5"  # what a user downloads for offline use
    donor.save_weights(path)
    model = build_model("resnet50", 2, 32, 3, weights=str(path))
    assert model.pretrained
    assert not model.get_layer("conv1_conv").trainable and not model.get_layer("conv4_block6_out").trainable
    assert model.get_layer("conv5_block1_1_conv").trainable and model.get_layer("predictions").trainable
    np.testing.assert_allclose(model.get_layer("conv1_conv").get_weights()[0], donor.get_layer("conv1_conv").get_weights()[0])


def test_resnet_weights_resolution(tmp_path, monkeypatch):
    assert resolve_imagenet_weights(None) is None and resolve_imagenet_weights("none") is None
    with pytest.raises(FileNotFoundError):
        resolve_imagenet_weights(str(tmp_path / "missing.h5"))
    local = tmp_path / "w.h5"
    local.write_bytes(b"x")
    monkeypatch.setenv("MEDCLF_RESNET50_WEIGHTS", str(local))
    assert resolve_imagenet_weights("imagenet") == str(local)


def test_every_architecture_names_its_feature_layer():
    for name, spec in ARCHITECTURES.items():
        model = build_model(name, 2, SIZE[name], 1, weights=None)
        assert len(model.get_layer(spec.feature_layer).output.shape) == 2  # pooled: (batch, features)
        if spec.is_pretrained:
            model.get_layer(spec.fine_tune_from)
