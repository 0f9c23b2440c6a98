"""The brain model on rotated and mirrored copies of its held-out images (public brain MRIs are recycled so).

Every image of a labelled folder (``no`` / ``yes``) goes through ``Predictor.predict`` as is, mirrored, upside down
and turned by 90, 180 and 270 degrees; per view: AUC, accuracy, sensitivity and specificity at the card's threshold
(the evaluator's own metrics), and how many images were refused and how many got the unfamiliar caution.

Usage::

    python configs/make_brain_dataset.py --sartaj --hold-out navoneel
    .venv/bin/python bench/brain_rotations.py [--data FOLDER] [--model models/brain-mri-tumour]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
VIEWS = {"as is": lambda a: a, "mirrored": lambda a: a[:, ::-1], "upside down": lambda a: a[::-1],
         "rotated 90": lambda a: np.rot90(a, 1), "rotated 180": lambda a: np.rot90(a, 2),
         "rotated 270": lambda a: np.rot90(a, 3)}


def main() -> None:
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image
    from medclf_core.trust.metrics import evaluate_probabilities

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO / "build" / "brain_mri_navoneel_held_out",
                    help="a labelled folder (no/ yes/); default: the 87 held-out Navoneel images")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "brain-mri-tumour")
    a = ap.parse_args()
    p = Predictor.from_run(a.model)
    files = sorted(a.data.glob("*/*"))
    y = np.array([p.class_names.index(f.parent.name) for f in files])
    images = [load_image(f).pixels for f in files]
    print(f"{a.model.name} on {a.data.name} ({len(files)} images)\n")
    print("| view | AUC | accuracy | sensitivity | specificity | refused | unfamiliar |\n|---|---|---|---|---|---|---|")
    for name, turn in VIEWS.items():
        results = list(p.predict([np.ascontiguousarray(turn(im)) for im in images]))
        probs = np.array([[r["probabilities"][c] for c in p.class_names] for r in results])
        m = evaluate_probabilities(y, probs, p.class_names, threshold=p.threshold, positive=p.positive, bootstrap=0)
        print(f"| {name} | {m['auc']:.3f} | {m['accuracy']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} "
              f"| {sum(bool(r.get('ood')) for r in results)} | {sum(bool(r.get('unfamiliar')) for r in results)} |")


if __name__ == "__main__":
    main()
