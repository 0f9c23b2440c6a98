"""Helpers shared by the tests (importable: pytest.ini puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CHEST_SAMPLE = SAMPLES / "datasets" / "chest_xray"
TINY = 32  # image side used by training tests: fast on a 2-core CPU


def make_pattern_dataset(root: Path, n_per_class: int = 12, size: int = 40, classes=("circle", "square"),
                         seed: int = 0) -> Path:
    """A learnable 2-class dataset: a bright circle or square on noise, at random places."""
    import cv2

    rng = np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            cx, cy = rng.integers(10, size - 10, 2)
            if ci == 0:
                cv2.circle(img, (int(cx), int(cy)), 7, 255, -1)
            else:
                cv2.rectangle(img, (int(cx) - 6, int(cy) - 6), (int(cx) + 6, int(cy) + 6), 255, -1)
            Image.fromarray(img).save(d / f"{cls}_{i:03d}.png")
    return root
