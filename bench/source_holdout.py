"""An other-source estimate for the brain model: train on one source, evaluate on the other.

The shipped brain model trains on both brain sources. To see how the recipe holds up on images
from a source it has never seen, this trains the same config on Br35H alone, leaving out the 464
Br35H files that are re-encoded copies of Navoneel images, and evaluates on all 228 Navoneel
images (a different web collection, mostly axial). Same recipe, same seed; nothing is tuned on
the held-out source.

Usage::

    python configs/make_brain_dataset.py && .venv/bin/python bench/source_holdout.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor
    from medclf_core.training import TrainConfig, train

    combined = REPO / "build" / "brain_mri_combined"
    if not combined.is_dir():
        raise SystemExit("Run python configs/make_brain_dataset.py first.")
    cfg = json.loads((REPO / "configs" / "brain-mri-tumour.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "br35h_only"
        for class_dir in combined.iterdir():
            (data / class_dir.name).mkdir(parents=True)
            for f in class_dir.iterdir():
                if f.name.startswith("br35h__"):  # Br35H, without the Navoneel twins (their names start N0001__)
                    os.symlink(os.readlink(f), data / class_dir.name / f.name)
        n_train = sum(1 for f in data.rglob("*") if f.is_symlink())
        keep = {k: v for k, v in cfg.items() if k not in ("description", "data", "name")}
        run = train(TrainConfig(data=str(data), name="brain-br35h-only", **keep), models_dir=Path(tmp) / "models")
        own = json.loads((run / "card.json").read_text())["metrics"]
        other = evaluate_folder(Predictor.from_run(run), SHARED / "brain_tumor_mri")
    print(f"trained on Br35H without Navoneel twins ({n_train} files)\n")
    print("| evaluated on | n | accuracy (95% CI) | AUC (95% CI) | sensitivity | specificity | ECE | flagged OOD |")
    print("|---|---|---|---|---|---|---|---|")
    for label, m in (("Br35H test split (same source)", own), ("Navoneel, all 228 (other source)", other)):
        ci = m.get("ci95") or {}
        acc_ci = ci.get("accuracy") or [float("nan")] * 2
        auc_ci = ci.get("auc") or [float("nan")] * 2
        ood = (m.get("ood") or {}).get("fraction_flagged")
        print(f"| {label} | {m['n']} | {m['accuracy']:.3f} ({acc_ci[0]:.3f}-{acc_ci[1]:.3f}) | "
              f"{m['auc']:.3f} ({auc_ci[0]:.3f}-{auc_ci[1]:.3f}) | {m.get('sensitivity', float('nan')):.3f} | "
              f"{m.get('specificity', float('nan')):.3f} | {m.get('ece') if m.get('ece') is None else round(m['ece'], 3)} | "
              f"{'-' if ood is None else f'{ood:.0%}'} |")


if __name__ == "__main__":
    main()
