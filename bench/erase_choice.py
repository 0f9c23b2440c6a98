"""Which shortcut-erasing augmentation for the chest model? Chosen on the VALIDATION split (issue 23 item 4).

The chest model is a linear probe: a head on cached features of the frozen ImageNet backbone, fitted on
the original training images and a few augmented views of each (``feature_views``). This bench caches,
for a seeded subset of the chest model's own train split (re-drawn as training draws it), the original
view and one augmented view per candidate, fits the same head (class weights, early stopping on the
validation loss) on ``original + that view`` for each candidate, and reports on the whole validation
split:

- AUC and accuracy at 0.5 (raw softmax, before temperature and threshold);
- the shortcut: mean change of log-odds(PNEUMONIA) when the validation films' burned-in marks are
  inpainted (``erase_marks=1`` on them, the same intervention as ``bench/shortcuts.py``), with a 95%
  bootstrap interval, on every film and on the films with marks, and mean |dP|.

Candidates (each on top of the ``chest_xray`` geometric transforms): ``baseline`` (no erasing), ``marks``
(inpaint detected marks, p=1), ``border`` (random border boxes off the body, p=1), ``both`` (p=0.5 each),
``marks`` (or ``both``) with the original view's marks inpainted too, and each cached view
with ``k`` of the marks' feature directions projected out of the head
(:mod:`medclf_core.training.invariance`). Features are kept in ``--features`` (an .npz), so a second
run with other ``--k`` or ``--head-seeds`` only refits heads.

    PYTHONPATH=$PWD nice -n 10 /work/main/.venv/bin/python bench/erase_choice.py --train 800
    PYTHONPATH=$PWD nice -n 10 /work/main/.venv/bin/python bench/erase_choice.py --candidates baseline,marks,border,both
    PYTHONPATH=$PWD nice -n 10 /work/main/.venv/bin/python bench/erase_choice.py --throughput 256   # caching speed

Results and the choice: docs/BENCHMARKS.md, "The recipe change, before and after".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # bench/shortcuts.py: bootstrap_ci, log_odds

import numpy as np  # noqa: E402

CANDIDATES = {"baseline": (0.0, 0.0), "marks": (1.0, 0.0), "border": (0.0, 1.0), "both": (0.5, 0.5)}


def features(extractor, items, augment, seed: int, view: str = "augment1") -> np.ndarray:
    from medclf_core.training.transfer import cache_features

    views = ("original",) if augment is None else (view,)
    return cache_features(extractor, [it.path for it in items], views=views, augment=augment, seed=seed,
                          image_size=224, channels=1, batch_size=32)[0]


def auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def main(argv=None) -> None:
    from chest_subset import chest_split_subset

    from shortcuts import bootstrap_ci, log_odds

    from medclf_core.data.augment import AugmentConfig
    from medclf_core.models.architectures import get_architecture
    from medclf_core.registry.store import load_run
    from medclf_core.training.labels import class_weight_for
    from medclf_core.training.invariance import mark_projection, project
    from medclf_core.training.transfer import feature_extractor, fit_head, head_options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=800, help="training images (seeded subset of the train split)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--candidates", default="baseline,both", help=f"views to cache, of {', '.join(CANDIDATES)}")
    ap.add_argument("--k", type=int, nargs="*", default=[1, 2, 4, 8, 16], help="mark directions to project out")
    ap.add_argument("--head-seeds", type=int, default=2, help="head fits per candidate (seeds seed, seed+1, ...)")
    ap.add_argument("--throughput", type=int, default=0, help="only time the caching pass on this many images")
    ap.add_argument("--features", default="/tmp/erase_choice_features.npz", help="cached features (reused)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train, val, y_tr, y_val = chest_split_subset(args.train, args.seed)
    print(f"split in {time.perf_counter() - t0:.0f} s: train subset {len(train)} "
          f"({int((y_tr == 0).sum())} NORMAL), val {len(val)}")
    model, _ = load_run(REPO / "models" / "chest-xray-pneumonia")
    extractor = feature_extractor(model, get_architecture("efficientnet_lite0").feature_layer)
    preset = AugmentConfig.preset("chest_xray")
    clean = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False, erase_marks=1.0)
    if args.throughput:
        throughput(extractor, train[:args.throughput])
        return
    t0 = time.perf_counter()
    cache = Path(args.features)
    if cache.exists():
        z = np.load(cache)
        f_val, f_val_clean, f_orig, f_orig_clean = z["val"], z["val_clean"], z["orig"], z["orig_clean"]
        views = {k[5:]: z[k] for k in z.files if k.startswith("view_")}
    else:
        f_val, f_val_clean = features(extractor, val, None, 0), features(extractor, val, clean, 0)
        f_orig, f_orig_clean = features(extractor, train, None, 0), features(extractor, train, clean, 0)
        views = {}
        for name in args.candidates.split(","):
            pm, pb = CANDIDATES[name]
            t = time.perf_counter()
            views[name] = features(extractor, train, replace(preset, erase_marks=pm, erase_border=pb), args.seed)
            print(f"  view {name}: {len(train) / (time.perf_counter() - t):.1f} images/s")
        np.savez(cache, val=f_val, val_clean=f_val_clean, orig=f_orig, orig_clean=f_orig_clean,
                 **{f"view_{k}": v for k, v in views.items()})
    print(f"features in {time.perf_counter() - t0:.0f} s")
    weights = class_weight_for(y_tr.tolist(), 2, "auto")
    runs = {name: (f_orig, v, 0) for name, v in views.items()}
    other = "marks" if "marks" in views else "both"
    runs[f"{other}, the original view's marks inpainted too"] = (f_orig_clean, views[other], 0)
    for name in views:
        for k in args.k:
            runs[f"{name}, k={k} mark directions projected out"] = (f_orig, views[name], k)
    has_marks = np.array([_has_marks(it.path) for it in val])
    print(f"\nval films with marks: {int(has_marks.sum())} of {len(val)}\n")
    print("| candidate | head seed | val AUC | val acc @0.5 | mean d log-odds, all val (95% CI) | "
          "... films with marks | mean abs(dP) |\n|---|---|---|---|---|---|---|")
    for name, (a, b, k) in runs.items():
        proj = mark_projection(f_orig - f_orig_clean, k)
        for seed in range(args.seed, args.seed + args.head_seeds):
            head = fit_head(project(np.concatenate([a, b]), proj), np.tile(y_tr, 2), project(f_val, proj), y_val,
                            num_classes=2,
                            epochs=100, learning_rate=1e-3, **head_options(model), class_weight=weights, patience=10,
                            seed=seed)
            p = head.predict(project(f_val, proj), verbose=0)[:, 1]
            pc = head.predict(project(f_val_clean, proj), verbose=0)[:, 1]
            d = log_odds(pc) - log_odds(p)
            ci, cim = bootstrap_ci(d), bootstrap_ci(d[has_marks])
            print(f"| {name} | {seed} | {auc(y_val, p):.4f} | {np.mean((p >= 0.5) == y_val):.3f} | {d.mean():+.3f} "
                  f"({ci[0]:+.3f}, {ci[1]:+.3f}) | {d[has_marks].mean():+.3f} ({cim[0]:+.3f}, {cim[1]:+.3f}) | "
                  f"{np.abs(pc - p).mean():.4f} |", flush=True)


def throughput(extractor, items, rounds: int = 3) -> None:
    """images/s of the feature-caching pass (original + 2 augmented views, as the chest config caches them)
    with the old ``chest_xray`` preset and with shortcut erasing on, alternated ``rounds`` times."""
    from medclf_core.data.augment import AugmentConfig
    from medclf_core.training.transfer import cache_features

    presets = {"chest_xray without erasing": replace(AugmentConfig.preset("chest_xray"), erase_marks=0.0,
                                                      erase_border=0.0),
               "chest_xray with erasing": AugmentConfig.preset("chest_xray")}
    rates: dict[str, list[float]] = {k: [] for k in presets}
    views = ("original", "augment1", "augment2")
    for _ in range(rounds):
        for name, aug in presets.items():
            t = time.perf_counter()
            cache_features(extractor, [it.path for it in items], views=views, augment=aug, seed=1337, image_size=224,
                           channels=1, batch_size=32)
            rates[name].append(len(items) * len(views) / (time.perf_counter() - t))
    for name, r in rates.items():
        print(f"  {name}: {', '.join(f'{x:.1f}' for x in r)} images/s (backbone passes per second, {len(items)} "
              f"images x {len(views)} views)")
    _step_costs(extractor, items)


def _step_costs(extractor, items) -> None:
    """ms per image of the eraser (two augmented views, as cached) and of one backbone pass, batch by batch,
    interleaved in one loop: a ratio that the shared machine's load affects less than two separate runs."""
    from medclf_core.data.augment import AugmentConfig
    from medclf_core.data.erase import ShortcutEraser
    from medclf_core.io.images import load_for_model

    import tensorflow as tf

    predict = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)  # as cache_features
    cfg = AugmentConfig.preset("chest_xray")
    images = np.stack([load_for_model(it.path, 224, 1) for it in items]).astype(np.float32)
    erasers = [ShortcutEraser(marks=cfg.erase_marks, border=cfg.erase_border, seed=s) for s in (1, 2)]
    erase_s = backbone_s = 0.0
    for i in range(0, len(images), 32):
        batch = images[i:i + 32]
        t = time.perf_counter()
        for eraser in erasers:
            eraser(batch)
        erase_s += time.perf_counter() - t
        t = time.perf_counter()
        np.asarray(predict(tf.constant(batch)))
        backbone_s += time.perf_counter() - t
    n = len(images)
    print(f"  eraser, both augmented views of an image: {1000 * erase_s / n:.1f} ms; one backbone pass: "
          f"{1000 * backbone_s / n:.1f} ms per image; a training image's 3 passes + erasing cost "
          f"{(3 * backbone_s + erase_s) / (3 * backbone_s):.2f}x the 3 passes alone")


def _has_marks(path) -> bool:
    from medclf_core.data.marks import burned_in_marks
    from medclf_core.io.images import load_for_model

    return bool(burned_in_marks(load_for_model(str(path), 224, 1)[..., 0]).any())


if __name__ == "__main__":
    main()
