"""Heat-map faithfulness against drawn lesions (issue 24 item 5: "a few real cases with known lesions").

The 12 Sartaj tumour images that the shipped brain model held out (bench/faithfulness_scale.py's
``--brain-set held-out``). No data set here has lesion masks, so each tumour was boxed by hand on the model's
224 px input (LESION_BOXES: one reader, the enhancing mass or, on the one T2 image, the whole mass with its
cyst; the images are never committed, only these coordinates). Per image, four maps are scored by the
shipped deletion check (:func:`medclf_core.explain.faithfulness`, log-odds of the tumour class) and, with
``--rules``, by round three's fills:

- ``lesion box``: 1 inside the box, 0 outside: the right answer, drawn by a person;
- ``box elsewhere``: the same box mirrored left-right, or moved up by its height where the mirror would
  overlap it (midline pituitary masses): as much brain, no lesion;
- ``gradcam``: the model's own Grad-CAM for the tumour class;
- ``centre blob``: a Gaussian on the image centre (round four's control: "the middle of the organ").

Also per image: the share of the Grad-CAM's mass inside the box against the box's share of the image, and
whether its peak lies in the box (the pointing game); P(tumour) with the box (or the same box elsewhere)
inpainted (:func:`medclf_core.data.marks.inpaint_marks`), and with only the box kept; and P(tumour) of the
source's normal slices that the model held out. A score that tells lesions from other brain must rank
``lesion box`` above ``box elsewhere``. Docs: docs/BENCHMARKS.md, "Heat-map faithfulness against drawn
lesions".

Usage::

    .venv/bin/python bench/faithfulness_lesions.py [--rules shipped shift-copy]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

SIDE = 224
#: (x0, y0, x1, y1) on the model's 224 x 224 input, drawn by hand (session 16), by Sartaj file name.
LESION_BOXES = {
    "train_m (113).jpg": (56, 112, 82, 148), "train_m (117).jpg": (108, 71, 134, 98),
    "train_m (136).jpg": (83, 81, 121, 128), "train_m (184).jpg": (86, 126, 121, 162),
    "test_image(10).jpg": (55, 56, 124, 114), "test_image(32).jpg": (74, 106, 136, 164),
    "test_image(35).jpg": (93, 30, 167, 124), "test_image(36).jpg": (147, 74, 172, 101),
    "test_image(13).jpg": (84, 82, 136, 150), "test_image(5).jpg": (79, 86, 138, 167),
    "test_image(56).jpg": (88, 86, 144, 147), "test_image(63).jpg": (92, 62, 134, 128)}


def box_map(box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((SIDE, SIDE), np.float32)
    m[y0:y1, x0:x1] = 1.0
    return m


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def elsewhere(box: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], str]:
    """The box mirrored left-right, or, where that overlaps it (IoU > 0.1), moved up by its height plus 8 px."""
    x0, y0, x1, y1 = box
    mirrored = (SIDE - x1, y0, SIDE - x0, y1)
    if iou(box, mirrored) <= 0.1:
        return mirrored, "mirrored"
    h = y1 - y0 + 8
    return (x0, max(y0 - h, 0), x1, max(y1 - h, y1 - y0)), "moved up"


def grown(box: tuple[int, int, int, int], by: int = 8) -> tuple[int, int, int, int]:
    return max(box[0] - by, 0), max(box[1] - by, 0), min(box[2] + by, SIDE), min(box[3] + by, SIDE)


def only(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image inside ``box``, black around it."""
    return img * box_map(box)[..., None].astype(img.dtype)


def main(rules: list[str]) -> None:
    import cv2
    import faithfulness_scale as fs

    from medclf_core.data.audit import pixel_digest
    from medclf_core.data.marks import inpaint_marks
    from medclf_core.explain.faithfulness import _deletion_inputs, _deletion_summary, class_scores
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io.images import load_image

    predictor = Predictor.from_run(fs.REPO / "models" / "brain-mri-tumour")
    files = fs.brain_heldout_images(12)
    x = np.stack([predictor.prepare(load_image(f).pixels) for f in files])
    positive = predictor.class_names.index(predictor.card.get("positive_class") or predictor.class_names[-1])
    cams = [cv2.resize(h.heatmap.astype(np.float32), (SIDE, SIDE))
            for h in predictor.explain(list(x), "gradcam", positive, prepared=x)]
    centre = fs.controls(cams, smooth=True)["centre blob"]
    boxes = [LESION_BOXES[f.name] for f in files]
    moved = [elsewhere(b) for b in boxes]
    maps = {"lesion box": [box_map(b) for b in boxes], "box elsewhere": [box_map(m[0]) for m in moved],
            "gradcam": cams, "centre blob": centre}

    print(f"{'image':22s} {'P(tumour)':>9s} {'box %':>6s} {'cam mass in box %':>17s} {'peak in box':>11s}  control")
    probs = predictor.predict_batch(x)[:, positive]
    for f, img_cam, b, m, p in zip(files, cams, boxes, moved, probs, strict=True):
        inside = box_map(b).astype(bool)
        peak = np.unravel_index(int(np.argmax(img_cam)), img_cam.shape)
        print(f"{f.parent.name[:4] + ' ' + f.name:22s} {p:9.3f} {100 * inside.mean():6.1f} "
              f"{100 * img_cam[inside].sum() / max(img_cam.sum(), 1e-9):17.1f} {str(bool(inside[peak])):>11s}  {m[1]}")

    # the model's reliance on the lesion itself: the tumour class's probability with the box inpainted
    def inpainted(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        return inpaint_marks(img, box_map(box) > 0)

    variants = {"as is": x,
                "lesion box inpainted": np.stack([inpainted(i, b) for i, b in zip(x, boxes, strict=True)]),
                "lesion box + 8 px inpainted": np.stack([inpainted(i, grown(b))
                                                         for i, b in zip(x, boxes, strict=True)]),
                "box elsewhere inpainted": np.stack([inpainted(i, m[0]) for i, m in zip(x, moved, strict=True)]),
                "only the lesion box + 8 px": np.stack([only(i, grown(b)) for i, b in zip(x, boxes, strict=True)])}
    ps = {k: predictor.predict_batch(v)[:, positive] for k, v in variants.items()}
    print("\nP(tumour): " + " / ".join(ps))
    for j, f in enumerate(files):
        print(f"  {f.parent.name[:4] + ' ' + f.name:22s} " + " / ".join(f"{v[j]:.3f}" for v in ps.values()))
    print("  median " + " / ".join(f"{np.median(v):.3f}" for v in ps.values()) + "; below 0.5: "
          + " / ".join(str(int((v < 0.5).sum())) for v in ps.values()) + f" of {len(x)}")

    # the same question from the other side: the source's normal slices that the model did not train on
    splits = json.loads((fs.REPO / "models" / "brain-mri-tumour" / "training_images.json").read_text())["splits"]
    held = set(splits["val"]) | set(splits["test"])
    normals = [load_image(f).pixels for f in sorted((fs.DATA / "brain_tumor_sartaj" / "no").iterdir())]
    normals = [a for a in normals if pixel_digest(a) in held]
    pn = predictor.predict_batch(np.stack([predictor.prepare(a) for a in normals]))[:, positive]
    print(f"\nSartaj no-tumour slices in the model's validation and test splits: n = {len(pn)}, median P(tumour) "
          f"{np.median(pn):.3f}, called tumour (>= {predictor.threshold:.2f}) {int((pn >= predictor.threshold).sum())}")

    for rule in rules:
        table = {}
        for kind, mm in maps.items():
            scores = []
            for img, mp in zip(x, mm, strict=True):
                v = _deletion_inputs(img, mp, 10, 3, 0, 16) if rule == "shipped" else fs.fill_inputs(img, mp, rule)
                s = class_scores(predictor._model_logits(np.stack(v).astype(np.float32)), positive, "logits")
                scores.append(_deletion_summary(s, 10, 3, np.linspace(0, 1, 11))["faithfulness"])
            table[kind] = np.asarray(scores, float)
        print(f"\nrule {rule}: faithfulness per map (mean, 95% bootstrap interval, n = {len(files)})")
        for kind, v in table.items():
            lo, hi = fs.bootstrap_ci(v)
            print(f"  {kind:14s} {v.mean():6.2f} ({lo:.2f}, {hi:.2f})   " + " ".join(f"{s:5.2f}" for s in v))
        diff = table["lesion box"] - table["box elsewhere"]
        lo, hi = fs.bootstrap_ci(diff)
        print(f"  lesion box - box elsewhere: {diff.mean():.2f} ({lo:.2f}, {hi:.2f}); lesion box higher in "
              f"{int((diff > 0).sum())} of {len(diff)}; "
              f"lesion box >= 0.3 in {int((table['lesion box'] >= 0.3).sum())}, "
              f"box elsewhere >= 0.3 in {int((table['box elsewhere'] >= 0.3).sum())}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rules", nargs="+", default=["shipped"],
                    help="shipped, or round three's fills (copy, shift, ...)")
    main(ap.parse_args().rules)
