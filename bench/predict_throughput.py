"""Prediction speed: single-image latency (decode + predict) and batch throughput versus a per-image loop.

For each architecture (fresh weights; speed does not depend on them) at the given input size, and for
each bundled model in ``models/``: median over repeats of

- decode + resize + predict of one real sample image (what the Predict page does per upload);
- images/s of ``Predictor.predict_batch`` on N images versus calling it once per image.

Usage::

    .venv/bin/python bench/predict_throughput.py [--image-size 224] [--n 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
from explain_latency import median_seconds  # noqa: E402  (bench/ is on sys.path when run as a script)


def measure(name: str, predictor, sample: Path, n: int, repeats: int) -> str:
    from medclf_core.io.images import load_image

    def one():
        predictor.predict_images([load_image(sample).pixels])

    batch = np.stack([predictor.prepare(load_image(sample).pixels)] * n)
    latency = median_seconds(one, repeats)
    t_batch = median_seconds(lambda: predictor.predict_batch(batch, batch_size=n), repeats)
    t_loop = median_seconds(lambda: [predictor.predict_batch(batch[i:i + 1]) for i in range(n)], max(1, repeats // 2))
    return (f"| {name} | {predictor.image_size}x{predictor.image_size}x{predictor.channels} | {latency * 1000:.0f} ms | "
            f"{n / t_batch:.0f} | {n / t_loop:.0f} | {t_loop / t_batch:.1f}x |")


def main() -> int:
    from medclf_core.models.architectures import ARCHITECTURES, build_model
    from medclf_core.inference.predictor import Predictor
    from medclf_core.registry.store import list_runs, load_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    sample = sorted((REPO / "samples" / "images" / "chest_xray").glob("*.jpeg"))[0]
    print(f"sample image: {sample.name}; {os.cpu_count()} CPU cores")
    print("| model | input | one image: decode + predict | batch of N, images/s | per-image loop, images/s | "
          "batch speed-up |")
    print("|---|---|---|---|---|---|")
    for arch in ARCHITECTURES:
        model = build_model(arch, 2, args.image_size, 3, weights=None)
        card = {"class_names": ["NORMAL", "PNEUMONIA"], "cam_layer": ARCHITECTURES[arch].cam_layer}
        print(measure(f"{arch} (fresh)", Predictor(model, card), sample, args.n, args.repeats), flush=True)
    for c in sorted(list_runs(), key=lambda c: c["name"]):
        model, card = load_run(c["run_dir"])
        print(measure(c["name"], Predictor(model, card), sample, args.n, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
