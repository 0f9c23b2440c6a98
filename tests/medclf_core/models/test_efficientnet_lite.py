"""EfficientNet-Lite0/1/2: the converted ImageNet weights classify photos, each variant's layers fit its own file
and no other, and the registry's models are those trunks."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.models import efficientnet_lite
from medclf_core.models.architectures import build_model, get_architecture
from medclf_core.models.efficientnet_lite import (LITE_VARIANTS, LITE_WEIGHTS_ENV, efficientnet_lite_imagenet,
                                                  lite_block_count, lite_weights_path, load_lite_weights, weights_env)

VARIANTS = list(LITE_VARIANTS)


def _imagenet_input(image, size):
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype("float32")[None]


@pytest.fixture(scope="module", params=VARIANTS)
def imagenet_model(request):
    """(variant, the whole ImageNet classifier at its native size): built once per variant for this module."""
    return request.param, efficientnet_lite_imagenet(request.param)


def test_lite_conversion_classifies_natural_photos(imagenet_model):
    """The converted weights are the ImageNet model, not just the right shapes: a cat is a cat, a coffee a coffee.

    skimage's photos: ``chelsea`` (a tabby; ImageNet's cats are 281-285) and ``coffee`` (espresso 967, cup 968).
    """
    from skimage import data

    variant, model = imagenet_model
    size = LITE_VARIANTS[variant].image_size
    x = np.concatenate([_imagenet_input(data.chelsea(), size), _imagenet_input(data.coffee(), size)])
    probs = model.predict(x, verbose=0)
    for p, classes in zip(probs, (set(range(281, 286)), {967, 968}), strict=True):
        assert int(np.argmax(p)) in classes, f"{variant}: top 5 {np.argsort(p)[::-1][:5]} vs {sorted(classes)}"
        assert p.max() > 0.5  # confident, as the real network is on these photos


def test_lite_pretrained_features_match_the_imagenet_trunk(imagenet_model):
    """The registry's pretrained model is the same trunk, frozen, with a fresh head on ``gap``, at its native size."""
    import keras
    from skimage import data

    variant, reference = imagenet_model
    arch = f"efficientnet_{variant}"
    spec = get_architecture(arch)
    size = spec.defaults["image_size"]
    assert size == LITE_VARIANTS[variant].image_size
    model = build_model(arch, 2, size, 3)
    assert model.pretrained and spec.is_pretrained and variant in spec.pretrained
    assert not [layer.name for layer in model.layers if layer.trainable and layer.weights
                and layer.name not in ("predictions", "head_dense")]
    x = _imagenet_input(data.chelsea(), size)
    ours = keras.Model(model.inputs, model.get_layer("gap").output).predict(x, verbose=0)
    ref = keras.Model(reference.inputs, reference.get_layer("gap").output).predict(x, verbose=0)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert model.get_layer("top_relu").output.shape[1:] == (-(-size // 32), -(-size // 32), 1280)
    # fine-tuning unfreezes the top two blocks: the last block (320+ channels) and the one before it
    assert spec.fine_tune_from == f"block{lite_block_count(variant) - 2}_expand_conv"


def test_lite_variants_scale_depth_and_width_not_stem_and_head():
    """Lite1 is deeper than Lite0, Lite2 deeper and wider; all keep the 32-filter stem and the 1280-filter head.
    The registry's descriptions state each trunk's parameter count (README's too): the count of the model built."""
    import keras

    shapes = {}
    for variant in VARIANTS:
        model = build_model(f"efficientnet_{variant}", 2, 32, 3, weights=None)
        shapes[variant] = (lite_block_count(variant), model.get_layer("stem_conv").filters,
                           model.get_layer("top_conv").kernel.shape[-2:])
        trunk = keras.Model(model.inputs, model.get_layer("gap").output).count_params()
        description = get_architecture(f"efficientnet_{variant}").description
        assert f"{trunk / 1e6:.1f} M trunk parameters" in description, (variant, trunk, description)
    assert shapes["lite0"] == (16, 32, (320, 1280))
    assert shapes["lite1"] == (21, 32, (320, 1280))
    assert shapes["lite2"] == (21, 32, (352, 1280))


@pytest.mark.parametrize("model_variant, file_variant", [("lite0", "lite1"), ("lite2", "lite1")])
def test_another_variants_file_is_refused(model_variant, file_variant):
    """A weights file from the environment that is another variant's fails by name, never half-loaded."""
    model = build_model(f"efficientnet_{model_variant}", 2, 32, 3, weights=None)
    with pytest.raises(ModelError, match=f"not an EfficientNet-{model_variant.capitalize()} state dict"):
        load_lite_weights(model, lite_weights_path(file_variant), variant=model_variant)


def test_a_file_with_tensors_left_over_is_refused(monkeypatch):
    """Every tensor of the file must land somewhere: extra blocks mean a deeper variant's file."""
    state = dict(efficientnet_lite.read_legacy_state_dict(lite_weights_path("lite0")))
    state["_blocks.16._project_conv.weight"] = np.zeros((320, 1152, 1, 1), "float32")
    monkeypatch.setattr(efficientnet_lite, "read_legacy_state_dict", lambda path: state)
    model = build_model("efficientnet_lite0", 2, 32, 3, weights=None)
    with pytest.raises(ModelError, match="1 tensors .* no place for"):
        load_lite_weights(model, lite_weights_path("lite0"))


def test_lite0_grayscale_repeats_the_channel_inside_the_model():
    gray = build_model("efficientnet_lite0", 2, 64, 1)
    rgb = build_model("efficientnet_lite0", 2, 64, 3)
    rgb.get_layer("predictions").set_weights(gray.get_layer("predictions").get_weights())
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(gray.predict(x, verbose=0), rgb.predict(np.repeat(x, 3, axis=-1), verbose=0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lite_weights_file_from_the_environment(variant, tmp_path, monkeypatch):
    env, pinned = weights_env(variant), lite_weights_path("lite0")
    assert env == LITE_WEIGHTS_ENV if variant == "lite0" else env.endswith(f"{variant.upper()}_WEIGHTS")
    monkeypatch.setenv(env, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match=env):
        lite_weights_path(variant)
    monkeypatch.setenv(env, pinned)   # a local file (here: Lite0's) is taken as given; loading checks it fits
    assert lite_weights_path(variant) == pinned


def test_unknown_variant():
    with pytest.raises(ValueError, match="lite0, lite1, lite2"):
        lite_weights_path("lite9")
