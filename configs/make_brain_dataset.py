"""Build the brain MRI training folder from both sources in ../shared/data, as links (no image is copied).

    python configs/make_brain_dataset.py [--shared ../shared/data] [--out build/brain_mri_combined]

Navoneel (``brain_tumor_mri``, 228 images) and Br35H (``brain_tumor_br35h``, 1564) overlap: 464
Br35H files are re-encoded or resized copies of Navoneel images (SOURCES.md section 7; the manifest's
``near_duplicate_of_brain_tumor_mri`` column names the twin). Every Navoneel image gets a group id
``N0001``..., and its Br35H twins carry the same id at the start of their names, so the training
config's ``group_pattern`` (``^(N\\d{4})__``) keeps each image and its twins in one split. The audit's
own near-duplicate search groups the rest.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
from pathlib import Path

CLASSES = ("no", "yes")


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def build(shared: Path, out: Path) -> dict[str, int]:
    nav_root, br_root = shared / "brain_tumor_mri", shared / "brain_tumor_br35h"
    if out.exists():
        shutil.rmtree(out)
    for c in CLASSES:
        (out / c).mkdir(parents=True)
    ids: dict[str, str] = {}
    counts = {"navoneel": 0, "br35h": 0, "br35h_twins": 0}
    for c in CLASSES:
        for f in sorted((nav_root / c).iterdir()):
            if f.is_file():
                gid = ids.setdefault(f"{c}/{f.name}", f"N{len(ids) + 1:04d}")
                os.symlink(f.resolve(), out / c / f"{gid}__navoneel__{safe(f.name)}")
                counts["navoneel"] += 1
    with open(shared / "manifests" / "brain_tumor_br35h.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        rel = row["file"].removeprefix("brain_tumor_br35h/")
        c, name = rel.split("/", 1)
        twin = row.get("near_duplicate_of_brain_tumor_mri") or ""
        twin = twin.split(":", 1)[1].strip() if ":" in twin else twin.strip()
        prefix = f"{ids[twin]}__" if twin in ids else ""
        counts["br35h_twins"] += bool(prefix)
        os.symlink((br_root / rel).resolve(), out / c / f"{prefix}br35h__{safe(name)}")
        counts["br35h"] += 1
    return counts


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--shared", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=here / "build" / "brain_mri_combined")
    a = ap.parse_args()
    print(build(a.shared, a.out), "->", a.out)
