"""Map mass and the shortcut warning (medclf_core.explain.shortcuts) on drawn films (``helpers.drawn_film``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import drawn_film

from medclf_core.explain.shortcuts import map_mass, shortcut_warning


def test_map_mass_is_the_exact_share_of_the_positive_mass():
    heat = np.array([[1, 3, 0], [0, 4, -2]], np.float32)
    mask = np.array([[True, False, False], [False, True, True]])
    assert map_mass(heat, mask) == pytest.approx(5 / 8)       # negatives count as 0
    assert map_mass(heat, ~mask) == pytest.approx(3 / 8)
    assert map_mass(heat, np.ones_like(mask)) == pytest.approx(1.0)
    assert np.isnan(map_mass(np.zeros((2, 3)), mask))


def test_map_mass_resizes_a_coarse_map_to_the_mask():
    heat = np.zeros((4, 4), np.float32)
    heat[:, :2] = 1.0                                          # left half only
    left = np.zeros((64, 64), bool)
    left[:, :32] = True
    assert map_mass(heat, left) > 0.9
    with pytest.raises(ValueError, match="2-D"):
        map_mass(np.zeros((4, 4, 3)), left)


def test_shortcut_warning_names_what_the_map_lights_up():
    img = drawn_film()
    cv2.putText(img, "R", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 250, 2)
    on_lungs = np.zeros((256, 256), np.float32)
    on_lungs[100:200, 80:180] = 1.0
    assert shortcut_warning(on_lungs, img) is None
    in_air = np.zeros((256, 256), np.float32)
    in_air[0:60, 0:60] = 1.0
    assert "outside the body" in shortcut_warning(in_air, img)
    on_mark = np.zeros((256, 256), np.float32)
    on_mark[12:42, 8:30] = 1.0
    on_mark[100:130, 100:130] = 0.5
    warning = shortcut_warning(on_mark, img)
    assert warning is not None and "burned-in" in warning
    assert shortcut_warning(np.zeros((256, 256), np.float32), img) is None
