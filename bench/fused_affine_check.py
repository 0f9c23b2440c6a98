"""Does one fused geometric resampling train the chest head as well as the four Keras layers in a row? (issue 23 item 6)

:func:`medclf_core.data.augment.build_augmenter` now draws rotation, shift, zoom and shear as the four
Keras layers do (same seeds, same ranges) and resamples once with the composed matrix, instead of four
interpolations one after the other. The augmented pixels change a little (one blur instead of four; the
corners one step moved out and the next moved back are kept), so this bench checks the head it trains,
side by side on the VALIDATION split:

- a seeded subset (``--train``) of the chest model's own train split (as ``bench/erase_choice.py`` draws
  it), its original view and the recipe's two augmented views (``chest_xray`` preset, erasing included)
  cached with each augmenter, ``--aug-seeds`` times (views seeded ``seed + 1``, ``seed + 2`` as the
  recipe seeds them);
- the same head as the recipe (class weights, early stopping on validation loss) fitted on
  ``original + 2 views``, ``--head-seeds`` fits per augmentation seed;
- val AUC, accuracy at 0.5 and log-loss per fit, and the fused minus four-layer difference of the
  mean AUC and accuracy over fits, with a 95% paired bootstrap interval over the validation images.

Decision rule, chosen before the run: the fusion "does not make training worse" when the mean AUC
difference's interval reaches above -0.005 and its point estimate is >= -0.005 (accuracy reported, not
the rule).

    PYTHONPATH=$PWD nice -n 10 /work/main/.venv/bin/python bench/fused_affine_check.py --train 600
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


def four_layer_augmenter(cfg, seed: int):
    """The augmentation before the fusion: the eraser, then each geometric layer interpolating in turn."""
    from medclf_core.data.augment import _eraser_layer, _geometric_layers

    steps = ([_eraser_layer(cfg, seed + 7)] if cfg.erase_marks or cfg.erase_border else []) \
        + _geometric_layers(cfg, seed)

    def apply(images):
        for step in steps:
            images = step(images, training=True)
        return images

    return apply


def cached_views(extractor, paths, cfg, seed: int, fused: bool) -> np.ndarray:
    """The recipe's two augmented views (V=2, N, D) with the fused or the four-layer augmenter."""
    import tensorflow as tf

    from medclf_core.training import transfer

    original = transfer.traced_augmenter
    if not fused:
        transfer.traced_augmenter = lambda aug, s, slot=0: tf.function(four_layer_augmenter(aug, s),
                                                                       reduce_retracing=True)
    try:
        # views "augment1", "augment2" at positions 0, 1: seeded seed + 1, seed + 2, as after "original"
        return transfer.cache_features(extractor, paths, image_size=224, channels=1, batch_size=32,
                                       views=("augment1", "augment2"), augment=cfg, seed=seed + 1)
    finally:
        transfer.traced_augmenter = original


def metrics(y, p) -> tuple[float, float, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    return float(roc_auc_score(y, p)), float(np.mean((p >= 0.5) == y)), float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))


def paired_ci(y, fused: list, chained: list, resamples: int = 1000, seed: int = 0):
    """95% bootstrap intervals (over validation images) of mean-over-fits AUC and accuracy, fused minus four-layer."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    d_auc, d_acc = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        if len(set(y[idx])) < 2:
            continue
        d_auc.append(np.mean([roc_auc_score(y[idx], p[idx]) for p in fused])
                     - np.mean([roc_auc_score(y[idx], p[idx]) for p in chained]))
        d_acc.append(np.mean([np.mean((p[idx] >= 0.5) == y[idx]) for p in fused])
                     - np.mean([np.mean((p[idx] >= 0.5) == y[idx]) for p in chained]))
    return [tuple(np.percentile(d, [2.5, 97.5])) for d in (d_auc, d_acc)]


def main(argv=None) -> None:
    from chest_subset import chest_split_subset

    from medclf_core.data.augment import AugmentConfig
    from medclf_core.models.architectures import get_architecture
    from medclf_core.registry.store import load_run
    from medclf_core.training.labels import class_weight_for
    from medclf_core.training.transfer import cache_features, feature_extractor, fit_head, head_options

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=600, help="training images (seeded subset of the train split)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--aug-seeds", type=int, default=2, help="augmentation seeds (views cached per seed)")
    ap.add_argument("--head-seeds", type=int, default=3, help="head fits per augmentation seed")
    args = ap.parse_args(argv)
    train, val, y_tr, y_val = chest_split_subset(args.train, args.seed)
    model, _ = load_run(REPO / "models" / "chest-xray-pneumonia")
    extractor = feature_extractor(model, get_architecture("efficientnet_lite0").feature_layer)
    common = dict(image_size=224, channels=1, batch_size=32)
    t0 = time.perf_counter()
    f_val = cache_features(extractor, [it.path for it in val], **common)[0]
    f_orig = cache_features(extractor, [it.path for it in train], **common)[0]
    preset, weights = AugmentConfig.preset("chest_xray"), class_weight_for(y_tr.tolist(), 2, "auto")
    probs: dict[str, list[np.ndarray]] = {"four layers": [], "fused": []}
    print(f"train subset {len(train)} ({int((y_tr == 0).sum())} NORMAL), val {len(val)} "
          f"({int((y_val == 0).sum())} NORMAL); load average {os.getloadavg()[0]:.1f}\n")
    print("| augmenter | aug seed | head seed | val AUC | val acc @0.5 | val log-loss |\n|---|---|---|---|---|---|")
    for a in range(args.aug_seeds):
        for name in probs:
            views = cached_views(extractor, [it.path for it in train], preset, args.seed + 100 * a, name == "fused")
            x = np.concatenate([f_orig, *views])
            for h in range(args.head_seeds):
                head = fit_head(x, np.tile(y_tr, 3), f_val, y_val, num_classes=2, epochs=100, learning_rate=1e-3,
                                **head_options(model), class_weight=weights, patience=10, seed=args.seed + h)
                p = head.predict(f_val, verbose=0)[:, 1]
                probs[name].append(p)
                auc, acc, ll = metrics(y_val, p)
                print(f"| {name} | {a} | {h} | {auc:.4f} | {acc:.3f} | {ll:.4f} |", flush=True)
    (auc_lo, auc_hi), (acc_lo, acc_hi) = paired_ci(y_val, probs["fused"], probs["four layers"])
    mean = {k: np.mean([metrics(y_val, p)[:2] for p in v], axis=0) for k, v in probs.items()}
    d_auc, d_acc = mean["fused"] - mean["four layers"]
    print(f"\nmean over {len(probs['fused'])} fits: AUC {mean['four layers'][0]:.4f} -> {mean['fused'][0]:.4f}, "
          f"accuracy {mean['four layers'][1]:.3f} -> {mean['fused'][1]:.3f}")
    print(f"fused - four layers: AUC {d_auc:+.4f} (95% CI {auc_lo:+.4f}, {auc_hi:+.4f}); "
          f"accuracy {d_acc:+.3f} ({acc_lo:+.3f}, {acc_hi:+.3f}); n val = {len(val)}; "
          f"{time.perf_counter() - t0:.0f} s")
    verdict = d_auc >= -0.005 and auc_hi > -0.005
    print("decision rule (chosen before the run): " + ("not worse" if verdict else "WORSE"))


if __name__ == "__main__":
    main()
