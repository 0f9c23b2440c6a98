"""Feature caching against the backbone's raw forward throughput, on the same images, side by side.

- ``raw TensorFlow``: the images already decoded and resized in memory, one compiled call of the backbone
  (up to its pooled features) per batch, at the best of ``--batch-sizes`` (a last, partial batch is
  padded to the full shape, as the cache does); images/s.
- ``raw LiteRT``: the same images through the same extractor converted to LiteRT
  (:mod:`medclf_core.training.lite_backbone`, what the cache now runs by default); images/s.
- ``cache``: :func:`medclf_core.training.transfer.cache_features` end to end, files -> features, every
  view (``original`` and the chest recipe's two augmented views by default), at the recipe's batch
  size, on TensorFlow (``MEDCLF_LITE_FEATURES=0``) and on LiteRT; images x views / s. Each is reported
  against both raw forwards (say which baseline a ratio uses).

The one-off costs are printed too: TensorFlow's trace, LiteRT's conversion on a cold cache (a fresh
``MEDCLF_CACHE_DIR`` in a temporary folder) and its load on a warm one (a new interpreter reading the
file), each with one batch of features; and the largest difference of the two backends' features.

Both run in one process on one warm extractor (traces are paid before the clock), interleaved
``--repeats`` times; the table gives the median and the spread (min-max). The decode pipeline alone
and one augmented view alone are timed the same way, to show where the gap goes. On a machine that
other jobs load, the wall-clock ratio swings with their load from one step to the next; the ratio of
this process's CPU seconds (all its threads) per image is printed too, which the other jobs move
less (it counts the work, not the idle waits of a core short of work).

Usage::

    .venv/bin/python bench/feature_cache_speed.py                    # 300 chest X-rays, 3 views
    .venv/bin/python bench/feature_cache_speed.py --n 120 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def first_images(source: Path, n: int) -> list[str]:
    """``n`` images, alternating over the class folders, each folder in sorted order."""
    folders = [sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(source.iterdir()) if d.is_dir()]
    return [str(folders[i % len(folders)][i // len(folders)]) for i in range(n)]


def raw_pass(forward, images, batch_size: int) -> float:
    """Seconds for one pass of the compiled backbone over the in-memory images, batch by batch."""
    import numpy as np

    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        if len(x) < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - len(x), *x.shape[1:]), x.dtype)])
        np.asarray(forward(x))
    return time.perf_counter() - started


CPU: list[float] = []   # process CPU seconds of the last timed() call


def timed(fn) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    CPU.append(time.process_time() - cpu)
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "chest_xray_pneumonia" / "train")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--cache-batch-sizes", type=int, nargs="+", default=[32],
                    help="batch sizes of the cache's backbone pass (the first: the recipe's)")
    ap.add_argument("--views", nargs="+", default=["original", "augment1", "augment2"])
    a = ap.parse_args()

    import tempfile

    import numpy as np
    import tensorflow as tf

    from medclf_core.data.augment import AugmentConfig
    from medclf_core.data.pipeline import make_dataset
    from medclf_core.io.images import load_for_model
    from medclf_core.models.architectures import build_model, get_architecture
    from medclf_core.training import lite_backbone
    from medclf_core.training.transfer import cache_features, feature_extractor, traced_augmenter

    os.environ[lite_backbone.CACHE_ENV] = tempfile.mkdtemp(prefix="medclf-bench-cache-")  # cold: converts once
    paths, size, channels = first_images(a.data, a.n), 224, 1
    augment = AugmentConfig.preset("chest_xray")
    model = build_model("efficientnet_lite0", 2, size, channels)
    extractor = feature_extractor(model, get_architecture("efficientnet_lite0").feature_layer)
    images = np.stack([load_for_model(p, size, channels) for p in paths]).astype(np.float32)

    forwards = {}
    for bs in a.batch_sizes:
        spec = tf.TensorSpec((bs, size, size, channels), tf.float32)
        forwards[bs] = tf.function(lambda x: extractor(x, training=False), input_signature=[spec])
        forwards[bs](images[:bs])  # trace
    sweep = {bs: len(paths) / raw_pass(forwards[bs], images, bs) for bs in a.batch_sizes}
    best = max(sweep, key=sweep.get)
    cache = dict(image_size=size, channels=channels, views=a.views, augment=augment)
    backends = {"tf": "0", "lite": "1"}

    def cached(bs: int, backend: str, n: int | None = None):
        os.environ[lite_backbone.LITE_ENV] = backends[backend]
        return cache_features(extractor, paths[:n], batch_size=bs, **cache)

    # one-off costs: TensorFlow's trace; LiteRT's conversion (cold cache) and, in a new thread, its load (warm)
    warm_up = {("tf", bs): timed(lambda: cached(bs, "tf", bs)) for bs in a.cache_batch_sizes}
    warm_up[("lite", "cold")] = timed(lambda: cached(a.cache_batch_sizes[0], "lite", a.cache_batch_sizes[0]))
    lite_backbone._LOCAL.__dict__.clear()
    warm_up[("lite", "warm")] = timed(lambda: cached(a.cache_batch_sizes[0], "lite", a.cache_batch_sizes[0]))
    lite_raw = lite_backbone.lite_forward(extractor, size, channels, passes=len(paths))[0]
    recipe_batch = a.cache_batch_sizes[0]
    augmenter = traced_augmenter(augment, 1)
    batch = tf.constant(images[:recipe_batch])
    augmenter(batch)
    same = np.abs(cached(recipe_batch, "tf", 64) - cached(recipe_batch, "lite", 64))

    keys = ["raw tf", "raw lite", *[(b, bs) for bs in a.cache_batch_sizes for b in backends]]
    rows = {k: [] for k in [*keys, "decode", "augment"]}
    cpu = {k: [] for k in keys}   # CPU seconds per image (x view)
    for _ in range(a.repeats):
        rows["raw tf"].append(len(paths) / timed(lambda: raw_pass(forwards[best], images, best)))
        cpu["raw tf"].append(CPU[-1] / len(paths))
        rows["raw lite"].append(len(paths) / timed(lambda: raw_pass(lite_raw, images, recipe_batch)))
        cpu["raw lite"].append(CPU[-1] / len(paths))
        for key in keys[2:]:
            rows[key].append(len(paths) * len(a.views) / timed(lambda: cached(key[1], key[0])))
            cpu[key].append(CPU[-1] / (len(paths) * len(a.views)))
        ds = make_dataset(paths, np.zeros(len(paths), np.int32), image_size=size, channels=channels,
                          batch_size=recipe_batch, training=False, cache=False)
        rows["decode"].append(len(paths) / timed(lambda: [None for _ in ds]))
        rows["augment"].append(recipe_batch * 5 / timed(lambda: [np.asarray(augmenter(batch)) for _ in range(5)]))
    report(a, paths, size, channels, sweep, best, rows, cpu, warm_up, same)


def report(a, paths, size, channels, sweep, best, rows, cpu, warm_up, same) -> None:
    """The tables: throughputs, then each cache row against the raw TensorFlow and the raw LiteRT forward."""
    print(f"{len(paths)} images from {a.data}, {size} px, {channels} channel(s); views {', '.join(a.views)}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {a.repeats} interleaved repeats\n")
    print("raw TensorFlow batch-size sweep (images/s, one pass each): "
          + ", ".join(f"{bs}: {v:.1f}" for bs, v in sweep.items()) + f"; best {best}\n")
    print("| step | throughput, median (min-max) |")
    print("|---|---|")
    print(f"| raw TensorFlow forward (traced), batch {best}, images in memory | {spread(rows['raw tf'])} images/s |")
    print(f"| raw LiteRT forward (XNNPACK), images in memory | {spread(rows['raw lite'])} images/s |")
    names = {"tf": "TensorFlow", "lite": "LiteRT"}
    for key in rows:
        if isinstance(key, tuple):
            print(f"| cache_features end to end on {names[key[0]]}, batch {key[1]}, {len(a.views)} views | "
                  f"{spread(rows[key])} images x views / s |")
    print(f"| decode pipeline alone (files -> resized batches) | {spread(rows['decode'])} images/s |")
    print(f"| one augmented view alone (traced) | {spread(rows['augment'])} images/s |")
    print()
    for key in [k for k in rows if isinstance(k, tuple)]:
        for base in ("raw tf", "raw lite"):
            ratios = [c / r for c, r in zip(rows[key], rows[base])]
            by_cpu = [r / c for c, r in zip(cpu[key], cpu[base])]
            print(f"cache on {names[key[0]]} (batch {key[1]}) / {base.replace('tf', 'TensorFlow').replace('lite', 'LiteRT')}"
                  f" forward: per repeat {', '.join(f'{r:.0%}' for r in ratios)}; median {statistics.median(ratios):.0%};"
                  f" by CPU s per image: median {statistics.median(by_cpu):.0%}")
    print("\none-off costs (s, the first call of each, on as many images as one batch): "
          + ", ".join(f"{k[0]} {k[1]}: {v:.1f}" for k, v in warm_up.items()))
    print(f"LiteRT - TensorFlow features, {min(64, len(paths))} images x {len(a.views)} views: max |diff| {same.max():.2e}, "
          f"mean {same.mean():.2e}")


if __name__ == "__main__":
    main()
