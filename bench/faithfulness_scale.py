"""Heat-map faithfulness, issue 24 item 5 rounds two and three: the shipped deletion check against candidate
rules, measured and not adopted.

For each bundled model and a few images with a known finding, it computes the heat maps of
the positive class (Grad-CAM, Grad-CAM++, Score-CAM, through :meth:`Predictor.explain`) and
scores each on the class's log-odds from the pre-softmax logits:

- *before*: the shipped check (``Predictor.check_faithfulness``): cells blanked to the image's
  mean, the map's deletion curve (running minimum) against 3 random orders;
- *after*, one table per ``--rules`` entry, each at the check's cost (38 forward passes per map):

  - ``reverse`` (round two, the default; it fixes the brain model and breaks the chest model):
    cells blanked to the image's background (1st percentile, ``--blank background``) or mean
    (``--blank "image mean"``), the map's order hottest first against coldest first (the
    insertion curve read backwards, as in Samek et al.'s MoRF/LeRF),
    ``(AUC_coldest - AUC_hottest) / (2 AUC_random)`` over 2 random orders, raw curves, capped at 1;
  - ``telea``, ``ns``, ``outside`` (round three): the shipped rule, same cells, orders and
    image-mean endpoint, but each step's deleted cells filled from their surroundings instead of
    the mean: ``cv2.inpaint`` (Telea, Navier-Stokes) or a normalised convolution (a blur of the kept
    pixels only), over the union of the cells deleted so far, computed at FILL_SIZE px;
  - ``blobs``, ``blobs-telea`` (round three): the shipped rule (mean blank, or the Telea fill) with
    random orders that delete contiguous blobs (smoothed noise) instead of scattered cells;
  - ``reverse-outside``: ``reverse``'s orders and score with the ``outside`` fill;
  - ``copy`` (round three, the lead): the shipped rule with each deleted cell replaced by the nearest kept
    cell of the same image (the image's own texture, no smooth patch); ``copy-far``: the nearest kept cell
    at least COPY_FAR cells away.

Two control maps per image: the Grad-CAM map *moved off* its place (rolled by half the image
in both directions), and 3 *noise* maps per image (uniform random values, seeded), a random
order: how far from 0 chance alone takes a score; with ``--smooth-noise`` also 3 smooth noise maps per
image (7 x 7 noise resized: random maps with contiguous hot regions, as a CAM has). Intervals are 95%
bootstrap intervals of the mean (2000 resamples, seeded).

Images (read from ../shared/data, never copied into the repository):

- brain-mri-tumour: SARTAJ ``test_`` images (a source the model was not trained on) of
  meningioma, glioma and pituitary tumours, the first ``--n`` / 3 of each in sorted order;
- chest-xray-pneumonia: the demo PNEUMONIA films (``demo_samples/chest_xray/PNEUMONIA``), the
  first ``--n`` in sorted order.

The printed tables and their reading: docs/BENCHMARKS.md, "Heat-map faithfulness: the map's order
against its reverse, a candidate not adopted (issue 24, round two)" and "Heat-map faithfulness:
deleted cells filled from their surroundings, a candidate not adopted (issue 24, round three)".

Usage::

    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py            # 12 images per model
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --n 6 --models chest-xray-pneumonia
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --rules telea ns outside blobs blobs-telea
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --rules copy copy-far --smooth-noise
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DATA = Path(os.environ.get("MEDCLF_DATA", REPO.parent.parent / "shared" / "data"))
METHODS = ("gradcam", "gradcam++", "scorecam")


def brain_images(n: int) -> list[Path]:
    root = DATA / "brain_tumor_sartaj"
    per = max(n // 3, 1)
    out = []
    for cls in ("meningioma", "glioma", "pituitary"):
        out += sorted(p for p in (root / cls).iterdir() if p.name.startswith("test_"))[:per]
    return out


def chest_images(n: int) -> list[Path]:
    return sorted((DATA / "demo_samples" / "chest_xray" / "PNEUMONIA").iterdir())[:n]


CASES = {"brain-mri-tumour": brain_images, "chest-xray-pneumonia": chest_images}


def bootstrap_ci(values, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


CANDIDATE_RANDOM_ORDERS = 2   # with the reverse order: 2 + 9 * (2 + 2) = 38 passes, the check's cost
BACKGROUND_PERCENTILE = 1.0


def blank_value(x: np.ndarray, blank: str) -> np.ndarray:
    """A deleted pixel's value (per channel): the image's 1st percentile ("background") or its mean."""
    flat = x.reshape(-1, x.shape[-1])
    return np.percentile(flat, BACKGROUND_PERCENTILE, axis=0) if blank == "background" else flat.mean(axis=0)


def cell_grid(x: np.ndarray, heatmap: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cell_of, cells, cell_heat)``: each pixel's cell of a ``grid`` x ``grid`` grid (2-D), the pixels per
    cell and each cell's mean heat, the map resized to the image as the shipped check does."""
    import cv2

    size = x.shape[0]
    heat = np.nan_to_num(np.asarray(heatmap, np.float32))
    if heat.shape != x.shape[:2]:
        heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_AREA if heat.size > size * size
                          else cv2.INTER_LINEAR)
    idx = np.minimum(np.arange(size) * grid // size, grid - 1)
    cell_of = idx[:, None] * grid + idx[None, :]
    cells = np.bincount(cell_of.ravel(), None, grid * grid)
    return cell_of, cells, np.bincount(cell_of.ravel(), heat.ravel(), grid * grid) / cells


def candidate_inputs(x: np.ndarray, heatmap: np.ndarray, blank: str, grid: int = 16, steps: int = 10,
                     seed: int = 0) -> list[np.ndarray]:
    """``[x, blank, hottest first x9, coldest first x9, random order x9 per order]``: cells of a 16 x 16 grid
    ranked by mean heat as in the check; ties take one seeded order, the same in both of the map's orders."""
    channels = x.shape[-1]
    cell_of, _, cell_heat = cell_grid(x, heatmap, grid)
    cell_of = cell_of.ravel()
    rng = np.random.default_rng(seed)
    ties = rng.random(grid * grid)
    orders = [np.lexsort((ties, -cell_heat)), np.lexsort((ties, cell_heat))]
    orders += [rng.permutation(grid * grid) for _ in range(CANDIDATE_RANDOM_ORDERS)]
    value = blank_value(x, blank)
    out = [x, np.broadcast_to(value, x.shape).astype(np.float32)]
    for order in orders:
        rank = np.empty(grid * grid, np.int64)
        rank[order] = np.arange(grid * grid)
        for n in (int(round(grid * grid * j / steps)) for j in range(1, steps)):
            v = x.reshape(-1, channels).copy()
            v[rank[cell_of] < n] = value
            out.append(v.reshape(x.shape))
    return out


def candidate_score(s: np.ndarray, steps: int = 10) -> float | None:
    """``(AUC_coldest_first - AUC_hottest_first) / (2 AUC_random)``, capped at 1, areas above the blank image's
    score (raw curves, no running minimum); None where the check's rule says it cannot tell."""
    fr = np.linspace(0.0, 1.0, steps + 1)
    curves = np.concatenate([np.full((2 + CANDIDATE_RANDOM_ORDERS, 1), s[0]), s[2:].reshape(-1, steps - 1),
                             np.full((2 + CANDIDATE_RANDOM_ORDERS, 1), s[1])], axis=1)
    area = [float(np.trapezoid(np.maximum(c - s[1], 0.0), fr)) for c in (curves[0], curves[1], curves[2:].mean(0))]
    if s[0] <= s[1] + 1e-6 or area[2] <= 1e-6:
        return None
    return min((area[1] - area[0]) / (2.0 * area[2]), 1.0)


FILL_SIZE = 64       # fills are computed at 64 px (grid cells of 4 px) and resized up: < 0.1 s per map
FILL_RADIUS = 3      # cv2.inpaint's neighbourhood, in FILL_SIZE pixels (about 10 px at 224)
FILL_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)   # "outside": Gaussian widths tried in turn, in FILL_SIZE pixels
BLOB_SIGMA = 2.0     # "blobs": random orders from 16 x 16 white noise smoothed by this many cells (Gaussian)
RULES = ("reverse", "telea", "ns", "outside", "blobs", "blobs-telea", "reverse-outside", "copy", "copy-far")


def fill_deleted(small: np.ndarray, small_mask: np.ndarray, rule: str) -> np.ndarray:
    """The deleted cells of one channel refilled from their surroundings, at FILL_SIZE px: ``small`` (L, L) float32,
    ``small_mask`` (L, L) uint8, 1 = deleted. ``telea`` / ``ns``: cv2.inpaint (Telea 2004 / Navier-Stokes);
    ``outside``: a normalised convolution, i.e. a Gaussian blur of the kept pixels only divided by the blur of
    the kept mask, at the narrowest width in FILL_SIGMAS that reaches each deleted pixel (weight >= 0.05)."""
    import cv2

    if rule in ("telea", "ns"):
        return cv2.inpaint(small, small_mask, FILL_RADIUS, cv2.INPAINT_TELEA if rule == "telea" else cv2.INPAINT_NS)
    keep = (small_mask == 0).astype(np.float32)
    out, todo = small.copy(), small_mask.astype(bool)
    for sigma in FILL_SIGMAS:
        num, den = cv2.GaussianBlur(small * keep, (0, 0), sigma), cv2.GaussianBlur(keep, (0, 0), sigma)
        ok = todo & (den >= 0.05)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
    out[todo] = small[keep > 0].mean() if keep.any() else small.mean()
    return out


COPY_FAR = 3.0   # "copy-far": the source cell is the nearest kept cell at least this many cells away


def copy_nearest_cells(x: np.ndarray, deleted_cells: np.ndarray, grid: int, tie: np.ndarray,
                       min_distance: float = 0.0) -> np.ndarray:
    """``copy``: each deleted cell takes the pixels of the nearest kept cell of the same image (cell centres,
    ties by ``tie``): the image's own texture instead of a smooth patch. Cells of unequal size (a side not
    divisible by the grid) copy the source cell's top-left part, its last row / column repeated if shorter.
    ``min_distance``: only kept cells at least that far (in cells) are sources, where there are any."""
    kept = np.flatnonzero(~deleted_cells)
    if not len(kept):
        return x.copy()
    rc = np.stack(np.divmod(np.arange(grid * grid), grid), axis=1)
    dist = ((rc[:, None, :] - rc[None, kept, :]) ** 2).sum(axis=2) + tie[kept][None, :] * 1e-3
    far = dist >= min_distance ** 2
    dist = np.where(far | ~far.any(axis=1, keepdims=True), dist, dist + 1e6)
    source = np.where(deleted_cells, kept[np.argmin(dist, axis=1)], np.arange(grid * grid))
    axes = []
    for size in x.shape[:2]:
        cell = np.minimum(np.arange(size) * grid // size, grid - 1)
        start = np.searchsorted(cell, np.arange(grid))
        length = np.bincount(cell, minlength=grid)
        axes.append((cell, start, length))
    (ry, sy, hy), (cx, sx, wx) = axes
    cell_yx = ry[:, None] * grid + cx[None, :]
    src_r, src_c = np.divmod(source[cell_yx], grid)
    offset_y = np.arange(x.shape[0])[:, None] - sy[ry][:, None]
    offset_x = np.arange(x.shape[1])[None, :] - sx[cx][None, :]
    yy = sy[src_r] + np.minimum(offset_y, hy[src_r] - 1)
    xx = sx[src_c] + np.minimum(offset_x, wx[src_c] - 1)
    return x[yy, xx]


def fill_inputs(x: np.ndarray, heatmap: np.ndarray, rule: str, grid: int = 16, steps: int = 10, random_orders: int = 3,
                seed: int = 0) -> list[np.ndarray]:
    """The shipped check's variants (same cells, same seeded orders: the map's, then 3 random; the same
    fully blank image-mean endpoint) with each step's deleted cells refilled by :func:`fill_deleted` over
    the union of the cells deleted so far, instead of the image mean. ``blobs``: the image-mean blank, but
    random orders that delete contiguous blobs (smoothed noise, BLOB_SIGMA cells) like a heat map's order
    does, instead of scattered cells; ``blobs-telea``: those orders with the Telea fill; ``reverse-outside``:
    the orders of :func:`candidate_inputs` (hottest first, coldest first, CANDIDATE_RANDOM_ORDERS random)
    with the ``outside`` fill, for :func:`candidate_score`; ``copy``: the shipped orders, each deleted cell
    replaced by the nearest kept cell (:func:`copy_nearest_cells`); ``copy-far``: the nearest at least
    COPY_FAR cells away."""
    import cv2

    size, channels = x.shape[0], x.shape[-1]
    cell_of, cells, cell_heat = cell_grid(x, heatmap, grid)
    rng = np.random.default_rng(seed)   # as medclf_core.explain.faithfulness._deletion_inputs
    ties = rng.random(grid * grid)
    orders = [np.lexsort((ties, -cell_heat))]
    if rule == "reverse-outside":
        orders += [np.lexsort((ties, cell_heat))] + [rng.permutation(grid * grid)
                                                     for _ in range(CANDIDATE_RANDOM_ORDERS)]
    elif rule.startswith("blobs"):
        orders += [np.argsort(-cv2.GaussianBlur(rng.random((grid, grid)), (0, 0), BLOB_SIGMA).ravel(), kind="stable")
                   for _ in range(random_orders)]
    else:
        orders += [rng.permutation(grid * grid) for _ in range(random_orders)]
    fill = {"blobs": "mean", "blobs-telea": "telea", "reverse-outside": "outside"}.get(rule, rule)
    tie = rng.random(grid * grid)
    mean = x.reshape(-1, channels).mean(axis=0)
    small_idx = np.arange(FILL_SIZE) * grid // FILL_SIZE
    small_cell = small_idx[:, None] * grid + small_idx[None, :]
    small = [cv2.resize(np.ascontiguousarray(x[..., c]), (FILL_SIZE, FILL_SIZE), interpolation=cv2.INTER_AREA)
             for c in range(channels)]
    out = [x, np.broadcast_to(x.reshape(-1, channels).mean(axis=0), x.shape).astype(np.float32)]
    for order in orders:
        rank = np.empty(grid * grid, np.int64)
        rank[order] = np.arange(grid * grid)
        for n in (int(round(grid * grid * j / steps)) for j in range(1, steps)):
            deleted, small_mask = rank[cell_of] < n, (rank[small_cell] < n).astype(np.uint8)
            if fill.startswith("copy"):
                out.append(copy_nearest_cells(x, rank < n, grid, tie, COPY_FAR if fill == "copy-far" else 0.0))
                continue
            v = x.copy()
            for c in range(channels):
                if fill == "mean":
                    v[..., c][deleted] = mean[c]
                    continue
                filled = cv2.resize(fill_deleted(small[c], small_mask, fill), (size, size),
                                    interpolation=cv2.INTER_LINEAR)
                v[..., c][deleted] = filled[deleted]
            out.append(v)
    return out


def score_maps(predictor, x, maps, classes, blank: str, rules=("reverse",)) -> tuple[list, dict, dict]:
    """``(before, {rule: after}, {rule: seconds building the variants per map})``: the shipped check, and each
    candidate rule on the same log-odds (pre-softmax logits); None where the test cannot tell."""
    from medclf_core.explain.faithfulness import _deletion_summary, class_scores

    before = [h.faithfulness for h in predictor.check_faithfulness(
        [_heat(predictor, m, a, int(c)) for m, a, c in zip(maps, x, classes, strict=True)], prepared=x)]
    after, cost = {}, {}
    for rule in rules:
        after[rule], seconds = [], 0.0
        for img, m, c in zip(x, maps, classes, strict=True):
            t0 = time.perf_counter()
            img = np.asarray(img, np.float32)
            variants = candidate_inputs(img, m, blank) if rule == "reverse" else fill_inputs(img, m, rule)
            seconds += time.perf_counter() - t0
            s = class_scores(predictor._model_logits(np.stack(variants).astype(np.float32)), int(c), "logits")
            after[rule].append(candidate_score(s) if rule.startswith("reverse")
                               else _deletion_summary(s, 10, 3, np.linspace(0, 1, 11))["faithfulness"])
        cost[rule] = seconds / len(maps)
    return before, after, cost


def _heat(predictor, heatmap, image, class_index):
    from medclf_core.inference.results import HeatMap

    return HeatMap(heatmap=heatmap, image=image, method="bench", class_index=class_index,
                   class_name=predictor.class_names[class_index])


NOISE_SEEDS = 3  # noise maps per image: the null distribution of the score


def controls(maps: list[np.ndarray], smooth: bool = False) -> dict[str, list[np.ndarray]]:
    """The Grad-CAM maps moved off their place, and ``NOISE_SEEDS`` noise maps per image (seeded), image after
    image for each seed in turn; with ``smooth``, also ``NOISE_SEEDS`` *smooth* noise maps per image (7 x 7
    uniform noise resized bilinearly, a CAM's resolution at 224 px: a random map with contiguous hot regions)."""
    import cv2

    moved = [np.roll(m, (m.shape[0] // 2, m.shape[1] // 2), axis=(0, 1)) for m in maps]
    noise = [np.random.default_rng(1000 * s + i).random(m.shape).astype(np.float32)
             for s in range(NOISE_SEEDS) for i, m in enumerate(maps)]
    out = {"gradcam moved off": moved, "noise map": noise}
    if smooth:
        out["smooth noise map"] = [
            cv2.resize(np.random.default_rng(5000 + 1000 * s + i).random((7, 7)).astype(np.float32),
                       m.shape[::-1], interpolation=cv2.INTER_LINEAR)
            for s in range(NOISE_SEEDS) for i, m in enumerate(maps)]
    return out


def run_model(name: str, n: int, blank: str = "background", rules=("reverse",), smooth: bool = False) -> list[dict]:
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    predictor = Predictor.from_run(REPO / "models" / name)
    files = CASES[name](n)
    pixels = [load_image(f).pixels for f in files]
    x = np.stack([predictor.prepare(p) for p in pixels])
    positive = predictor.positive if predictor.positive is not None else 1
    classes = np.full(len(x), positive, np.int64)
    p_pos = predictor.model.predict_on_batch(x.astype(np.float32))[:, positive]
    rows, maps_by = [], {}
    for method in METHODS:
        # maps at the model input's size: the deletion test resizes them to it anyway
        maps_by[method] = [h.heatmap for h in predictor.explain(list(x), method, positive, prepared=x)]
    maps_by.update(controls(maps_by["gradcam"], smooth))
    for kind, maps in maps_by.items():
        t0 = time.perf_counter()
        reps = len(maps) // len(x)   # noise maps: several per image
        before, after, cost = score_maps(predictor, np.concatenate([x] * reps), maps,
                                         np.concatenate([classes] * reps), blank, rules)
        rows.append({"model": name, "maps": kind, "n": len(maps), "before": before, "after": after, "cost": cost,
                     "seconds": time.perf_counter() - t0})
    print(f"{name}: n = {len(x)}, P(positive) median {np.median(p_pos):.4f}, "
          f"share with P >= 0.999: {np.mean(p_pos >= 0.999):.2f}", flush=True)
    return rows


def table(rows: list[dict], rule: str = "reverse") -> str:
    from medclf_core.explain.faithfulness import BETTER_THAN_RANDOM, RELIES_ON_MAP

    lines = ["| model | maps | n | before: mean (95% CI) | after: mean (95% CI) | after: median [min, max] | "
             f"before >= {RELIES_ON_MAP} / after | before <= {BETTER_THAN_RANDOM} / after | n/a before / after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = np.asarray([v for v in r["before"] if v is not None])
        a = np.asarray([v for v in r["after"][rule] if v is not None])
        bl, bh = bootstrap_ci(b) if len(b) else (np.nan, np.nan)
        al, ah = bootstrap_ci(a) if len(a) else (np.nan, np.nan)
        lines.append(
            f"| {r['model']} | {r['maps']} | {r['n']} | {b.mean() if len(b) else np.nan:.2f} ({bl:.2f}, {bh:.2f}) | "
            f"{a.mean() if len(a) else np.nan:.2f} ({al:.2f}, {ah:.2f}) | "
            f"{np.median(a) if len(a) else np.nan:.2f} [{a.min(initial=np.inf):.2f}, {a.max(initial=-np.inf):.2f}] | "
            f"{np.mean(b >= RELIES_ON_MAP):.2f} / {np.mean(a >= RELIES_ON_MAP):.2f} | "
            f"{np.mean(b <= BETTER_THAN_RANDOM):.2f} / {np.mean(a <= BETTER_THAN_RANDOM):.2f} | "
            f"{r['n'] - len(b)} / {r['n'] - len(a)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="images per model (default 12)")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--blank", default="background", choices=["background", "image mean"],
                    help="what the candidate ('after') blanks cells to (default: the background)")
    ap.add_argument("--rules", nargs="+", default=["reverse"], choices=RULES,
                    help="candidate ('after') rules, one table each: 'reverse' (round two: the map's order against "
                         "its reverse, blank per --blank), or the shipped rule with deleted cells refilled from "
                         "their surroundings: 'telea' / 'ns' (cv2.inpaint), 'outside' (normalised convolution)")
    ap.add_argument("--smooth-noise", action="store_true",
                    help="add a control: smooth noise maps (contiguous random hot regions), 3 per image")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        rows += run_model(name, args.n, args.blank, args.rules, args.smooth_noise)
    for rule in args.rules:
        cost = {r["model"]: np.mean([x["cost"][rule] for x in rows if x["model"] == r["model"]]) for r in rows}
        print(f"\n'after' = {rule}" + (f" (blank: {args.blank})" if rule == "reverse" else "")
              + "; building one map's variants: " + ", ".join(f"{k} {v:.3f} s" for k, v in cost.items()))
        print(table(rows, rule))


if __name__ == "__main__":
    main()
