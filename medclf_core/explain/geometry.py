"""Where a CAM's grid cells sit on the image: receptive-field centres, and the map placed there.

Each CAM cell is placed on the image where its receptive field is centred
(:func:`cam_geometry`): unpadded convolutions shift the grid inwards, so a plain
resize would misplace the map by several pixels. :func:`to_image_heatmap` puts a
raw CAM on its image's grid and scales it to [0, 1].

Example::

    >>> import numpy as np
    >>> from medclf_core.models.architectures import build_model
    >>> cam_geometry(build_model("simple_cnn", 2, 48, 1), "conv3")
    ((4.0, 4.0), (8.5, 8.5))
    >>> to_image_heatmap(np.ones((4, 4)), np.eye(50, 60, dtype=np.uint8)).shape
    (50, 60)
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from medclf_core.models.graph import producer

log = logging.getLogger(__name__)


def _layer_geometry(op, in_shape, out_shape) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``((stride_y, stride_x), (offset_y, offset_x))`` with input centre = stride * output index + offset.

    Known for convolutions, poolings, zero padding and cropping; layers that keep the
    spatial size are identities; anything else returns None (geometry unknown).
    """
    import keras

    spatial_in, spatial_out = tuple(in_shape[1:3]), tuple(out_shape[1:3])
    if isinstance(op, keras.layers.ZeroPadding2D):
        (top, _), (left, _) = op.padding
        return (1.0, 1.0), (-float(top), -float(left))
    if isinstance(op, keras.layers.Cropping2D):
        (top, _), (left, _) = op.cropping
        return (1.0, 1.0), (float(top), float(left))
    kernel = getattr(op, "kernel_size", None) or getattr(op, "pool_size", None)
    strides = getattr(op, "strides", None)
    if kernel is not None and strides is not None and len(kernel) == 2 and None not in spatial_in:
        dilation = getattr(op, "dilation_rate", (1, 1))
        geometry = []
        for n, k, s, d in zip(spatial_in, kernel, strides, dilation):
            k_eff = d * (k - 1) + 1
            pad_before = max((-(-n // s) - 1) * s + k_eff - n, 0) // 2 if op.padding == "same" else 0
            geometry.append((float(s), (k_eff - 1) / 2.0 - pad_before))
        return (geometry[0][0], geometry[1][0]), (geometry[0][1], geometry[1][1])
    if spatial_in == spatial_out:
        return (1.0, 1.0), (0.0, 0.0)
    return None


def cam_geometry(view, layer: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Where the layer's grid cells sit on the model input: ``(stride, offset)`` per axis, or None.

    Walks back from the layer to the input along first inputs (branches of a residual
    block agree). Valid-padding networks (``simple_cnn``) have their grid shifted
    inwards by several pixels; a plain resize would misplace the map by that much.
    None (the map is then stretched over the image) when a layer on the way has no
    known geometry.

    Example: ``cam_geometry(simple_cnn_48px, "conv3")`` -> ``((4.0, 4.0), (8.5, 8.5))``.
    """
    import keras

    stride, offset = np.ones(2), np.zeros(2)  # input = stride * cam index + offset, composed
    tensor = view.get_layer(layer).output
    while True:
        found = producer(tensor)
        if found is None:
            log.warning("Keras kept no layer history for '%s' (KerasTensor._keras_history): heat maps are "
                        "stretched over the image instead of placed on receptive-field centres.", layer)
            return None
        op, parents = found
        if isinstance(op, keras.layers.InputLayer):
            return (float(stride[0]), float(stride[1])), (float(offset[0]), float(offset[1]))
        if not parents or len(parents[0].shape) != 4:
            return None
        geometry = _layer_geometry(op, parents[0].shape, tensor.shape)
        if geometry is None:
            return None
        s, c = np.asarray(geometry[0]), np.asarray(geometry[1])
        stride, offset = s * stride, s * offset + c
        tensor = parents[0]


def to_image_heatmap(cam: np.ndarray, image: np.ndarray, geometry=None, input_size: int | None = None) -> np.ndarray:
    """A raw CAM placed on the image's (H, W) grid and scaled to [0, 1] by its peak.

    With ``geometry`` (from :func:`cam_geometry`) and the model's ``input_size``, each
    CAM cell is put where its receptive field is centred; without, the CAM is simply
    stretched over the image. A constant image has nothing to localise: its map is all
    zeros (any structure would come from padding at the borders, not from the image).

    Example: ``to_image_heatmap(np.ones((4, 4)), np.zeros((50, 60), np.uint8)).shape`` -> (50, 60).
    """
    h, w = image.shape[:2]
    if np.ptp(image) == 0:
        return np.zeros((h, w), np.float32)
    return normalise(place_on_grid(cam, h, w, geometry, input_size))


def place_on_grid(cam: np.ndarray, h: int, w: int, geometry=None, input_size: int | None = None,
                  border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """A layer-resolution map placed on an (h, w) grid (see :func:`to_image_heatmap`), not scaled.

    ``border``: what lies outside the grid's reach: 0 (``BORDER_CONSTANT``, for a heat map)
    or the nearest cell (``BORDER_REPLICATE``, for a Score-CAM mask).
    """
    cam = np.nan_to_num(np.asarray(cam, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if geometry is None or not input_size:
        return cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    (stride_y, stride_x), (offset_y, offset_x) = geometry
    scale_y, scale_x = h / input_size, w / input_size  # model input pixel -> image pixel (centres)
    to_image = np.float32([[scale_x * stride_x, 0, scale_x * (offset_x + 0.5) - 0.5],
                           [0, scale_y * stride_y, scale_y * (offset_y + 0.5) - 0.5]])
    return cv2.warpAffine(cam, to_image, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0.0)


def normalise(cam: np.ndarray) -> np.ndarray:
    """ReLU then divide by the peak; an all-zero (or all-negative) map stays all zeros."""
    cam = np.maximum(np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0), 0)
    peak = cam.max() if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 1e-12 else np.zeros_like(cam, dtype=np.float32)
