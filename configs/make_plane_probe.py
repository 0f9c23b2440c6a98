"""Fit the router's plane probe (axial, sagittal, coronal) and keep it beside the bundled imaging-modality model.

    python configs/make_plane_probe.py [--shared ../shared/data] [--models-dir models]

Reads MedPix (``modality/CT`` and ``modality/MRI``) and each image's plane (``configs/medpix_planes.csv``: the
``Plane`` MedPix's ``Descriptions.json`` gives, at ``CHILab1/MedPix-2.0`` ``d3bc431``; images without one of the
three planes are left out), runs the bundled imaging-modality model on every image for its penultimate features
(what the router computes for each image anyway), fits :func:`medclf_core.trust.plane.fit_plane_probe` and writes
``models/imaging-modality/plane.npz``. ``bench/plane_probe.py`` measures the rule it serves, grouped by case. No
image is copied or committed: only 3 x 1280 weights and 3 biases.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SOURCE = "MedPix CT and MRI of ../shared/data/modality with a plane ({n} images: {counts}; {cases} cases)"
PLANE_NAMES = ("Axial", "Sagittal", "Coronal")


def medpix_planes(shared: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """MedPix files with a plane, the plane (0 axial, 1 sagittal, 2 coronal) and the case of each."""
    with open(REPO / "configs" / "medpix_planes.csv", newline="") as f:
        plane = {row["image"]: PLANE_NAMES.index(row["plane"]) for row in csv.DictReader(f)}
    files = [p for d in ("MRI", "CT") for p in sorted((shared / "modality" / d).glob("*")) if p.stem in plane]
    return files, np.array([plane[p.stem] for p in files]), np.array([p.stem.split("_")[0] for p in files])


def main() -> None:
    from make_body_part import router_features

    from medclf_core.trust.plane import fit_plane_probe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    a = ap.parse_args()
    files, plane, cases = medpix_planes(a.shared)
    if not files:
        raise SystemExit(f"No MedPix image with a plane in {a.shared / 'modality'}.")
    features, router_created = router_features(a.models_dir)
    counts = ", ".join(f"{n} {int((plane == k).sum())}" for k, n in enumerate(PLANE_NAMES))
    probe = fit_plane_probe(features(files), plane, for_model=router_created,
                            source=SOURCE.format(n=len(files), counts=counts.lower(), cases=len(set(cases))))
    print(f"{probe.source}: written to {probe.save(a.models_dir / 'imaging-modality')}")


if __name__ == "__main__":
    main()
