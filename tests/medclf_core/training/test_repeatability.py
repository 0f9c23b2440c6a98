"""Training quality is repeatable (issue 15): several seeds of one easy task, each model accurate and explainable.

The task: a small bright disc or square at a random place on a noisy 64 px image decides the class.
``bn_cnn`` is trained with the default recipe (default augmentation, learning rate, batch size)
once per seed, and every model must classify the held-out test split (> 0.95), keep a steady
validation accuracy once it has learnt the task, and, for every CAM method, put the peak of its
heat map on the pattern for at least 90% of the test images.

Score-CAM used to score each region by the rise of the class probability when the region was shown
alone on a blank image: with the fix it was on the pattern for 1.0, 1.0, 0.78 and, in a second run,
0.50, 1.0, 0.76 of the test images of seeds 1-3, because these models may read the blank as one
class with p = 1.0, or read the other class's pattern shown alone on the blank as evidence against
it. It now scores each region by the drop of the probability when the region is blanked in the
image (``medclf_core.explain.scorecam.scorecam_raw``): 1.0 on all 12 saved models of such runs.

Before the fix, validation, the best-epoch checkpoint and the saved model used BatchNorm moving
statistics gathered on augmented batches (resampled, blurred, zero-filled borders): validation
accuracy jumped between 1.0 and 0.5 from one epoch to the next although the same weights scored
1.0 with batch statistics, and Grad-CAM of two seeds in three missed the pattern on 15-30% of the
test images. Training now re-estimates those statistics on unaugmented training images before each
validation (the training package's clean-BatchNorm-statistics callback); this test needs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medclf_core.explain import cams as explain
from medclf_core.registry.store import load_run
from medclf_core.training import TrainConfig, train

SIZE = 64
RADIUS = 7          # disc radius; the square's half side is RADIUS - 1
PER_CLASS = 150     # 105 train, 22-23 val and test per class
EPOCHS = 12
SEEDS = (1, 2, 3)
# The peak counts as on the pattern within the pattern's box grown by half a CAM cell: bn_cnn's
# cam layer (block4_relu) is 8 x 8 at 64 px, one cell per 8 pixels, so a peak is only known to +/- 4 px.
TOLERANCE = 4


def make_spot_dataset(root: Path, n_per_class: int, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Noise (0..59) with one bright disc ("disc") or square ("square") at a random place; returns each
    file's pattern centre (x, y) by its path relative to ``root``."""
    import cv2

    rng = np.random.default_rng(seed)
    centres = {}
    for ci, cls in enumerate(("disc", "square")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (SIZE, SIZE), dtype=np.uint8)
            cx, cy = (int(v) for v in rng.integers(RADIUS + 3, SIZE - RADIUS - 3, 2))
            if ci == 0:
                cv2.circle(img, (cx, cy), RADIUS, 255, -1)
            else:
                h = RADIUS - 1
                cv2.rectangle(img, (cx - h, cy - h), (cx + h, cy + h), 255, -1)
            rel = f"{cls}/{cls}_{i:03d}.png"
            Image.fromarray(img).save(root / rel)
            centres[rel] = (cx, cy)
    return centres


def on_pattern(heatmap: np.ndarray, centre: tuple[int, int]) -> bool:
    """Whether the map's peak lies on the pattern (its box grown by ``TOLERANCE``)."""
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    reach = RADIUS + TOLERANCE
    return abs(int(px) - centre[0]) <= reach and abs(int(py) - centre[1]) <= reach


@pytest.fixture(scope="module")
def spot_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spots")
    return root, make_spot_dataset(root, PER_CLASS)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def trained(request, spot_data, tmp_path_factory):
    """One bn_cnn run per seed, default recipe: (run folder, its test predictions, the data)."""
    root, centres = spot_data
    run = train(TrainConfig(data=str(root), arch="bn_cnn", image_size=SIZE, epochs=EPOCHS, seed=request.param),
                models_dir=tmp_path_factory.mktemp("models"))
    predictions = json.loads((run / "evaluation.json").read_text())["predictions"]
    return run, predictions, root, centres


def test_every_seed_classifies_the_test_split(trained):
    run, predictions, _, _ = trained
    card = json.loads((run / "card.json").read_text())
    names = card["class_names"]
    correct = [int(np.argmax(p["probabilities"])) == names.index(p["label"]) for p in predictions]
    assert len(correct) >= 40
    assert np.mean(correct) > 0.95, f"test accuracy {np.mean(correct):.3f}"


def test_validation_accuracy_is_steady_once_learnt(trained):
    run, _, _, _ = trained
    val = [h["val_accuracy"] for h in json.loads((run / "history.json").read_text())]
    first = next((i for i, v in enumerate(val) if v >= 0.95), None)
    assert first is not None, f"validation accuracy never reached 0.95: {val}"
    assert min(val[first:]) >= 0.85, f"validation accuracy by epoch: {[round(v, 3) for v in val]}"


@pytest.mark.parametrize("method", explain.METHODS)
def test_cam_points_at_the_pattern(trained, method):
    run, predictions, root, centres = trained
    model, card = load_run(run)
    files = [p["file"] for p in predictions]
    images = [np.asarray(Image.open(root / f)) for f in files]
    maps = explain.heatmaps(model, images, method=method, cam_layer=card["cam_layer"])
    hits = [on_pattern(m, centres[f]) for f, m in zip(files, maps, strict=True)]
    assert np.mean(hits) >= 0.9, f"{method}: heat-map peak on the pattern for {np.mean(hits):.3f} of the test images"
