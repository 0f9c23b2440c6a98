"""The router's plane probe and the caution it serves (``medclf_core.trust.plane``): how well it tells the plane, how
often it cautions on axial brain slices, and which of the brain model's MedPix findings it cautions.

1. MedPix MRI and CT images with a plane (``configs/medpix_planes.csv``), router features, 5-fold cross-validation
   grouped by case, for three regularisation strengths: accuracy, and per-plane recall on head MRIs.
2. The rule (the probe's most probable plane not in the card's ``planes``, with P >= ``MIN_P_PLANE``) on the
   out-of-fold probabilities of MedPix head MRIs, for several ``MIN_P_PLANE``: the share of axial, sagittal and
   coronal slices cautioned.
3. The probe as shipped (``models/imaging-modality/plane.npz``) on the brain model's training sources, which hold
   almost only axial slices (Br35H, Navoneel) and Sartaj's mixed planes: the share cautioned.
4. With ``--medpix-json`` (``bench/brain_medpix.py --json``): of the brain model's MedPix tumour calls, right and
   wrong, how many the caution reaches (out-of-fold probabilities: the probe never saw those cases).

Usage::

    python configs/make_plane_probe.py && python configs/make_brain_dataset.py --sartaj --hold-out navoneel
    .venv/bin/python bench/plane_probe.py [--medpix-json /tmp/medpix.json] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "configs"))
NAMES = ("axial", "sagittal", "coronal")


def out_of_fold(x: np.ndarray, y: np.ndarray, cases: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold plane probabilities (N, 3), 5 folds grouped by case."""
    from sklearn.model_selection import GroupKFold

    from medclf_core.trust.plane import PLANES, fit_plane_probe

    p = np.zeros((len(y), 3))
    for fit, held in GroupKFold(5).split(x, y, cases):
        probe = fit_plane_probe(x[fit], y[fit], source="fold", c=c)
        p[held] = [[row[k] for k in PLANES] for row in probe.probabilities(x[held])]
    return p


def cautioned(p: np.ndarray, min_p: float) -> np.ndarray:
    """The rule for a card with ``planes: ["axial"]``: the top plane is not axial, with P >= ``min_p``."""
    return (p.argmax(1) != 0) & (p.max(1) >= min_p)


def main() -> None:
    from make_body_part import medpix, router_features
    from make_plane_probe import medpix_planes

    from medclf_core.trust.plane import MIN_P_PLANE, PLANES, load_plane_probe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--medpix-json", type=Path)
    a = ap.parse_args()
    files, plane, cases = medpix_planes(a.shared)
    features, created = router_features(a.models_dir)
    x = features(files)
    location = dict(zip((f.stem for f in medpix(a.shared)[0]), medpix(a.shared)[4], strict=True))
    head_mri = np.array([f.parent.name == "MRI" and location.get(f.stem) == "Head" for f in files])
    print(f"1. plane probe, {len(files)} MedPix images, 5 folds by case ({int(head_mri.sum())} head MRIs)\n")
    print("| C | accuracy, all | head MRIs: accuracy | recall axial | sagittal | coronal |\n|---|---|---|---|---|---|")
    oof = {}
    for c in (0.03, 0.1, 1.0):
        oof[c] = out_of_fold(x, plane, cases, c)
        guess = oof[c].argmax(1)
        recall = " | ".join(f"{np.mean(guess[head_mri & (plane == k)] == k):.2f}" for k in range(3))
        head = np.mean(guess[head_mri] == plane[head_mri])
        print(f"| {c:g} | {np.mean(guess == plane):.3f} | {head:.3f} | {recall} |")
    p = oof[0.1]
    print("\n2. the caution on MedPix head MRIs (out of fold, C 0.1): share cautioned\n")
    print("| MIN_P_PLANE | axial | sagittal | coronal |\n|---|---|---|---|")
    for min_p in (0.5, 0.6, 0.7, 0.8):
        flag = cautioned(p, min_p)
        print(f"| {min_p:g} | " + " | ".join(
            f"{int(flag[head_mri & (plane == k)].sum())} of {int((head_mri & (plane == k)).sum())}" for k in range(3))
            + " |")
    probe = load_plane_probe(a.models_dir / "imaging-modality", for_model=created)
    if probe is None:
        raise SystemExit("No plane probe beside the modality model: run configs/make_plane_probe.py first.")
    print(f"\n3. the shipped probe (MIN_P_PLANE {MIN_P_PLANE}) on the brain sources: share cautioned\n")
    print("| source | class | images | cautioned |\n|---|---|---|---|")
    for name, folder in (("Br35H", "brain_tumor_br35h"), ("Navoneel", "brain_tumor_mri"),
                         ("Sartaj", "brain_tumor_sartaj")):
        for cls in sorted(d.name for d in (a.shared / folder).iterdir() if d.is_dir()):
            images = sorted(f for f in (a.shared / folder / cls).iterdir() if f.is_file())
            q = np.array([[row[k] for k in PLANES] for row in probe.probabilities(features(images))])
            print(f"| {name} | {cls} | {len(images)} | {int(cautioned(q, MIN_P_PLANE).sum())} |")
    if a.medpix_json:
        by_stem = dict(zip((f.stem for f in files), cautioned(p, MIN_P_PLANE), strict=True))
        record = json.loads(a.medpix_json.read_text())[0]
        rows = [r for r in record["rows"] if Path(r["file"]).stem in by_stem]
        thr = record["threshold"]
        print(f"\n4. {Path(record['model']).name}'s MedPix tumour calls (threshold {thr:.3f}) the caution reaches\n")
        for y, words in ((0, "no tumour (wrong)"), (1, "tumour (right)")):
            called = [r for r in rows if r["y"] == y and r["p"] >= thr]
            print(f"- {words}: {sum(by_stem[Path(r['file']).stem] for r in called)} of {len(called)}")


if __name__ == "__main__":
    main()
