"""Whether a dataset is grayscale or colour: the default input of a model trained on it.

Example (a dataset with no readable image counts as grayscale)::

    >>> from medclf_core.data.scan import DatasetIndex
    >>> dataset_channels(DatasetIndex("/nowhere", ["a", "b"], [], presplit=False))
    1
"""

from __future__ import annotations

import numpy as np

from medclf_core.data.scan import DatasetIndex
from medclf_core.errors import ImageError
from medclf_core.io.images import load_image

CHANNEL_SAMPLE = 32
COLOUR_MIN_DIFFERENCE = 3.0  # mean |R-G|, |G-B| in grey levels: JPEG chroma noise on a grey film stays below it


def dataset_channels(index: DatasetIndex, sample: int = CHANNEL_SAMPLE) -> int:
    """1 when the dataset's images are grayscale, 3 when they are colour: the default input of a model for it.

    Decodes up to ``sample`` images spread evenly over the dataset (every class), through the
    same decoder as training. An RGB file whose channels are (nearly) equal is a grey image
    saved as colour and counts as grayscale. The majority of the readable sample decides;
    grayscale when none is readable.
    """
    items = index.items
    if not items:
        return 1
    step = max(1, len(items) // max(1, sample))
    colour = grey = 0
    for item in items[::step][:sample]:
        try:
            px = load_image(item.path).pixels
        except (ImageError, OSError):
            continue
        if px.ndim == 3 and px.shape[2] >= 3:
            p = px[..., :3].astype(np.int16)
            diff = max(float(np.abs(p[..., 0] - p[..., 1]).mean()), float(np.abs(p[..., 1] - p[..., 2]).mean()))
            if diff >= COLOUR_MIN_DIFFERENCE:
                colour += 1
                continue
        grey += 1
    return 3 if colour > grey else 1

