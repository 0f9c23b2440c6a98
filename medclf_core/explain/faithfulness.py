"""How far a heat map can be trusted: the deletion-curve faithfulness score, and its words.

:func:`deletion_faithfulness` scores a map by a deletion curve (Petsiuk et al. 2018,
RISE) against random order: how much faster the class score falls when the map's
hottest regions are blanked first than when random regions are. How it deletes:

- *Blank* means the pixel takes the image's own mean value (per channel) of the
  model input: a flat grey carrying no structure. Not black, which on a radiograph
  is itself a strong signal (background), and not a blurred copy, which keeps the
  coarse shapes a model can still read. Deleted cells filled from their surroundings
  (cv2.inpaint, or a blur of the kept pixels) were measured too (docs/BENCHMARKS.md, issue 24
  round three): better on chest films and the synthetic patterns, worse on brain MRIs (a smooth patch
  in a brain reads as a mass), so not used. Round four measured a copy of the nearest kept cell, ROAD's
  most- against least-relevant-first comparison and a reference that deletes the map's own shape elsewhere
  on the retrained brain model: none met the criteria set before the runs. A Gaussian on the image centre,
  a map that ignores the image, scored as high as Grad-CAM under this rule, the copy and the same-shape one
  (the centre of the organ carries the class score), so the rule below is unchanged.
- Pixels are deleted by cells of a ``grid`` x ``grid`` partition of the model input
  (16 x 16: 7 px cells at 112 px), ranked by their mean heat; each map is resized to
  the model input first, as the image is (:func:`medclf_core.io.images.to_model_input`).
  Random orders delete the same cells, so both curves delete the same kind of region.
  Equal heat values (the zeros left by the ReLU) are ordered randomly (seeded).
- The score is the class's *log-odds*, not its probability: ``log p_c - log(1 - p_c)``,
  i.e. ``z_c - logsumexp(z_j, j != c)`` of the pre-softmax logits ``z`` (for a sigmoid
  head, its logit itself). A confident model's probability is saturated: at P = 1.000
  blanking 10%, 50% or 90% of the cells leaves it at 1.000, the curve is flat, and the
  score measured only which cells tip the model over at the very end (issue 24: a
  Grad-CAM squarely on a brain tumour scored -0.05). The log-odds keep falling as
  evidence is removed long before the probability moves, and they are the scale the
  model adds its evidence on (a softmax of a linear head). The Predictor passes its
  model's logits (``output="logits"``, from the logits view the heat maps use, exact at
  any confidence); from probabilities (``output="probabilities"``) the log-odds are
  ``log p_c - log(sum of the other classes' p)``, each clipped at float32's smallest
  normal number (1.2e-38): the other classes' probabilities stay exact in float32 down
  to there (a logit gap of about 87), while ``1 - p_c`` rounds to 0 from a gap of 17.
  The ratio below does not change when the log-odds are scaled, so a temperature
  (calibration) does not change the score. ``scale="probability"`` is the old score,
  kept for comparison (bench/faithfulness_scale.py). Measured there (12 images per
  model, positive class): chest Grad-CAM 0.03 -> 0.12, Grad-CAM++ 0.06 -> 0.18,
  Score-CAM 0.04 -> 0.13 (mean, before -> after), maps moved off their place and noise
  maps stay near 0; brain tumour MRIs (the brain model of 7cae2ba, before its retraining): Grad-CAM
  -0.03 -> -0.03, Score-CAM 0.05 -> 0.10:
  the scale makes the curves move (flat first step 58% -> 42% of Grad-CAM maps) but
  does not make the brain model's maps score high. Their raw curves rise again as cells
  are blanked (grey cells in a dark MRI read as more tumour), which the running minimum
  below credits to neither order: a limit of blanking, not of the scale.
- Independent of Score-CAM (:mod:`medclf_core.explain.scorecam`), whose weights are also
  drops of the class's score when regions are blanked to the image mean: scoring
  Score-CAM with its own measure would be circular. The two differ in the measure
  (Score-CAM: the drop of the *probability*; here the *log-odds*, which at P near 1
  ranks regions Score-CAM weighs ~0 as strongly as any) and in the perturbation
  (Score-CAM: one soft, activation-shaped mask at a time, on the image otherwise whole;
  here hard grid cells removed cumulatively in the map's order, 10% to 90% of the
  image, against random orders of the same cells).

:func:`faithfulness_verdict` gives the words shown with a score (the app's pages, the
CLI, the PDF report) and :func:`format_faithfulness` the number.

Example::

    >>> p = lambda x: 0.1 + 0.8 * x[:, :8].mean((1, 2, 3)) / 255   # P(class 1): the top half's brightness
    >>> predict = lambda x: np.stack([1 - p(x), p(x)], 1)
    >>> image = np.zeros((1, 16, 16, 1), np.float32); image[0, :8] = 255.0
    >>> heat = np.zeros((16, 16), np.float32); heat[:8] = 1.0
    >>> (result,) = deletion_faithfulness(predict, image, [heat], 1, grid=4)
    >>> score = result["faithfulness"]; bool(score > RELIES_ON_MAP), faithfulness_verdict(score)
    (True, 'the model relies on the highlighted regions')
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from medclf_core.explain.cams import class_indices
from medclf_core.formatting import number
from medclf_core.trust.calibration import softmax

DELETION_STEPS = 10          # blank 10%, 20%, ... 100% of the pixels
DELETION_RANDOM_ORDERS = 3   # random orders averaged for the reference curve
DELETION_GRID = 16           # pixels are deleted by cells of a 16 x 16 grid on the model input

# What a score means to a reader (faithfulness_verdict): at or above RELIES_ON_MAP the map's
# regions carry the decision; above BETTER_THAN_RANDOM they do somewhat; else not noticeably.
# Kept at 0.3 / 0.1 on the log-odds scale (issue 24), from measurements (bench/faithfulness_scale.py,
# tests/medclf_core/explain/test_faithfulness.py; brain: the model of 7cae2ba): noise maps (a random order) on 12 brain MRIs and
# 12 chest films, 3 each, reach 0.3 in 4 of 72 (about the 95th percentile: "relies" is rarely
# chance) and exceed 0.1 in 14 of 72 (so the middle words are weak evidence); Grad-CAM maps moved
# off their place score <= 0.1 in 12/12 (chest), 10/12 (brain), 24/24 and 22/24 (trained pattern
# model, Grad-CAM / Grad-CAM++) and 4/4 (hand-built pattern model), where the same maps on the
# pattern score >= 0.3 in 4/4 (hand-built) and 11/24 and 13/24 (trained).
RELIES_ON_MAP = 0.3
BETTER_THAN_RANDOM = 0.1
# At or below WORSE_THAN_RANDOM blanking the map's regions lowers the class's evidence clearly *less* than random
# regions do (the map points away from what the model used): the mirror of RELIES_ON_MAP (noise maps, the null,
# ranged -0.44 to 0.44 on brain MRIs and -0.13 to 0.34 on chest films: docs/BENCHMARKS.md, issue 24's table).
WORSE_THAN_RANDOM = -RELIES_ON_MAP
FAITHFULNESS_DIGITS = 2
OUTPUTS = ("probabilities", "logits")   # what ``predict`` returns
SCALES = ("log-odds", "probability")    # what is deleted: the score, or the old saturated one
_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32: where probabilities stop being exact


def deletion_faithfulness(predict, inputs: np.ndarray, maps: Sequence[np.ndarray], class_index, *,
                          steps: int = DELETION_STEPS, random_orders: int = DELETION_RANDOM_ORDERS,
                          seed: int = 0, grid: int = DELETION_GRID, images_per_call: int = 16,
                          output: str = "probabilities", scale: str = "log-odds") -> list[dict]:
    """How well each heat map ranks the pixels its class depends on: a deletion curve against random order.

    For each image, its model input's pixels are *blanked* (see the module's docstring) in
    ``steps`` equal steps (10%, 20%, ... 100%) in the map's order, hottest first, and the target
    class's score (its log-odds: see the module's docstring) is read after each step, kept as a
    running minimum (a score that rises again once the evidence is gone measures the blanking, not
    the map: grey cells forming new shapes,
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

    ``predict``: callable, float32 (M, S, S, C) -> (M, K) probabilities (``output="probabilities"``)
    or pre-softmax logits (``output="logits"``). ``scale``: ``"log-odds"`` (the score) or
    ``"probability"`` (the saturated score used before issue 24, for comparison). ``inputs``: the
    prepared model inputs (N, S, S, C). ``maps``: N heat maps of any size. ``class_index``:
    one int or one per image. All the blanked inputs of up to ``images_per_call`` images
    (``2 + (steps - 1) * (1 + random_orders)`` each: 38 by default) go to ``predict`` in
    one call.

    Returns one dict per image: ``faithfulness``, ``auc_map``, ``auc_random``, ``score``
    (the image's), ``blank_score``, ``fractions`` (steps + 1 values, 0..1), ``curve_map``,
    ``curve_random`` (scores at those fractions), ``blank`` (``"image mean"``) and ``note``
    (why ``faithfulness`` is None, else None), ``scale`` (``"log-odds"`` or ``"probability"``: the
    unit of ``score``, ``blank_score`` and the curves).

    Example: ``deletion_faithfulness(model.predict_on_batch, x, maps, 1)[0]["faithfulness"]`` -> 0.62.
    """
    inputs, indices = _checked_arguments(inputs, maps, class_index, steps, random_orders)
    if output not in OUTPUTS or scale not in SCALES:
        raise ValueError(f"output must be one of {OUTPUTS} and scale one of {SCALES}.")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    out: list[dict] = []
    for start in range(0, len(inputs), images_per_call):
        rows = range(start, min(start + images_per_call, len(inputs)))
        scores, layout = _score_all(predict, [_deletion_inputs(inputs[i], maps[i], steps, random_orders, seed, grid)
                                              for i in rows])
        out.extend({**_deletion_summary(class_scores(scores[first:first + count], int(indices[i]), output, scale),
                                        steps, random_orders, fractions), "scale": scale}
                   for i, (first, count) in zip(rows, layout, strict=True))
    return out


def class_scores(outputs: np.ndarray, class_index: int, output: str = "probabilities",
                 scale: str = "log-odds") -> np.ndarray:
    """Class ``class_index``'s score in each row of a model's outputs (M, K): its log-odds or its probability.

    Log-odds from logits: ``z_c - logsumexp(z_j, j != c)``; from probabilities:
    ``log p_c - log(sum_{j != c} p_j)``, both probabilities clipped at float32's smallest normal
    number (see the module's docstring for why the other classes' sum, not ``1 - p_c``).

    >>> z = np.array([[0.0, 30.0], [0.0, 2.0]])
    >>> class_scores(z, 1, "logits").tolist(), class_scores(z, 1, "logits", "probability").round(3).tolist()
    ([30.0, 2.0], [1.0, 0.881])
    """
    z = np.asarray(outputs, np.float64)
    if output == "logits":
        if scale == "probability":
            return softmax(z, axis=1)[:, class_index]
        others = np.delete(z, class_index, axis=1)
        top = others.max(axis=1)
        return z[:, class_index] - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))
    if scale == "probability":
        return z[:, class_index]
    rest = np.delete(z, class_index, axis=1).sum(axis=1)
    return np.log(np.maximum(z[:, class_index], _TINY)) - np.log(np.maximum(rest, _TINY))


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
    >>> faithfulness_verdict(-0.63)
    'worse than random regions: do not rely on this map'
    """
    if score >= RELIES_ON_MAP:
        return "the model relies on the highlighted regions"
    if score > BETTER_THAN_RANDOM:
        return "somewhat better than random regions"
    if score > WORSE_THAN_RANDOM:
        return "no better than random regions: do not read much into this map"
    return "worse than random regions: do not rely on this map"


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
    # a score below the blank image's counts as fully deleted, so faithfulness stays <= 1. On the
    # log-odds scale this matters more: partly blanked images can score far below the blank image
    # (grey cells read as another class's evidence, without bound), and measured from the lowest
    # score reached instead, random orders' artefacts outweighed the map (pattern model: Grad-CAM
    # -0.05 instead of 0.18)
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
