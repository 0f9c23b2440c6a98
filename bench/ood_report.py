"""How often each bundled model says "not an image I know", on images of the wrong kind and of the right kind.

For every bundled model, through :class:`medclf_core.inference.predictor.Predictor` (the app's path: gate,
DICOM header check, calibrated probabilities), the fraction of images flagged out of distribution on:

- images of another body part or modality (chest X-rays for the brain model, brain MRIs and CT/MRI
  slices for the chest model, natural photographs for every model);
- images of the model's own kind that it was not trained on (the chest model on the demo chest X-rays;
  the brain model on MedPix head MRIs, a source none of its training sets shares: structural sequences
  (T1, T1 with gadolinium, T2, FLAIR) and, apart, the others (angiography, diffusion, SWI, montages ...)),
  which should mostly pass. The imaging-modality model in front of the brain model was trained on MedPix
  images, so its part in these refusals is optimistic there;
- the bundled DICOM samples, whose header names the modality and body part.

It also prints the expected calibration error of each model on its own test split and on the
chest demo images. Needs ../shared/data (images from it are never committed).

Usage::

    .venv/bin/python bench/ood_report.py [--limit 200]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm"}


def images(folder: Path, limit: int, pattern: str = "*") -> list[Path]:
    files = sorted(p for p in folder.rglob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    step = max(1, len(files) // limit) if limit else 1
    return files[::step][:limit] if limit else files


def photos(tmp: Path) -> list[Path]:
    """Natural photographs that scikit-image ships, written as PNG files."""
    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "coins", "horse", "hubble_deep_field",
                 "immunohistochemistry", "moon", "page", "text", "retina", "logo", "colorwheel", "motorcycle_left"):
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some need a download (pooch) and are skipped here
            continue
        if arr.dtype == bool:
            arr = arr.astype("uint8") * 255
        path = tmp / f"{name}.png"
        Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).save(path)
        out.append(path)
    return out


STRUCTURAL_MR = ("MR - T1W - noncontrast", "MR - T1W w/Gadolinium", "MR - T1W w/Gd (fat suppressed)",
                 "MR - T2 weighted", "MR - FLAIR")


def medpix_head(structural: bool) -> list[Path]:
    """The MedPix MRI slices whose case location is the head (``manifests/modality.csv``), of the structural
    sequences or of the others."""
    import csv
    import re

    out = []
    with open(SHARED / "manifests" / "modality.csv", newline="") as f:
        for row in csv.DictReader(f):
            sequence = re.search(r"modality_field=([^;]*)", row["processing"])
            if row["file"].startswith("modality/MRI/") and "location=Head" in row["processing"] and sequence:
                if (sequence.group(1) in STRUCTURAL_MR) == structural:
                    out.append(SHARED / row["file"])
    return sorted(out)


def flagged(predictor, files: list[Path]) -> tuple[int, int, int]:
    """(n read, n flagged, n refused as unreadable)."""
    results = predictor.predict_files(files)
    ok = [r for r in results if "error" not in r]
    return len(ok), sum(bool(r.get("ood")) for r in ok), len(results) - len(ok)


def main() -> None:
    import tempfile

    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="images per set (evenly spaced); 0: all")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sets = {
        "chest X-rays (Kermany, 224 px)": images(SHARED / "chest_xray_pneumonia" / "train", a.limit),
        "chest X-rays (demo, 512 px)": images(SHARED / "demo_samples" / "chest_xray", 0),
        "brain MRI (Navoneel)": images(SHARED / "brain_tumor_mri", a.limit),
        "brain MRI (Br35H)": images(SHARED / "brain_tumor_br35h", a.limit),
        "brain MRI, other source (MedPix head: T1, T1+Gd, T2, FLAIR)": medpix_head(structural=True),
        "brain MRI, other source (MedPix head: other sequences)": medpix_head(structural=False),
        "CT slices (MedPix)": images(SHARED / "modality" / "CT", a.limit),
        "MRI slices (MedPix)": images(SHARED / "modality" / "MRI", a.limit),
        "natural photographs": photos(tmp),
        "DICOM samples (CT, MR, CR)": images(SHARED / "dicom_samples", 0),
    }
    models = ["chest-xray-pneumonia", "brain-mri-tumour", "imaging-modality"]
    predictors = {m: Predictor.from_run(REPO / "models" / m) for m in models}
    print("Fraction flagged out of distribution (n read); a model trained on a set is not judged on it.\n")
    print("| images | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for label, files in sets.items():
        cells = []
        for m in models:
            n, k, bad = flagged(predictors[m], files)
            cells.append(f"{k / n:.0%} of {n}" + (f" ({bad} unreadable)" if bad else "") if n else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nCalibration: expected calibration error (15 bins) and accuracy at the model's threshold.\n")
    print("| model | data | n | accuracy | ECE | flagged |")
    print("|---|---|---|---|---|---|")
    for m, data in (("chest-xray-pneumonia", SHARED / "demo_samples" / "chest_xray"),):
        r = evaluate_folder(predictors[m], data, bootstrap=0)
        print(f"| {m} | {data.relative_to(SHARED)} | {r['n']} | {r['accuracy']:.3f} | {r['ece']:.3f} | "
              f"{(r.get('ood') or {}).get('fraction_flagged', 0):.0%} |")
    for m in models:
        card = predictors[m].card
        cal = card.get("calibration") or {}
        print(f"| {m} | own validation split (before / after temperature {cal.get('temperature', 1):.2f}) | "
              f"{cal.get('n')} | - | {cal.get('val_ece', ['?', '?'])[0]:.3f} / {cal.get('val_ece', ['?', '?'])[1]:.3f} "
              f"| {(card.get('ood') or {}).get('val_fraction_flagged', 0):.0%} |")


if __name__ == "__main__":
    main()
