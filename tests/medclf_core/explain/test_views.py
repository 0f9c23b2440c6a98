"""medclf_core.explain.views: every model gets a logits view (Sequential and nested models flattened),
the user's model is never mutated, and models without a heat map get a plain message."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.explain.cams import METHODS, gradcam_tape, heatmaps
from medclf_core.explain.views import find_cam_layer, logits_view
from medclf_core.io.images import load_image
from medclf_core.models.architectures import ARCHITECTURES, build_model
from medclf_core.registry.store import load_run


@pytest.fixture(scope="module")
def model_and_card(trained_run):
    return load_run(trained_run)


# ----------------------------------------------------------------------------- every architecture

# ResNet-50 once (grayscale: its gray-to-RGB input path); building and tracing it is the slow part.
# RGB ResNet-50 runs in bench/explain_latency.py.
ARCH_CASES = [("simple_cnn", 32, 1, 2), ("simple_cnn", 32, 3, 3), ("bn_cnn", 32, 1, 3), ("bn_cnn", 32, 3, 2),
              ("resnet50", 64, 1, 3)]


@pytest.mark.parametrize(("arch", "size", "channels", "classes"), ARCH_CASES,
                         ids=[f"{a}-{'gray' if c == 1 else 'rgb'}-{k}cls" for a, _, c, k in ARCH_CASES])
def test_every_architecture_grayscale_rgb_binary_multiclass(arch, size, channels, classes, noise_images):
    model = build_model(arch, classes, size, channels, weights=None)
    head_weights = [w.copy() for w in model.get_layer("predictions").get_weights()]
    images = noise_images
    grey = np.full((1, size, size, channels), 90.0, np.float32)
    before = model.predict_on_batch(grey)

    view, layer = logits_view(model)
    assert layer == find_cam_layer(model) == ARCHITECTURES[arch].cam_layer
    x = np.random.default_rng(1).uniform(0, 255, (2, size, size, channels)).astype("float32")
    softmax_of_logits = np.exp(view.predict_on_batch(x))
    softmax_of_logits /= softmax_of_logits.sum(1, keepdims=True)
    np.testing.assert_allclose(softmax_of_logits, model.predict_on_batch(x), atol=1e-5)

    for method in METHODS:
        maps = heatmaps(model, images, method=method)
        for image, m in zip(images, maps, strict=True):
            assert m.shape == image.shape[:2] and m.dtype == np.float32
            assert np.isfinite(m).all() and 0.0 <= m.min() and m.max() <= 1.0
    # the shared model is not mutated: same head activation, weights and outputs
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    for a, b in zip(head_weights, model.get_layer("predictions").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before, model.predict_on_batch(grey))



# ----------------------------------------------------------------------------- models from disk, Sequential, nested

def test_run_folder_from_disk(trained_run, model_and_card, sample_images):
    model, card = model_and_card
    imgs = [load_image(p).pixels for p in sample_images[:3]]
    from_folder = heatmaps(trained_run, imgs)
    from_model = heatmaps(model, imgs, cam_layer=card["cam_layer"])
    for im, a, b in zip(imgs, from_folder, from_model, strict=True):
        assert a.shape == im.shape[:2] and np.isfinite(a).all() and 0.0 <= a.min() and a.max() <= 1.0
        np.testing.assert_allclose(a, b, atol=1e-6)


def _small_convnet_layers(keras):
    from keras import layers

    return [layers.Rescaling(1 / 255, name="rescale"), layers.Conv2D(8, 3, padding="same", activation="relu",
                                                                       name="conv_a"),
            layers.MaxPooling2D(2, name="pool_a"), layers.Conv2D(8, 3, padding="same", activation="relu",
                                                                 name="conv_b"),
            layers.GlobalAveragePooling2D(name="gap"), layers.Dense(3, activation="softmax", name="predictions")]


def _assert_view_matches(model, x):
    view, _ = logits_view(model)
    logits = view.predict_on_batch(x)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, model.predict_on_batch(x), atol=1e-5)


def test_sequential_model_is_wrapped_and_saved_one_loads(tmp_path, noise_images):
    import keras

    seq = keras.Sequential([keras.Input((32, 32, 1)), *_small_convnet_layers(keras)], name="seq")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    _assert_view_matches(seq, x)
    images = noise_images
    maps = heatmaps(seq, images, cam_layer="conv_b")
    assert all(m.shape == im.shape[:2] and np.isfinite(m).all() for im, m in zip(images, maps, strict=True))
    for a, b in zip(maps, gradcam_tape(seq, images, cam_layer="conv_b"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert isinstance(seq, keras.Sequential) and len(seq.layers) == 6   # untouched

    seq.save(tmp_path / "seq.keras")
    loaded = keras.saving.load_model(tmp_path / "seq.keras", compile=False)
    for a, b in zip(maps, heatmaps(loaded, images, cam_layer="conv_b"), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_nested_model_is_flattened(tmp_path, noise_images):
    import keras
    from keras import layers

    convs = _small_convnet_layers(keras)[:4]
    inner_in = keras.Input((32, 32, 3))
    x = inner_in
    for layer in convs:
        x = layer(x)
    base = keras.Model(inner_in, x, name="base")
    outer_in = keras.Input((32, 32, 3), name="image")
    y = layers.Dense(2, activation="softmax", name="predictions")(layers.GlobalAveragePooling2D(name="gap")(base(outer_in)))
    nested = keras.Model(outer_in, y, name="nested")
    batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    _assert_view_matches(nested, batch)
    images = noise_images
    for method in METHODS:
        maps = heatmaps(nested, images, method=method, cam_layer="conv_b")
        assert all(m.shape == im.shape[:2] and np.isfinite(m).all() for im, m in zip(images, maps, strict=True))
    nested.save(tmp_path / "nested.keras")
    loaded = keras.saving.load_model(tmp_path / "nested.keras", compile=False)
    np.testing.assert_allclose(heatmaps(loaded, images[:1], cam_layer="conv_b")[0],
                               heatmaps(nested, images[:1], cam_layer="conv_b")[0], atol=1e-5)


def test_models_without_a_heat_map_get_a_plain_message():
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 1))
    dense_only = keras.Model(inputs, layers.Dense(2, activation="softmax", name="predictions")(
        layers.Flatten()(inputs)))
    with pytest.raises(ModelError, match="no convolutional layer"):
        heatmaps(dense_only, [np.zeros((16, 16), np.uint8)])

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.conv = layers.Conv2D(4, 3)
            self.head = layers.Dense(2, activation="softmax")

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    sub = Subclassed()
    sub(np.zeros((1, 16, 16, 1), np.float32))
    with pytest.raises(ModelError, match="subclassed"):
        heatmaps(sub, [np.zeros((16, 16), np.uint8)])
    with pytest.raises(ValueError, match="Unknown method"):
        heatmaps(dense_only, [np.zeros((16, 16), np.uint8)], method="lime")
    with pytest.raises(ValueError, match="Unknown engine"):
        heatmaps(dense_only, [np.zeros((16, 16), np.uint8)], engine="numpy")
