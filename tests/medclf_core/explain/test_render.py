"""medclf_core.explain.render: the overlay blends a map on the picture; a compact map draws the same."""

from __future__ import annotations

import numpy as np

from medclf_core.explain.render import compact_map, overlay, save_png


def test_overlay_blends():
    img = np.full((10, 12), 100, np.uint8)
    hm = np.zeros((10, 12), np.float32)
    hm[5, 6] = 1.0
    out = overlay(img, hm, opacity=0.0)
    assert out.shape == (10, 12, 3) and (out == 100).all()
    assert not np.array_equal(overlay(img, hm, opacity=0.5), out)
    full = overlay(np.zeros((10, 12, 3), np.uint8), hm, opacity=1.0)
    assert tuple(full[5, 6]) != tuple(full[0, 0])       # peak and background get different colours


def test_a_compact_map_is_small_and_looks_the_same_when_drawn():
    yy, xx = np.mgrid[0:2048, 0:1536]
    heat = np.exp(-(((yy - 700) / 300.0) ** 2 + ((xx - 900) / 250.0) ** 2)).astype(np.float32)  # a smooth CAM
    small = compact_map(heat)
    assert small.shape == (512, 384) and small.dtype == np.float32
    assert small.nbytes * 16 == heat.nbytes
    assert 0.0 <= small.min() and small.max() <= 1.0 and abs(float(small.max()) - 1.0) < 0.01
    pixels = np.full((2048, 1536), 128, np.uint8)
    drawn, full = overlay(pixels, small, 0.5).astype(int), overlay(pixels, heat, 0.5).astype(int)
    assert drawn.shape == full.shape and np.abs(drawn - full).max() <= 3
    tiny = np.zeros((7, 7), np.float32)
    assert compact_map(tiny) is not None and compact_map(tiny).shape == (7, 7)


def test_save_png_writes_rgb_in_the_right_channel_order(tmp_path):
    import cv2

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255                                   # pure red
    save_png(tmp_path / "red.png", rgb)
    back = cv2.imread(str(tmp_path / "red.png"))        # OpenCV reads BGR
    assert back.shape == (4, 5, 3) and (back[..., 2] == 255).all() and not back[..., :2].any()
