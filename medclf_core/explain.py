"""Grad-CAM heat maps and overlays: where the model looked.

:func:`heatmaps` computes class-activation maps on the layer named in the model
card (``cam_layer``), for a batch of images of any size, and returns each map at
its image's size, scaled to [0, 1]. The class score is taken *before* the softmax
(the logit), as Grad-CAM prescribes: gradients of a saturated softmax vanish.
:func:`overlay` blends a map on the original image with an OpenCV colour map.

Example::

    >>> maps = heatmaps(model, [pixels], cam_layer="conv3")      # doctest: +SKIP
    >>> png = overlay(pixels, maps[0], opacity=0.4)              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from medclf_core.errors import ModelError
from medclf_core.images import to_model_input

METHODS = ("gradcam",)


def find_cam_layer(model, preferred: str | None = None) -> str:
    """The card's layer if the model has it, else the last layer with a 4-D output."""
    names = [layer.name for layer in model.layers]
    if preferred and preferred in names:
        return preferred
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and layer.name != model.layers[0].name:
            return layer.name
    raise ModelError("This model has no convolutional layer, so no heat map can be computed.")


def _cam_model(model, layer_name: str):
    """A model returning (target layer activations, class logits)."""
    import keras

    head = model.get_layer("predictions") if "predictions" in [layer.name for layer in model.layers] else model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ModelError("The model's last layer is not a dense classifier; Grad-CAM needs one.")
    features = head.input
    logits = keras.ops.matmul(features, head.kernel) + (head.bias if head.use_bias else 0.0)
    return keras.Model(model.inputs, [model.get_layer(layer_name).output, logits])


def heatmaps(model, images: Sequence[np.ndarray], method: str = "gradcam", class_index: int | None = None,
             cam_layer: str | None = None, batch_size: int = 16) -> list[np.ndarray]:
    """Heat maps in [0, 1], one per image, each at its image's (H, W)."""
    import tensorflow as tf

    if method not in METHODS:
        raise ValueError(f"Unknown method '{method}'; choose from {', '.join(METHODS)}.")
    layer = find_cam_layer(model, cam_layer)
    cam_model = _cam_model(model, layer)
    size, channels = int(model.input_shape[1]), int(model.input_shape[3])
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = tf.convert_to_tensor(np.stack([to_model_input(im, size, channels) for im in chunk]).astype("float32"))
        with tf.GradientTape() as tape:
            acts, logits = cam_model(x, training=False)
            idx = tf.argmax(logits, axis=1) if class_index is None else tf.fill([len(chunk)], class_index)
            score = tf.gather(logits, tf.cast(idx, tf.int32), axis=1, batch_dims=1)
        grads = tape.gradient(score, acts)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1)).numpy()
        for im, cam in zip(chunk, cams, strict=True):
            out.append(_normalise(cv2.resize(cam.astype(np.float32), (im.shape[1], im.shape[0]),
                                             interpolation=cv2.INTER_LINEAR)))
    return out


def _normalise(cam: np.ndarray) -> np.ndarray:
    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.maximum(cam, 0)
    peak = cam.max()
    return (cam / peak).astype(np.float32) if peak > 1e-12 else np.zeros_like(cam, dtype=np.float32)


def overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4,
            colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """RGB uint8 image: the heat map in colour blended over the (grayscale or RGB) original."""
    base = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    base = base[..., :3].astype(np.uint8)
    if heatmap.shape != base.shape[:2]:
        heatmap = cv2.resize(heatmap, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), colormap), cv2.COLOR_BGR2RGB)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(colour, opacity, base, 1.0 - opacity, 0.0)


def save_png(path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")
