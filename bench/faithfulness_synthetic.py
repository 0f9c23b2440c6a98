"""Heat-map faithfulness on the synthetic pattern tasks, issue 24 item 5 round three: the shipped deletion check
against the candidate rules of bench/faithfulness_scale.py (deleted cells filled from their surroundings, random
orders that delete blobs), on the tasks of tests/medclf_core/explain/test_faithfulness.py.

- the trained 3-class pattern model (the tests' ``localisation`` fixture, trained here the same way, seed 0):
  Grad-CAM, Grad-CAM++ and Score-CAM maps of the true class on 24 held-out images, the same maps moved off
  (rolled by half the image) on the log-odds from the logits, and inverted (``1 - map``) on the log-odds from
  the probabilities, as in the tests;
- the hand-built saturated square model (P = 1.0 in float32): its Grad-CAM on 4 images, and moved off;
- the box model (P rises with the brightness of one box): the right map, its inverse, a flat map.

Printed per rule: mean faithfulness, share >= RELIES_ON_MAP (0.3) of maps on the pattern, share <= 0.1 of
maps moved off, share of images where the map on the pattern beats it moved off. The numbers and their
reading: docs/BENCHMARKS.md, "Heat-map faithfulness: deleted cells filled from their surroundings, a
candidate not adopted (issue 24, round three)".

Usage (about 5 minutes on the shared 2 cores)::

    PYTHONPATH=. .venv/bin/python bench/faithfulness_synthetic.py telea ns outside blobs blobs-telea
    PYTHONPATH=. .venv/bin/python bench/faithfulness_synthetic.py copy reverse-copy shift shift-copy   # round four
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
for folder in (REPO, REPO / "bench", REPO / "tests", REPO / "tests" / "medclf_core" / "explain"):
    sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402


def scores(predict, x, maps, classes, rule: str, output: str) -> np.ndarray:
    """Faithfulness of each map by the shipped rule (``rule == "shipped"``) or a candidate of faithfulness_scale."""
    import faithfulness_scale as fs

    from medclf_core.explain.faithfulness import _deletion_inputs, _deletion_summary, class_scores

    out = []
    for img, m, c in zip(x, maps, classes, strict=True):
        variants = _deletion_inputs(img, m, 10, 3, 0, 16) if rule == "shipped" else fs.fill_inputs(img, m, rule)
        s = class_scores(np.asarray(predict(np.stack(variants).astype(np.float32))), int(c), output)
        out.append(fs.candidate_score(s) if rule.startswith("reverse")
                   else _deletion_summary(s, 10, 3, np.linspace(0, 1, 11))["faithfulness"])
    return np.array([np.nan if v is None else v for v in out], float)


def pattern_model():
    """The tests' ``localisation`` fixture: a simple_cnn trained on the pattern set, and its held-out images."""
    import conftest as cf
    import keras

    keras.utils.set_random_seed(0)
    x, y, _ = cf.make_localisation_set(900, seed=1)
    model = cf.build_model("simple_cnn", len(cf.LOC_CLASSES), cf.LOC_SIZE, 1)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x[..., None].astype("float32"), y, epochs=7, batch_size=32, verbose=0)
    return model, cf.make_localisation_set(100, seed=2)


def main(rules: list[str]) -> None:
    import test_faithfulness as tf

    from medclf_core.explain.cams import heatmaps

    model, (images, labels, _) = pattern_model()
    xs, cls = images[:24, ..., None].astype(np.float32), labels[:24]
    logits = tf.keras_logits(model)
    maps = {m: heatmaps(model, list(images[:24]), method=m, class_index=cls)
            for m in ("gradcam", "gradcam++", "scorecam")}
    square = tf._saturated_square_model()
    sx, _ = tf._square_images()
    square_maps = heatmaps(square, list(sx.astype(np.uint8)), method="gradcam", class_index=1, cam_layer="conv")
    box_predict, _ = tf._box_model((6, 18, 14, 26))
    bx = tf._box_image((6, 18, 14, 26))[None]
    right = np.zeros((32, 32), np.float32)
    right[6:14, 18:26] = 1
    for rule in ["shipped", *rules]:
        line = [rule]
        for method, mm in maps.items():
            on = scores(logits, xs, mm, cls, rule, "logits")
            off = scores(logits, xs, [np.roll(a, (24, 24), (0, 1)) for a in mm], cls, rule, "logits")
            inv = scores(model.predict_on_batch, xs, [1 - a for a in mm], cls, rule, "probabilities")
            line.append(f"{method}: on {np.nanmean(on):.2f} (>=0.3 {np.nanmean(on >= 0.3):.2f}) "
                        f"off {np.nanmean(off):.2f} (<=0.1 {np.nanmean(off <= 0.1):.2f}) "
                        f"on>off {np.mean(on > off):.2f} inverted {np.nanmean(inv):.2f}")
        on = scores(square.predict_on_batch, sx, square_maps, [1] * 4, rule, "probabilities")
        off = scores(square.predict_on_batch, sx, [np.roll(a, (20, 20), (0, 1)) for a in square_maps], [1] * 4, rule,
                     "probabilities")
        line.append(f"square: on min {np.nanmin(on):.2f} off max {np.nanmax(off):.2f}")
        box = [scores(box_predict, bx, [m], [1], rule, "probabilities")[0] for m in (right, 1 - right, 0 * right)]
        line.append(f"box: right {box[0]:.2f} inverted {box[1]:.2f} flat {box[2]:.2f}")
        print("\n  ".join(line), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
