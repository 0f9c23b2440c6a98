"""Burned-in marks, the body and inpainting (medclf_core.data.marks) on drawn films.

Each film is synthetic (``helpers.drawn_film``): dark air, a brighter "body" with darker "lungs" inside, and marks
drawn with OpenCV's text and line functions, so where each mark is, is known exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import drawn_film

from medclf_core.data.marks import body_mask, burned_in_marks, inpaint_marks


def test_a_drawn_R_marker_in_the_air_is_found():
    img = drawn_film()
    cv2.putText(img, "R", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 250, 2)
    marks = burned_in_marks(img)
    letter = np.zeros_like(marks)
    letter[10:44, 6:32] = True
    assert marks[letter].sum() >= 40          # the letter's strokes
    assert not marks[~cv2.dilate(letter.astype(np.uint8), np.ones((9, 9))).astype(bool)].any()


def test_a_text_line_near_a_corner_is_found_even_on_the_body():
    img = drawn_film()
    img[200:256, 150:256] = 130               # the body reaches the bottom-right corner
    cv2.putText(img, "KV59 mA320", (150, 246), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1)
    marks = burned_in_marks(img)
    text = np.zeros_like(marks)
    text[232:252, 148:256] = True
    assert marks[text].sum() >= 60
    assert not marks[:200].any()


def test_a_bright_blob_in_the_middle_of_the_body_is_not_a_mark():
    img = drawn_film()
    cv2.circle(img, (128, 150), 6, 255, -1)
    cv2.putText(img, "L", (110, 140), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)
    assert not burned_in_marks(img).any()


def test_a_thin_line_along_the_edge_is_found():
    img = drawn_film()
    img[20:236, 252:254] = 255
    marks = burned_in_marks(img)
    assert marks[20:236, 252:254].mean() > 0.9


def test_body_mask_holds_the_body_and_its_lungs_but_not_the_air_or_a_mark():
    img = drawn_film()
    cv2.putText(img, "R", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 250, 2)
    body = body_mask(img)
    assert body[128, 128 - 256 // 7] and body[150, 128]      # a lung (darker, enclosed) and the middle
    assert not body[5:45, 5:35].any() and not body[0:8, 0:8].any()
    inside = np.zeros((256, 256), np.uint8)
    cv2.ellipse(inside, (128, 153), (87, 115), 0, 0, 360, 1, -1)
    assert abs(body.mean() - inside.mean()) < 0.03


def test_inpainting_removes_the_mark_and_keeps_the_rest():
    img = drawn_film()
    clean = img.copy()
    cv2.putText(img, "R", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 250, 2)
    marks = burned_in_marks(img)
    out = inpaint_marks(img, marks)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert img[10:44, 6:32].max() == 250 and out[10:44, 6:32].max() < 60
    assert np.array_equal(out[~marks], img[~marks])
    assert np.abs(out.astype(int) - clean.astype(int))[marks].mean() < 15
    rgb = inpaint_marks(np.repeat(img[..., None], 3, axis=2), marks)
    assert rgb.shape == (256, 256, 3) and rgb[10:44, 6:32].max() < 60


def test_bad_input_gets_a_clear_message():
    with pytest.raises(ValueError, match="grayscale or RGB"):
        burned_in_marks(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="size"):
        inpaint_marks(np.zeros((10, 10), np.uint8), np.zeros((5, 5), bool))


def test_a_float_image_is_read_by_its_range_like_its_uint8_twin():
    img = drawn_film()
    cv2.putText(img, "R", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    img[0, 0] = 0
    scaled = img.astype(np.float32) * 4.0                      # range 0..1020, scaled back to 0..255
    assert burned_in_marks(img).any()
    assert np.array_equal(burned_in_marks(scaled), burned_in_marks(img))
    assert np.array_equal(inpaint_marks(scaled, burned_in_marks(img)), inpaint_marks(img, burned_in_marks(img)))
