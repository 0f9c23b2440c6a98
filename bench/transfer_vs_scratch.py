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

Usage::

    .venv/bin/python bench/transfer_vs_scratch.py                      # 300 chest X-rays per class
    .venv/bin/python bench/transfer_vs_scratch.py --per-class 150 --scratch-epochs 10
"""

from __future__ import annotations

import argparse
import os
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


def run(data: Path, models: Path, **cfg) -> dict:
    from medclf_core.training.events import EventLog
    from medclf_core.registry.store import read_card
    from medclf_core.training import TrainConfig, train

    events: list[dict] = []
    t0 = time.time()
    run_dir = train(TrainConfig(data=str(data), seed=1337, **cfg), models_dir=models,
                    events=EventLog(listeners=[events.append]))
    total = time.time() - t0
    seconds, best, epochs = time_to_best(events)
    card = read_card(run_dir)
    return {"arch": cfg["arch"], "to_best_s": seconds, "best_val_accuracy": best, "epochs": epochs,
            "total_s": total, "phases": phases(events), "test_accuracy": card["metrics"].get("accuracy"), "test_n": card["metrics"].get("n")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "chest_xray_pneumonia" / "train")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--scratch-epochs", type=int, default=15)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(a.data, a.per_class, Path(tmp) / "data")
        common = dict(channels=1, augment="chest_xray", group_pattern=r"(person\d+|NORMAL2-IM-\d+|IM-\d+)")
        scratch = run(data, Path(tmp) / "models", arch="bn_cnn", image_size=112, batch_size=32,
                      learning_rate=3e-4, epochs=a.scratch_epochs, patience=a.scratch_epochs,
                      model_options={"filters": [16, 32, 64, 128], "dense_units": 128, "dropout": 0.5}, **common)
        transfer = run(data, Path(tmp) / "models", arch="efficientnet_lite0", image_size=224, **common)
    print(f"{a.per_class} images per class from {a.data.name}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| recipe | epochs run | best val accuracy | seconds to it | whole run (s) | test accuracy (n) |")
    print("|---|---|---|---|---|---|")
    for r in (scratch, transfer):
        print(f"| {r['arch']} | {r['epochs']} | {r['best_val_accuracy']:.3f} | {r['to_best_s']:.0f} | "
              f"{r['total_s']:.0f} | {r['test_accuracy']:.3f} ({r['test_n']}) |")
    print("\n| recipe | " + " | ".join(scratch["phases"]) + " |\n|---|" + "---|" * len(scratch["phases"]))
    for r in (scratch, transfer):
        print(f"| {r['arch']} | " + " | ".join(f"{v:.1f}" for v in r["phases"].values()) + " |")
    print(f"\nratio, seconds to the best validation accuracy, bn_cnn / transfer: "
          f"{scratch['to_best_s'] / transfer['to_best_s']:.1f}x")


if __name__ == "__main__":
    main()
