"""Time to the best validation accuracy: the transfer recipe against ``bn_cnn`` from scratch, side by side.

Both runs train with medclf's own ``train`` on the same images, the same split (seed) and
the same machine, one after the other in one process:

- ``bn_cnn``: the previous bundled chest recipe (narrow filters, 112 px grayscale, Adam 3e-4,
  images through the whole network every epoch);
- ``efficientnet_lite0``: ImageNet weights, 224 px grayscale, features cached once per image
  and view, a head fitted on them (the transfer recipe).

The clock runs from the run's ``start`` event to the ``epoch`` event at which its best
validation accuracy was first reached (the audit and split are included in both, and are the
same work). The ratio is scratch / transfer. Test accuracy of each finished run is printed
beside it, with the test n.

bn_cnn's best epoch is a random draw, so ``--seeds`` runs both recipes for several training seeds on the
same split (the offsets move initialisation, shuffling and augmentation, not the split) and prints each
ratio with their median and range. The transfer recipe's features run on LiteRT
(:mod:`medclf_core.training.lite_backbone`): its first run converts the backbone into an empty cache
(``cold``), the others read the kept file (``warm``); ``--recipes transfer-tf`` adds a run on TensorFlow
features per seed, to compare the models. ``--json`` keeps the runs; ``--combine`` prints several files'
runs together (long benches split over several locked runs).

Usage::

    .venv/bin/python bench/transfer_vs_scratch.py                      # 300 chest X-rays per class
    .venv/bin/python bench/transfer_vs_scratch.py --per-class 150 --scratch-epochs 10
    .venv/bin/python bench/transfer_vs_scratch.py --seeds 0 1 2 --recipes transfer transfer-tf --json t.json
    .venv/bin/python bench/transfer_vs_scratch.py --seeds 0 --recipes scratch --json s0.json
    .venv/bin/python bench/transfer_vs_scratch.py --combine t.json s0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def subset(source: Path, per_class: int, out: Path) -> Path:
    """The first ``per_class`` images of each class folder (sorted), as links."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            os.symlink(f.resolve(), out / class_dir.name / f.name)
    return out


def time_to_best(events: list[dict]) -> tuple[float, float, int]:
    """(seconds from start to the first epoch with the best val accuracy, that accuracy, epochs run)."""
    start = next(e["time"] for e in events if e["event"] == "start")
    epochs = [e for e in events if e["event"] == "epoch" and "val_accuracy" in (e.get("metrics") or {})]
    best = max(e["metrics"]["val_accuracy"] for e in epochs)
    first = next(e for e in epochs if e["metrics"]["val_accuracy"] == best)
    return first["time"] - start, best, len(epochs)


def phases(events: list[dict]) -> dict[str, float]:
    """Seconds of each phase up to the best epoch: audit and split, model build, backbone features, head epochs."""
    t = {"start": next(e["time"] for e in events if e["event"] == "start")}
    t["split"] = next(e["time"] for e in events if e["event"] == "split")
    begins = [e for e in events if e["event"] == "epoch_begin"]
    features = [e for e in begins if e.get("phase") == "features"]
    t["fit"] = begins[0]["time"] if begins else t["split"]
    t["head"] = next((e["time"] for e in begins if e.get("phase") == "train"), t["fit"]) if features else t["fit"]
    t["best"] = t["start"] + time_to_best(events)[0]
    return {"audit + split": t["split"] - t["start"], "build": t["fit"] - t["split"],
            "features": t["head"] - t["fit"], "epochs to best": t["best"] - t["head"]}


def run(data: Path, models: Path, seed_offset: int = 0, **cfg) -> dict:
    """One ``train`` run; ``seed_offset`` moves the training seed (initialisation, shuffling, augmentation, the
    cached views' draws) and not the split: the config's ``seed`` (1337) draws the split, and every member's
    seed is ``1337 + offset`` (the bench patches :meth:`TrainingSession.slot`; the config has no separate
    training seed)."""
    from medclf_core.training.events import EventLog
    from medclf_core.registry.store import read_card
    from medclf_core.training import TrainConfig, train
    from medclf_core.training import session as session_module

    slot = session_module.TrainingSession.slot

    def shifted(self, k):
        found = slot(self, k)
        return dataclasses.replace(found, seed=found.seed + seed_offset)

    events: list[dict] = []
    session_module.TrainingSession.slot = shifted
    try:
        t0 = time.time()
        run_dir = train(TrainConfig(data=str(data), seed=1337, **cfg), models_dir=models,
                        events=EventLog(listeners=[events.append]))
        total = time.time() - t0
    finally:
        session_module.TrainingSession.slot = slot
    seconds, best, epochs = time_to_best(events)
    card = read_card(run_dir)
    val = card.get("validation_metrics") or {}
    return {"arch": cfg["arch"], "seed_offset": seed_offset, "to_best_s": seconds, "best_val_accuracy": best,
            "epochs": epochs, "total_s": total, "phases": phases(events),
            "val_accuracy": val.get("accuracy"), "val_auc": val.get("auc"), "val_n": val.get("n"),
            "test_accuracy": card["metrics"].get("accuracy"), "test_auc": card["metrics"].get("auc"),
            "test_n": card["metrics"].get("n"), "load_average": os.getloadavg()[0]}


def run_all(a) -> list[dict]:
    """Every asked recipe for every seed offset: bn_cnn; the transfer recipe on LiteRT features, the first run on
    an empty converted-backbone cache (``cold``: the conversion paid), the others on the kept file (``warm``,
    the first seed again too); on TensorFlow features (``MEDCLF_LITE_FEATURES=0``) for the accuracy check."""
    from medclf_core.training import lite_backbone

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(a.data, a.per_class, Path(tmp) / "data")
        os.environ[lite_backbone.CACHE_ENV] = str(Path(tmp) / "cache")
        common = dict(channels=1, augment="chest_xray", group_pattern=r"(person\d+|NORMAL2-IM-\d+|IM-\d+)")
        for n, offset in enumerate(a.seeds):
            models = Path(tmp) / f"models-{n}"
            if "scratch" in a.recipes:
                results.append({"recipe": "bn_cnn", **run(
                    data, models, offset, arch="bn_cnn", image_size=112, batch_size=32, learning_rate=3e-4,
                    epochs=a.scratch_epochs, patience=a.scratch_epochs,
                    model_options={"filters": [16, 32, 64, 128], "dense_units": 128, "dropout": 0.5}, **common)})
            transfer = dict(arch="efficientnet_lite0", image_size=224, **common)
            if "transfer" in a.recipes:
                os.environ[lite_backbone.LITE_ENV] = "auto"
                first = not any(r["recipe"].startswith("transfer LiteRT") for r in results)
                for label in (["transfer LiteRT cold"] if first else []) + ["transfer LiteRT warm"]:
                    results.append({"recipe": label, **run(data, models, offset, **transfer),
                                    "converted_files": len(list(lite_backbone.cache_folder().glob("*.tflite")))})
            if "transfer-tf" in a.recipes:
                os.environ[lite_backbone.LITE_ENV] = "0"
                results.append({"recipe": "transfer TensorFlow", **run(data, models, offset, **transfer)})
                os.environ[lite_backbone.LITE_ENV] = "auto"
    return results


def print_tables(results: list[dict], note: str) -> None:
    """Every run, then bn_cnn / transfer per seed (median and range over seeds), then LiteRT against TensorFlow
    features on the same seed."""
    print(note + "\n")
    print("| recipe | seed offset | epochs run | best val accuracy | seconds to it | whole run (s) | val AUC | "
          "test accuracy (n) | test AUC | load avg after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['recipe']} | {r['seed_offset']} | {r['epochs']} | {r['best_val_accuracy']:.3f} | "
              f"{r['to_best_s']:.0f} | {r['total_s']:.0f} | {r['val_auc'] or float('nan'):.4f} | "
              f"{r['test_accuracy']:.3f} ({r['test_n']}) | {r['test_auc'] or float('nan'):.4f} | {r['load_average']:.1f} |")
    print("\n| recipe | seed offset | " + " | ".join(results[0]["phases"]) + " |\n|---|---|"
          + "---|" * len(results[0]["phases"]))
    for r in results:
        print(f"| {r['recipe']} | {r['seed_offset']} | " + " | ".join(f"{v:.1f}" for v in r["phases"].values()) + " |")
    by: dict[tuple, list[dict]] = {}
    for r in results:
        by.setdefault((r["recipe"], r["seed_offset"]), []).append(r)

    def median_s(label, s):  # a seed run more than once (combined files): the median of its runs
        return statistics.median(r["to_best_s"] for r in by[label, s])

    seeds = sorted({r["seed_offset"] for r in results})
    for label in ("transfer LiteRT warm", "transfer LiteRT cold", "transfer TensorFlow"):
        ratios = [median_s("bn_cnn", s) / median_s(label, s) for s in seeds if ("bn_cnn", s) in by and (label, s) in by]
        if ratios:
            print(f"\nbn_cnn / {label}, seconds to the best validation accuracy, per seed: "
                  f"{', '.join(f'{x:.1f}x' for x in ratios)}; median {statistics.median(ratios):.1f}x, "
                  f"range {min(ratios):.1f}-{max(ratios):.1f}x (n = {len(ratios)} seeds; a seed run more than "
                  f"once: the median of its runs)")
    for s in seeds:
        if ("transfer TensorFlow", s) in by and ("transfer LiteRT warm", s) in by:
            tf_, lite = by["transfer TensorFlow", s][0], by["transfer LiteRT warm", s][0]
            print(f"seed {s}: LiteRT - TensorFlow features: best val accuracy "
                  f"{lite['best_val_accuracy'] - tf_['best_val_accuracy']:+.4f}, val AUC "
                  f"{(lite['val_auc'] or 0) - (tf_['val_auc'] or 0):+.4f}, test accuracy "
                  f"{lite['test_accuracy'] - tf_['test_accuracy']:+.4f}, test AUC "
                  f"{(lite['test_auc'] or 0) - (tf_['test_auc'] or 0):+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "chest_xray_pneumonia" / "train")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="training-seed offsets (the split is always that of seed 1337)")
    ap.add_argument("--recipes", nargs="+", default=["scratch", "transfer"],
                    choices=["scratch", "transfer", "transfer-tf"])
    ap.add_argument("--json", type=Path, help="also write the runs to this file")
    ap.add_argument("--combine", type=Path, nargs="+", help="print the tables of earlier --json files only")
    a = ap.parse_args()
    if a.combine:
        print_tables([r for f in a.combine for r in json.loads(f.read_text())["runs"]],
                     "combined: " + ", ".join(f.name for f in a.combine))
        return
    results = run_all(a)
    note = (f"{a.per_class} images per class from {a.data.name}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}")
    if a.json:
        a.json.write_text(json.dumps({"note": note, "runs": results}, indent=1))
    print_tables(results, note)


if __name__ == "__main__":
    main()
