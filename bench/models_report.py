"""The bundled models' held-out metrics next to the figures the source documents report.

Reads every model card in ``models/`` (no training, no data needed) and prints a Markdown table:
test-split metrics with 95% bootstrap intervals, validation metrics, size on disk, and the seeds'
figures for the same task. Optionally re-evaluates each model on a dataset folder
(``--evaluate NAME=DATA``), e.g. data from another source.

With ``--external`` it also checks the modality model on images from sources it was not trained on,
assembled from ``../shared/data``: the brain MRI set (web-collected JPEG/PNG slices, all MRI) and the
NEMA/pydicom DICOM samples (CT, MR, CR), and prints the confusion matrix.

With ``--overlays`` it probes a shortcut the modality data invites: every CT and MRI image comes from
MedPix and carries its "MedPix(R)" mark and an uploader caption, the X-rays carry none. The modality
model's own test split is predicted three times: as is, with the mark's corner and the caption strip
blacked out, and with a MedPix-style mark and caption drawn on every image.

Usage::

    .venv/bin/python bench/models_report.py [--models-dir models] [--evaluate chest-xray-pneumonia=/path/to/test]
    .venv/bin/python bench/models_report.py --external      # needs ../shared/data
    .venv/bin/python bench/models_report.py --overlays      # needs ../shared/data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
    from medclf_core.registry.store import MODEL_FILE, list_runs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    p.add_argument("--evaluate", action="append", default=[], metavar="NAME=DATA",
                   help="also evaluate model NAME on dataset folder DATA")
    p.add_argument("--external", action="store_true",
                   help="check imaging-modality on other-source images from ../shared/data (brain MRI, DICOM samples)")
    p.add_argument("--overlays", action="store_true",
                   help="imaging-modality's test split with burned-in text removed or added (needs ../shared/data)")
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
        from medclf_core.inference.folder import evaluate_folder
        from medclf_core.inference.predictor import Predictor

        name, data = spec.split("=", 1)
        r = evaluate_folder(Predictor.from_run(name, args.models_dir), data)
        print(f"\n{name} on {data} ({r['split']}, n={r['n']}): accuracy {fmt(r, 'accuracy')}, AUC {fmt(r, 'auc')}, "
              f"sensitivity {fmt(r, 'sensitivity')}, specificity {fmt(r, 'specificity')}")
    if args.external:
        external_modality_check(args.models_dir, Path(args.shared_data))
    if args.overlays:
        overlay_probe(args.models_dir, Path(args.shared_data))
    return 0


def external_modality_check(models_dir: str, shared: Path, name: str = "imaging-modality") -> None:
    """imaging-modality on images from sources outside its training data, by modality."""
    import tempfile

    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor

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


def _mask_text_areas(pixels):
    """Black out where MedPix puts its mark (top-right) and the uploader caption (bottom strip)."""
    h, w = pixels.shape[:2]
    out = pixels.copy()
    out[: int(0.10 * h), int(0.60 * w):] = 0
    out[int(0.90 * h):] = 0
    return out


def _stamp_text(pixels):
    """Draw a MedPix-style mark and caption, scaled to the image."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(pixels)
    w, h = img.size
    fill = 255 if pixels.ndim == 2 else (255,) * pixels.shape[2]
    draw = ImageDraw.Draw(img)
    draw.text((int(0.68 * w), 4), "MedPix\u00ae", fill=fill, font=ImageFont.load_default(size=max(10, h // 12)))
    draw.text((4, h - max(8, h // 20) - 4), "6f-7dfb-465d-918c, Uploader: A. Author, Source: B. Author, 10-14-2004",
              fill=fill, font=ImageFont.load_default(size=max(8, h // 20)))
    return np.asarray(img)


def overlay_probe(models_dir: str, shared: Path, name: str = "imaging-modality") -> None:
    """Accuracy of ``name`` on its recorded test predictions' images, as is, text masked, text added."""
    from medclf_core.trust.metrics import evaluate_probabilities
    from medclf_core.io.images import load_image
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.atomic import read_json
    from medclf_core.registry.store import EVALUATION_FILE, resolve_run

    rows = read_json(resolve_run(name, models_dir), EVALUATION_FILE, {}).get("predictions") or []
    root = shared / "modality"
    if not rows or not root.is_dir():
        print(f"\n(overlay probe skipped: no recorded predictions for {name}, or {root} missing)")
        return
    predictor = Predictor.from_run(name, models_dir)
    pixels = [load_image(root / r["file"]).pixels for r in rows]
    truth = [predictor.class_names.index(r["label"]) for r in rows]
    print(f"\n{name} on its test split (n={len(rows)}) with burned-in text removed or added:")
    for label, change in [("as is", None), ("mark and caption blacked out", _mask_text_areas),
                          ("MedPix-style mark and caption added", _stamp_text)]:
        probs = predictor.predict_images([change(p) if change else p for p in pixels])
        r = evaluate_probabilities(truth, probs, predictor.class_names, threshold=predictor.threshold,
                                   positive=predictor.positive, bootstrap=0)
        recall = ", ".join(f"{c} {m['recall']:.3f}" for c, m in r["per_class"].items() if m["support"])
        print(f"- {label}: accuracy {r['accuracy']:.3f}; recall {recall}; confusion {r['confusion_matrix']}")

if __name__ == "__main__":
    sys.exit(main())
