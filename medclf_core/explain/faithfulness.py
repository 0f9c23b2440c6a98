"""How far a heat map can be trusted: the deletion-curve faithfulness score, and its words.

:func:`deletion_faithfulness` scores a map by a deletion curve (Petsiuk et al. 2018,
RISE) against random order: how much faster the class score falls when the map's
hottest regions are blanked first than when random regions are. How it deletes:

- *Blank* means the pixel takes the image's own mean value (per channel) of the
  model input: a flat grey carrying no structure. Not black, which on a radiograph
  is itself a strong signal (background), and not a blurred copy, which keeps the
  coarse shapes a model can still read.
- Pixels are deleted by cells of a ``grid`` x ``grid`` partition of the model input
  (16 x 16: 7 px cells at 112 px), ranked by their mean heat; each map is resized to
  the model input first, as the image is (:func:`medclf_core.io.images.to_model_input`).
  Random orders delete the same cells, so both curves delete the same kind of region.
  Equal heat values (the zeros left by the ReLU) are ordered randomly (seeded).
- The score is whatever ``predict`` returns for the class (probabilities, for the
  Predictor: the model's own output).

:func:`faithfulness_verdict` gives the words shown with a score (the app's pages, the
CLI, the PDF report) and :func:`format_faithfulness` the number.

Example::

    >>> predict = lambda x: np.stack([1 - x[:, :8].mean((1, 2, 3)) / 255, x[:, :8].mean((1, 2, 3)) / 255], 1)
    >>> image = np.zeros((1, 16, 16, 1), np.float32); image[0, :8] = 255.0
    >>> heat = np.zeros((16, 16), np.float32); heat[:8] = 1.0
    >>> (result,) = deletion_faithfulness(predict, image, [heat], 1, grid=4)
    >>> score = result["faithfulness"]; bool(score > 0.3), faithfulness_verdict(score)
    (True, 'the model relies on the highlighted regions')
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from medclf_core.explain.cams import class_indices
from medclf_core.formatting import number

DELETION_STEPS = 10          # blank 10%, 20%, ... 100% of the pixels
DELETION_RANDOM_ORDERS = 3   # random orders averaged for the reference curve
DELETION_GRID = 16           # pixels are deleted by cells of a 16 x 16 grid on the model input

# What a score means to a reader (faithfulness_verdict): at or above RELIES_ON_MAP the map's
# regions carry the decision; above BETTER_THAN_RANDOM they do somewhat; else not noticeably.
RELIES_ON_MAP = 0.3
BETTER_THAN_RANDOM = 0.1
FAITHFULNESS_DIGITS = 2


def deletion_faithfulness(predict, inputs: np.ndarray, maps: Sequence[np.ndarray], class_index, *,
                          steps: int = DELETION_STEPS, random_orders: int = DELETION_RANDOM_ORDERS,
                          seed: int = 0, grid: int = DELETION_GRID, images_per_call: int = 16) -> list[dict]:
    """How well each heat map ranks the pixels its class depends on: a deletion curve against random order.

    For each image, its model input's pixels are *blanked* (see the module's docstring) in
    ``steps`` equal steps (10%, 20%, ... 100%) in the map's order, hottest first, and the target
    class's score is read after each step, kept as a running minimum (a score that rises again
    once the evidence is gone measures the blanking, not the map: grey cells forming new shapes,
    an image gone mostly grey); the area under that curve (fraction blanked 0..1, trapezoids,
    measured above the score of the fully blank image, where every curve ends; a score below it
    counts as 0) is ``auc_map``. The same with ``random_orders`` random orders (seeded, curves
    averaged) gives ``auc_random``. Then::

        faithfulness = (auc_random - auc_map) / auc_random

    Higher is better: 1 means the score fell to the blank image's at the first step, 0
    means the map is no better than a random order, below 0 means worse than random
    (the map points away from what the model uses). With a blank scoring 0 for the
    class this is exactly Petsiuk's deletion AUC, normalised by random order's.
    ``None`` (with a ``note``) when the test cannot tell: the blank image scores the
    class at least as high as the image (e.g. a flat grey chest film reads PNEUMONIA
    to the chest model, so no deletion can lower that score), or random deletion does
    not lower the score at all.

    ``predict``: callable, float32 (M, S, S, C) -> scores (M, K). ``inputs``: the
    prepared model inputs (N, S, S, C). ``maps``: N heat maps of any size. ``class_index``:
    one int or one per image. All the blanked inputs of up to ``images_per_call`` images
    (``2 + (steps - 1) * (1 + random_orders)`` each: 38 by default) go to ``predict`` in
    one call.

    Returns one dict per image: ``faithfulness``, ``auc_map``, ``auc_random``, ``score``
    (the image's), ``blank_score``, ``fractions`` (steps + 1 values, 0..1), ``curve_map``,
    ``curve_random`` (scores at those fractions), ``blank`` (``"image mean"``) and ``note``
    (why ``faithfulness`` is None, else None).

    Example: ``deletion_faithfulness(model.predict_on_batch, x, maps, 1)[0]["faithfulness"]`` -> 0.62.
    """
    inputs, indices = _checked_arguments(inputs, maps, class_index, steps, random_orders)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    out: list[dict] = []
    for start in range(0, len(inputs), images_per_call):
        rows = range(start, min(start + images_per_call, len(inputs)))
        scores, layout = _score_all(predict, [_deletion_inputs(inputs[i], maps[i], steps, random_orders, seed, grid)
                                              for i in rows])
        out.extend(_deletion_summary(scores[first:first + count, int(indices[i])], steps, random_orders, fractions)
                   for i, (first, count) in zip(rows, layout, strict=True))
    return out


def _checked_arguments(inputs, maps, class_index, steps: int, random_orders: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs as float32, one class index per input)``, or ValueError saying which argument is wrong."""
    inputs = np.asarray(inputs, np.float32)
    if inputs.ndim != 4 or len(inputs) != len(maps):
        raise ValueError("inputs must be (N, S, S, C) with one heat map per input.")
    if steps < 1 or random_orders < 1:
        raise ValueError("steps and random_orders must be at least 1.")
    indices = class_indices(class_index, len(inputs))
    if indices is None:
        raise ValueError("class_index is required: the class whose score is deleted.")
    return inputs, indices


def _score_all(predict, variants_per_image: list[list]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``(scores, [(first row, row count) per image])``: every image's variants in one ``predict`` call."""
    batch, layout = [], []
    for variants in variants_per_image:
        layout.append((len(batch), len(variants)))
        batch.extend(variants)
    return np.asarray(predict(np.stack(batch).astype(np.float32)), np.float64), layout


def faithfulness_verdict(score: float) -> str:
    """What a faithfulness score means, in the words shown next to it (app, CLI, PDF).

    A missing score (None: the test could not tell) has no verdict: show its ``note``.

    >>> faithfulness_verdict(0.42)
    'the model relies on the highlighted regions'
    >>> faithfulness_verdict(0.2)
    'somewhat better than random regions'
    >>> faithfulness_verdict(0.1)
    'no better than random regions: do not read much into this map'
    """
    if score >= RELIES_ON_MAP:
        return "the model relies on the highlighted regions"
    if score > BETTER_THAN_RANDOM:
        return "somewhat better than random regions"
    return "no better than random regions: do not read much into this map"


def format_faithfulness(value: float | None) -> str:
    """A faithfulness score as shown to people: two decimals (:func:`medclf_core.formatting.number`),
    "n/a" when there is none, and no "-0.00" for a score that rounds to zero.

    >>> format_faithfulness(0.4173), format_faithfulness(-0.0012), format_faithfulness(None)
    ('0.42', '0.00', 'n/a')
    """
    return number(value, digits=FAITHFULNESS_DIGITS)


def _deletion_inputs(x: np.ndarray, heatmap: np.ndarray, steps: int, random_orders: int, seed: int,
                     grid: int) -> list:
    """``[x, fully blank, map step 1..steps-1, random order 1 step 1..steps-1, ...]`` for one image.

    Pixels are deleted by cells of a ``grid`` x ``grid`` partition of the model input, ranked by
    their mean heat (ties in random order): the map's order and the random orders then delete
    the same kind of region. Single pixels scattered at random would add a salt-and-pepper
    texture that moves the score by itself and make any map look better or worse than random.
    """
    size_y, size_x, channels = x.shape
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0)
    if heat.shape != (size_y, size_x):
        interp = cv2.INTER_AREA if heat.size > size_y * size_x else cv2.INTER_LINEAR
        heat = cv2.resize(heat, (size_x, size_y), interpolation=interp)
    rows = np.minimum(np.arange(size_y) * grid // size_y, grid - 1)
    cols = np.minimum(np.arange(size_x) * grid // size_x, grid - 1)
    cell_of = (rows[:, None] * grid + cols[None, :]).ravel()          # cell of each pixel
    cell_heat = np.bincount(cell_of, heat.ravel(), grid * grid) / np.maximum(np.bincount(cell_of, None, grid * grid), 1)
    rng = np.random.default_rng(seed)
    orders = [np.lexsort((rng.random(grid * grid), -cell_heat))]
    orders += [rng.permutation(grid * grid) for _ in range(random_orders)]
    blank = x.reshape(-1, channels).mean(axis=0)
    counts = [int(round(grid * grid * j / steps)) for j in range(1, steps)]
    variants = [x, np.broadcast_to(blank, x.shape).astype(np.float32)]
    for order in orders:
        rank = np.empty(grid * grid, np.int64)
        rank[order] = np.arange(grid * grid)
        pixel_rank = rank[cell_of]
        for n in counts:
            v = x.reshape(-1, channels).copy()
            v[pixel_rank < n] = blank
            variants.append(v.reshape(x.shape))
    return variants


def _deletion_summary(s: np.ndarray, steps: int, random_orders: int, fractions: np.ndarray) -> dict:
    inner = s[2:].reshape(1 + random_orders, steps - 1)
    curves = np.concatenate([np.full((1 + random_orders, 1), s[0]), inner,
                             np.full((1 + random_orders, 1), s[1])], axis=1)
    # running minimum: once the score has fallen, a later rise (the grey cells themselves forming
    # new shapes) is credited to neither order
    curves = np.minimum.accumulate(curves, axis=1)
    curve_map, curve_random = curves[0], curves[1:].mean(axis=0)
    floor = float(s[1])  # the score of the fully blank image, where both curves end
    # a score below the blank image's counts as fully deleted, so faithfulness stays <= 1
    auc_map = float(np.trapezoid(np.maximum(curve_map - floor, 0.0), fractions))
    auc_random = float(np.trapezoid(np.maximum(curve_random - floor, 0.0), fractions))
    note = None
    if float(s[0]) <= floor + 1e-6:
        note = "the blank image scores this class as high as the image itself: deletion cannot test this map"
    elif auc_random <= 1e-6:
        note = "the class score does not fall when pixels are blanked at random: nothing to compare with"
    faith = None if note else (auc_random - auc_map) / auc_random
    return {"faithfulness": None if faith is None else float(faith), "auc_map": auc_map, "auc_random": auc_random,
            "score": float(s[0]), "blank_score": floor, "fractions": [float(f) for f in fractions],
            "curve_map": [float(v) for v in curve_map], "curve_random": [float(v) for v in curve_random],
            "blank": "image mean", "note": note}
