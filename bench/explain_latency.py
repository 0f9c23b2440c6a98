"""Latency of heat maps versus a plain prediction, per architecture, at 224x224 RGB.

For each architecture (random weights: latency does not depend on them) and batch
size (1 and 16) it times, as the median of several runs after a warm-up:

- ``predict``: :func:`to_model_input` + ``model.predict_on_batch`` (what the app and CLI do);
- ``predict + <method>``: the same, then :func:`medclf_core.explain.cams.heatmaps` on the batch.

Usage::

    .venv/bin/python bench/explain_latency.py                 # print a Markdown table
    .venv/bin/python bench/explain_latency.py --write         # also update docs/BENCHMARKS.md
    .venv/bin/python bench/explain_latency.py --archs simple_cnn --repeats 3

The numbers are wall-clock seconds on whatever CPU runs this; on a machine shared
with other jobs they vary from run to run (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402

SECTION = "## Explainability latency"
DOC = REPO / "docs" / "BENCHMARKS.md"


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_architecture(arch: str, size: int, batch_sizes, methods, repeats: int, scorecam_repeats: int,
                       engine: str = "compiled") -> list[dict]:
    from medclf_core.models.architectures import build_model
    from medclf_core.explain.cams import heatmaps
    from medclf_core.io.images import to_model_input

    model = build_model(arch, 2, size, 3, weights=None)
    rng = np.random.default_rng(0)
    rows = []
    for batch in batch_sizes:
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]

        def predict():
            x = np.stack([to_model_input(im, size, 3) for im in images]).astype("float32")
            return model.predict_on_batch(x)

        row = {"arch": arch, "batch": batch, "predict": median_seconds(predict, repeats)}
        for method in methods:
            slow = method == "scorecam" and batch > 1
            row[method] = median_seconds(lambda m=method: (predict(), heatmaps(model, images, method=m, engine=engine)),
                                         scorecam_repeats if slow else repeats, warmup=0 if slow else 1)
            print(f"  {arch} batch {batch} {method}: {row[method]:.3f}s (predict {row['predict']:.3f}s)",
                  file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], methods, size: int, command: str, load_before, load_after) -> str:
    import keras
    import tensorflow as tf

    from medclf_core.explain.cams import SCORECAM_MAX_CHANNELS

    lines = [SECTION, "",
             f"Median wall-clock latency, {size}x{size} RGB, random weights, CPU only "
             f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}; TensorFlow {tf.__version__}, "
             f"Keras {keras.__version__}). \"predict\" is `to_model_input` + `predict_on_batch`; each method "
             "column is predict **plus** `heatmaps(...)` on the same batch, with the ratio to predict alone. "
             f"Score-CAM is Faster-Score-CAM capped at {SCORECAM_MAX_CHANNELS} channels "
             f"(`SCORECAM_MAX_CHANNELS`), i.e. {SCORECAM_MAX_CHANNELS} extra forward passes per image.",
             "",
             "| architecture | batch | predict (s) | " + " | ".join(f"+ {m} (s, x)" for m in methods) + " |",
             "|---|---:|---:|" + "---:|" * len(methods)]
    for r in rows:
        cells = [f"{r[m]:.3f} ({r[m] / r['predict']:.1f}x)" for m in methods]
        lines.append(f"| {r['arch']} | {r['batch']} | {r['predict']:.3f} | " + " | ".join(cells) + " |")
    lines += ["",
              f"Reproduce: `{command}`.",
              "",
              "Caveats: measured on a 2-core CPU **shared with other jobs** (load average "
              f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end), so absolute numbers are noisy "
              "and the ratios are the more meaningful figure; Score-CAM at batch 16 is a median of only "
              "a few runs. Grad-CAM and Grad-CAM++ (default `engine=\"compiled\"`: one traced graph) cost one "
              "forward pass plus a backward pass pruned to the path from the logit to the target layer, plus "
              "a fixed per-call overhead (resizing the maps, Python) that dominates for tiny models at batch 1; "
              "Score-CAM (through tf-keras-vis) needs one forward pass "
              "per kept channel per image and is computed image by image so that a map does not depend "
              "on the other images in the batch.", ""]
    return "\n".join(lines)


def write_section(text: str, doc: Path = DOC) -> None:
    """Replace this benchmark's section in ``doc`` (or append it), leaving other sections alone."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text() if doc.is_file() else "# Benchmarks\n\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    doc.write_text(new.rstrip("\n") + "\n")


def main(argv=None) -> int:
    from medclf_core.explain.cams import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["simple_cnn", "bn_cnn", "resnet50", "efficientnet_lite0"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scorecam-repeats", type=int, default=2, help="runs for Score-CAM at batch > 1")
    parser.add_argument("--engine", default="compiled", choices=["compiled", "tf-keras-vis"])
    parser.add_argument("--write", action="store_true", help=f"update the '{SECTION}' section of {DOC}")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rows = []
    for arch in args.archs:
        rows += bench_architecture(arch, args.size, args.batches, args.methods, args.repeats, args.scorecam_repeats,
                                   args.engine)
    command = ".venv/bin/python bench/explain_latency.py" + (" --write" if args.write else "")
    text = markdown(rows, args.methods, args.size, command, load_before, os.getloadavg())
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
