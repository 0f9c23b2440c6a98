"""medclf_core.explain.render: the overlay blends a map on the picture; a compact map draws the same."""

from __future__ import annotations

import numpy as np

from medclf_core.explain.render import colour_scale, compact_map, overlay, save_png


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


def test_the_colour_scale_is_the_overlays_colours_from_0_to_1():
    """The legend cannot disagree with the maps: the overlay of a 0..1 ramp at opacity 1 is the scale."""
    strip = colour_scale(64, 3)
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (3, 1))
    drawn = overlay(np.zeros((3, 64), np.uint8), ramp, opacity=1.0)
    assert strip.shape == (3, 64, 3) and strip.dtype == np.uint8
    assert np.abs(strip.astype(int) - drawn.astype(int)).max() <= 4  # 255 * linspace vs its uint8 rounding
    assert strip[0, 0].tolist() == [0, 0, 128] and strip[0, -1].tolist() == [128, 0, 0]  # JET: dark blue, dark red
