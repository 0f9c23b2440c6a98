"""The geometric augmentation as one resampling (medclf_core.data.augment): rotation, shift, zoom and shear draw
their parameters as the four Keras layers do (same seeds, same ranges) and the composed map is applied once.

These tests compare it with the four layers run one after the other: the same random draws, the same pixels up
to the extra blurs of the four interpolations, away from the frame's edges; one resampling instead of four."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.data.augment import AugmentConfig, _geometric_layers, build_augmenter


def smooth_batch(n: int = 6, size: int = 96) -> np.ndarray:
    """A smooth pattern (bilinear interpolation of it is nearly exact), so one and four resamplings agree."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = 127 + 60 * np.sin(xx / 9.0) * np.cos(yy / 11.0) + 40 * np.sin((xx + yy) / 15.0)
    return np.repeat(img[None, :, :, None], n, axis=0).astype(np.float32)


def four_layers(cfg: AugmentConfig, seed: int, batch: np.ndarray) -> np.ndarray:
    """The geometric layers of ``cfg`` one after the other, each interpolating (the augmentation before fusion)."""
    x = batch
    for layer in _geometric_layers(cfg, seed):
        x = layer(x, training=True)
    return np.asarray(x)


@pytest.mark.parametrize("preset", ["default", "chest_xray", "brain_mri"])
def test_one_resampling_gives_the_four_layers_transform(preset):
    from scipy.ndimage import binary_erosion

    cfg = AugmentConfig(**{**AugmentConfig.preset(preset).to_dict(), "horizontal_flip": False,
                           "erase_marks": 0.0, "erase_border": 0.0})
    batch = smooth_batch()
    fused, chained = np.asarray(build_augmenter(cfg, 11)(batch)), four_layers(cfg, 11, batch)
    assert np.abs(fused - batch).mean() > 5.0                     # it moved the pixels
    inside = (fused > 0) & (chained > 0)                          # both inside the frame (the fill is 0) ...
    core = np.stack([binary_erosion(m[..., 0], iterations=3) for m in inside])[..., None]  # ... away from its edge
    assert core.mean() > 0.5
    diff = np.abs(fused - chained)[core]
    assert diff.max() < 3.0 and diff.mean() < 0.3, (diff.max(), diff.mean())
    # the four layers lose what one step moved out of the frame and the next moved back; one resampling keeps it
    assert (chained == 0).mean() >= (fused == 0).mean() - 0.01


def test_another_seed_draws_another_transform():
    cfg = AugmentConfig.preset("brain_mri")
    batch = smooth_batch(2)
    a, b = (np.asarray(build_augmenter(cfg, s)(batch)) for s in (1, 2))
    assert np.abs(a - b).mean() > 1.0


def test_each_geometric_switch_is_respected():
    """A config with only one transform on moves the pixels only that way: a pure shift keeps the values."""
    cfg = AugmentConfig(rotation=0.0, shift=0.2, zoom=0.0, shear=0.0, horizontal_flip=False)
    assert [type(layer).__name__ for layer in _geometric_layers(cfg, 0)] == ["RandomTranslation"]
    assert _geometric_layers(AugmentConfig.preset("none"), 0) == []
    assert build_augmenter(AugmentConfig.preset("none"), 0) is None


def test_the_batch_is_resampled_once(monkeypatch):
    """One ``affine_transform`` call for the four transforms (the point of the fusion: a quarter of the work)."""
    import keras

    calls = []
    original = keras.ops.image.affine_transform

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops.image, "affine_transform", counting)
    cfg = AugmentConfig(**{**AugmentConfig.preset("default").to_dict(), "horizontal_flip": False})
    build_augmenter(cfg, 0)(smooth_batch(2))
    assert len(calls) == 1


@pytest.mark.parametrize("preset", ["chest_xray", "brain_mri"])
def test_reseeding_gives_the_draws_of_a_new_augmenter(preset):
    """``reseed(s)`` puts every random step (eraser, flip, the geometric layers) back where
    ``build_augmenter(cfg, s)`` starts, batch after batch: the traced augmenter is reused, not rebuilt."""
    cfg = AugmentConfig.preset(preset)
    batch = smooth_batch(4)
    batch[:, :8] = 5.0   # some air along the top for the eraser's border boxes
    reused = build_augmenter(cfg, 1)
    reused(batch)
    reused.reseed(8)
    fresh = build_augmenter(cfg, 8)
    for _ in range(2):
        np.testing.assert_array_equal(np.asarray(reused(batch)), np.asarray(fresh(batch)))
