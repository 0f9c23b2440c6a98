"""medclf's Score-CAM (Faster-Score-CAM with a deletion weight): :func:`scorecam_raw`.

The map is ``relu(sum_k w_k A_k)`` with ``w_k`` the *drop of the target's probability*
when channel ``k``'s region of the image is blanked. As in the paper (Wang et al. 2020,
eq. 5-8), each of the ``max_channels`` channels with the largest spatial spread
(Faster-Score-CAM) is placed on the input grid (as the map is,
:func:`medclf_core.explain.geometry.cam_geometry`) and min-max scaled to a [0, 1] mask
``H_k``; the weight is ``w_k = P_c(x) - P_c(x - (x - b) * H_k)``, with ``P_c`` the target's
post-softmax probability and ``b`` the image's own mean value (per channel, the blank of
:func:`medclf_core.explain.faithfulness.deletion_faithfulness`): how much of the target's
score the region ``H_k`` accounts for, *in the context of the rest of the image*.

Why deletion, not the paper's insertion ``P_c(b + (x - b) * H_k) - P_c(b)`` (the region shown
alone on the blank), which medclf used before: a flat blank is far from any training
image, and what a model reads on it is not what it reads in the image. On the issue-15
pattern task (disc or square on noise, ``bn_cnn``) some runs read the blank as "square"
with p = 1.0, so no region could raise that probability; and some learnt "disc" as "no
square in the noise": the disc shown alone on the blank *lowered* the disc logit (-1.8 to
-4.6, centred logits) while blanking it in the image lowered it too (3.9 to 1.3). Insertion
maps were on the pattern for only 0.50-0.78 of the test images on 3 of 12 such models
(0.72-0.91 with the centred logit; a blurred baseline, sigma 5, or all channels instead of
16 did not fix it); deletion was on the pattern for 1.0 of the images on all 12
(probability or centred logit).
The probability, not the centred logit: with the logit, the 3-class localisation model's
maps of two classes differed by 0.026 on average (Grad-CAM's by 0.115), with the
probability by 0.103 (the class-specificity criterion of ``test_scorecam.py``).

Why not tf-keras-vis's ``Scorecam``: it weights each mask ``x * H_k`` by the target's
probability with *no reference*, so every weight is positive; when the probability is
near 0 or 1 for every mask (saturated) the weights are nearly equal and the map is
close to the plain sum of the channels, *whatever the class*; and for two classes the
weights are ``p_k`` and ``1 - p_k``, two positive mixtures of the same channels. That
gave the chest model's NORMAL and PNEUMONIA maps 4/255 of mean difference. A difference
of probabilities makes the weights signed and class-specific: for two classes
``p_0 = 1 - p_1``, so ``w_k(NORMAL) = -w_k(PNEUMONIA)`` and the maps are
``relu(S)`` and ``relu(-S)`` (the evidence for one class is the evidence against the other).
The blank is the image's mean, not black: the chest model reads dark, mostly-black inputs
as PNEUMONIA.

Not the faithfulness check's measure (issue 24): scoring Score-CAM by the very masked-input
scores that weigh it would be circular. The deletion test
(:func:`medclf_core.explain.faithfulness.deletion_faithfulness`) reads the class's *log-odds*,
not the probability used here, and deletes *hard grid cells, cumulatively in the map's order*
(10% to 90% of the image, against random orders), not one soft activation-shaped mask at a
time on an otherwise whole image; the two share only the blank value.

Example::

    >>> from medclf_core.explain.views import cam_view
    >>> from medclf_core.models.architectures import build_model
    >>> view, (layer,) = cam_view(build_model("simple_cnn", 2, 32, 1), "conv3")
    >>> x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    >>> cams = scorecam_raw(view, layer, x, None, max_channels=4)
    >>> cams.shape, bool((cams >= 0).all())
    ((2, 4, 4), True)
"""

from __future__ import annotations

import cv2
import numpy as np

from medclf_core.explain.geometry import cam_geometry, place_on_grid
from medclf_core.explain.views import view_cache, view_forward
from medclf_core.trust.calibration import softmax


def _acts_and_logits(view, layer: str):
    """A cached model ``x -> (activations of layer, logits)`` on the view's own layers."""
    import keras

    cache = view_cache(view)
    key = ((layer,), "acts+logits")
    if key not in cache:
        cache[key] = keras.Model(view.inputs, [view.get_layer(layer).output, view.output])
    return cache[key]


def scorecam_raw(view, layer: str, x: np.ndarray, indices, max_channels: int,
                 predict_batch: int = 64) -> np.ndarray:
    """Score-CAM on one layer (see the module's docstring): raw maps (N, h, w), ReLU applied, not scaled.

    ``x``: prepared model inputs (N, S, S, C). ``indices``: the target class per image, or
    None for each image's predicted class. ``max_channels``: how many channels are used as
    masks (0 or less: all).

    Cost: one forward pass per channel and image (the image's own score comes with its
    activations). One image's channels are chosen from that image alone, so a map never
    depends on the batch; every masked input of the batch goes through the model in
    ``predict_batch`` chunks.
    """
    acts, logits = (np.asarray(a, np.float32) for a in _acts_and_logits(view, layer).predict_on_batch(x))
    forward = view_forward(view)  # the same traced pass as the faithfulness check's
    return scorecam_maps(x, acts, logits, indices, max_channels, cam_geometry(view, layer),
                         lambda batch: np.asarray(forward(batch), np.float64), predict_batch)


def scorecam_maps(x: np.ndarray, acts: np.ndarray, logits: np.ndarray, indices, max_channels: int, geometry,
                  logits_of, predict_batch: int = 64) -> np.ndarray:
    """:func:`scorecam_raw` from what any backend gives: the layer's activations ``acts`` (N, h, w, D) and the
    logits (N, K) of ``x``, the layer's ``geometry`` (:func:`~medclf_core.explain.geometry.cam_geometry`) and
    ``logits_of(batch) -> (n, K)`` for the masked inputs (the LiteRT backend, :mod:`medclf_core.inference.lite`,
    passes its own)."""
    targets = np.argmax(logits, axis=1) if indices is None else np.asarray(indices, np.int64)
    channels = acts.shape[-1]
    cap = min(max_channels, channels) if max_channels and max_channels > 0 else channels
    chosen = [_widest_channels(image_acts, cap) for image_acts in acts]
    deleted = [v for image, image_acts, top in zip(x, acts, chosen, strict=True)
               for v in _deleted_inputs(image, image_acts, top, geometry)]
    batch = np.asarray(deleted, np.float32).reshape(-1, *x.shape[1:])
    masked = [logits_of(batch[s:s + predict_batch]) for s in range(0, len(batch), predict_batch)]
    scores = softmax(np.concatenate(masked)).reshape(len(x), cap, -1)
    own = softmax(logits)  # the image's own score comes with its activations
    return _weighted_sum(acts, chosen, own, scores, targets)


def _widest_channels(acts: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` channels of one image's (h, w, K) activations with the largest spatial spread."""
    spread = acts.reshape(-1, acts.shape[-1]).std(axis=0)
    return np.argsort(-spread, kind="stable")[:cap]


def _deleted_inputs(image: np.ndarray, acts: np.ndarray, channels: np.ndarray, geometry) -> list[np.ndarray]:
    """One model input per channel: ``image`` with that channel's region blanked to the image's mean."""
    size_y, size_x = int(image.shape[0]), int(image.shape[1])
    blank = np.broadcast_to(image.reshape(-1, image.shape[-1]).mean(axis=0), image.shape).astype(np.float32)
    deleted = []
    for k in channels:
        mask = place_on_grid(acts[:, :, k], size_y, size_x, geometry, size_y, cv2.BORDER_REPLICATE)
        low, high = float(mask.min()), float(mask.max())
        mask = (mask - low) / (high - low) if high - low > 1e-12 else np.zeros_like(mask)
        deleted.append(image - (image - blank) * mask[..., None])
    return deleted


def _weighted_sum(acts: np.ndarray, chosen: list, own: np.ndarray, scores: np.ndarray,
                  targets: np.ndarray) -> np.ndarray:
    """``relu(sum_k w_k A_k)`` per image, ``w_k`` = the target's probability minus its probability with
    channel ``k``'s region blanked (``own`` (N, K) and ``scores`` (N, channels, K) probabilities)."""
    n, h, w, _ = acts.shape
    cams = np.zeros((n, h, w), np.float32)
    for i in range(n):
        weights = own[i, targets[i]] - scores[i, :, targets[i]]
        cams[i] = np.maximum(np.tensordot(acts[i][..., chosen[i]], weights, axes=([2], [0])), 0.0)
    return cams
