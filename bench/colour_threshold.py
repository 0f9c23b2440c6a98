"""Where the colour check's thresholds come from: mean chroma of every image in ../shared/data and of the
scikit-image sample photographs, for several dark levels (issue 24 item 1; docs/BENCHMARKS.md "Colour check").

For each set: n, the largest and second-largest mean chroma and the 99th percentile, at dark levels 0 (every
pixel counts: the session-9 rule), 16, 32 (the shipped ``DARK_LEVEL``), 48 and 64; then each photograph's
value. Grayscale files (one band) score 0 without being decoded to RGB. About 3 minutes on 2 CPU cores::

    PYTHONPATH=. .venv/bin/python bench/colour_threshold.py
"""
import os
from pathlib import Path

import numpy as np
from PIL import Image

from medclf_core.trust.colour import COLOUR_MIN_CHROMA, DARK_LEVEL, mean_chroma

SHARED = Path(os.environ.get("MEDCLF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LEVELS = (0, 16, DARK_LEVEL, 48, 64)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
PHOTOS = ("hubble_deep_field", "retina", "logo", "immunohistochemistry", "rocket", "astronaut", "coffee",
          "chelsea", "colorwheel", "camera", "moon", "coins", "page", "text", "brick")


def chroma_at_levels(path: Path) -> list[float]:
    with Image.open(path) as im:
        if im.mode in ("1", "L", "I", "I;16", "F"):
            return [0.0] * len(LEVELS)
        rgb = np.asarray(im.convert("RGB"))
    return [mean_chroma(rgb, dark_level=level) for level in LEVELS]


def main() -> None:
    import skimage.data

    print(f"shipped: refused at mean chroma >= {COLOUR_MIN_CHROMA:g} over pixels with max(R,G,B) >= {DARK_LEVEL}")
    print("dark levels:", LEVELS)
    for folder in sorted(p for p in SHARED.iterdir() if p.is_dir()):
        files = [f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            continue
        values = np.array([chroma_at_levels(f) for f in files])
        top = np.sort(values, axis=0)
        second = top[-2] if len(files) > 1 else top[-1]
        print(f"{folder.name:24s} n={len(files):5d}  max {np.round(top[-1], 1)}  next {np.round(second, 1)}  "
              f"p99 {np.round(np.percentile(values, 99, axis=0), 1)}")
    for name in PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)())
        print(f"photo {name:22s} {[round(mean_chroma(pixels, dark_level=level), 1) for level in LEVELS]}")


if __name__ == "__main__":
    main()
