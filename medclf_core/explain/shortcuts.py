"""Shortcuts a heat map can show: burned-in marks, the body, and how much of a map falls on either.

A model can learn a data set's shortcuts instead of its finding: on the Kermany chest films
the pneumonia films more often carry ECG leads, an "R" marker and burned-in corner text, and
Grad-CAM on the bundled chest model lights them up (issue 23 item 4). The marks and the patient's
body are found with plain OpenCV (no model) in :mod:`medclf_core.data.marks` (the data layer's training
augmentation inpaints them too, :mod:`medclf_core.data.erase`), so a benchmark
(``bench/shortcuts.py``) can ask how much P(class) moves when the marks are inpainted, and how
much of a map lies outside the body or on the marks.

- :func:`map_mass`: the share of a heat map's mass inside a mask;
- :func:`shortcut_masses`: a map's share outside the body and on the (widened) marks;
- :func:`shortcut_warning`: a sentence when most of a map lies outside the body or on marks.

The detector itself (:mod:`medclf_core.data.marks`): ``burned_in_marks`` (bright, high-contrast, small
connected components near the border or in the air), ``body_mask`` (the body against the air) and
``inpaint_marks`` (the marks painted over from their surroundings, ``cv2.inpaint``).

Example (a dark film with a body in the middle; the marks' own example is in :mod:`medclf_core.data.marks`)::

    >>> img = np.full((200, 200), 10, np.uint8)
    >>> img[30:190, 40:160] = 120                              # the body
    >>> heat = np.zeros((200, 200), np.float32); heat[0:100, :] = 1.0
    >>> abs(map_mass(heat, ~body_mask(img)) - 0.58) < 0.05    # the top half's 11600 px outside the body, of 20000
    True
    >>> shortcut_warning(heat, img) is None                   # 58% outside the body, more than half: a warning
    False
"""

from __future__ import annotations

import cv2
import numpy as np

from medclf_core.data.marks import body_mask, burned_in_marks, gray_levels
from medclf_core.formatting import percent

OUTSIDE_BODY = 0.5       # a map with more than this share of its mass outside the body: a warning
ON_MARKS = 0.25          # a map with more than this share of its mass on (widened) marks: a warning
MARK_MARGIN = 0.03       # marks widened by this share of the shorter side for the warning (a CAM is coarse)


def map_mass(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share (0 to 1) of a heat map's total mass that lies inside ``mask``.

    Negative values count as 0. A map of another size is resized to the mask's (bilinear), as
    a CAM is drawn on its image. A map with no mass gives NaN (no share to speak of).

    >>> heat = np.array([[1, 3], [0, 4]], np.float32)
    >>> map_mass(heat, np.array([[True, False], [False, True]]))
    0.625
    """
    mask = np.asarray(mask, bool)
    heat = np.asarray(heatmap, np.float32)
    if heat.ndim != 2 or mask.ndim != 2:
        raise ValueError(f"map_mass wants a 2-D map and a 2-D mask, not {heat.shape} and {mask.shape}.")
    if heat.shape != mask.shape:
        heat = cv2.resize(heat, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = np.maximum(heat, 0.0).astype(np.float64)
    total = heat.sum()
    return float(heat[mask].sum() / total) if total > 0 else float("nan")


def shortcut_masses(heatmap: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
    """``{"outside_body": share, "on_marks": share}`` of a heat map's mass on its image ``pixels``.

    ``on_marks`` counts the marks widened by ``MARK_MARGIN`` of the image's shorter side: a
    Grad-CAM is a coarse grid (7 x 7 at 224 px) smoothly upsampled, so its mass on a thin
    letter's strokes alone is small even when the map is centred on the letter.
    """
    gray = gray_levels(pixels)
    marks = burned_in_marks(gray)
    if marks.any():
        k = max(3, int(round(MARK_MARGIN * min(gray.shape))) * 2 + 1)
        marks = cv2.dilate(marks.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    return {"outside_body": map_mass(heatmap, ~body_mask(gray)), "on_marks": map_mass(heatmap, marks)}


def shortcut_warning(heatmap: np.ndarray, pixels: np.ndarray) -> str | None:
    """A sentence for the reader when a heat map may show a shortcut, else None.

    It warns when more than ``OUTSIDE_BODY`` of the map's mass lies outside the body
    (:func:`body_mask`) or more than ``ON_MARKS`` on burned-in text, markers or lines
    (:func:`burned_in_marks`, widened as in :func:`shortcut_masses`). A map with no mass: None.

    >>> img = np.full((120, 120), 10, np.uint8); img[20:120, 30:90] = 120
    >>> heat = np.zeros((120, 120), np.float32); heat[:, 95:] = 1.0
    >>> shortcut_warning(heat, img)
    'The heat map may show a shortcut, not the finding: 100.0% of its mass lies outside the body.'
    """
    shares = shortcut_masses(heatmap, pixels)
    parts = []
    if shares["outside_body"] > OUTSIDE_BODY:
        parts.append(f"{percent(shares['outside_body'])} of its mass lies outside the body")
    if shares["on_marks"] > ON_MARKS:
        parts.append(f"{percent(shares['on_marks'])} lies on burned-in text, markers or lines")
    if not parts:
        return None
    return "The heat map may show a shortcut, not the finding: " + " and ".join(parts) + "."
