"""Heat-map faithfulness, issue 24 item 5 rounds two to four: the shipped deletion check against candidate
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
    at least COPY_FAR cells away;
  - ``reverse-copy`` (round four): ``reverse``'s orders and score (most relevant first against least relevant
    first: the symmetric comparison of ROAD, Rong et al. 2022) with the ``copy`` fill;
  - ``shift``, ``shift-copy`` (round four): the shipped rule (mean fill / ``copy`` fill) whose reference orders
    delete the map's own shape moved elsewhere (rolled by >= SHIFT_MIN cells) instead of random cells.

Two control maps per image: the Grad-CAM map *moved off* its place (rolled by half the image
in both directions), and 3 *noise* maps per image (uniform random values, seeded), a random
order: how far from 0 chance alone takes a score; with ``--smooth-noise`` also 3 smooth noise maps per
image (7 x 7 noise resized: random maps with contiguous hot regions, as a CAM has) and one centre blob
per image (a Gaussian on the image centre: a map that says nothing about the image). Intervals are 95%
bootstrap intervals of the mean (2000 resamples, seeded).

Images (read from ../shared/data, never copied into the repository):

- brain-mri-tumour: SARTAJ ``test_`` images (a source the model of rounds one to three was not trained on) of
  meningioma, glioma and pituitary tumours, the first ``--n`` / 3 of each in sorted order; with
  ``--brain-set held-out`` (round four) the Sartaj tumour images in the retrained model's held-out test split;
- chest-xray-pneumonia: the demo PNEUMONIA films (``demo_samples/chest_xray/PNEUMONIA``), the
  first ``--n`` in sorted order.

The printed tables and their reading: docs/BENCHMARKS.md, "Heat-map faithfulness: the map's order
against its reverse, a candidate not adopted (issue 24, round two)" and "Heat-map faithfulness:
deleted cells filled from their surroundings, a candidate not adopted (issue 24, round three)" and
"Heat-map faithfulness on the retrained brain model: symmetric and same-shape references, none adopted
(issue 24, round four)".

Usage::

    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py            # 12 images per model
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --n 6 --models chest-xray-pneumonia
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --rules telea ns outside blobs blobs-telea
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --rules copy copy-far --smooth-noise
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --models brain-mri-tumour --brain-set held-out \
        --blank "image mean" --rules copy reverse reverse-copy shift shift-copy --smooth-noise   # round four
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --models brain-mri-tumour --brain-set held-out \
        --run /tmp/oldbrain --rules copy shift-copy --smooth-noise   # an older model folder (git show 7cae2ba:...)
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
from faithfulness_fills import CANDIDATE_RANDOM_ORDERS, RULES, cell_grid, fill_inputs  # noqa: E402 (rounds 3-4)

DATA = Path(os.environ.get("MEDCLF_DATA", REPO.parent / "shared" / "data"))  # ../shared beside the checkout
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


def brain_heldout_images(n: int) -> list[Path]:
    """Round four: Sartaj tumour images in the shipped brain model's held-out ``test`` split (its
    training_images.json, by pixel digest), the first ``n`` / 3 of each class in sorted order: neither the
    retrained model (three sources) nor the older one (no Sartaj) trained on them."""
    import json

    from medclf_core.data.audit import pixel_digest
    from medclf_core.io.images import load_image

    test = set(json.loads((REPO / "models" / "brain-mri-tumour" / "training_images.json").read_text())
               ["splits"]["test"])
    out, per = [], max(n // 3, 1)
    for cls in ("meningioma", "glioma", "pituitary"):
        files = sorted((DATA / "brain_tumor_sartaj" / cls).iterdir())
        out += [f for f in files if pixel_digest(load_image(f).pixels) in test][:per]
    return out


CASES = {"brain-mri-tumour": brain_images, "chest-xray-pneumonia": chest_images}
BRAIN_SETS = {"sartaj-test": brain_images, "held-out": brain_heldout_images}


def bootstrap_ci(values, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


BACKGROUND_PERCENTILE = 1.0


def blank_value(x: np.ndarray, blank: str) -> np.ndarray:
    """A deleted pixel's value (per channel): the image's 1st percentile ("background") or its mean."""
    flat = x.reshape(-1, x.shape[-1])
    return np.percentile(flat, BACKGROUND_PERCENTILE, axis=0) if blank == "background" else flat.mean(axis=0)


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
    uniform noise resized bilinearly, a CAM's resolution at 224 px: a random map with contiguous hot regions) and a
    *centre blob* per image (a Gaussian on the image centre, sigma 0.15 of its side: a map that points at the
    middle of the head whatever the image, round four)."""
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
        yy, xx = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in maps[0].shape)
        centre = np.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2) / (2 * 0.3 ** 2))
        out["centre blob"] = [cv2.resize(centre, m.shape[::-1]) for m in maps]
    return out


def run_model(name: str, n: int, blank: str = "background", rules=("reverse",), smooth: bool = False,
              run: Path | None = None, brain_set: str = "sartaj-test") -> list[dict]:
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    predictor = Predictor.from_run(run or REPO / "models" / name)
    files = BRAIN_SETS[brain_set](n) if name == "brain-mri-tumour" else CASES[name](n)
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
    ap.add_argument("--run", type=Path, default=None,
                    help="a model folder to load instead of models/<model> (one --models entry), e.g. an older run")
    ap.add_argument("--brain-set", default="sartaj-test", choices=list(BRAIN_SETS),
                    help="brain images: the first Sartaj test_ files (rounds one to three) or Sartaj tumour "
                         "images in the shipped brain model's held-out test split (round four)")
    ap.add_argument("--smooth-noise", action="store_true",
                    help="add a control: smooth noise maps (contiguous random hot regions), 3 per image")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        rows += run_model(name, args.n, args.blank, args.rules, args.smooth_noise, args.run, args.brain_set)
    for rule in args.rules:
        cost = {r["model"]: np.mean([x["cost"][rule] for x in rows if x["model"] == r["model"]]) for r in rows}
        print(f"\n'after' = {rule}" + (f" (blank: {args.blank})" if rule == "reverse" else "")
              + "; building one map's variants: " + ", ".join(f"{k} {v:.3f} s" for k, v in cost.items()))
        print(table(rows, rule))


if __name__ == "__main__":
    main()
