"""Drawing heat maps: the colour overlay, the PNG file, and the map kept at display size.

:func:`overlay` blends a map on the original with an OpenCV colour map;
:func:`compact_map` shrinks a map to what a screen shows, so a session can keep many;
:func:`colour_scale` is the legend of :func:`overlay`'s colours; :func:`fit_for_display` is the copy of an
image a screen needs (a 2048 px film costs ~0.25 s to blend and send at full size, ~10 ms at display size).

Example::

    >>> heat = np.zeros((48, 64), np.float32); heat[20:30, 30:40] = 1.0
    >>> overlay(np.full((48, 64), 90, np.uint8), heat, opacity=0.4).shape
    (48, 64, 3)
    >>> compact_map(np.ones((2048, 1024), np.float32)).shape
    (512, 256)
    >>> colour_scale(256, 12).shape
    (12, 256, 3)
"""

from __future__ import annotations

import cv2
import numpy as np

MAP_SIDE = 512  # px on the longer side of a map kept for display (compact_map)
DISPLAY_SIDE = 1024  # px on the longer side of an image sent to a browser (fit_for_display): a half-page column
#                      is ~730 CSS px wide; Streamlit itself caps images at 1460 px
OVERLAY_OPACITY = 0.45  # the heat map's default weight over the image: the Predict page, the CLI and the PDF alike


def overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = OVERLAY_OPACITY,
            colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """RGB uint8 image: the heat map in colour blended over the (grayscale or RGB) original.

    ``opacity`` 0 shows the original only, 1 the colour map only.

    Example: ``overlay(xray, maps[0], opacity=0.4).shape`` -> (H, W, 3).
    """
    base = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    base = base[..., :3].astype(np.uint8)
    if base.shape[2] == 1:
        base = np.repeat(base, 3, axis=2)
    if heatmap.shape != base.shape[:2]:
        heatmap = cv2.resize(heatmap, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), colormap), cv2.COLOR_BGR2RGB)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(colour, opacity, base, 1.0 - opacity, 0.0)


def fit_for_display(image: np.ndarray, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """``image`` (H, W[, C]) shrunk with area averaging so that its longer side is at most ``max_side`` px
    (each side at least 1 px), or itself when it already fits. For the screen only: models, heat maps and
    files written to a PACS or a report keep the full image.

    >>> fit_for_display(np.zeros((2048, 1536), np.uint8)).shape
    (1024, 768)
    >>> fit_for_display(np.zeros((4000, 3, 3), np.uint8)).shape  # an extreme aspect keeps one pixel
    (1024, 1, 3)
    >>> small = np.zeros((300, 200), np.uint8); fit_for_display(small) is small
    True
    """
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return shrunk[..., None] if image.ndim == 3 and shrunk.ndim == 2 else shrunk


def colour_scale(width: int = 512, height: int = 16, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """RGB uint8 strip ``(height, width, 3)``: :func:`overlay`'s colours for map values 0 (left) to 1 (right),
    from the same OpenCV colour map, so a legend drawn with it cannot disagree with the overlays.

    >>> strip = colour_scale(64, 4)
    >>> bool(strip[0, 0, 2] > strip[0, 0, 0]), bool(strip[0, -1, 0] > strip[0, -1, 2])  # blue low, red high
    (True, True)
    """
    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)


def save_png(path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (OpenCV wants BGR)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")


def compact_map(heatmap: np.ndarray, max_side: int = MAP_SIDE) -> np.ndarray:
    """A heat map kept for display at most ``max_side`` px on its longer side (float32, aspect kept).

    A heat map is computed at its image's size: 16 MB for a 2048 px X-ray, although a CAM is a
    7 x 7 (Grad-CAM at 224 px) grid smoothly upsampled. A session keeps its maps (one per image,
    method and class), so they are kept at 512 px (1 MB)
    (:meth:`~medclf_core.inference.predictor.Predictor.explain` with ``compact``) and
    :func:`overlay` upsamples them to the picture when drawn.

    >>> compact_map(np.ones((2048, 1024), np.float32)).shape
    (512, 256)
    >>> compact_map(np.ones((30, 40), np.float32)).shape
    (30, 40)
    """
    return fit_for_display(np.asarray(heatmap, dtype=np.float32), max_side)
