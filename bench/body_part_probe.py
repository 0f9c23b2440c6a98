"""Could a body-part check refuse a spine MRI on the brain model? A head-vs-other probe, measured, not shipped.

The shipped brain model gives a finding for most MRIs of other body parts (docs/BENCHMARKS.md, "The refuse tier's
factor"): a PNG has no ``BodyPartExamined``, and neither the modality router nor the feature gate tells a head from a
spine. This bench fits a logistic regression (L2 strength by cross-validation, balanced classes) on the bundled
imaging-modality model's penultimate features (the frozen ImageNet EfficientNet-Lite0 trunk the router already
runs) to tell head from other body parts, on MedPix (the modality set's CT and MRI folders; ``manifests/modality.csv``
gives each file's case and body location), and reports:

- grouped 5-fold cross-validation on MedPix (a case's images stay in one fold): the share of other-body-part images
  a ``P(head) < cut`` rule would refuse, and of head images it would wrongly refuse, for MRI and CT;
- the probe fitted on all of MedPix, on web brain MRIs it never saw (Sartaj, Br35H, Navoneel: all heads; a refusal
  there is the second-worst defect) and on Kermany chest X-rays.

Usage::

    .venv/bin/python bench/body_part_probe.py      # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ood_scores import SHARED, folder_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CUTS = (0.1, 0.2, 0.5)


def medpix() -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """MedPix files, is-head labels, case ids and modality (``"MRI"`` / ``"CT"``) from the manifest."""
    files, head, case, modality = [], [], [], []
    with open(SHARED / "manifests" / "modality.csv", newline="") as f:
        for row in csv.DictReader(f):
            fields = dict(x.strip().split("=", 1) for x in row["processing"].split(";") if "=" in x)
            if "case" in fields:
                files.append(SHARED / row["file"])
                head.append(fields.get("location", "").startswith("Head"))
                case.append(fields["case"])
                modality.append(Path(row["file"]).parent.name)
    return files, np.array(head, int), np.array(case), np.array(modality)


def probe():
    from sklearn.linear_model import LogisticRegressionCV

    return LogisticRegressionCV(Cs=10, max_iter=3000, class_weight="balanced")


def main() -> None:
    from sklearn.model_selection import GroupKFold

    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    warnings.filterwarnings("ignore", category=FutureWarning)
    router = Predictor.from_run(REPO / "models" / "imaging-modality", router=None)

    def features(paths) -> np.ndarray:
        return np.concatenate([router.predict_batch_with_features(np.stack(
            [router.prepare(load_image(p).pixels) for p in paths[i:i + 64]]))[1] for i in range(0, len(paths), 64)])

    files, y, cases, modality = medpix()
    x = features(files)
    oof = np.zeros(len(y))
    for train, test in GroupKFold(5).split(x, y, cases):
        oof[test] = probe().fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    print(f"MedPix: {len(y)} images ({y.sum()} head), {len(set(cases))} cases; grouped 5-fold cross-validation\n")
    print("| modality | cut | other body parts refused | heads refused |\n|---|---|---|---|")
    for m in ("MRI", "CT"):
        other, head = (modality == m) & (y == 0), (modality == m) & (y == 1)
        for cut in CUTS:
            print(f"| {m} | P(head) < {cut} | {np.mean(oof[other] < cut):.1%} of {other.sum()} | "
                  f"{np.mean(oof[head] < cut):.1%} of {head.sum()} |")
    fitted = probe().fit(x, y)
    print("\n| never seen | n | median P(head) | " + " | ".join(f"P(head) < {c}" for c in CUTS) + " |\n|---|---|---|"
          + "---|" * len(CUTS))
    for name, paths in {"Sartaj brain MRI": folder_images(SHARED / "brain_tumor_sartaj", 0),
                        "Br35H brain MRI": folder_images(SHARED / "brain_tumor_br35h", 400),
                        "Navoneel brain MRI": folder_images(SHARED / "brain_tumor_mri", 0),
                        "Kermany chest X-ray": folder_images(SHARED / "chest_xray_pneumonia", 200)}.items():
        p_head = fitted.predict_proba(features(paths))[:, 1]
        print(f"| {name} | {len(p_head)} | {np.median(p_head):.3f} | "
              + " | ".join(f"{np.mean(p_head < c):.1%}" for c in CUTS) + " |")


if __name__ == "__main__":
    main()
