"""Burned-in marks and the body on a radiograph, found with plain OpenCV (no model).

Moved here from :mod:`medclf_core.explain.shortcuts` so that training-time
augmentation (:mod:`medclf_core.data.erase`) can inpaint the marks without importing a higher layer.

- :func:`burned_in_marks`: bright, high-contrast, small connected components (letters, text,
  thin lines) near the image's border or in the air around the body;
- :func:`body_mask`: the patient's body against the air around it;
- :func:`inpaint_marks`: the marks painted over from their surroundings (``cv2.inpaint``).

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
    >>> cleaned = inpaint_marks(img, marks)
    >>> int(cleaned[5:28, 4:24].max()) < 60
    True
"""

from __future__ import annotations

import cv2
import numpy as np

from medclf_core.io.pixels import to_uint8

TOPHAT_FRACTION = 0.06   # the top-hat's square side, as a share of the image's shorter side
MIN_TOPHAT = 60          # grey levels a mark stands above its neighbourhood (of 255)
MIN_TOPHAT_ON_BODY = 120  # ... and on the body, its highest top-hat at least this (text, not bone)
MIN_BRIGHT = 150         # grey level of a mark's pixels (burned-in text is near white)
MAX_AREA = 0.01          # a mark's share of the image area at most (a letter, a word, a thin line)
MAX_EXTENT = 0.15        # a mark's bounding box at most this share of the image's height and width ...
LINE_WIDTH = 0.02        # ... unless it is a line this thin (share of the shorter side) touching the border
BORDER = 0.18            # the band along the border, as a share of each side, where marks lie


def gray_levels(pixels: np.ndarray) -> np.ndarray:
    """uint8 grey levels of a grayscale or RGB(A) image (other dtypes scaled by their range,
    :func:`~medclf_core.io.pixels.to_uint8`); a clear message on anything else."""
    arr = to_uint8(np.asarray(pixels))
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(arr[..., :3]),
                                                                 cv2.COLOR_RGB2GRAY)
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ValueError(f"Expected a grayscale or RGB image of at least 8 x 8 pixels, not shape {np.shape(pixels)}.")
    return arr


def burned_in_marks(pixels: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
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
    ``body``: the image's :func:`body_mask` when the caller has it already (it is computed otherwise).
    """
    gray = gray_levels(pixels)
    h, w = gray.shape
    side = max(5, int(round(min(h, w) * TOPHAT_FRACTION)) | 1)
    tophat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    candidate = ((tophat >= MIN_TOPHAT) & (gray >= MIN_BRIGHT)).astype(np.uint8)
    joined = cv2.dilate(candidate, np.ones((3, 3), np.uint8))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(joined, connectivity=8)
    body = body_mask(gray) if body is None else np.asarray(body, bool)
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
    gray = gray_levels(pixels)
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
