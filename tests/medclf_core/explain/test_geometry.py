"""medclf_core.explain.geometry: CAM cells sit on their receptive-field centres; maps are scaled to [0, 1]."""

from __future__ import annotations

import numpy as np

from medclf_core.explain.geometry import cam_geometry, to_image_heatmap
from medclf_core.explain.views import logits_view
from medclf_core.models.architectures import build_model


def test_cam_geometry_places_the_grid_on_receptive_field_centres():
    simple = build_model("simple_cnn", 2, 48, 1)
    assert cam_geometry(*logits_view(simple)) == ((4.0, 4.0), (8.5, 8.5))   # unpadded: grid shifted inwards
    resnet = build_model("resnet50", 2, 64, 3, weights=None)
    assert cam_geometry(*logits_view(resnet)) == ((32.0, 32.0), (0.0, 0.0))


def test_a_cell_lands_on_its_receptive_field_centre_not_where_a_stretch_puts_it():
    """One hot cell of a 4 x 4 grid with stride 4 and offset 8.5 on a 48 px input (simple_cnn's conv3)."""
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0
    image = np.eye(48, dtype=np.uint8)
    placed = to_image_heatmap(cam, image, ((4.0, 4.0), (8.5, 8.5)), 48)
    stretched = to_image_heatmap(cam, image)
    assert placed.shape == stretched.shape == (48, 48) and placed.max() == 1.0
    assert np.unravel_index(np.argmax(placed), placed.shape) in {(8, 8), (9, 9), (8, 9), (9, 8)}
    assert np.unravel_index(np.argmax(stretched), stretched.shape)[0] < 6


def test_a_constant_image_or_an_empty_cam_gives_an_all_zero_map():
    assert not to_image_heatmap(np.ones((4, 4)), np.full((20, 30), 7, np.uint8)).any()
    heat = to_image_heatmap(np.full((4, 4), -1.0), np.eye(20, dtype=np.uint8))
    assert heat.dtype == np.float32 and not heat.any()
