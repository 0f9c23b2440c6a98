"""Our tf.data pipeline against the seeds' ImageDataGenerator recipe, same model, same data, one run.

Seed 001's recipe: ``ImageDataGenerator(validation_split=0.2).flow_from_directory(224x224, batch 32)``,
its three-conv CNN (our ``simple_cnn``), Adam 1e-3, 10 epochs. Both sides here train the *same*
model (identical initial weights) on the *same* files: the generator's own train/validation file
lists are fed to our pipeline. Measured:

1. input pipeline alone: images/s for one pass over the training files (ours: the first, decoding
   pass and a cached pass);
2. training: images/s over all epochs (fit time / images seen);
3. wall time to reach the seed recipe's best validation accuracy, and the ratio.

Usage (defaults = the seed recipe on the modality data)::

    .venv/bin/python bench/pipeline_vs_seed.py [--data ../shared/data/modality] [--epochs 10]
        [--image-size 224] [--limit-per-class N] [--json-out bench/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def machine() -> dict:
    import keras
    import tensorflow as tf

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}


def limited_copy(src: Path, per_class: int, dst: Path) -> Path:
    """A symlinked subset (first N files per class) so a quick run keeps the generator's layout."""
    for cdir in sorted(d for d in src.iterdir() if d.is_dir()):
        (dst / cdir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cdir.iterdir())[:per_class]:
            target = dst / cdir.name / f.name
            if not target.exists():
                target.symlink_to(f.resolve())
    return dst


class EpochClock:
    """Records wall time and val accuracy at each epoch end (relative to fit start)."""

    def __init__(self):
        import keras

        outer = self

        class _CB(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.points.append((time.perf_counter() - outer.t0, float(logs.get("val_accuracy", np.nan))))

        self.points: list[tuple[float, float]] = []
        self.callback = _CB()


def fresh_model(size: int, n_classes: int, seed: int):
    import keras

    from medclf_core.models.architectures import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("simple_cnn", n_classes, size, 3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "modality"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit-per-class", type=int, default=0, help="use only the first N files per class (0: all)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--json-out", default="bench/results/pipeline_vs_seed.json")
    args = p.parse_args()

    import tempfile

    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from medclf_core.data.pipeline import make_dataset

    data = Path(args.data)
    if args.limit_per_class:
        data = limited_copy(data, args.limit_per_class, Path(tempfile.mkdtemp(prefix="bench-data-")))
    size, bs = args.image_size, args.batch_size

    gen = ImageDataGenerator(validation_split=0.2)  # the seed's rescale lives in our model (Rescaling layer)
    flow = dict(target_size=(size, size), batch_size=bs, class_mode="sparse", seed=args.seed)
    idg_train = gen.flow_from_directory(str(data), subset="training", shuffle=True, **flow)
    idg_val = gen.flow_from_directory(str(data), subset="validation", shuffle=False, **flow)
    n_classes = len(idg_train.class_indices)
    train_files, train_labels = idg_train.filepaths, idg_train.classes
    val_files, val_labels = idg_val.filepaths, idg_val.classes
    n_train = len(train_files)

    ours_train = make_dataset(train_files, train_labels, image_size=size, channels=3, batch_size=bs, training=True,
                              augment=None, seed=args.seed)
    ours_val = make_dataset(val_files, val_labels, image_size=size, channels=3, batch_size=bs, training=False)

    # 1. input pipeline alone
    t = time.perf_counter()
    for i in range(len(idg_train)):
        idg_train[i]
    idg_ips = n_train / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in ours_train:
        pass
    ours_cold = n_train / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in ours_train:
        pass
    ours_warm = n_train / (time.perf_counter() - t)
    for _ in ours_val:  # fill the validation cache too, as training's first epoch would
        pass

    # 2./3. training, same initial weights
    results = {}
    for name, tr, va in (("ImageDataGenerator (seed recipe)", idg_train, idg_val), ("medclf tf.data", ours_train, ours_val)):
        model = fresh_model(size, n_classes, args.seed)
        clock = EpochClock()
        t = time.perf_counter()
        model.fit(tr, validation_data=va, epochs=args.epochs, callbacks=[clock.callback], verbose=0)
        fit_s = time.perf_counter() - t
        results[name] = {"fit_seconds": fit_s, "train_images_per_s": n_train * args.epochs / fit_s,
                         "val_accuracy_per_epoch": [round(a, 4) for _, a in clock.points],
                         "seconds_at_epoch_end": [round(s, 1) for s, _ in clock.points]}
        print(f"{name}: {fit_s:.0f}s, val acc per epoch {results[name]['val_accuracy_per_epoch']}", file=sys.stderr)

    seed_name, ours_name = list(results)
    target = max(results[seed_name]["val_accuracy_per_epoch"])

    def time_to(r):
        for s, a in zip(r["seconds_at_epoch_end"], r["val_accuracy_per_epoch"], strict=True):
            if a >= target:
                return s
        return None

    t_seed, t_ours = time_to(results[seed_name]), time_to(results[ours_name])
    report = {
        "machine": machine(), "data": str(args.data), "train_images": n_train, "val_images": len(val_files),
        "image_size": size, "batch_size": bs, "epochs": args.epochs,
        "pipeline_images_per_s": {"ImageDataGenerator": idg_ips, "tf.data first pass (decode+cache)": ours_cold,
                                  "tf.data cached pass": ours_warm},
        "training": results, "target_val_accuracy": target,
        "seconds_to_target": {seed_name: t_seed, ours_name: t_ours},
    }
    rows = [
        ("input pipeline, images/s (one pass)", f"{idg_ips:.0f}", f"{ours_cold:.0f} first / {ours_warm:.0f} cached",
         f"{ours_cold / idg_ips:.1f}x / {ours_warm / idg_ips:.1f}x"),
        ("training, images/s", f"{results[seed_name]['train_images_per_s']:.1f}",
         f"{results[ours_name]['train_images_per_s']:.1f}",
         f"{results[ours_name]['train_images_per_s'] / results[seed_name]['train_images_per_s']:.2f}x"),
        (f"wall time to val acc {target:.3f}", f"{t_seed:.0f} s" if t_seed else "-", f"{t_ours:.0f} s" if t_ours else "not reached",
         f"{t_seed / t_ours:.2f}x faster" if (t_seed and t_ours) else "-"),
        ("best val accuracy", f"{target:.3f}", f"{max(results[ours_name]['val_accuracy_per_epoch']):.3f}", ""),
    ]
    print(f"\n{n_train} train / {len(val_files)} val images from {args.data}, {size}px, batch {bs}, {args.epochs} epochs")
    print(f"machine: {report['machine']}")
    print("| measure | ImageDataGenerator (seed) | medclf tf.data | ratio (ours/seed) |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
