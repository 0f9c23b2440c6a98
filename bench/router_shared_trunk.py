"""The modality router on the main model's trunk: does it share it, the same probabilities, and the time saved.

For each bundled model with a router (chest X-ray, brain MRI), on the bundled sample images: whether the router
shares the model's frozen trunk (:func:`medclf_core.inference.router.shares_trunk`), the largest difference
between the router's probabilities from the model's features and from its own forward pass, and the median
time of one image's :meth:`Predictor.predict` with the shared features against the router's own pass, side by
side in one process (LiteRT's kept passes dropped before each repeat). Needs the LiteRT files
(``python -m medclf_core export-lite --all``, which ``scripts/app.sh`` runs).

Usage::

    .venv/bin/python bench/router_shared_trunk.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent


def timed_predict(predictor, image, repeats: int, shared: bool) -> float:
    """Median milliseconds of one image's predict, with the router reading shared features or not."""
    router = predictor.router
    forced = None if shared else (lambda routed: False)
    if forced is not None:
        router.shares_trunk_with = forced
    try:
        times = []
        for _ in range(repeats):
            predictor.lite.forget()
            router.predictor.lite.forget()
            start = time.perf_counter()
            predictor.predict([image])
            times.append(time.perf_counter() - start)
    finally:
        if forced is not None:
            del router.shares_trunk_with
    return 1000 * statistics.median(times)


def main() -> None:
    import numpy as np

    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    files = sorted((REPO / "samples" / "images" / "chest_xray").glob("*.jpeg")) + sorted(
        (REPO / "samples" / "dicom").glob("*.dcm"))
    images = [load_image(f.read_bytes()).pixels for f in files]
    for name in ("chest-xray-pneumonia", "brain-mri-tumour"):
        predictor = Predictor.from_run(REPO / "models" / name)
        if predictor.lite is None or predictor.router is None or predictor.router.predictor.lite is None:
            print(f"{name}: no LiteRT files or no router (run: python -m medclf_core export-lite --all)")
            continue
        predictor.warm_up()
        router = predictor.router
        prepared = np.stack([predictor.prepare(a) for a in images])
        _, features = predictor.predict_batch_with_features(prepared)
        own = router.probabilities(prepared)
        via = router.probabilities(prepared, features, routed=predictor)
        diff = max(abs(a[c] - b[c]) for a, b in zip(own, via, strict=True) for c in a)
        shared_ms, own_ms = [], []
        for _ in range(3):  # interleaved
            shared_ms.append(timed_predict(predictor, images[0], args.repeats, shared=True))
            own_ms.append(timed_predict(predictor, images[0], args.repeats, shared=False))
        print(f"{name}: shares the router's trunk: {router.shares_trunk_with(predictor)}; largest probability "
              f"difference, features vs own pass, on {len(images)} samples: {diff:.2g}; predict of one image, "
              f"median ms (3 interleaved x {args.repeats}): shared {statistics.median(shared_ms):.1f}, "
              f"router's own pass {statistics.median(own_ms):.1f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
