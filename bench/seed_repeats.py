"""How much a recipe's held-out metrics move with the split and the seed (repeated random splits).

One test split of a small dataset says little: the brain MRI set leaves 34 test images, so one
image is 3 points of accuracy. This trains the same config with several seeds (each seed draws a
different stratified, duplicate-aware split and a different initialisation), then prints every
run's test metrics, their mean and standard deviation, and the metrics of all test predictions
pooled (every test image of every repeat, scored at its own run's threshold).

Usage::

    .venv/bin/python bench/seed_repeats.py configs/brain-mri-tumour.json --seeds 1 2 3 4 5
    # writes runs to a temporary registry; --keep DIR keeps them
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    import numpy as np

    from medclf_core.trust.metrics import decide, evaluate_probabilities
    from medclf_core.io.atomic import read_json
    from medclf_core.registry.card import positive_class_index
    from medclf_core.training import TrainConfig, train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a training config (JSON of TrainConfig fields), e.g. configs/brain-mri-tumour.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--models-dir", default=str(REPO / "models"), help="where init_from runs are found")
    ap.add_argument("--keep", help="register the repeats here (default: a temporary folder)")
    ap.add_argument("--epochs", type=int, help="override the config's epochs (quick looks)")
    args = ap.parse_args()

    values = {k: v for k, v in json.loads(Path(args.config).read_text()).items()
              if k in TrainConfig.__dataclass_fields__}
    if values.get("init_from") and not Path(values["init_from"]).is_dir():
        values["init_from"] = str(Path(args.models_dir) / values["init_from"])
    if args.epochs:
        values["epochs"] = args.epochs
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medclf-repeats-"))
    rows, pooled_y, pooled_p, pooled_hit = [], [], [], []
    for seed in args.seeds:
        name = f"{values.get('name', 'run')}-seed{seed}"
        run = train(TrainConfig(**{**values, "seed": seed, "name": name}), models_dir=out)
        card = read_json(run, "card.json")
        ev = read_json(run, "evaluation.json")
        m, v = card["metrics"], card["validation_metrics"]
        rows.append({"seed": seed, "n": m["n"], "accuracy": m["accuracy"], "auc": m.get("auc"),
                     "sensitivity": m.get("sensitivity"), "specificity": m.get("specificity"),
                     "val_accuracy": v["accuracy"], "val_auc": v.get("auc"), "epochs": card["training"]["epochs_run"],
                     "best_epoch": card["training"]["best_epoch"], "seconds": card["training"]["seconds"]})
        classes = card["class_names"]
        y = np.array([classes.index(p["label"]) for p in ev["predictions"]])
        probs = np.array([p["probabilities"] for p in ev["predictions"]])
        pooled_y.append(y)
        pooled_p.append(probs)
        positive = positive_class_index(classes, card.get("positive_class"))
        pooled_hit.append(decide(probs, card.get("threshold"), positive) == y)
        print(json.dumps(rows[-1]), flush=True)

    def stat(key):
        vals = np.array([r[key] for r in rows if r[key] is not None], dtype=float)
        return f"{vals.mean():.3f} ± {vals.std(ddof=1) if len(vals) > 1 else 0:.3f}" if len(vals) else "-"

    y, p = np.concatenate(pooled_y), np.concatenate(pooled_p)
    pooled = evaluate_probabilities(y, p, classes, bootstrap=0)
    print(f"\n{Path(args.config).name}: {len(rows)} repeats (seeds {', '.join(map(str, args.seeds))}); runs in {out}\n")
    print("| seed | test n | accuracy | ROC-AUC | sensitivity | specificity | val accuracy | val AUC | epochs (best) |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for r in rows:
        print(f"| {r['seed']} | {r['n']} | {f(r['accuracy'])} | {f(r['auc'])} | {f(r['sensitivity'])} | "
              f"{f(r['specificity'])} | {f(r['val_accuracy'])} | {f(r['val_auc'])} | {r['epochs']} ({r['best_epoch']}) |")
    print(f"| mean ± sd | | {stat('accuracy')} | {stat('auc')} | {stat('sensitivity')} | {stat('specificity')} | "
          f"{stat('val_accuracy')} | {stat('val_auc')} | |")
    print(f"\nPooled over {len(y)} test predictions: accuracy at each run's threshold "
          f"{np.concatenate(pooled_hit).mean():.3f}, ROC-AUC {pooled['auc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
