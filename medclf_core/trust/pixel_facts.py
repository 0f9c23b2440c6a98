"""What the verdict needs to know of an image's original pixels, read once where the image is decoded.

The model reads a grayscale square of its input size, so two facts that matter for "is this the kind of image
the model knows" are gone by then: the colour (:mod:`medclf_core.trust.colour`: a photograph is not a scan) and
the original size (:mod:`medclf_core.trust.resolution`: a small image is enlarged and loses detail). Every
caller that decodes images (one upload, a batch of files, a folder to evaluate) takes them with
:func:`pixel_facts` and hands them to :meth:`~medclf_core.inference.predictor.Predictor.verdicts` as one record
per image.

    >>> import numpy as np
    >>> pixel_facts(np.full((64, 80, 3), 100, np.uint8))
    PixelFacts(chroma=0.0, size=(64, 80))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from medclf_core.trust.colour import mean_chroma


class PixelFacts(NamedTuple):
    """``chroma``: the original pixels' mean chroma (:func:`~medclf_core.trust.colour.mean_chroma`);
    ``size``: their (height, width). None: unknown (that check is not made)."""

    chroma: float | None = None
    size: tuple[int, int] | None = None


def pixel_facts(pixels: np.ndarray) -> PixelFacts:
    """The facts of one decoded image's original pixels (before the model's grayscale resize)."""
    return PixelFacts(mean_chroma(pixels), tuple(int(v) for v in np.shape(pixels)[:2]))
