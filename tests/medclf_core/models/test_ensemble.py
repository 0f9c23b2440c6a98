"""medclf_core.models.ensemble: seed ensembles merged into one flat model (logits averaged, Grad-CAM summed)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import LARGER_LITE, TINY

from medclf_core.explain import cams, views
from medclf_core.models.architectures import ARCHITECTURES, build_model
from medclf_core.models.ensemble import count_members, member_layer_names, merge_members, split_member

SMALL = {"simple_cnn": {}, "bn_cnn": {"filters": (4, 8), "dense_units": 8}, "resnet50": {"weights": None},
         "efficientnet_lite0": {"weights": None}}


def _members(arch: str, n: int, classes: int = 3):
    import keras

    models = []
    for seed in range(n):
        keras.utils.set_random_seed(seed)
        models.append(build_model(arch, classes, TINY, 1, **SMALL[arch]))
    return models


def _logits(model, x):
    import keras

    head = model.get_layer("predictions")
    features = np.asarray(keras.Model(model.inputs[0], head.input)(x))
    return features @ np.asarray(head.kernel) + np.asarray(head.bias)


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a not in LARGER_LITE])
def test_merged_model_is_flat_and_averages_the_members_logits(arch, tmp_path):
    import keras

    members = _members(arch, 2)
    before = [m.get_weights() for m in members]
    merged = merge_members(members)
    assert views.is_flat_functional(merged)
    x = np.random.default_rng(0).uniform(0, 255, (4, TINY, TINY, 1)).astype("float32")
    mean_logit = np.mean([_logits(m, x) for m in members], axis=0)
    expected = np.exp(mean_logit - mean_logit.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(merged(x)), expected, atol=1e-5)
    # the members are untouched, the merged model survives a save/load round trip
    for m, w in zip(members, before, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), w, strict=True))
    merged.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "m.keras")(x)), expected, atol=1e-5)
    names = {layer.name for layer in merged.layers}
    assert set(member_layer_names(views.find_cam_layer(members[0], ARCHITECTURES[arch].cam_layer), 2)) <= names


@pytest.mark.parametrize("arch", ["simple_cnn", "bn_cnn"])
def test_a_member_comes_back_out_unchanged(arch):
    members = _members(arch, 3)
    merged = merge_members(members)
    assert count_members(merged) == 3 and count_members(members[0]) == 1
    x = np.random.default_rng(2).uniform(0, 255, (3, TINY, TINY, 1)).astype("float32")
    for k, member in enumerate(members, 1):
        back = split_member(merged, k, name=arch)
        assert [la.name for la in back.layers] == [la.name for la in member.layers] and back.name == arch
        # fresh heads have zero biases, so the member's own bias (not kept) equals the merged mean bias
        np.testing.assert_allclose(np.asarray(back(x)), np.asarray(member(x)), atol=1e-5)
    with pytest.raises(ValueError, match="member 4 does not exist"):
        split_member(merged, 4)
    with pytest.raises(ValueError):
        split_member(members[0], 1)


def test_members_must_agree():
    with pytest.raises(ValueError, match="input shape"):
        merge_members([build_model("simple_cnn", 2, TINY, 1), build_model("simple_cnn", 3, TINY, 1)])
    with pytest.raises(ValueError, match="at least one"):
        merge_members([])


def test_ensemble_gradcam_is_the_mean_of_the_members_maps():
    """Grad-CAM of the mean logit on every member's layer = the members' own Grad-CAMs, averaged."""
    members = _members("bn_cnn", 3)
    merged = merge_members(members)
    layers = member_layer_names("block2_relu", 3)  # the last block of a two-block bn_cnn
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, TINY, TINY, 1)).astype("float32")
    view, found = views.cam_view(merged, layers)
    assert found == layers
    ensemble = cams._raw_cams(view, found, x, "gradcam", np.array([1, 2]), 0)
    own = []
    for member in members:
        member_view, member_layers = views.cam_view(member, "block2_relu")
        own.append(cams._raw_cams(member_view, member_layers, x, "gradcam", np.array([1, 2]), 0))
    np.testing.assert_allclose(ensemble, np.mean(own, axis=0), rtol=1e-3, atol=1e-6)
    # the compiled path and the plain GradientTape reference agree on the summed map
    images = [im[..., 0].astype(np.uint8) for im in x]
    fast = cams.heatmaps(merged, images, cam_layer=layers, class_index=1)
    reference = cams.gradcam_tape(merged, images, cam_layer=layers, class_index=1)
    for a, b in zip(fast, reference, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # one member's layer alone gives a different map
    single = cams.heatmaps(merged, images, cam_layer=layers[0], class_index=1)
    assert not np.allclose(single[0], fast[0], atol=1e-3)
