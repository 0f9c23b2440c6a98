"""Which out-of-distribution score tells "not this kind of image" and "another source" apart (issue 24, item 1).

For the bundled brain and chest models, four scores of the penultimate features (the input of the
``predictions`` layer), each "higher = less like the training images":

- ``mahalanobis``: the shipped gate (``ood.npz``: min over classes of the class-conditional distance,
  shared Ledoit-Wolf covariance), read back as it is;
- ``relative_maha``: relative Mahalanobis (Ren et al. 2021): the squared class distance minus the
  squared distance from one background Gaussian of all training features (:mod:`medclf_core.trust.scores`);
- ``knn``: distance to the k-th nearest training feature after L2 normalisation (Sun et al. 2022, k = 10);
- ``energy``: ``-logsumexp(logits)`` (Liu et al. 2020), the logits being ``features @ W + b`` of the
  ``predictions`` layer.

The relative-Mahalanobis background and the k-NN bank are fitted on a subsample of the model's
*train+val* images (every file not in the test split that ``evaluation.json`` lists). The in-distribution
set is the model's own test split; near sets are the same task from another source or another
preprocessing; far sets are another modality and natural photographs (scikit-image's sample images;
/work/shared holds no photographs). For each (in, other) pair: AUROC (other = positive) and FPR at 95% TPR
in the usual OOD sense: the share of *other* images accepted when the threshold accepts 95% of the
in-distribution test images. Features are cached in /tmp/medclf_ood_scores/.

Usage::

    python configs/make_brain_dataset.py --out /tmp/brain_mri_combined   # links only
    .venv/bin/python bench/ood_scores.py [--limit 150] [--bank 500]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
CACHE = Path("/tmp/medclf_ood_scores")
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def spaced(files: list[Path], limit: int) -> list[Path]:
    files = sorted(files)
    step = max(1, len(files) // limit) if limit else 1
    return files[::step][:limit] if limit else files


def folder_images(folder: Path, limit: int) -> list[Path]:
    return spaced([p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES], limit)


def photos_named() -> list[tuple[str, np.ndarray]]:
    """``(name, pixels)`` of scikit-image's sample images that load without a download."""
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "coins", "horse", "moon", "page",
                 "text", "logo", "colorwheel", "motorcycle_left", "immunohistochemistry", "hubble_deep_field"):
        try:
            arr = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - some need a download
            continue
        arr = arr.astype(np.uint8) * (255 if arr.dtype == bool else 1)
        out.append((name, arr[..., :3] if arr.ndim == 3 else arr))
    return out


def photo_arrays() -> list[np.ndarray]:
    return [arr for _, arr in photos_named()]


def mnist_arrays(limit: int) -> list[np.ndarray]:
    z = np.load(SHARED / "medmnist" / "pneumoniamnist_trainval.npz")
    imgs = z["val_images"]
    return [imgs[i] for i in np.linspace(0, len(imgs) - 1, min(limit, len(imgs))).astype(int)]


def features(model_name: str, set_name: str, source, side: int, channels: int, fm) -> np.ndarray:
    """Cached ``(N, D)`` features of a list of paths or of pixel arrays."""
    from medclf_core.io.images import to_model_input
    from medclf_core.io.images import load_for_model
    from medclf_core.trust.features import features_and_probabilities

    path = CACHE / f"{model_name}__{set_name}.npy"
    if path.is_file():
        return np.load(path)
    arrays = [load_for_model(p, side, channels) if isinstance(p, Path) else to_model_input(p, side, channels)
              for p in source]
    f, _ = features_and_probabilities(fm, np.stack(arrays))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, f)
    return f


def model_sets(name: str, card: dict, limit: int, bank: int, brain_root: Path) -> tuple[dict, dict]:
    """``({"in", "bank"}, {set label: (kind, source)})`` for one bundled model."""
    test = {p["file"] for p in json.loads((REPO / "models" / name / "evaluation.json").read_text())["predictions"]}
    root = brain_root if name.startswith("brain") else SHARED / "chest_xray_pneumonia" / "train"
    every = [p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES]
    rel = {p: str(p.relative_to(root)) for p in every}
    own = {"in": spaced([p for p in every if rel[p] in test], limit),
           "bank": spaced([p for p in every if rel[p] not in test], bank)}
    photos = ("far", photo_arrays())
    if name.startswith("brain"):
        others = {"brain MRI, Sartaj (other source)": ("near", folder_images(SHARED / "brain_tumor_sartaj", limit)),
                  "chest X-ray, Kermany": ("far", folder_images(SHARED / "chest_xray_pneumonia", limit)),
                  "CT, MedPix": ("far", folder_images(SHARED / "modality" / "CT", limit)),
                  "MRI of other body parts, MedPix": ("other", folder_images(SHARED / "modality" / "MRI", limit)),
                  "natural photographs": photos}
    else:
        others = {"chest X-ray, demo (original resolution)": ("near", folder_images(SHARED / "demo_samples", 0)),
                  "chest X-ray, modality/XRAY (aspect kept)": ("near",
                                                               folder_images(SHARED / "modality" / "XRAY", limit)),
                  "chest X-ray, PneumoniaMNIST 28 px": ("near", mnist_arrays(limit)),
                  "brain MRI, Br35H": ("far", folder_images(SHARED / "brain_tumor_br35h", limit)),
                  "CT, MedPix": ("far", folder_images(SHARED / "modality" / "CT", limit)),
                  "natural photographs": photos}
    return own, others


def auroc_fpr95(inside: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """AUROC (``other`` positive) and the share of ``other`` at or below the in-set's 95th percentile."""
    from sklearn.metrics import roc_auc_score

    inside, other = np.nan_to_num(inside, posinf=1e30), np.nan_to_num(other, posinf=1e30)
    y = np.r_[np.zeros(len(inside)), np.ones(len(other))]
    return float(roc_auc_score(y, np.r_[inside, other])), float(np.mean(other <= np.percentile(inside, 95)))


def scorers(model, gate, bank_feats: np.ndarray):
    from medclf_core.trust.scores import energy_score, fit_background, knn_score, relative_mahalanobis

    w, b = model.get_layer("predictions").get_weights()[:2]
    background = fit_background(bank_feats)
    unit = bank_feats / np.linalg.norm(bank_feats, axis=1, keepdims=True)
    return {"mahalanobis": gate.score,
            "relative_maha": lambda f: relative_mahalanobis(gate, background, f),
            "knn": lambda f: knn_score(unit, f, k=10),
            "energy": lambda f: energy_score(np.asarray(f, np.float64) @ w + b)}


def main() -> None:
    from medclf_core.registry.store import load_run
    from medclf_core.trust.features import feature_model
    from medclf_core.trust.ood import load_gate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=150, help="images per set (evenly spaced)")
    ap.add_argument("--bank", type=int, default=500, help="train+val images for the k-NN bank and the background")
    ap.add_argument("--brain-root", default="/tmp/brain_mri_combined")
    a = ap.parse_args()
    print("| model | set | tier | n | " + " | ".join(f"{s} AUROC / FPR95" for s in
                                                    ("mahalanobis", "relative_maha", "knn", "energy")) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("brain-mri-tumour", "chest-xray-pneumonia"):
        model, card = load_run(REPO / "models" / name)
        side, _, channels = card["input_shape"]
        fm = feature_model(model)
        gate = load_gate(REPO / "models" / name)
        own, others = model_sets(name, card, a.limit, a.bank, Path(a.brain_root))
        f_in = features(name, "in", own["in"], side, channels, fm)
        f_bank = features(name, f"bank{a.bank}", own["bank"], side, channels, fm)
        score = scorers(model, gate, f_bank)
        s_in = {k: fn(f_in) for k, fn in score.items()}
        print(f"| {name} | own test split | in | {len(f_in)} | " + " | ".join("-" for _ in score) + " |")
        for label, (tier, source) in others.items():
            f = features(name, label.replace(" ", "_").replace("/", "_"), source, side, channels, fm)
            cells = [auroc_fpr95(s_in[k], fn(f)) for k, fn in score.items()]
            print(f"| {name} | {label} | {tier} | {len(f)} | " +
                  " | ".join(f"{auc:.3f} / {fpr:.2f}" for auc, fpr in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
