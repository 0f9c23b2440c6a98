"""Training images/s versus number of devices or workers, and FLOPs per image of each architecture.

Two parts:

1. **FLOPs per image** of every registered architecture at its default input
   (224x224x3), counted by TensorFlow's profiler on the frozen forward graph
   (``tf.compat.v1.profiler`` float_operation: one multiply-add = 2 FLOPs). A training
   step costs about 3x the forward pass (forward + two backward matmuls per layer).
2. **Scaling on this machine**: the real ``python -m medclf_core train`` command on a
   generated, learnable dataset, with
   - ``--devices N``: MirroredStrategy over N logical CPU devices (one process);
   - N workers: MultiWorkerMirroredStrategy, N processes on loopback ports (TF_CONFIG).
   Images/s is the model card's ``training.images_per_s`` (median over epochs after
   the first, which also traces and fills the cache). Per-device batch is fixed, so
   the global batch grows with the device count (the recipe the trainer uses).

On a CPU-only machine logical devices share the same cores: the numbers show the
overhead of the distributed code paths, not a speed-up. See docs/BENCHMARKS.md.

Usage::

    .venv/bin/python bench/scaling.py [--devices 1 2] [--workers 1 2] [--epochs 6] [--image-size 64]
        [--per-class 64] [--batch-size 16] [--flops-only] [--json-out bench/results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent

from medclf_core.training.devices import free_local_ports  # noqa: E402


def forward_flops(arch: str, image_size: int = 224, channels: int = 3, num_classes: int = 2) -> int:
    """FLOPs of one image's forward pass, from the TF profiler on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from medclf_core.models.architectures import build_model

    model = build_model(arch, num_classes, image_size, channels, **({"weights": None} if arch == "resnet50" else {}))
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, image_size, image_size, channels], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=opts)
    return int(info.total_float_ops), int(model.count_params())


def _train_cmd(data: Path, models: Path, args, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "medclf_core", "train", str(data), "--models-dir", str(models), "--no-progress",
            "--json", "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--channels", "1",
            "--batch-size", str(args.batch_size), "--augment", "none", "--patience", "100", *extra]


def _card(models: Path) -> dict:
    cards = list(models.glob("*/card.json"))
    card = json.loads(cards[0].read_text())
    history = json.loads((cards[0].parent / "history.json").read_text())
    card["per_epoch_images_per_s"] = [h.get("images_per_s") for h in history]
    return card


def run_devices(data: Path, n: int, args, tmp: Path) -> dict:
    models = tmp / f"dev{n}"
    extra = ["--devices", str(n)] if n > 1 else []
    t0 = time.time()
    subprocess.run(_train_cmd(data, models, args, extra), cwd=REPO, check=True, capture_output=True,
                   timeout=args.timeout, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    card = _card(models)
    return {"mode": "mirrored logical CPUs" if n > 1 else "one device", "n": n, "wall_s": round(time.time() - t0, 1),
            "images_per_s": card["training"]["images_per_s"], "per_epoch": card["per_epoch_images_per_s"],
            "global_batch": card["training"]["global_batch_size"], "val_accuracy": card["validation_metrics"]["accuracy"]}


def run_workers(data: Path, n: int, args, tmp: Path) -> dict:
    models = tmp / f"work{n}"
    if n == 1:
        res = run_devices(data, 1, args, tmp / "w1")
        return {**res, "mode": "one worker"}
    ports = free_local_ports(n)
    procs = []
    t0 = time.time()
    try:
        for i in range(n):
            conf = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(_train_cmd(data, models, args, []), cwd=REPO, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL,
                                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CONFIG": json.dumps(conf)}))
        codes = [p.wait(timeout=args.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if codes != [0] * n:
        raise RuntimeError(f"workers exited with {codes}")
    card = _card(models)
    return {"mode": "MultiWorkerMirrored processes", "n": n, "wall_s": round(time.time() - t0, 1),
            "images_per_s": card["training"]["images_per_s"], "per_epoch": card["per_epoch_images_per_s"],
            "global_batch": card["training"]["global_batch_size"], "val_accuracy": card["validation_metrics"]["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2])
    p.add_argument("--workers", type=int, nargs="*", default=[2])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--per-class", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--flops-only", action="store_true")
    p.add_argument("--json-out")
    args = p.parse_args()

    from medclf_core.models.architectures import ARCHITECTURES

    out: dict = {"flops": {}, "scaling": [], "config": vars(args), "cores": os.cpu_count(),
                 "load_avg_before": os.getloadavg()}
    for arch in ARCHITECTURES:
        flops, params = forward_flops(arch)
        out["flops"][arch] = {"forward_gflops_per_image": round(flops / 1e9, 3),
                              "train_gflops_per_image": round(3 * flops / 1e9, 3), "params": params}
        print(f"{arch:<11} params {params:>11,}  forward {flops / 1e9:8.3f} GFLOP/img  train ~{3 * flops / 1e9:8.3f}")
    if not args.flops_only:
        import runpy

        make_pattern_dataset = runpy.run_path(str(REPO / "tests" / "helpers.py"))["make_pattern_dataset"]  # test data

        with tempfile.TemporaryDirectory() as tmpd:
            tmp = Path(tmpd)
            data = make_pattern_dataset(tmp / "data", n_per_class=args.per_class, size=args.image_size)
            for n in args.devices:
                r = run_devices(data, n, args, tmp)
                out["scaling"].append(r)
                print(json.dumps(r))
            for n in args.workers:
                r = run_workers(data, n, args, tmp)
                out["scaling"].append(r)
                print(json.dumps(r))
        out["load_avg_after"] = os.getloadavg()
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
