"""Fit the router's body-part probe (head or not) and keep it beside the bundled imaging-modality model.

    python configs/make_body_part.py [--shared ../shared/data] [--models-dir models]

Reads MedPix (``modality/CT`` and ``modality/MRI``; ``manifests/modality.csv`` gives each file's case and body
location), runs the bundled imaging-modality model on every image for its penultimate features (what the router
computes for each image anyway), fits :func:`medclf_core.trust.body_part.fit_probe` (head = location "Head") and
writes ``models/imaging-modality/body_part.npz``. ``bench/body_part_probe.py`` measures the rule it serves, grouped
by case, and on brain MRIs from other sources. No image is copied or committed: only 1280 weights and a bias.
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
SOURCE = "MedPix CT and MRI of ../shared/data/modality ({n} images, {n_head} of the head, {cases} cases)"


def medpix(shared: Path) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MedPix files, is-head labels (0/1), case ids, folder (``"MRI"`` / ``"CT"``) and body location (``"Head"``,
    ``"Thorax"``, ...) from the manifest."""
    files, case, modality, location = [], [], [], []
    with open(shared / "manifests" / "modality.csv", newline="") as f:
        for row in csv.DictReader(f):
            fields = dict(x.strip().split("=", 1) for x in row["processing"].split(";") if "=" in x)
            if "case" in fields:
                files.append(shared / row["file"])
                case.append(fields["case"])
                modality.append(Path(row["file"]).parent.name)
                location.append(fields.get("location", "").strip('" '))  # 20 rows end in a stray quote
    location = np.array(location)
    return files, (location == "Head").astype(int), np.array(case), np.array(modality), location


def router_features(models_dir: Path):
    """``(features, created)``: ``features(paths) -> (N, D)``, the penultimate features of the bundled
    imaging-modality model (the router's), and that model's card ``created``, which the probe is bound to."""
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    router = Predictor.from_run(models_dir / "imaging-modality", router=None)

    def features(paths) -> np.ndarray:
        return np.concatenate([router.predict_batch_with_features(np.stack(
            [router.prepare(load_image(p).pixels) for p in paths[i:i + 64]]))[1] for i in range(0, len(paths), 64)])

    return features, router.card.get("created", "")


def main() -> None:
    from medclf_core.trust.body_part import fit_probe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    a = ap.parse_args()
    files, is_head, cases, _, _ = medpix(a.shared)
    if not files:
        raise SystemExit(f"No MedPix rows in {a.shared / 'manifests' / 'modality.csv'}.")
    features, router_created = router_features(a.models_dir)
    probe = fit_probe(features(files), is_head, for_model=router_created,
                      source=SOURCE.format(n=len(files), n_head=int(is_head.sum()), cases=len(set(cases))))
    print(f"{probe.source}: written to {probe.save(a.models_dir / 'imaging-modality')}")


if __name__ == "__main__":
    main()
