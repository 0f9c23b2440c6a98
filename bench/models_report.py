"""The bundled models' held-out metrics next to the figures the source documents report.

Reads every model card in ``models/`` (no training, no data needed) and prints a Markdown table:
test-split metrics with 95% bootstrap intervals, validation metrics, size on disk, and the seeds'
figures for the same task. Optionally re-evaluates each model on a dataset folder
(``--evaluate NAME=DATA``), e.g. data from another source.

With ``--external`` it also checks the modality model on images from sources it was not trained on,
assembled from ``../shared/data``: the brain MRI set (web-collected JPEG/PNG slices, all MRI) and the
NEMA/pydicom DICOM samples (CT, MR, CR), and prints the confusion matrix.

Usage::

    .venv/bin/python bench/models_report.py [--models-dir models] [--evaluate chest-xray-pneumonia=/path/to/test]
    .venv/bin/python bench/models_report.py --external      # needs ../shared/data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# What the source documents (../shared/seeds) report, for the same task.
SEED_FIGURES = {
    "chest-xray-pneumonia": "seed 004 (ImageNet ResNet-50): accuracy ~92%, sensitivity ~95%, ROC-AUC ~0.96; "
                            "CNN from scratch ~85%",
    "brain-mri-tumour": "seed 000: validation accuracy 85.95%; seed 002: validation accuracy 95.14%",
    "imaging-modality": "seed 001: no figure reported (10 epochs, 80/20 split)",
}


def fmt(m: dict, key: str) -> str:
    v = m.get(key)
    if v is None:
        return "-"
    ci = (m.get("ci95") or {}).get(key)
    return f"{v:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def main() -> int:
    from medclf_core.registry import MODEL_FILE, list_runs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    p.add_argument("--evaluate", action="append", default=[], metavar="NAME=DATA",
                   help="also evaluate model NAME on dataset folder DATA")
    p.add_argument("--external", action="store_true",
                   help="check imaging-modality on other-source images from ../shared/data (brain MRI, DICOM samples)")
    p.add_argument("--shared-data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    args = p.parse_args()

    runs = sorted(list_runs(args.models_dir), key=lambda c: c["name"])
    print("| model | architecture, input | split (n) | accuracy (95% CI) | ROC-AUC (95% CI) | sensitivity | "
          "specificity | val accuracy | size | source documents |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in runs:
        m, v = c["metrics"], c.get("validation_metrics", {})
        size = (Path(c["run_dir"]) / MODEL_FILE).stat().st_size / 2**20
        shape = "x".join(str(s) for s in c["input_shape"])
        print(f"| {c['name']} | {c['architecture']}, {shape} | {m['split']} ({m['n']}) | {fmt(m, 'accuracy')} | "
              f"{fmt(m, 'auc')} | {fmt(m, 'sensitivity')} | {fmt(m, 'specificity')} | {fmt(v, 'accuracy')} | "
              f"{size:.1f} MB | {SEED_FIGURES.get(c['name'], '-')} |")
    for spec in args.evaluate:
        from medclf_core.inference import Predictor, evaluate_folder

        name, data = spec.split("=", 1)
        r = evaluate_folder(Predictor.from_run(name, args.models_dir), data)
        print(f"\n{name} on {data} ({r['split']}, n={r['n']}): accuracy {fmt(r, 'accuracy')}, AUC {fmt(r, 'auc')}, "
              f"sensitivity {fmt(r, 'sensitivity')}, specificity {fmt(r, 'specificity')}")
    if args.external:
        external_modality_check(args.models_dir, Path(args.shared_data))
    return 0


def external_modality_check(models_dir: str, shared: Path, name: str = "imaging-modality") -> None:
    """imaging-modality on images from sources outside its training data, by modality."""
    import tempfile

    from medclf_core.inference import Predictor, evaluate_folder

    sources = {"MRI": [*sorted((shared / "brain_tumor_mri").glob("*/*")), *sorted((shared / "dicom_samples" / "MR").glob("*"))],
               "CT": sorted((shared / "dicom_samples" / "CT").glob("*")),
               "XRAY": sorted((shared / "dicom_samples" / "CR").glob("*"))}
    if not all(sources.values()):
        print(f"\n(external check skipped: {shared} lacks brain_tumor_mri or dicom_samples)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for cls, files in sources.items():
            (Path(tmp) / cls).mkdir()
            for i, f in enumerate(files):
                (Path(tmp) / cls / f"{i:04d}{f.suffix}").symlink_to(f.resolve())
        predictor = Predictor.from_run(name, models_dir)
        results = {"card views": evaluate_folder(predictor, tmp, "all", bootstrap=1000)}
        if predictor.tta:
            results["no test-time views"] = evaluate_folder(Predictor.from_run(name, models_dir, tta=[]), tmp, "all",
                                                            bootstrap=0)
    print(f"\n{name} on other-source images (brain MRI slices from the web + NEMA/pydicom DICOM samples):")
    for label, r in results.items():
        print(f"- {label}: n={r['n']}, accuracy {fmt(r, 'accuracy')}; confusion (rows true "
              f"{'/'.join(r['class_names'])}, columns predicted): {r['confusion_matrix']}")
        print("  recall per class: " + ", ".join(f"{c} {m['recall']:.3f} (n={m['support']})"
                                                 for c, m in r["per_class"].items() if m["support"]))


if __name__ == "__main__":
    sys.exit(main())
