"""The bundled models' same-source intervals, resampling images (as their cards were written) against resampling
patients and near-duplicate groups named in the file names (the cards' ``group_pattern``), on the test-split
predictions stored in each ``evaluation.json``. Runs in seconds, needs nothing outside the checkout.

    .venv/bin/python bench/grouped_intervals.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medclf_core.data.split import group_key
from medclf_core.trust.metrics import evaluate_probabilities

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    print("| model | test images | patients or groups | accuracy | 95% CI by image | by group | AUC 95% CI by image "
          "| by group |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("chest-xray-pneumonia", "brain-mri-tumour"):
        card = json.loads((REPO / "models" / name / "card.json").read_text())
        preds = json.loads((REPO / "models" / name / "evaluation.json").read_text())["predictions"]
        names = card["class_names"]
        y = np.array([names.index(p["label"]) for p in preds])
        probs = np.array([p["probabilities"] for p in preds])
        groups = [group_key(p["file"], card["config"]["group_pattern"]) or p["file"] for p in preds]
        kw = dict(threshold=card["threshold"], positive=names.index(card["positive_class"]))
        by_image = evaluate_probabilities(y, probs, names, **kw)
        by_group = evaluate_probabilities(y, probs, names, **kw, groups=groups)

        def ci(r, key):
            return "-".join(f"{v:.3f}" for v in r["ci95"][key])

        print(f"| {name} | {by_image['n']} | {by_group['n_groups']} | {by_image['accuracy']:.3f} | "
              f"{ci(by_image, 'accuracy')} | {ci(by_group, 'accuracy')} | {ci(by_image, 'auc')} | {ci(by_group, 'auc')} |")


if __name__ == "__main__":
    main()
