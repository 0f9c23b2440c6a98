"""Build a labelled fourth-source test folder for the brain model: MedPix head MRIs, tumour or not by case.

    python configs/make_medpix_brain.py [--shared ../shared/data] [--all-sequences]

MedPix (``../shared/data/modality/MRI``; ``manifests/modality.csv`` gives each file's case, sequence and body
location) is a teaching collection that none of the brain model's training sources (Br35H, Sartaj,
Navoneel) shares. Each case has one diagnosis, so every slice of a case gets its case's label, from
``configs/medpix_head_cases.csv``:

* ``yes``: the case's MedPix topic category is a neoplasm (or its diagnosis, filed as "Unsure", is one:
  glioblastoma, craniopharyngioma, pituitary adenoma), inside the skull (brain, meninges, ventricles,
  sella, cerebellopontine angle, skull base);
* ``no``: any other diagnosis (stroke, haemorrhage, vascular malformation, infection, metabolic,
  congenital ...): abnormal brains, but none with a tumour;
* left out: neoplasms outside the skull or of its bone (orbit, eye, oropharynx, neck, calvarium, petrous
  bone), cases filed under the head that are not (spine, elbow), and three with a mass that is neither
  clearly tumour nor clearly not (tuberous sclerosis, colloid cyst, radiation necrosis).

The table was written from MedPix's case metadata (``MedPix-2-0/Case_topic.json`` at the commit the images
come from, ``d3bc431``) before any model was run on these images. Two limits: a slice of a tumour case may
not show the tumour (teaching images usually do), and the slices of one case are not independent (report
intervals that resample cases). By default only the structural sequences the training sources hold (T1,
T1 with gadolinium, T2, FLAIR); ``--all-sequences`` adds angiography, diffusion, SWI and the rest.

Files are linked as ``yes/MPX1134_synpic12345.jpg``: ``group_pattern`` ``^(MPX\\d+)_`` groups a case.

``--four-sources`` splits the labelled cases in two halves (by case, stratified by label, seeded): the
training half is added to a copy of ``build/brain_mri_without_navoneel`` (``configs/make_brain_dataset.py
--sartaj --hold-out navoneel``) as ``build/brain_mri_four_sources`` (each case one group, ``G9nnn__medpix__``),
and the other half goes to ``build/brain_mri_medpix_held_out`` (structural sequences), a test set of MedPix
cases no slice of which is trained on.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = HERE / "medpix_head_cases.csv"
STRUCTURAL_MR = ("MR - T1W - noncontrast", "MR - T1W w/Gadolinium", "MR - T1W w/Gd (fat suppressed)",
                 "MR - T2 weighted", "MR - FLAIR")


def case_labels(path: Path = LABELS) -> dict[str, str]:
    """``{case: "yes" | "no"}`` for the labelled cases (left-out cases are absent)."""
    with open(path, newline="") as f:
        return {row["case"]: row["label"] for row in csv.DictReader(f) if row["label"]}


def head_mris(shared: Path, all_sequences: bool = False) -> list[dict]:
    """MedPix MRI slices filed under the head: ``{"path", "case", "sequence"}`` for each."""
    out = []
    with open(shared / "manifests" / "modality.csv", newline="") as f:
        for row in csv.DictReader(f):
            facts = dict(re.findall(r"(\w+)=([^;]*)", row["processing"]))
            if not row["file"].startswith("modality/MRI/") or facts.get("location") != "Head":
                continue
            if all_sequences or facts.get("modality_field") in STRUCTURAL_MR:
                out.append({"path": shared / row["file"], "case": facts["case"],
                            "sequence": facts.get("modality_field", "")})
    return sorted(out, key=lambda r: r["path"])


def build(shared: Path, out: Path, all_sequences: bool = False) -> dict[str, int]:
    labels = case_labels()
    if out.exists():
        shutil.rmtree(out)
    counts = {"no": 0, "yes": 0, "left out": 0}
    for image in head_mris(shared, all_sequences):
        label = labels.get(image["case"])
        if label is None:
            counts["left out"] += 1
            continue
        (out / label).mkdir(parents=True, exist_ok=True)
        (out / label / image["path"].name).symlink_to(image["path"].resolve())
        counts[label] += 1
    return counts


def split_cases(labels: dict[str, str], seed: int = 0) -> tuple[set[str], set[str]]:
    """(training cases, held-out cases): each label's cases shuffled with ``seed`` and halved (the odd
    one to the held-out half)."""
    rng = random.Random(seed)
    train: set[str] = set()
    for label in ("no", "yes"):
        cases = sorted(c for c, lab in labels.items() if lab == label)
        rng.shuffle(cases)
        train |= set(cases[: len(cases) // 2])
    return train, set(labels) - train


def build_four(shared: Path, build_dir: Path, seed: int = 0) -> dict[str, int]:
    """``brain_mri_four_sources`` (the three-source training folder plus the training half of the MedPix
    cases) and ``brain_mri_medpix_held_out`` (the other half); see the module docstring."""
    three, out, held = (build_dir / "brain_mri_without_navoneel", build_dir / "brain_mri_four_sources",
                        build_dir / "brain_mri_medpix_held_out")
    if not three.is_dir():
        raise SystemExit(f"{three}: run python configs/make_brain_dataset.py --sartaj --hold-out navoneel first")
    labels = case_labels()
    train, _ = split_cases(labels, seed)
    for folder in (out, held):
        if folder.exists():
            shutil.rmtree(folder)
    shutil.copytree(three, out, symlinks=True)
    group = {c: f"G{9000 + i:04d}" for i, c in enumerate(sorted(train))}
    counts = {"medpix_train": 0, "medpix_held_out": 0}
    for image in head_mris(shared):
        case, label = image["case"], labels.get(image["case"])
        if label is None:
            continue
        if case in train:
            target = out / label / f"{group[case]}__medpix__{image['path'].name}"
            counts["medpix_train"] += 1
        else:
            (held / label).mkdir(parents=True, exist_ok=True)
            target = held / label / image["path"].name
            counts["medpix_held_out"] += 1
        target.symlink_to(image["path"].resolve())
    return counts


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--all-sequences", action="store_true", help="also angiography, diffusion, SWI and others")
    ap.add_argument("--four-sources", action="store_true", help="split the cases: a training folder and a test set")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.four_sources:
        print(build_four(a.shared, HERE.parent / "build", a.seed))
        raise SystemExit(0)
    out = HERE.parent / "build" / ("brain_mri_medpix_all" if a.all_sequences else "brain_mri_medpix")
    print(build(a.shared, out, a.all_sequences), "->", out)
