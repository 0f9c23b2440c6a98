"""The router's body-part probe (head or not), measured: what it refuses and what it wrongly refuses.

The shipped brain model gave a finding for most MRIs of other body parts (docs/BENCHMARKS.md, "The refuse tier's
factor"): a PNG has no ``BodyPartExamined``, and neither the modality router nor the feature gate tells a head from a
spine. The probe (:mod:`medclf_core.trust.body_part`, fitted by ``configs/make_body_part.py``) is a logistic
regression on the bundled imaging-modality model's penultimate features, fitted on MedPix (the modality set's CT and
MRI folders; ``manifests/modality.csv`` gives each file's case and body location). This bench reports:

- grouped 5-fold cross-validation on MedPix (a case's images stay in one fold): the share of other-body-part images
  a ``P(head) < cut`` rule would refuse, and of head images it would wrongly refuse, for MRI and CT, then the
  other body parts by location at the shipped cut (``BODY_PART_PASSED=file`` lists the MRIs it lets through);
- the probe fitted on all of MedPix (as shipped), on web brain MRIs it never saw (Sartaj, Br35H, Navoneel: all
  heads; a refusal there is the second-worst defect) and on Kermany chest X-rays.

Usage::

    .venv/bin/python bench/body_part_probe.py      # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ood_scores import SHARED, folder_images  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "configs"))
from make_body_part import medpix, router_features  # noqa: E402
CUTS = (0.1, 0.2, 0.5)


def main() -> None:
    from sklearn.model_selection import GroupKFold

    from medclf_core.trust.body_part import fit_probe

    features, _ = router_features(REPO / "models")
    files, y, cases, modality, location = medpix(SHARED)
    x = features(files)
    oof = np.zeros(len(y))
    for train, test in GroupKFold(5).split(x, y, cases):
        oof[test] = fit_probe(x[train], y[train], source="fold").p_head(x[test])
    print(f"MedPix: {len(y)} images ({y.sum()} head), {len(set(cases))} cases; grouped 5-fold cross-validation\n")
    print("| modality | cut | other body parts refused | heads refused |\n|---|---|---|---|")
    for m in ("MRI", "CT"):
        other, head = (modality == m) & (y == 0), (modality == m) & (y == 1)
        for cut in CUTS:
            print(f"| {m} | P(head) < {cut} | {np.mean(oof[other] < cut):.1%} of {other.sum()} | "
                  f"{np.mean(oof[head] < cut):.1%} of {head.sum()} |")
    cut = CUTS[0]
    print(f"\nBy body location, other body parts (the shipped cut, P(head) < {cut}; grouped out-of-fold):\n")
    print("| modality | location | n | refused | median P(head) |\n|---|---|---|---|---|")
    for m in ("MRI", "CT"):
        for place in sorted(set(location[(modality == m) & (y == 0)])):
            rows = (modality == m) & (location == place)
            print(f"| {m} | {place} | {rows.sum()} | {np.mean(oof[rows] < cut):.1%} | {np.median(oof[rows]):.3f} |")
    if os.environ.get("BODY_PART_PASSED"):  # the other-body-part MRIs the cut lets through, for a look
        passed = (modality == "MRI") & (y == 0) & (oof >= cut)
        Path(os.environ["BODY_PART_PASSED"]).write_text("".join(
            f"{oof[i]:.3f}\t{location[i]}\t{files[i]}\n" for i in np.flatnonzero(passed)[np.argsort(-oof[passed])]))
    fitted = fit_probe(x, y, source="all")
    print("\n| never seen | n | median P(head) | " + " | ".join(f"P(head) < {c}" for c in CUTS) + " |\n|---|---|---|"
          + "---|" * len(CUTS))
    for name, paths in {"Sartaj brain MRI": folder_images(SHARED / "brain_tumor_sartaj", 0),
                        "Br35H brain MRI": folder_images(SHARED / "brain_tumor_br35h", 400),
                        "Navoneel brain MRI": folder_images(SHARED / "brain_tumor_mri", 0),
                        "Kermany chest X-ray": folder_images(SHARED / "chest_xray_pneumonia", 200)}.items():
        p_head = fitted.p_head(features(paths))
        print(f"| {name} | {len(p_head)} | {np.median(p_head):.3f} | "
              + " | ".join(f"{np.mean(p_head < c):.1%}" for c in CUTS) + " |")


if __name__ == "__main__":
    main()
