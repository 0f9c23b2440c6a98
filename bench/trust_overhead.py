"""What the out-of-distribution gate adds to a prediction (issue 14: it must add under 10%).

For each bundled model: a copy in a temporary folder gets a gate (``ood.npz``) fitted on
features of random inputs (the cost does not depend on what the gate was fitted on, only
on the feature size), then the median time of ``predict_batch`` without the gate is
compared with ``predict_batch_with_features`` + ``verdicts`` (the features come out of the
same forward pass, then the Mahalanobis score), interleaved so that load on the machine
hits both alike.

Usage::

    .venv/bin/python bench/trust_overhead.py [--n 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402


def measure(run: Path, n: int, repeats: int) -> str:
    from medclf_core.trust.features import features_and_probabilities
    from medclf_core.inference.predictor import Predictor
    from medclf_core.trust.ood import fit_gate

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / run.name
        shutil.copytree(run, dst)
        (dst / "ood.npz").unlink(missing_ok=True)
        plain = Predictor.from_run(dst)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n, plain.image_size, plain.image_size, plain.channels), dtype=np.uint8)
        feats, _ = features_and_probabilities(plain.model, x)
        train = np.concatenate([feats] * 8) + rng.normal(0, 0.1, (8 * n, feats.shape[1]))
        fit_gate(train, rng.integers(0, len(plain.class_names), len(train)), feats).save(dst)
        gated = Predictor.from_run(dst)
        t_plain, t_gate = [], []
        plain.predict_batch(x)
        gated.verdicts(gated.predict_batch_with_features(x)[1])
        for _ in range(repeats):
            s = time.perf_counter()
            plain.predict_batch(x)
            t_plain.append(time.perf_counter() - s)
            s = time.perf_counter()
            gated.verdicts(gated.predict_batch_with_features(x)[1])
            t_gate.append(time.perf_counter() - s)
        a, b = float(np.median(t_plain)), float(np.median(t_gate))
        return (f"| {run.name} | {feats.shape[1]} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {100 * (b / a - 1):+.1f}% |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="images per batch")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    print(f"| model | features | predict_batch ({args.n} images) | with the gate | overhead |")
    print("|---|---|---|---|---|")
    for run in sorted(p for p in (REPO / "models").iterdir() if (p / "card.json").is_file()):
        print(measure(run, args.n, args.repeats), flush=True)


if __name__ == "__main__":
    main()
