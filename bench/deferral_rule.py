"""The "least confident first" ordering of selective prediction, old rule against new, on the bundled models' own
stored test predictions (``evaluation.json``: same source, so the figures say how the rule ranks, not how the model
fares elsewhere).

- old: the plain distance to the threshold, ``|P(positive) - threshold|``;
- new (:func:`medclf_core.trust.selective.deferral_scores`): the distance in log-odds.

For each binary model with a threshold: n, AURC under each rule, the oracle's AURC (errors deferred first), and the
accuracy of the images kept at coverage 0.9 and 0.8 (ties shared as the product does). Seconds, no TensorFlow::

    .venv/bin/python bench/deferral_rule.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from medclf_core.trust.selective import deferral_scores, risk_coverage  # noqa: E402


def accuracy_at(curve: dict, coverage: float) -> float:
    k = int(np.argmin(np.abs(np.asarray(curve["coverage"]) - coverage)))
    return curve["accuracy"][k]


def main() -> None:
    print("| model | threshold | n | AURC old | AURC new | oracle | accuracy at 90% old -> new | at 80% old -> new |")
    print("|---|---|---|---|---|---|---|---|")
    for card_file in sorted((REPO / "models").glob("*/card.json")):
        card = json.loads(card_file.read_text())
        threshold, classes = card.get("threshold"), card["class_names"]
        if threshold is None or card.get("positive_class") not in classes or len(classes) != 2:
            continue
        pos = classes.index(card["positive_class"])
        preds = json.loads((card_file.parent / "evaluation.json").read_text())["predictions"]
        probs = np.array([p["probabilities"] for p in preds], dtype=np.float64)
        y = np.array([classes.index(p["label"]) for p in preds])
        correct = ((probs[:, pos] >= threshold).astype(int) == (y == pos)).astype(float)
        old = risk_coverage(correct, -np.abs(probs[:, pos] - threshold), max_points=len(y))
        new = risk_coverage(correct, deferral_scores(probs, threshold=threshold, positive=pos)["confidence"],
                            max_points=len(y))
        print(f"| {card['name']} | {threshold:.3f} | {len(y)} | {old['aurc']:.4f} | {new['aurc']:.4f} | "
              f"{new['aurc_oracle']:.4f} | {accuracy_at(old['curve'], 0.9):.3f} -> {accuracy_at(new['curve'], 0.9):.3f}"
              f" | {accuracy_at(old['curve'], 0.8):.3f} -> {accuracy_at(new['curve'], 0.8):.3f} |")


if __name__ == "__main__":
    main()
