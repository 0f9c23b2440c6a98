"""Shortcuts a heat map can show: burned-in marks, the body, and how much of a map falls on either.

A model can learn a data set's shortcuts instead of its finding: on the Kermany chest films
the pneumonia films more often carry ECG leads, an "R" marker and burned-in corner text, and
Grad-CAM on the bundled chest model lights them up (issue 23 item 4). This module finds those
marks and the patient's body with plain OpenCV (no model), so a benchmark
(``bench/shortcuts.py``) can ask how much P(class) moves when the marks are inpainted, and how
much of a map lies outside the body or on the marks.

- :func:`burned_in_marks`: bright, high-contrast, small connected components (letters, text,
  thin lines) near the image's border or in the air around the body;
- :func:`body_mask`: the patient's body against the air around it;
- :func:`map_mass`: the share of a heat map's mass inside a mask;
- :func:`inpaint_marks`: the marks painted over from their surroundings (``cv2.inpaint``);
- :func:`shortcut_warning`: a sentence when most of a map lies outside the body or on marks.

Example (a dark film with a body in the middle and a white "R" in the top-left corner)::

    >>> img = np.full((200, 200), 10, np.uint8)
    >>> img[30:190, 40:160] = 120                              # the body
    >>> _ = cv2.putText(img, "R", (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    >>> marks = burned_in_marks(img)
    >>> bool(marks[5:28, 4:24].any()), bool(marks[60:180, 60:140].any())
    (True, False)
    >>> body = body_mask(img)
    >>> bool(body[100, 100]), bool(body[10, 10])
    (True, False)
    >>> heat = np.zeros((200, 200), np.float32); heat[0:100, :] = 1.0
    >>> abs(map_mass(heat, ~body) - 0.58) < 0.05     # the top half's 11600 px outside the body, of 20000
    True
    >>> cleaned = inpaint_marks(img, marks)
    >>> int(cleaned[5:28, 4:24].max()) < 60
    True
"""

from __future__ import annotations

import cv2
import numpy as np

from medclf_core.formatting import percent
from medclf_core.io.pixels import to_uint8

TOPHAT_FRACTION = 0.06   # the top-hat's square side, as a share of the image's shorter side
MIN_TOPHAT = 60          # grey levels a mark stands above its neighbourhood (of 255)
MIN_TOPHAT_ON_BODY = 120  # ... and on the body, its highest top-hat at least this (text, not bone)
MIN_BRIGHT = 150         # grey level of a mark's pixels (burned-in text is near white)
MAX_AREA = 0.01          # a mark's share of the image area at most (a letter, a word, a thin line)
MAX_EXTENT = 0.15        # a mark's bounding box at most this share of the image's height and width ...
LINE_WIDTH = 0.02        # ... unless it is a line this thin (share of the shorter side) touching the border
BORDER = 0.18            # the band along the border, as a share of each side, where marks lie
OUTSIDE_BODY = 0.5       # a map with more than this share of its mass outside the body: a warning
ON_MARKS = 0.25          # a map with more than this share of its mass on (widened) marks: a warning
MARK_MARGIN = 0.03       # marks widened by this share of the shorter side for the warning (a CAM is coarse)


def _gray(pixels: np.ndarray) -> np.ndarray:
    """uint8 grey levels of a grayscale or RGB(A) image (other dtypes scaled by their range,
    :func:`~medclf_core.io.pixels.to_uint8`); a clear message on anything else."""
    arr = to_uint8(np.asarray(pixels))
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(arr[..., :3]),
                                                                 cv2.COLOR_RGB2GRAY)
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ValueError(f"Expected a grayscale or RGB image of at least 8 x 8 pixels, not shape {np.shape(pixels)}.")
    return arr


def burned_in_marks(pixels: np.ndarray) -> np.ndarray:
    """Boolean mask (H, W) of burned-in text, letter markers and thin lines on a radiograph.

    The rule (tuned on the Kermany chest films, 224 to 512 px; no model):

    1. white top-hat with a square of ``TOPHAT_FRACTION`` of the shorter side (at least 5 px):
       what is brighter than its neighbourhood and narrower than the square (strokes of
       letters, text, wires, thin lines);
    2. candidate pixels: top-hat >= ``MIN_TOPHAT`` and grey level >= ``MIN_BRIGHT``;
    3. 8-connected components, each widened by 1 px so a letter's strokes join, kept when
       its area is at most ``MAX_AREA`` of the image and its bounding box at most
       ``MAX_EXTENT`` of the height and width (a letter or a word), or when it is a line at most
       ``LINE_WIDTH`` thick that touches the image's edge;
    4. and when it lies near the border (its centre within ``BORDER`` of an edge) or in the air
       (fewer than half its pixels on :func:`body_mask`).

    Limits: a mark on dense bone away from the border is missed; bright, thin anatomy near the
    border (a clavicle's edge, a rib tip) and ECG leads on the shoulders can be found too.
    Each found component is widened by 2 px, which covers the JPEG halo around burned-in text.
    """
    gray = _gray(pixels)
    h, w = gray.shape
    side = max(5, int(round(min(h, w) * TOPHAT_FRACTION)) | 1)
    tophat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    candidate = ((tophat >= MIN_TOPHAT) & (gray >= MIN_BRIGHT)).astype(np.uint8)
    joined = cv2.dilate(candidate, np.ones((3, 3), np.uint8))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(joined, connectivity=8)
    body = body_mask(gray)
    flat = labels.ravel()
    on_body = np.bincount(flat, weights=body.ravel(), minlength=n) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    peak = np.zeros(n, np.int64)
    np.maximum.at(peak, flat, tophat.ravel().astype(np.int64))
    keep = np.zeros(n, bool)
    for i in range(1, n):
        keep[i] = _is_mark(stats[i], centroids[i], (h, w), float(on_body[i]), int(peak[i]))
    mask = keep[labels] & (candidate > 0) if n > 1 else np.zeros((h, w), bool)
    return cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) if mask.any() else mask


def _is_mark(stat: np.ndarray, centre: np.ndarray, shape: tuple[int, int], on_body: float, peak: int) -> bool:
    """Whether one connected component (its ``cv2`` stats row and centroid, its share of pixels on the body,
    its highest top-hat) is a burned-in mark."""
    h, w = shape
    x, y, bw, bh, area = (int(v) for v in stat)
    thin = min(bw, bh) <= max(2, LINE_WIDTH * min(h, w))
    at_edge = x <= 1 or y <= 1 or x + bw >= w - 1 or y + bh >= h - 1
    line = thin and at_edge and max(bw, bh) >= 0.1 * max(h, w)
    small = area <= MAX_AREA * h * w and bh <= MAX_EXTENT * h and bw <= MAX_EXTENT * w
    if not (small or line):
        return False
    cx, cy = float(centre[0]), float(centre[1])
    near_border = min(cx, w - cx) <= BORDER * w or min(cy, h - cy) <= BORDER * h
    return on_body < 0.5 or (near_border and peak >= MIN_TOPHAT_ON_BODY)


def body_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean mask (H, W) of the patient's body against the air (background) around it.

    The rule: blur (a 2% square), threshold at a third of the way from the air's grey level (1st
    percentile) to Otsu's threshold, open away thin bridges (text, wires), keep the connected
    components that hold at least a fifth of the largest one's area, fill their holes (the
    lungs, darker than soft tissue, are enclosed by the chest wall), and close small gaps.

    Limits: it assumes dark air around a brighter body, as on a radiograph; a film cropped
    tight to the chest (no air) gives the whole image, an inverted (MONOCHROME1-like) image
    gives the air; a lung field that reaches the image's edge through dark air is not filled.
    A burned-in mark that touches the body can be counted as body.
    """
    gray = _gray(pixels)
    h, w = gray.shape
    k = max(3, int(round(0.02 * min(h, w))) | 1)
    blur = cv2.blur(gray, (k, k))
    otsu, _ = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    air = float(np.percentile(blur, 1))
    level = air + (otsu - air) / 3.0
    fg = (blur > level).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros((h, w), bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= 0.2 * areas.max()
    body = keep[labels].astype(np.uint8)
    body = _fill_holes(body)
    return cv2.morphologyEx(body, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)).astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (uint8 0/1) with every background region that does not reach the border filled."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (padded | (1 - flood))[1:-1, 1:-1]


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


def inpaint_marks(pixels: np.ndarray, mask: np.ndarray, radius: int = 5) -> np.ndarray:
    """``pixels`` with the masked marks painted over from their surroundings (``cv2.inpaint``, Telea).

    Same shape as the input, uint8 (other dtypes are first scaled by their range,
    :func:`~medclf_core.io.pixels.to_uint8`); an empty mask returns a copy.
    """
    arr = to_uint8(np.asarray(pixels))
    mask = np.asarray(mask, bool)
    if mask.shape != arr.shape[:2]:
        raise ValueError(f"The mask {mask.shape} is not the image's size {arr.shape[:2]}.")
    if not mask.any():
        return arr.copy()
    if arr.ndim == 3 and arr.shape[2] == 4:
        out = arr.copy()
        out[..., :3] = cv2.inpaint(np.ascontiguousarray(arr[..., :3]), mask.astype(np.uint8), radius,
                                   cv2.INPAINT_TELEA)
        return out
    out = cv2.inpaint(np.ascontiguousarray(arr), mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return out.reshape(arr.shape)


def shortcut_masses(heatmap: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
    """``{"outside_body": share, "on_marks": share}`` of a heat map's mass on its image ``pixels``.

    ``on_marks`` counts the marks widened by ``MARK_MARGIN`` of the image's shorter side: a
    Grad-CAM is a coarse grid (7 x 7 at 224 px) smoothly upsampled, so its mass on a thin
    letter's strokes alone is small even when the map is centred on the letter.
    """
    gray = _gray(pixels)
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
