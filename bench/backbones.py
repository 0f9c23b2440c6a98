"""Larger backbones (issue 23 item 1): frozen EfficientNet-Lite0 / Lite1 / Lite2 features, side by side.

Each backbone runs at its native size (224 / 240 / 260 px, grayscale repeated to RGB inside the model, as the
registry builds it). Its pooled ``gap`` features are cached per image in ``--cache`` (default
/tmp/medclf_backbones); ``lite0+lite2`` is the two caches concatenated (2560 features). Every feature set gets
the same linear probe: standardised features, L2 logistic regression, ``class_weight="balanced"``, C from
``crossfit.C_GRID`` by 5-fold *grouped* cross-validation (log-loss) on the training images only; decision by
argmax (threshold 0.5). Nothing is chosen on the test images.

Cases (other-source: the test images come from a source the probe never saw):

- ``brain, Navoneel held out``: trained on Br35H (capped, whole near-duplicate groups), and on Br35H + Sartaj;
  tested on the Navoneel images whose group holds no Br35H or Sartaj file (bench/brain_sources.py's rule).
- ``brain, Br35H held out``: trained on Navoneel, and on Navoneel + Sartaj; tested on the capped Br35H files
  whose group holds no Navoneel or Sartaj file.
  Groups are ``configs/make_brain_dataset.py --sartaj``'s ids (build/brain_mri_three_sources).
- ``modality``: trained on ``--modality-per-class`` images per class of ../shared/data/modality (whole MedPix
  cases), tested as ``bench/models_report.py --external`` does: the 228 Navoneel brain MRIs and the DICOM
  samples (MR, CT, CR).

Brain: AUC (percentile bootstrap, 1000 resamples), accuracy, sensitivity, specificity (Wilson 95%), n.
Modality: accuracy (Wilson 95%), recall per class. Throughput: images/s of each backbone's forward pass
(``predict`` on decoded, resized images, batch 32; decoding not counted) while extracting, and with
``--throughput N`` on its own: N images, backbones interleaved, median of 3 rounds (fairer on a shared machine).

Usage::

    python configs/make_brain_dataset.py --sartaj
    PYTHONPATH=. .venv/bin/python bench/backbones.py [--br35h-cap 600] [--sartaj-cap 300] [--modality-per-class 200]
    PYTHONPATH=. .venv/bin/python bench/backbones.py --throughput 128
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MEDCLF_SHARED_DATA") or REPO.parent / "shared" / "data")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from brain_sources import capped, catalogue, wilson  # noqa: E402

BACKBONES = {"lite0": "efficientnet_lite0", "lite1": "efficientnet_lite1", "lite2": "efficientnet_lite2"}
FEATURE_SETS = {"lite0": ("lite0",), "lite1": ("lite1",), "lite2": ("lite2",), "lite0+lite2": ("lite0", "lite2")}


class FeatureCache:
    """Pooled features of one backbone per resolved image path, kept in ``cache/<backbone>.npz``."""

    def __init__(self, backbone: str, cache: Path):
        self.backbone, self.file = backbone, cache / f"{backbone}.npz"
        self.feats: dict[str, np.ndarray] = {}
        if self.file.is_file():
            with np.load(self.file) as z:
                self.feats = dict(zip(z["paths"].tolist(), z["features"], strict=True))
        self.seconds, self.images = 0.0, 0

    def extract(self, paths: list[str]) -> None:
        """Features for the paths not cached yet; forward-pass time and count go to the throughput figure."""
        import keras

        from medclf_core.io.images import load_image, to_model_input
        from medclf_core.models.architectures import build_model, get_architecture

        todo = [p for p in dict.fromkeys(paths) if p not in self.feats]
        if not todo:
            return
        arch = BACKBONES[self.backbone]
        size = get_architecture(arch).defaults["image_size"]
        model = build_model(arch, 2, size, 1, weights="imagenet")
        extractor = keras.Model(model.inputs, model.get_layer("gap").output)
        extractor.predict(np.zeros((32, size, size, 1), "float32"), verbose=0, batch_size=32)  # trace once
        for i in range(0, len(todo), 256):
            chunk = todo[i:i + 256]
            x = np.stack([to_model_input(load_image(p).pixels, size, 1) for p in chunk]).astype("float32")
            t0 = time.perf_counter()
            out = extractor.predict(x, verbose=0, batch_size=32)
            self.seconds += time.perf_counter() - t0
            self.images += len(chunk)
            self.feats.update(zip(chunk, out, strict=True))
        self.file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.file, paths=np.array(list(self.feats)), features=np.stack(list(self.feats.values())))

    def __call__(self, paths: list[str]) -> np.ndarray:
        return np.stack([self.feats[p] for p in paths])


def throughput(paths: list[str], rounds: int = 3) -> dict[str, float]:
    """Forward images/s per backbone on the same decoded images, backbones interleaved round by round (a shared
    machine's load then hits each alike); the median of ``rounds``. Decoding and the first (tracing) call excluded."""
    import keras

    from medclf_core.io.images import load_image, to_model_input
    from medclf_core.models.architectures import build_model, get_architecture

    runs, times = {}, {b: [] for b in BACKBONES}
    for b, arch in BACKBONES.items():
        size = get_architecture(arch).defaults["image_size"]
        model = build_model(arch, 2, size, 1, weights="imagenet")
        extractor = keras.Model(model.inputs, model.get_layer("gap").output)
        x = np.stack([to_model_input(load_image(p).pixels, size, 1) for p in paths]).astype("float32")
        extractor.predict(x[:32], verbose=0, batch_size=32)
        runs[b] = (extractor, x)
    for _ in range(rounds):
        for b, (extractor, x) in runs.items():
            t0 = time.perf_counter()
            extractor.predict(x, verbose=0, batch_size=32)
            times[b].append(len(x) / (time.perf_counter() - t0))
    return {b: float(np.median(v)) for b, v in times.items()}


def probe(x, y, groups, seed: int = 0):
    """Standardised L2 logistic regression, C by grouped stratified 5-fold CV on the training images only."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.preprocessing import StandardScaler

    from medclf_core.training.crossfit import C_GRID

    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # 1.10's renamed attributes
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(xs, y, groups))
    clf = LogisticRegressionCV(Cs=list(C_GRID), cv=folds, scoring="neg_log_loss", class_weight="balanced",
                               max_iter=3000).fit(xs, y)
    return lambda t: clf.predict_proba(scaler.transform(t)), float(np.ravel(clf.C_)[0])


def auc_ci(y, p, n_boot: int = 1000, seed: int = 0):
    from sklearn.metrics import roc_auc_score

    rng, aucs = np.random.default_rng(seed), []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i])) == 2:
            aucs.append(roc_auc_score(y[i], p[i]))
    return float(roc_auc_score(y, p)), [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))]


def binary_row(y, p_yes) -> dict:
    pred = (p_yes >= 0.5).astype(int)
    auc, ci = auc_ci(y, p_yes)
    k_acc, k_tp, k_tn = int((pred == y).sum()), int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum())
    n_yes, n_no = int(y.sum()), int((1 - y).sum())
    return {"n": len(y), "n_no": n_no, "n_yes": n_yes, "auc": auc, "auc_ci": ci,
            "accuracy": k_acc / len(y), "accuracy_ci": list(wilson(k_acc, len(y))),
            "sensitivity": k_tp / n_yes, "sensitivity_ci": list(wilson(k_tp, n_yes)),
            "specificity": k_tn / n_no, "specificity_ci": list(wilson(k_tn, n_no))}


def brain_cases(a) -> list[dict]:
    """(name, train files, test files) for the two held-out sources, each with two training sets."""
    files = catalogue(a.brain)
    for f in files:
        f["key"] = str(f["path"].resolve())
    nav = [f for f in files if f["source"] == "navoneel"]
    br35h = capped([f for f in files if f["source"] == "br35h"], a.br35h_cap, seed=0)
    sartaj = capped([f for f in files if f["source"] == "sartaj"], a.sartaj_cap, seed=0)

    def clean(test, others):  # held-out files whose group touches no file of another source (uncapped)
        touched = {f["group"] for f in files if f["source"] in others}
        return [f for f in test if f["group"] not in touched]

    return [("Navoneel held out", "Br35H", br35h, clean(nav, ("br35h", "sartaj"))),
            ("Navoneel held out", "Br35H+Sartaj", br35h + sartaj, clean(nav, ("br35h", "sartaj"))),
            ("Br35H held out", "Navoneel", nav, clean(br35h, ("navoneel", "sartaj"))),
            ("Br35H held out", "Navoneel+Sartaj", nav + sartaj, clean(br35h, ("navoneel", "sartaj")))]


def modality_sets(a):
    """Training (whole MedPix cases, seeded) and the other-source test set, as (key, label, group) lists."""
    import csv

    classes = ("CT", "MRI", "XRAY")
    case = {}
    with open(SHARED / "manifests" / "modality.csv") as fh:
        for r in csv.DictReader(fh):
            m = re.search(r"case=(\w+)", r["processing"])
            case[r["file"]] = m.group(1) if m else r["file"]
    train = []
    for label, c in enumerate(classes):
        paths = sorted((SHARED / "modality" / c).iterdir())
        by_case: dict[str, list] = {}
        for p in paths:
            by_case.setdefault(case.get(f"modality/{c}/{p.name}", p.name), []).append(p)
        ids = sorted(by_case)
        random.Random(0).shuffle(ids)
        picked = []
        for cid in ids:
            if len(picked) + len(by_case[cid]) <= a.modality_per_class:
                picked += [(str(p.resolve()), label, f"{c}:{cid}") for p in by_case[cid]]
        train += picked
    dicom = SHARED / "dicom_samples"
    test = [(str(p.resolve()), 1, "") for p in sorted((SHARED / "brain_tumor_mri").glob("*/*"))]
    test += [(str(p.resolve()), classes.index(c), "") for sub, c in (("MR", "MRI"), ("CT", "CT"), ("CR", "XRAY"))
             for p in sorted((dicom / sub).glob("*"))]
    return classes, train, test


def fmt(v, ci=None) -> str:
    return f"{v:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brain", type=Path, default=REPO / "build" / "brain_mri_three_sources")
    ap.add_argument("--br35h-cap", type=int, default=600, help="Br35H files used (whole groups, seeded)")
    ap.add_argument("--sartaj-cap", type=int, default=300, help="Sartaj files used (whole groups, seeded)")
    ap.add_argument("--modality-per-class", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medclf_backbones"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--throughput", type=int, default=0, metavar="N",
                    help="only measure forward images/s on N Br35H images, backbones interleaved, 3 rounds")
    a = ap.parse_args()
    if a.throughput:
        paths = sorted(str(p.resolve()) for p in a.brain.glob("*/*br35h*"))[:a.throughput]
        print(json.dumps({"n": len(paths), "images_per_s": throughput(paths)}))
        return
    if not a.brain.is_dir():
        raise SystemExit("Run python configs/make_brain_dataset.py --sartaj first.")
    brain = brain_cases(a)
    classes, mod_train, mod_test = modality_sets(a)
    paths = sorted({f["key"] for _, _, tr, te in brain for f in tr + te} | {k for k, _, _ in mod_train + mod_test})
    caches = {}
    for name in BACKBONES:
        caches[name] = FeatureCache(name, a.cache)
        caches[name].extract(paths)
        c = caches[name]
        if c.images:
            print(f"{name}: {c.images} images in {c.seconds:.1f} s forward = {c.images / c.seconds:.1f} images/s",
                  flush=True)
    rows = []
    for case, trained_on, train, test in brain:
        y = np.array([f["label"] == "yes" for f in train], int)
        yt = np.array([f["label"] == "yes" for f in test], int)
        for fs, parts in FEATURE_SETS.items():
            feats = lambda files: np.hstack([caches[b]([f["key"] for f in files]) for b in parts])  # noqa: E731
            predict, c_value = probe(feats(train), y, [f["group"] for f in train])
            rows.append({"case": case, "trained_on": trained_on, "n_train": len(train), "features": fs,
                         "C": c_value, **binary_row(yt, predict(feats(test))[:, 1])})
            print(json.dumps(rows[-1]), flush=True)
    for fs, parts in FEATURE_SETS.items():
        feats = lambda items: np.hstack([caches[b]([k for k, _, _ in items]) for b in parts])  # noqa: E731
        y, yt = np.array([t[1] for t in mod_train]), np.array([t[1] for t in mod_test])
        predict, c_value = probe(feats(mod_train), y, [t[2] for t in mod_train])
        pred = predict(feats(mod_test)).argmax(1)
        k = int((pred == yt).sum())
        rows.append({"case": "modality", "trained_on": "modality", "n_train": len(mod_train), "features": fs,
                     "C": c_value, "n": len(yt), "accuracy": k / len(yt), "accuracy_ci": list(wilson(k, len(yt))),
                     "recall": {c: [int(((pred == i) & (yt == i)).sum()), int((yt == i).sum())]
                                for i, c in enumerate(classes)}})
        print(json.dumps(rows[-1]), flush=True)
    speed = {b: (c.images / c.seconds if c.images else None) for b, c in caches.items()}
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "images_per_s": speed}, indent=1))
    print("\n| case | trained on (n) | features | n test (no/yes) | AUC (95% CI) | accuracy | sensitivity | "
          "specificity |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] != "modality":
            print(f"| {r['case']} | {r['trained_on']} ({r['n_train']}) | {r['features']} | {r['n']} ({r['n_no']}/"
                  f"{r['n_yes']}) | {fmt(r['auc'], r['auc_ci'])} | {fmt(r['accuracy'], r['accuracy_ci'])} | "
                  f"{fmt(r['sensitivity'], r['sensitivity_ci'])} | {fmt(r['specificity'], r['specificity_ci'])} |")
    print("\n| features | modality, other-source accuracy (95% CI), n | recall MRI / CT / XRAY (correct/n) |\n"
          "|---|---|---|")
    for r in rows:
        if r["case"] == "modality":
            rec = " / ".join(f"{k}/{n}" for k, n in (r["recall"][c] for c in ("MRI", "CT", "XRAY")))
            print(f"| {r['features']} | {fmt(r['accuracy'], r['accuracy_ci'])}, n={r['n']} | {rec} |")
    print("\nforward throughput (images/s, batch 32, this machine): " +
          ", ".join(f"{b} {v:.1f}" for b, v in speed.items() if v))


if __name__ == "__main__":
    main()
