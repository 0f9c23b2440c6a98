"""Leave-one-source-out for the brain model: three sources, each held out in turn.

The sources are Navoneel (``brain_tumor_mri``), Br35H (``brain_tumor_br35h``) and Sartaj
(``brain_tumor_sartaj``; glioma, meningioma and pituitary count as tumour), linked into
``build/brain_mri_three_sources`` by ``configs/make_brain_dataset.py --sartaj``, which names every
near-duplicate group ``Gnnnn__`` (its docstring gives the rule). For each held-out source:

* evaluated on: the held-out source's images whose group holds no image of a training source (so
  no re-encoded copy or neighbouring slice of an evaluated image is trained on);
* three-source model: the shipped config (``configs/brain-mri-tumour.json``: EfficientNet-Lite0
  transfer recipe on cached features, same seed) trained on both other sources, with
  ``group_pattern`` ``^(G\\d{4})__`` so no group straddles its own train/val/test split;
* two-source model: the same config on the other source(s) among Navoneel and Br35H (for Sartaj held
  out, both of them). Every row trains its own model with today's ``configs/brain-mri-tumour.json``
  (until session 11 the Sartaj row evaluated the shipped model, then trained on exactly that data).

Accuracy and AUC intervals are the evaluator's percentile bootstrap (1000 resamples, as ``medclf
evaluate --json``); sensitivity and specificity intervals are Wilson 95% intervals on their counts.
Nothing is tuned on the held-out source.

Usage::

    python configs/make_brain_dataset.py --sartaj
    .venv/bin/python bench/brain_sources.py [--held-out sartaj navoneel br35h] [--cap 800] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SOURCES = ("navoneel", "br35h", "sartaj")
NAME = re.compile(r"^(?:(G\d{4})__)?(navoneel|br35h|sartaj)__")


def catalogue(folder: Path) -> list[dict]:
    """Every link of the three-source folder as ``{"path", "label", "source", "group"}`` (group: its
    ``Gnnnn`` id, or the file name for a file with no near-duplicate)."""
    out = []
    for f in sorted(folder.glob("*/*")):
        m = NAME.match(f.name)
        if m is None:
            raise SystemExit(f"{f}: not a name written by configs/make_brain_dataset.py --sartaj")
        out.append({"path": f, "label": f.parent.name, "source": m.group(2), "group": m.group(1) or f.name})
    return out


def link(files: list[dict], dest: Path) -> Path:
    """A class-folder dataset of symlinks to ``files`` (names kept, so group ids survive)."""
    for f in files:
        (dest / f["label"]).mkdir(parents=True, exist_ok=True)
        os.symlink(os.readlink(f["path"]), dest / f["label"] / f["path"].name)
    return dest


def capped(files: list[dict], cap: int | None, seed: int = 0) -> list[dict]:
    """At most ``cap`` files per source, drawn by whole groups (seeded), so a cap never splits a group."""
    if not cap:
        return files
    kept = []
    for source in SOURCES:
        mine = [f for f in files if f["source"] == source]
        groups = sorted({f["group"] for f in mine})
        random.Random(seed).shuffle(groups)
        take, n = set(), 0
        for g in groups:
            size = sum(1 for f in mine if f["group"] == g)
            if n + size <= cap:
                take.add(g)
                n += size
        kept += [f for f in mine if f["group"] in take]
    return kept


def wilson(k: int, n: int) -> list[float] | None:
    """Wilson 95% interval for k successes out of n."""
    if n == 0:
        return None
    z, p = 1.959964, k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def summary(m: dict, n_no: int, n_yes: int) -> dict:
    """The figures reported for one evaluation."""
    sens, spec = m.get("sensitivity"), m.get("specificity")
    ood = m.get("ood") or {}
    return {"n": m["n"], "n_no": n_no, "n_yes": n_yes, "accuracy": m["accuracy"], "auc": m.get("auc"),
            "sensitivity": sens, "specificity": spec, "ci95": m.get("ci95") or {},
            "sensitivity_ci95": None if sens is None else wilson(round(sens * n_yes), n_yes),
            "specificity_ci95": None if spec is None else wilson(round(spec * n_no), n_no),
            "ece": m.get("ece"), "refused": ood.get("fraction_flagged"),
            "unfamiliar": None if ood.get("n_unfamiliar") is None or not m["n"] else ood["n_unfamiliar"] / m["n"]}


def train_on(files: list[dict], name: str, tmp: Path) -> tuple[Path, float]:
    """The shipped config trained on ``files``; returns the run folder and seconds taken."""
    import time

    from medclf_core.training import TrainConfig, train

    cfg = json.loads((REPO / "configs" / "brain-mri-tumour.json").read_text())
    keep = {k: v for k, v in cfg.items() if k not in ("description", "data", "name")}
    keep["group_pattern"] = r"^(G\d{4})__"
    t0 = time.perf_counter()
    run = train(TrainConfig(data=str(link(files, tmp / name)), name=name, **keep), models_dir=tmp / "models")
    return run, time.perf_counter() - t0


def fold(files: list[dict], held: str, cap: int | None, tmp: Path) -> list[dict]:
    """Rows for one held-out source: the three-source and the two-source model on the same images."""
    from medclf_core.inference.folder import evaluate_folder
    from medclf_core.inference.predictor import Predictor

    touched = {f["group"] for f in files if f["source"] != held}
    test = [f for f in files if f["source"] == held and f["group"] not in touched]
    data = link(test, tmp / f"eval_{held}")
    n_no, n_yes = (sum(f["label"] == c for f in test) for c in ("no", "yes"))
    rows = []
    others = [s for s in SOURCES if s != held]
    for kind, sources in (("three-source", others), ("two-source", [s for s in others if s != "sartaj"])):
        if kind == "three-source" and held == "sartaj":
            continue  # the two other sources are today's data: the two-source row is that model
        train_files = capped([f for f in files if f["source"] in sources], cap)
        run, seconds = train_on(train_files, f"loso-{held}-{kind}", tmp)
        m = evaluate_folder(Predictor.from_run(run), data)
        rows.append({"held_out": held, "model": kind, "trained_on": "+".join(sources), "n_train_files": len(train_files),
                     "seconds": seconds, "run": run.name, **summary(m, n_no, n_yes)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def fmt(v, ci=None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "build" / "brain_mri_three_sources")
    ap.add_argument("--held-out", nargs="+", choices=SOURCES, default=list(SOURCES))
    ap.add_argument("--cap", type=int, default=None, help="at most this many training files per source (whole groups)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit("Run python configs/make_brain_dataset.py --sartaj first.")
    files = catalogue(a.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for held in a.held_out:
            rows += fold(files, held, a.cap, Path(tmp))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    print("\n| held out | model (trained on, files) | n (no/yes) | accuracy (95% CI) | sensitivity (95% CI) | "
          "specificity (95% CI) | AUC (95% CI) | ECE | refused | unfamiliar |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ci = r["ci95"]
        print(f"| {r['held_out']} | {r['model']} ({r['trained_on']}, {r['n_train_files']}) | {r['n']} ({r['n_no']}/{r['n_yes']}) | "
              f"{fmt(r['accuracy'], ci.get('accuracy'))} | {fmt(r['sensitivity'], r['sensitivity_ci95'])} | "
              f"{fmt(r['specificity'], r['specificity_ci95'])} | {fmt(r['auc'], ci.get('auc'))} | {fmt(r['ece'])} | "
              f"{fmt(r['refused'])} | {fmt(r['unfamiliar'])} |")


if __name__ == "__main__":
    main()
