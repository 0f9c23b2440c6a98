"""Audit memory and time on hostile duplicate-heavy zips (issue 17 item 1).

Each case runs in a fresh process (peak RSS is per process) and prints one Markdown row:

- ``identical``: N identical tiny PNGs (the 1.7 MB zip that took 6.9 GB and 64 s before);
- ``same-dhash``: N different images (one pixel changed) sharing one difference hash;
- ``near``: N different images whose hashes all lie within a few bits of each other;
- ``distinct``: N unrelated random images (the near-duplicate search's worst case: all pairs compared).

Usage::

    .venv/bin/python bench/audit_memory.py [--n 10000] [--cases identical,same-dhash,near,distinct]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(case: str, n: int, path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    base = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        same = _png(base)
        for i in range(n):
            if case == "identical":
                data = same
            elif case == "same-dhash":
                arr = base.copy()
                arr[i % 32, (i // 32) % 32] ^= 1 + (i // 1024) % 3  # one pixel: the dHash does not change
                data = _png(arr)
            elif case == "near":
                arr = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
                data = _png(arr)
            else:
                data = _png(rng.integers(0, 256, (32, 32), dtype=np.uint8))
            zf.writestr(f"{'AB'[i % 2]}/{i:06d}.png", data)


def run_case(zip_path: str) -> dict:
    import resource
    import time

    from medclf_core.data.audit import audit_dataset
    from medclf_core.data.scan import open_dataset

    start = time.perf_counter()
    with open_dataset(zip_path) as index:
        report = audit_dataset(index, max_seconds=0)
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "exact_groups": len(report.duplicate_groups), "near_groups": len(report.near_duplicate_groups),
            "largest_group": max([len(g) for g in report.duplicate_groups + report.near_duplicate_groups] or [0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--cases", default="identical,same-dhash,near,distinct")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child)))
        return
    print("| case | images | zip MB | seconds | peak RSS MB | exact groups | near groups | largest group |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for case in args.cases.split(","):
            path = Path(tmp) / f"{case}.zip"
            make_zip(case, args.n, path)
            out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {case} | {args.n} | {path.stat().st_size / 2**20:.1f} | {r['seconds']} | {r['peak_rss_mb']} | "
                  f"{r['exact_groups']} | {r['near_groups']} | {r['largest_group']} |")


if __name__ == "__main__":
    main()
