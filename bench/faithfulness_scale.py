"""Heat-map faithfulness before and after issue 24 item 5: the saturated probability against the log-odds.

For each bundled model and a few images with a known finding, it computes the heat maps of
the positive class (Grad-CAM, Grad-CAM++, Score-CAM, through :meth:`Predictor.explain`) and
scores each with :func:`medclf_core.explain.faithfulness.deletion_faithfulness` twice:

- *before*: the model's own softmax probability, as it is returned (``scale="probability"``),
  the score medclf showed until issue 24;
- *after*: the class's log-odds from the pre-softmax logits (``Predictor.check_faithfulness``).

Two control maps per image set the verdict thresholds: the Grad-CAM map *moved off* its
place (rolled by half the image in both directions), and a *noise* map (uniform random
values, seeded per image), which is a random order and so shows how far from 0 chance alone
takes a score (3 per image). ``flat`` is the share of images whose map curve does not move at the first
10% step (``|curve[1] - curve[0]| < 1e-6`` of the score's range), the issue's "P = 1.000 and nothing
moves". Intervals are 95% bootstrap intervals of the mean (2000 resamples, seeded).

Images (read from ../shared/data, never copied into the repository):

- brain-mri-tumour: SARTAJ ``test_`` images (a source the model was not trained on) of
  meningioma, glioma and pituitary tumours, the first ``--n`` / 3 of each in sorted order;
- chest-xray-pneumonia: the demo PNEUMONIA films (``demo_samples/chest_xray/PNEUMONIA``), the
  first ``--n`` in sorted order.

The printed table and its reading: docs/BENCHMARKS.md, "Heat-map faithfulness: probability
against log-odds (issue 24)".

Usage::

    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py            # 12 images per model
    PYTHONPATH=. .venv/bin/python bench/faithfulness_scale.py --n 6 --models chest-xray-pneumonia
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


def flat_share(results: list[dict]) -> float:
    """Share of images whose map curve does not move at the first step (10% deleted)."""
    flat = 0
    for d in results:
        span = max(abs(d["score"] - d["blank_score"]), 1e-12)
        flat += abs(d["curve_map"][1] - d["curve_map"][0]) < 1e-6 * span
    return flat / len(results)


def score_maps(predictor, x, maps, classes) -> tuple[list[dict], list[dict]]:
    """``(before, after)`` deletion results of ``maps``: the probability as returned, and the log-odds."""
    from medclf_core.explain.faithfulness import deletion_faithfulness

    before = deletion_faithfulness(predictor.model.predict_on_batch, x, maps, classes, scale="probability")
    after = [h.deletion for h in predictor.check_faithfulness(
        [_heat(predictor, m, a, int(c)) for m, a, c in zip(maps, x, classes, strict=True)], prepared=x)]
    return before, after


def _heat(predictor, heatmap, image, class_index):
    from medclf_core.inference.results import HeatMap

    return HeatMap(heatmap=heatmap, image=image, method="bench", class_index=class_index,
                   class_name=predictor.class_names[class_index])


NOISE_SEEDS = 3  # noise maps per image: the null distribution of the score


def controls(maps: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The Grad-CAM maps moved off their place, and ``NOISE_SEEDS`` noise maps per image (seeded), image after
    image for each seed in turn."""
    moved = [np.roll(m, (m.shape[0] // 2, m.shape[1] // 2), axis=(0, 1)) for m in maps]
    noise = [np.random.default_rng(1000 * s + i).random(m.shape).astype(np.float32)
             for s in range(NOISE_SEEDS) for i, m in enumerate(maps)]
    return {"gradcam moved off": moved, "noise map": noise}


def run_model(name: str, n: int) -> list[dict]:
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
    maps_by.update(controls(maps_by["gradcam"]))
    for kind, maps in maps_by.items():
        t0 = time.perf_counter()
        reps = len(maps) // len(x)   # noise maps: several per image
        before, after = score_maps(predictor, np.concatenate([x] * reps), maps, np.concatenate([classes] * reps))
        rows.append({"model": name, "maps": kind, "n": len(maps), "before": before, "after": after,
                     "seconds": time.perf_counter() - t0})
    print(f"{name}: n = {len(x)}, P(positive) median {np.median(p_pos):.4f}, "
          f"share with P >= 0.999: {np.mean(p_pos >= 0.999):.2f}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    from medclf_core.explain.faithfulness import BETTER_THAN_RANDOM, RELIES_ON_MAP

    lines = ["| model | maps | n | before: mean (95% CI) | after: mean (95% CI) | after: median [min, max] | "
             f"after >= {RELIES_ON_MAP} | after <= {BETTER_THAN_RANDOM} | flat before / after | n/a before / after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def scores(results):
            return [d["faithfulness"] for d in results if d["faithfulness"] is not None]
        b, a = scores(r["before"]), scores(r["after"])
        bl, bh = bootstrap_ci(b) if b else (np.nan, np.nan)
        al, ah = bootstrap_ci(a) if a else (np.nan, np.nan)
        na = f"{r['n'] - len(b)} / {r['n'] - len(a)}"
        lines.append(
            f"| {r['model']} | {r['maps']} | {r['n']} | {np.mean(b) if b else np.nan:.2f} ({bl:.2f}, {bh:.2f}) | "
            f"{np.mean(a) if a else np.nan:.2f} ({al:.2f}, {ah:.2f}) | "
            f"{np.median(a) if a else np.nan:.2f} [{min(a, default=np.nan):.2f}, {max(a, default=np.nan):.2f}] | "
            f"{np.mean(np.asarray(a) >= RELIES_ON_MAP) if a else np.nan:.2f} | "
            f"{np.mean(np.asarray(a) <= BETTER_THAN_RANDOM) if a else np.nan:.2f} | "
            f"{flat_share(r['before']):.2f} / {flat_share(r['after']):.2f} | {na} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="images per model (default 12)")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        rows += run_model(name, args.n)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
