"""The brain model by imaging plane: its tumour calls on sagittal and coronal slices follow the plane.

Two measurements (issue 23 item 2 names the weak side: "no-tumour slices in sagittal and coronal planes read as
tumour"):

1. ``--medpix-json``: the per-slice rows that ``bench/brain_medpix.py --json`` writes, split by the plane MedPix
   gives each image (``configs/medpix_planes.csv``: the ``Plane`` of every MedPix image in ``Descriptions.json`` of
   ``CHILab1/MedPix-2.0`` at ``d3bc431``, axial, sagittal or coronal; image ids and planes only): sensitivity,
   specificity and AUC at the card's threshold, per plane.
2. ``--train-folder``: which planes the model's training images are in, by class. A plane probe (logistic
   regression on the model's own penultimate features, ``C`` 0.1) is fitted on MedPix MRI and CT images with a
   plane, checked by 5-fold cross-validation grouped by case, then applied to every training image.

Usage::

    python configs/make_medpix_brain.py
    .venv/bin/python bench/brain_medpix.py models/brain-mri-tumour --json /tmp/medpix.json
    .venv/bin/python bench/brain_planes.py --medpix-json /tmp/medpix.json \\
        [--model models/brain-mri-tumour --train-folder build/brain_mri_without_navoneel --shared ../shared/data]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from brain_medpix import auc  # noqa: E402  (ROC-AUC by ranks, as that bench computes it)

PLANES = ("Axial", "Sagittal", "Coronal")


def medpix_planes() -> dict[str, str]:
    with open(REPO / "configs" / "medpix_planes.csv", newline="") as f:
        return {row["image"]: row["plane"] for row in csv.DictReader(f)}


def by_plane(record: dict, planes: dict[str, str]) -> None:
    """One table row per plane of one model's MedPix rows (``bench/brain_medpix.py``'s record)."""
    thr = record["threshold"]
    groups = collections.defaultdict(list)
    for r in record["rows"]:
        groups[planes.get(Path(r["file"]).stem, "other or not given")].append(r)
    print(f"\n{Path(record['model']).name} on {Path(record['data']).name} (threshold {thr:.3f})\n")
    print("| plane | slices (no/yes) | cases | no-tumour slices called tumour | specificity | sensitivity | AUC |")
    print("|---|---|---|---|---|---|---|")
    for plane in (*PLANES, "other or not given"):
        rows = groups.get(plane, [])
        y, p = np.array([r["y"] for r in rows]), np.array([r["p"] for r in rows])
        if not len(rows):
            continue
        no, yes = p[y == 0], p[y == 1]
        print(f"| {plane} | {len(rows)} ({len(no)}/{len(yes)}) | {len({r['case'] for r in rows})} "
              f"| {int((no >= thr).sum())} of {len(no)} | {np.mean(no < thr) if len(no) else float('nan'):.2f} "
              f"| {np.mean(yes >= thr) if len(yes) else float('nan'):.2f} | {auc(y, p):.2f} |")


def features(predictor, files: list[Path]) -> np.ndarray:
    from medclf_core.io.images import load_image

    out = []
    for i in range(0, len(files), 64):
        batch = np.stack([predictor.prepare(load_image(f).pixels) for f in files[i:i + 64]])
        out.append(predictor.predict_batch_with_features(batch)[1])
    return np.concatenate(out)


def training_planes(model: Path, train: Path, shared: Path, planes: dict[str, str]) -> None:
    """Fit the plane probe on MedPix, check it by case, and count the training images' planes by class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(model)
    medpix = [f for d in ("MRI", "CT") for f in sorted((shared / "modality" / d).iterdir()) if f.stem in planes]
    x = features(predictor, medpix)
    y = np.array([PLANES.index(planes[f.stem]) for f in medpix])
    case = np.array([f.stem.split("_")[0] for f in medpix])
    guess = np.zeros_like(y)
    for fit, held in GroupKFold(5).split(x, y, case):
        guess[held] = LogisticRegression(C=0.1, max_iter=3000).fit(x[fit], y[fit]).predict(x[held])
    recall = ", ".join(f"{p} {np.mean(guess[y == k] == k):.2f} (n {int((y == k).sum())})" for k, p in enumerate(PLANES))
    print(f"\nplane probe on {len(medpix)} MedPix MRI and CT images, 5-fold by case: accuracy "
          f"{np.mean(guess == y):.3f}; recall {recall}\n")
    probe = LogisticRegression(C=0.1, max_iter=3000).fit(x, y)
    files = sorted(train.glob("*/*"))
    called = probe.predict(features(predictor, files))
    source = [re.sub(r"^G\d{4}__", "", f.name).split("__")[0] if "__" in f.name else "other" for f in files]
    print("| class | source | images | axial | sagittal | coronal |\n|---|---|---|---|---|---|")
    for cls in sorted({f.parent.name for f in files}):
        for src in sorted(set(source)):
            idx = [i for i, f in enumerate(files) if f.parent.name == cls and source[i] == src]
            if idx:
                n = collections.Counter(called[idx])
                print(f"| {cls} | {src} | {len(idx)} | {n[0]} | {n[1]} | {n[2]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--medpix-json", type=Path, help="bench/brain_medpix.py --json output")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "brain-mri-tumour")
    ap.add_argument("--train-folder", type=Path, help="the model's training folder (class folders)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    a = ap.parse_args()
    planes = medpix_planes()
    for record in json.loads(a.medpix_json.read_text()) if a.medpix_json else []:
        by_plane(record, planes)
    if a.train_folder:
        training_planes(a.model, a.train_folder, a.shared, planes)


if __name__ == "__main__":
    main()
