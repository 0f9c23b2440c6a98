"""The refuse tier's factor against the images it should and should not refuse, for one brain model.

The gate refuses (no finding) above ``ood_refuse_factor`` x its unfamiliar threshold (the validation scores'
99th percentile; ``medclf_core.trust.ood``). This bench runs one brain run's Predictor (gate, modality router,
colour check, DICOM header: the app's path) on a brain source it was not trained on and on wrong-kind sets
from ../shared/data, keeps each image's gate score and the other checks' verdicts, and prints the share
refused at several factors (an image counts as refused at a factor when its score is above factor x the
unfamiliar threshold or another check refuses it):

- ``held-out brain``: ``--held-out`` (a class folder of a source the run was not trained on);
- MedPix MRI (300, evenly spaced) split by the manifest's body location into head and other body parts;
- MedPix CT (200), Kermany chest X-rays (200), the DICOM samples, scikit-image's photographs.

``--train HELD`` first trains today's brain recipe (``bench/brain_sources.py``'s ``train_on``) on the three
sources less ``HELD`` and keeps the run under ``--out``; its held-out set is that source's images sharing no
near-duplicate group with a training source. Usage::

    python configs/make_brain_dataset.py --sartaj
    .venv/bin/python bench/refuse_factor.py --train sartaj --out /tmp/refuse_factor    # ~3 min training + 3 min
    .venv/bin/python bench/refuse_factor.py --run models/brain-mri-tumour --held-out build/brain_mri_navoneel_held_out
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ood_scores import SHARED, folder_images, photos_named  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FACTORS = (1.75, 2.0, 2.25, 2.5)
OTHER_CHECKS = ("imaging-modality", "body-part check", "colour image", "header says")


def medpix_locations() -> dict[str, str]:
    """File name -> MedPix body location (the manifest's ``processing`` column)."""
    out = {}
    with open(SHARED / "manifests" / "modality.csv", newline="") as f:
        for row in csv.DictReader(f):
            text = row["processing"]
            out[Path(row["file"]).name] = text.split("location=")[-1].split(";")[0] if "location=" in text else ""
    return out


def image_sets(held_out: Path) -> dict[str, list]:
    where = medpix_locations()
    mri = folder_images(SHARED / "modality" / "MRI", 300)
    return {"held-out brain": sorted(p for p in held_out.rglob("*") if p.is_file()),
            "MedPix MRI, head": [p for p in mri if where.get(p.name, "").startswith("Head")],
            "MedPix MRI, other body parts": [p for p in mri if not where.get(p.name, "").startswith("Head")],
            "MedPix CT": folder_images(SHARED / "modality" / "CT", 200),
            "Kermany chest X-ray": folder_images(SHARED / "chest_xray_pneumonia", 200),
            "DICOM samples": sorted((SHARED / "dicom_samples").rglob("*.dcm"))}


def verdicts(run: Path, held_out: Path) -> tuple[float, dict[str, list[tuple[float, bool]]]]:
    """The gate's unfamiliar threshold and, per set, ``(score / that threshold, refused by another check)``."""
    from medclf_core.inference.predictor import Predictor

    p = Predictor.from_run(run)
    near = p.gate.near_threshold or p.gate.threshold

    def rows(results):
        return [(r["ood_score"] / near, any(k in (r["ood_reason"] or "") for k in OTHER_CHECKS)) for r in results
                if "error" not in r]

    out = {name: rows(p.predict_files(files)) for name, files in image_sets(held_out).items()}
    out["photographs"] = rows(p.predict([pixels for _, pixels in photos_named()]))
    return near, out


def train_held_out(held: str, out: Path) -> tuple[Path, Path]:
    """Today's brain recipe on the three sources less ``held``; the run and the held-out folder."""
    import brain_sources as bs

    files = bs.catalogue(REPO / "build" / "brain_mri_three_sources")
    touched = {f["group"] for f in files if f["source"] != held}
    held_dir = out / f"eval_{held}"
    if not held_dir.exists():
        bs.link([f for f in files if f["source"] == held and f["group"] not in touched], held_dir)
    run, seconds = bs.train_on([f for f in files if f["source"] != held], f"without-{held}", out)
    print(f"trained {run} in {seconds:.0f} s", flush=True)
    return run, held_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a brain run folder")
    ap.add_argument("--held-out", type=Path, help="a class folder of brain MRIs from a source the run did not see")
    ap.add_argument("--train", choices=("navoneel", "br35h", "sartaj"), help="train without this source first")
    ap.add_argument("--out", type=Path, default=Path("/tmp/refuse_factor"), help="where --train keeps its run")
    a = ap.parse_args()
    if a.train:
        a.run, a.held_out = train_held_out(a.train, a.out)
    if not (a.run and a.held_out):
        raise SystemExit("Give --run and --held-out, or --train SOURCE.")
    near, sets = verdicts(a.run, a.held_out)
    print(f"{a.run.name}: unfamiliar threshold {near:.4g}\n")
    print("| set | n | score / unfamiliar threshold: median, 95th pct, max | "
          + " | ".join(f"refused at {f:g}x" for f in FACTORS) + " |\n|---|---|---|" + "---|" * len(FACTORS))
    for name, rows in sets.items():
        ratio = np.array([r for r, _ in rows])
        other = np.array([o for _, o in rows])
        shares = [np.mean((ratio > f) | other) for f in FACTORS]
        print(f"| {name} | {len(rows)} | {np.median(ratio):.2f}, {np.percentile(ratio, 95):.2f}, {ratio.max():.2f} | "
              + " | ".join(f"{s:.1%}" for s in shares) + " |")


if __name__ == "__main__":
    main()
