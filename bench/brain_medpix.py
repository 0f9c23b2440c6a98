"""The brain model on a fourth source: MedPix head MRIs labelled tumour or not by their case's diagnosis.

None of the brain model's training sources (Br35H, Sartaj, Navoneel) shares MedPix, a teaching collection
of many pathologies, planes and sequences. ``configs/make_medpix_brain.py`` links its head MRIs into
``build/brain_mri_medpix`` (structural sequences) and ``build/brain_mri_medpix_all``; its docstring gives
the label rule, written before any model was run on these images.

For each model folder given, every image goes through the app's checks (``Predictor.predict_files``) and
the bench prints, on all images and on the answered ones (not refused): sensitivity and specificity at
the card's threshold, AUC, and the shares refused and unfamiliar. The slices of one case are not
independent, so every interval resamples **cases** (1000 cluster-bootstrap draws, percentile 95%); any
other folder works too (a ``Gnnnn__`` near-duplicate group is resampled whole, other files alone).

Usage::

    python configs/make_medpix_brain.py && python configs/make_medpix_brain.py --all-sequences
    .venv/bin/python bench/brain_medpix.py [MODEL_DIR ...] [--data build/brain_mri_medpix] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
CASE = re.compile(r"^(MPX\d+_|G\d{4}__)")  # a MedPix case or a near-duplicate group; else the file alone


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC by ranks (ties counted half); nan when one class is missing."""
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    called = p >= threshold
    return {"n": int(len(y)), "n_yes": int((y == 1).sum()), "n_no": int((y == 0).sum()),
            "sensitivity": float(called[y == 1].mean()) if (y == 1).any() else float("nan"),
            "specificity": float((~called[y == 0]).mean()) if (y == 0).any() else float("nan"),
            "accuracy": float((called == (y == 1)).mean()) if len(y) else float("nan"),
            "auc": auc(y, p)}


def case_bootstrap(rows: list[dict], threshold: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Percentile 95% intervals of each figure, resampling whole cases."""
    cases = sorted({r["case"] for r in rows})
    by_case = {c: [r for r in rows if r["case"] == c] for c in cases}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        sample = [r for c in rng.choice(cases, size=len(cases)) for r in by_case[c]]
        y = np.array([r["y"] for r in sample])
        draws.append(figures(y, np.array([r["p"] for r in sample]), threshold))
    return {k: [float(np.nanpercentile([d[k] for d in draws], q)) for q in (2.5, 97.5)]
            for k in ("sensitivity", "specificity", "accuracy", "auc")}


def predict(model_dir: Path, data: Path) -> tuple[list[dict], float]:
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(model_dir)
    files = sorted(data.glob("*/*"))
    rows = []
    for f, r in zip(files, predictor.predict_files(files)):
        if "error" in r:
            continue
        rows.append({"file": f.name, "case": (CASE.match(f.name) or [f.name])[0], "y": int(f.parent.name == "yes"),
                     "p": float(r["probabilities"]["yes"]), "refused": bool(r.get("ood")),
                     "unfamiliar": bool(r.get("unfamiliar")), "refused_by": r.get("ood_refused_by") or []})
    return rows, float(predictor.card["threshold"])


def report(model_dir: Path, data: Path) -> dict:
    rows, threshold = predict(model_dir, data)
    answered = [r for r in rows if not r["refused"]]
    out = {"model": str(model_dir), "data": str(data), "threshold": threshold,
           "cases": len({r["case"] for r in rows}),
           "refused": sum(r["refused"] for r in rows), "unfamiliar": sum(r["unfamiliar"] for r in answered),
           "refused_by": {k: sum(k in r["refused_by"] for r in rows)
                          for k in sorted({k for r in rows for k in r["refused_by"]})}}
    for name, subset in (("all", rows), ("answered", answered)):
        y, p = np.array([r["y"] for r in subset]), np.array([r["p"] for r in subset])
        out[name] = figures(y, p, threshold) | {"ci95": case_bootstrap(subset, threshold)}
    out["rows"] = rows
    return out


def fmt(m: dict, key: str) -> str:
    lo, hi = m["ci95"][key]
    return f"{m[key]:.3f} ({lo:.3f}-{hi:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, default=[REPO / "models" / "brain-mri-tumour"])
    ap.add_argument("--data", type=Path, nargs="+", default=[REPO / "build" / "brain_mri_medpix"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    results = [report(m, d) for d in a.data for m in a.models]
    print("| model | data | images (no/yes), cases | which | sensitivity | specificity | AUC | refused | unfamiliar |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for which in ("all", "answered"):
            m = r[which]
            print(f"| {Path(r['model']).name} | {Path(r['data']).name} | {m['n']} ({m['n_no']}/{m['n_yes']}), "
                  f"{r['cases']} | {which} | {fmt(m, 'sensitivity')} | {fmt(m, 'specificity')} | {fmt(m, 'auc')} | "
                  f"{r['refused']} ({r['refused'] / r['all']['n']:.1%}) {r['refused_by']} | "
                  f"{r['unfamiliar']} of {r['answered']['n']} answered |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
