"""Shortcuts measured on the chest model (issue 23 item 4): burned-in marks inpainted, and where Grad-CAM's mass lies.

For each chest film it finds the burned-in marks (letters such as the "R" marker, corner text,
thin lines at the edge) and the body with :mod:`medclf_core.data.marks` (OpenCV, no
model), and reports:

- P(PNEUMONIA) (calibrated, as the app shows it) before and after inpainting the marks
  (``cv2.inpaint``): mean |dP|, mean signed dP, and the share of decisions (the card's threshold)
  that flip, each with a 95% bootstrap interval of the mean (2000 resamples, seeded);
- the share of the PNEUMONIA Grad-CAM's mass outside the body and on the marks (widened by 3% of
  the shorter side, as :func:`~medclf_core.explain.shortcuts.shortcut_masses` does, since a CAM
  is a 7 x 7 grid), mean and median, before and after inpainting, next to the share of the
  image's *area* outside the body and under the widened marks (what a map spread evenly over the
  image would give); and the same within one CAM cell (1/7 of the shorter side) of a mark, where a
  coarse map driven by a mark puts its mass;
- the share of films with a map :func:`~medclf_core.explain.shortcuts.shortcut_warning` warns about.

Masks come from the original film and are kept for the inpainted one, so before and after
measure the same regions.

Films (read from ../shared/data, never copied into the repository):

- ``test``: ``--n`` films per class of the model's own held-out TEST split (the files listed in
  ``models/chest-xray-pneumonia/evaluation.json``; 224 x 224, as the model was trained), a seeded
  random draw;
- ``demo``: the 30 demo films (``demo_samples/chest_xray``, max side 512 px, the 6 bundled in
  ``samples/images/chest_xray`` among them). They are Kermany train-split films: their 224 px
  copies may be in the model's training set (the "in test split" count says how many are not).

Usage::

    PYTHONPATH=. .venv/bin/python bench/shortcuts.py            # 100 test films per class + 30 demo films
    PYTHONPATH=. .venv/bin/python bench/shortcuts.py --n 5 --no-demo
    PYTHONPATH=. .venv/bin/python bench/shortcuts.py --model /tmp/chest_old --films-from /tmp/chest_old

The printed tables and their reading: docs/BENCHMARKS.md, "Shortcuts: burned-in marks and where
Grad-CAM looks (issue 23 item 4)".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DATA = Path(os.environ.get("MEDCLF_DATA", REPO.parent / "shared" / "data"))  # ../shared beside the checkout
MODEL = REPO / "models" / "chest-xray-pneumonia"
CLASSES = ("NORMAL", "PNEUMONIA")
CAM_GRID = 7  # the chest model's Grad-CAM grid (7 x 7 at 224 px): "near marks" is within one cell of a mark


def test_films(n: int, seed: int = 0, model: Path = MODEL) -> list[tuple[str, str, Path]]:
    """``(group, class, path)`` of ``n`` films per class of the model's stored test split, a seeded draw."""
    files = [p["file"] for p in json.loads((model / "evaluation.json").read_text())["predictions"]]
    rng = np.random.default_rng(seed)
    out = []
    for cls in CLASSES:
        names = sorted(f for f in files if f.startswith(cls + "/"))
        for i in sorted(rng.choice(len(names), size=min(n, len(names)), replace=False)):
            out.append(("test", cls, DATA / "chest_xray_pneumonia" / "train" / names[i]))
    return out


def demo_films() -> list[tuple[str, str, Path]]:
    root = DATA / "demo_samples" / "chest_xray"
    return [("demo", cls, p) for cls in CLASSES for p in sorted((root / cls).iterdir())]


def bootstrap_ci(values, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def measure(predictor, pixels: list[np.ndarray]) -> list[dict]:
    """One row per film: P(PNEUMONIA), decision and map shares before and after inpainting its marks."""
    import cv2

    from medclf_core.data.marks import body_mask, burned_in_marks, inpaint_marks
    from medclf_core.explain.shortcuts import MARK_MARGIN, map_mass, shortcut_warning

    pos = predictor.positive if predictor.positive is not None else 1
    rows = []
    for px in pixels:
        gray = px if px.ndim == 2 else cv2.cvtColor(px[..., :3], cv2.COLOR_RGB2GRAY)
        marks, body = burned_in_marks(gray), body_mask(gray)
        k = max(3, int(round(MARK_MARGIN * min(gray.shape))) * 2 + 1)
        wide = cv2.dilate(marks.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) if marks.any() else marks
        cell = max(3, int(round(min(gray.shape) / CAM_GRID)) * 2 + 1)  # within one CAM cell of a mark
        near = cv2.dilate(marks.astype(np.uint8), np.ones((cell, cell), np.uint8)).astype(bool) if marks.any() else marks
        clean = inpaint_marks(px, marks)
        moved = inpaint_marks(px, np.roll(marks, (marks.shape[0] // 2, marks.shape[1] // 2), axis=(0, 1)))
        probs = predictor.predict_images([px, clean, moved])
        maps = [h.heatmap for h in predictor.explain([px, clean], "gradcam", pos)]
        rows.append({
            "marks": bool(marks.any()), "p": probs[:2, pos], "decision": predictor.decide(probs[:2]),
            "p_moved": float(probs[2, pos]),
            "outside": [map_mass(m, ~body) for m in maps], "on_marks": [map_mass(m, wide) for m in maps],
            "near_marks": [map_mass(m, near) for m in maps], "area_near": float(near.mean()),
            "area_outside": float((~body).mean()), "area_marks": float(wide.mean()),
            "warned": [shortcut_warning(m, px) is not None for m in maps],
        })
    return rows


def _mean_ci(values) -> str:
    lo, hi = bootstrap_ci(values)
    return f"{np.mean(values):.3f} ({lo:.3f}, {hi:.3f})" if len(values) else "n/a"


def log_odds(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def prediction_row(name: str, rows: list[dict]) -> str:
    dp = np.array([r["p"][1] - r["p"][0] for r in rows])
    dlo = np.array([log_odds(r["p"][1]) - log_odds(r["p"][0]) for r in rows])
    moved = np.array([r["p_moved"] - r["p"][0] for r in rows])
    moved_lo = np.array([log_odds(r["p_moved"]) - log_odds(r["p"][0]) for r in rows])
    flips = np.array([r["decision"][0] != r["decision"][1] for r in rows], float)
    marked = [r["marks"] for r in rows]
    dpm = dp[np.asarray(marked, bool)]
    return (f"| {name} | {len(rows)} | {int(np.sum(marked))} | {_mean_ci(np.abs(dp))} | {_mean_ci(dp)} | "
            f"{_mean_ci(np.abs(dpm))} | {_mean_ci(flips)} ({int(flips.sum())}) | {_mean_ci(dlo)} | "
            f"{_mean_ci(np.abs(moved))} | {_mean_ci(moved_lo)} | "
            f"{np.mean([r['p'][0] for r in rows]):.3f} |")


def map_row(name: str, rows: list[dict]) -> str:
    def stat(key, i):
        v = np.array([r[key][i] for r in rows], float)
        v = v[np.isfinite(v)]
        return f"{v.mean():.3f} / {np.median(v):.3f}" if len(v) else "n/a"
    warned = [np.mean([r["warned"][i] for r in rows]) for i in (0, 1)]
    return (f"| {name} | {len(rows)} | {stat('outside', 0)} | {stat('outside', 1)} | "
            f"{np.mean([r['area_outside'] for r in rows]):.3f} | {stat('on_marks', 0)} | {stat('on_marks', 1)} | "
            f"{np.mean([r['area_marks'] for r in rows]):.3f} | {stat('near_marks', 0)} | {stat('near_marks', 1)} | "
            f"{np.mean([r['area_near'] for r in rows]):.3f} | {warned[0]:.2f} / {warned[1]:.2f} |")


def tables(groups: dict[str, list[dict]]) -> str:
    lines = ["P(PNEUMONIA) before -> after inpainting the marks (mean, 95% bootstrap CI; dP = after - before):", "",
             "| films | n | with marks | mean abs(dP) | mean dP | mean abs(dP), films with marks | "
             "decisions flipped (count) | mean d log-odds | control (marks' mask moved): mean abs(dP) | "
             "control: mean d log-odds | mean P before |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [prediction_row(k, v) for k, v in groups.items() if v]
    lines += ["", "PNEUMONIA Grad-CAM mass (mean / median), before and after inpainting, against the image's area:", "",
              "| films | n | outside body: before | after | area outside body | on marks (widened): before | after | "
              "area of widened marks | within one CAM cell of marks: before | after | area | warned before / after |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [map_row(k, v) for k, v in groups.items() if v]
    return "\n".join(lines)


def main(argv=None) -> None:
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="test-split films per class (default 100)")
    ap.add_argument("--no-demo", action="store_true", help="leave out the 30 demo films")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=MODEL, help="the run folder to measure (default: the bundled "
                    "chest model)")
    ap.add_argument("--films-from", type=Path, default=None, help="the run folder whose stored test split gives "
                    "the test films (default: --model), so two models are measured on the same films")
    args = ap.parse_args(argv)
    films_from = args.films_from or args.model
    films = test_films(args.n, args.seed, films_from) + ([] if args.no_demo else demo_films())
    predictor = Predictor.from_run(args.model)
    print(f"model {args.model}; test films from {films_from}")
    t0 = time.perf_counter()
    rows = measure(predictor, [load_image(p).pixels for _, _, p in films])
    groups: dict[str, list[dict]] = {}
    for (group, cls, _), row in zip(films, rows, strict=True):
        groups.setdefault(f"{group} {cls}", []).append(row)
    for group in ("test", "demo"):
        groups[f"{group} all"] = [r for (g, _, _), r in zip(films, rows, strict=True) if g == group]
    test_names = {p["file"] for p in json.loads((films_from / "evaluation.json").read_text())["predictions"]}
    demo_in_test = sum(f"{c}/{p.name}" in test_names for g, c, p in films if g == "demo")
    print(f"{len(films)} films in {time.perf_counter() - t0:.0f} s; demo films whose 224 px copy is in the "
          f"model's test split: {demo_in_test} of {sum(g == 'demo' for g, _, _ in films)}\n")
    print(tables(groups))
    print("\nlargest moves (abs dP) and every flipped decision:")
    order = sorted(range(len(rows)), key=lambda i: -abs(rows[i]["p"][1] - rows[i]["p"][0]))
    for i in [i for i in order if rows[i]["decision"][0] != rows[i]["decision"][1]] or order[:3]:
        (g, c, p), r = films[i], rows[i]
        print(f"  {g} {c}/{p.name}: P {r['p'][0]:.4f} -> {r['p'][1]:.4f}, decision "
              f"{predictor.class_names[r['decision'][0]]} -> {predictor.class_names[r['decision'][1]]}")
    for i in order[:5]:
        (g, c, p), r = films[i], rows[i]
        print(f"  {g} {c}/{p.name}: P {r['p'][0]:.4f} -> {r['p'][1]:.4f}")


if __name__ == "__main__":
    main()
