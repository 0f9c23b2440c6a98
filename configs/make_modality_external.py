"""Build the imaging-modality model's other-source test folder from ../shared/data, as links (no copies).

    python configs/make_modality_external.py [--shared ../shared/data] [--navoneel-only]

None of these images is in ``../shared/data/modality`` (the model's training data: MedPix CT and MRI,
pediatric chest films): MRI = the web brain MRI slices of Navoneel (``brain_tumor_mri``, 228), Br35H
(``brain_tumor_br35h``, 1564) and Sartaj (``brain_tumor_sartaj``, 731), plus the MR DICOM sample; CT and
XRAY = the NEMA/pydicom DICOM samples (3 CT, 3 CR). ``--navoneel-only`` keeps the older, smaller set
(228 Navoneel + the 10 DICOMs, ``build/modality_external_238``) that earlier cards and
docs/BENCHMARKS.md report. Then, for the card::

    python -m medclf_core evaluate imaging-modality build/modality_external --split all --record

Only 3 CT and 3 X-ray images: the set measures how often an unfamiliar MRI is called CT or X-ray, not
CT or X-ray recall.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ""}


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def sources(shared: Path, navoneel_only: bool = False) -> dict[str, list[Path]]:
    mri_roots = ["brain_tumor_mri"] + ([] if navoneel_only else ["brain_tumor_br35h", "brain_tumor_sartaj"])
    mri = [f for root in mri_roots for f in _files(shared / root)]
    return {"CT": _files(shared / "dicom_samples" / "CT"),
            "MRI": mri + _files(shared / "dicom_samples" / "MR"),
            "XRAY": _files(shared / "dicom_samples" / "CR")}


def build(shared: Path, out: Path, navoneel_only: bool = False) -> dict[str, int]:
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for cls, files in sources(shared, navoneel_only).items():
        if not files:
            raise SystemExit(f"{shared}: no {cls} images found (needs brain_tumor_* and dicom_samples)")
        (out / cls).mkdir(parents=True)
        for i, f in enumerate(files):
            (out / cls / f"{i:04d}__{f.parent.parent.name}__{f.name}").symlink_to(f.resolve())
        counts[cls] = len(files)
    return counts


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--navoneel-only", action="store_true", help="the older 238-image set")
    a = ap.parse_args()
    out = here / "build" / ("modality_external_238" if a.navoneel_only else "modality_external")
    print(build(a.shared, out, a.navoneel_only), "->", out)
