"""Fixtures shared by the heat-map tests: a model trained to localise, and noise images of several sizes.

The localisation model is a small simple_cnn trained on a generated data set where the
class is decided by one 9x9 pattern (plus, X or ring) placed at a random position among
bright distractor squares. It is trained once per test session (about a minute on 2 CPU
cores) and only read by the tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.models.architectures import build_model

PATTERN = 9          # side of the deciding pattern, pixels
LOC_SIZE = 48        # image side of the localisation data set
LOC_CLASSES = ("plus", "x", "ring")


def draw_pattern(img: np.ndarray, label: int, y0: int, x0: int, value: int) -> None:
    """Draw class ``label``'s 9x9 pattern (0 plus, 1 X, 2 hollow square) with its top-left at (y0, x0)."""
    p = PATTERN
    if label == 0:
        img[y0 + 3:y0 + 6, x0:x0 + p] = value
        img[y0:y0 + p, x0 + 3:x0 + 6] = value
    elif label == 1:
        for k in range(p):
            img[y0 + k, x0 + max(k - 1, 0):x0 + min(k + 2, p)] = value
            img[y0 + k, x0 + max(p - 2 - k, 0):x0 + min(p + 1 - k, p)] = value
    else:
        inner = img[y0 + 2:y0 + p - 2, x0 + 2:x0 + p - 2].copy()
        img[y0:y0 + p, x0:x0 + p] = value
        img[y0 + 2:y0 + p - 2, x0 + 2:x0 + p - 2] = inner


def make_localisation_set(n: int, size: int = LOC_SIZE, seed: int = 0, distractors: int = 3, margin: int = 5):
    """``(images uint8 (n, size, size), labels, boxes (y0, x0, y1, x1))``: one deciding pattern per
    image among ``distractors`` filled 7x7 or 9x9 squares of the same brightness, none overlapping.

    Shapes keep ``margin`` pixels from the border: simple_cnn's unpadded convolutions leave
    no grid cell centred in the outer ~8 pixels, so nothing there can be localised exactly.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 50, (n, size, size)).astype(np.uint8)
    labels = np.arange(n) % len(LOC_CLASSES)
    boxes = np.zeros((n, 4), int)
    for i in range(n):
        taken: list[tuple[int, int]] = []
        for j in range(1 + distractors):
            for _ in range(200):
                y0, x0 = (int(v) for v in rng.integers(margin, size - PATTERN - margin + 1, 2))
                if all(abs(y0 - ty) > PATTERN + 1 or abs(x0 - tx) > PATTERN + 1 for ty, tx in taken):
                    break
            else:
                continue  # no free place: one distractor fewer
            taken.append((y0, x0))
            value = int(rng.integers(190, 256))
            if j == 0:
                draw_pattern(images[i], int(labels[i]), y0, x0, value)
                boxes[i] = (y0, x0, y0 + PATTERN, x0 + PATTERN)
            elif rng.integers(0, 2):
                images[i, y0 + 1:y0 + 8, x0 + 1:x0 + 8] = value
            else:
                images[i, y0:y0 + PATTERN, x0:x0 + PATTERN] = value
    return images, labels, boxes


@pytest.fixture(scope="session")
def localisation():
    """A simple_cnn trained to high accuracy on the pattern set, and 100 held-out images:
    ``(model, (images, labels, boxes))`` with boxes ``(y0, x0, y1, x1)`` of the deciding pattern."""
    import keras

    keras.utils.set_random_seed(0)
    x, y, _ = make_localisation_set(900, seed=1)
    model = build_model("simple_cnn", len(LOC_CLASSES), LOC_SIZE, 1)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x[..., None].astype("float32"), y, epochs=7, batch_size=32, verbose=0)
    held_out = make_localisation_set(100, seed=2)
    return model, held_out


@pytest.fixture
def noise_images():
    """Three uint8 noise images of different sizes, grayscale and RGB."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 52), dtype=np.uint8), rng.integers(0, 256, (30, 30, 3), dtype=np.uint8),
            rng.integers(0, 256, (64, 48), dtype=np.uint8)]
