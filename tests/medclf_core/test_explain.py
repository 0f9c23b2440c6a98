"""medclf_core.explain: heat maps are well-formed; overlays blend."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.explain import heatmaps, overlay
from medclf_core.images import load_image
from medclf_core.registry import load_run


@pytest.fixture(scope="module")
def model_and_card(trained_run):
    return load_run(trained_run)


def test_heatmaps_at_input_size_in_unit_range(model_and_card, sample_images):
    model, card = model_and_card
    imgs = [load_image(p).pixels for p in sample_images[:3]]
    maps = heatmaps(model, imgs, cam_layer=card["cam_layer"])
    for im, m in zip(imgs, maps, strict=True):
        assert m.shape == im.shape[:2] and m.dtype == np.float32
        assert np.isfinite(m).all() and 0.0 <= m.min() and m.max() <= 1.0


def test_constant_image_gives_flat_map(model_and_card):
    model, card = model_and_card
    (m,) = heatmaps(model, [np.zeros((50, 60), np.uint8)], cam_layer=card["cam_layer"])
    assert np.isfinite(m).all() and m.shape == (50, 60)


def test_overlay_blends():
    img = np.full((10, 12), 100, np.uint8)
    hm = np.zeros((10, 12), np.float32)
    hm[5, 6] = 1.0
    out = overlay(img, hm, opacity=0.0)
    assert out.shape == (10, 12, 3) and (out == 100).all()
    assert not np.array_equal(overlay(img, hm, opacity=0.5), out)
