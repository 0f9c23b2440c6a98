"""Build the brain MRI training folder from both sources in ../shared/data, as links (no image is copied).

    python configs/make_brain_dataset.py [--shared ../shared/data] [--out build/brain_mri_combined]

Navoneel (``brain_tumor_mri``, 228 images) and Br35H (``brain_tumor_br35h``, 1564) overlap: 464
Br35H files are re-encoded or resized copies of Navoneel images (SOURCES.md section 7; the manifest's
``near_duplicate_of_brain_tumor_mri`` column names the twin). Every Navoneel image gets a group id
``N0001``..., and its Br35H twins carry the same id at the start of their names, so the training
config's ``group_pattern`` (``^(N\\d{4})__``) keeps each image and its twins in one split. The audit's
own near-duplicate search groups the rest.

``--sartaj`` adds the third source, ``brain_tumor_sartaj`` (731 images, SOURCES.md section 8; glioma,
meningioma and pituitary count as ``yes``) into ``build/brain_mri_three_sources``. Grouping rule: every
near-duplicate link in the manifests (Br35H -> Navoneel twin; Sartaj -> its nearest Navoneel, Br35H and
Sartaj neighbour, dHash <= 16 or gradient correlation >= 0.60, mirrors and rotations included) joins two
files into one group, and groups are closed under chaining (union-find), so a run of neighbouring
slices of one patient is one group. A Sartaj link between a ``no`` and a ``yes`` file is not followed:
SOURCES.md says all such pairs were different images on inspection (Br35H twins are copies and always join). Every group of two or more files gets an id
``G0001``... at the start of its names (``group_pattern`` ``^(G\\d{4})__``), then the source
(``navoneel__``, ``br35h__``, ``sartaj__``), so a group never straddles a split and a benchmark can drop
from training every group that touches a held-out source. Nothing is dropped here.
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


SOURCES = ("navoneel", "br35h", "sartaj")
SARTAJ_LABEL = {"glioma": "yes", "meningioma": "yes", "pituitary": "yes", "no": "no"}


def _label(rel: str) -> str:
    """The yes/no label of a manifest path such as ``brain_tumor_sartaj/glioma/x.jpg``."""
    folder, cls = rel.split("/")[:2]
    return SARTAJ_LABEL[cls] if folder == "brain_tumor_sartaj" else cls


def _find(parent: dict[str, str], k: str) -> str:
    while parent.setdefault(k, k) != k:
        parent[k] = parent[parent[k]]
        k = parent[k]
    return k


def three_source_files(shared: Path) -> tuple[list[tuple[str, str, str]], dict[str, str], int]:
    """Every file of the three sources as (source, label, manifest path), its group root, and the
    number of cross-label links ignored (see the module docstring for the rule)."""
    files = [("navoneel", c, f"brain_tumor_mri/{c}/{f.name}") for c in CLASSES
             for f in sorted((shared / "brain_tumor_mri" / c).iterdir()) if f.is_file()]
    parent: dict[str, str] = {}
    ignored = 0
    for source, manifest, cols in (("br35h", "brain_tumor_br35h.csv", ("near_duplicate_of_brain_tumor_mri",)),
                                   ("sartaj", "brain_tumor_sartaj.csv", ("near_duplicate_of_brain_tumor_mri",
                                    "near_duplicate_of_brain_tumor_br35h", "near_duplicate_within_sartaj"))):
        with open(shared / "manifests" / manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                files.append((source, _label(row["file"]), row["file"]))
                for col in cols:
                    other = (row.get(col) or "").strip()
                    if other and not other.startswith("brain_tumor_"):  # Br35H names the Navoneel twin as "c/name"
                        other = "brain_tumor_mri/" + other.split(":", 1)[-1].strip()
                    if not other:
                        continue
                    if source == "sartaj" and _label(other) != _label(row["file"]):
                        ignored += 1
                        continue
                    parent[_find(parent, row["file"])] = _find(parent, other)
    return files, {rel: _find(parent, rel) for _, _, rel in files}, ignored


def build_three(shared: Path, out: Path, hold_out: str | None = None, held_out_dir: Path | None = None) -> dict:
    """The three-source folder of links (module docstring); returns counts per source and of groups.

    ``hold_out`` (a source): the files of that source whose group holds no file of another source go to
    ``held_out_dir`` instead (an other-source test set for the model trained on ``out``: no copy or
    neighbouring slice of them is trained on); its files grouped with another source's stay in ``out``."""
    files, root, ignored = three_source_files(shared)
    sizes: dict[str, int] = {}
    sources_of: dict[str, set[str]] = {}
    for source, _, rel in files:
        sizes[root[rel]] = sizes.get(root[rel], 0) + 1
        sources_of.setdefault(root[rel], set()).add(source)
    gid: dict[str, str] = {}
    for folder in (out, held_out_dir if hold_out else None):
        if folder is not None:
            if folder.exists():
                shutil.rmtree(folder)
            for c in CLASSES:
                (folder / c).mkdir(parents=True)
    counts = {s: 0 for s in SOURCES} | {"sartaj_grouped": 0, "cross_label_links_ignored": ignored}
    for source, label, rel in files:
        g = root[rel]
        prefix = f"{gid.setdefault(g, f'G{len(gid) + 1:04d}')}__" if sizes[g] > 1 else ""
        name = safe(rel.split("/", 1)[1] if source == "sartaj" else rel.rsplit("/", 1)[1])
        held = hold_out is not None and sources_of[g] == {hold_out}
        os.symlink((shared / rel).resolve(), (held_out_dir if held else out) / label / f"{prefix}{source}__{name}")
        counts[f"{source}_held_out" if held else source] = counts.get(f"{source}_held_out" if held else source, 0) + 1
        counts["sartaj_grouped"] += bool(prefix) and source == "sartaj"
    counts["groups"] = len(gid)
    return counts


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--shared", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None,
                    help="default build/brain_mri_combined, or build/brain_mri_three_sources with --sartaj")
    ap.add_argument("--sartaj", action="store_true", help="add brain_tumor_sartaj as a third source, grouped")
    ap.add_argument("--hold-out", choices=SOURCES, default=None,
                    help="with --sartaj: this source's files that share no group with another source go to "
                         "build/brain_mri_<source>_held_out (an other-source test set), the rest to "
                         "build/brain_mri_without_<source>")
    a = ap.parse_args()
    if a.hold_out and not a.sartaj:
        ap.error("--hold-out needs --sartaj")
    default = ("brain_mri_without_" + a.hold_out if a.hold_out else "brain_mri_three_sources") if a.sartaj \
        else "brain_mri_combined"
    out = a.out or here / "build" / default
    if a.sartaj:
        held = here / "build" / f"brain_mri_{a.hold_out}_held_out" if a.hold_out else None
        print(build_three(a.shared, out, a.hold_out, held), "->", out, *(["and", held] if held else []))
    else:
        print(build(a.shared, out), "->", out)
