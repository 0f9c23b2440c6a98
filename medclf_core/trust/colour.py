"""A pixel check for "not this kind of image": a colour photograph or graphic is not a radiograph, CT or MR image.

Radiographs, CT and MR images are grayscale: stored as one band, or as RGB with R = G = B (plus a few levels of
JPEG colour noise, or an annotation arrow). A photograph or a graphic has real colour. The check measures the
**mean chroma** of the image's original pixels, before any grayscale conversion for the model: the mean over
pixels of ``max(R, G, B) - min(R, G, B)``, on 0-255 (0 for a one-band image). An image whose mean chroma is at
least :data:`COLOUR_MIN_CHROMA` (20) is refused, with :data:`COLOUR_REASON`, by a model whose card declares
radiological modalities (CT / MR / CR / DX ...: :func:`~medclf_core.trust.population.router_classes`; the
bundled imaging-modality model declares them too, so it is covered); a card that declares none is not affected.

Why 20 (measured on every image of /work/shared/data, 2026-12-06): the grayscale scans reach 13.2 (JPEG
noise, coloured annotations; 0 for every chest X-ray, Sartaj MRI, demo film and DICOM sample; 99th percentile
<= 6.5 per set); the colour photographs of scikit-image's samples start at 38.4 (immunohistochemistry) and
reach 109. 20 is 1.5x the first and about half the second. One medical image is above it: a teal-tinted
photograph of a CT film (MedPix, chroma 29.3, 1 of 2184 in ``modality/``), which is refused. A DICOM whose
PhotometricInterpretation is RGB, YBR or PALETTE COLOR is decoded to RGB (:mod:`medclf_core.io.dicom`), so
its pixels are checked the same way; the header tag itself is not used (a secondary capture of a grayscale
scan is often stored as RGB).

Example::

    >>> import numpy as np
    >>> grey = np.full((8, 8, 3), 100, np.uint8); mean_chroma(grey), mean_chroma(grey[..., 0])
    (0.0, 0.0)
    >>> red = grey.copy(); red[..., 0] = 200; mean_chroma(red)
    100.0
    >>> colour_reason({"modalities": ["MR"]}, 100.0)
    'a colour image (photograph or graphic): not a radiograph, CT or MR image (mean chroma 100 of 255, where scans are grayscale, below 20)'
    >>> colour_reason({"modalities": ["MR"]}, 3.0) is None, colour_reason({}, 100.0) is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medclf_core.io.images import as_gray_or_rgb_uint8
from medclf_core.trust.population import router_classes

COLOUR_MIN_CHROMA = 20.0
COLOUR_REASON = "a colour image (photograph or graphic): not a radiograph, CT or MR image"
COLOUR_RULE = (f"refused when the original pixels' mean chroma (max - min of R, G, B, 0-255) is >= "
               f"{COLOUR_MIN_CHROMA:g}, for a model whose card declares CT, MR or X-ray")
#: At most about this many pixels are read (a regular stride): the mean of a 2048 px image costs no more.
_SAMPLE_PIXELS = 512 * 512


def mean_chroma(pixels: np.ndarray) -> float:
    """Mean over pixels of ``max(R, G, B) - min(R, G, B)`` on 0-255 (0 for a one-band image; an alpha
    band is ignored; other dtypes are scaled to 0-255 by their own range first, as the decoder does), over a regular subsample of at most
    about :data:`_SAMPLE_PIXELS` pixels."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return 0.0
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / _SAMPLE_PIXELS))))
    rgb = as_gray_or_rgb_uint8(arr[::step, ::step, :3]).astype(np.int16)  # other dtypes: by their own range
    return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2)))


def colour_applies(intended_use: Mapping | None) -> bool:
    """True when the card declares a radiological modality (CT, MR, CR, DX ...), whose images are grayscale."""
    return bool(router_classes(intended_use))


def colour_reason(intended_use: Mapping | None, chroma: float | None,
                  min_chroma: float = COLOUR_MIN_CHROMA) -> str | None:
    """The plain refuse reason for a colour image on a radiological model; None when the card declares no
    radiological modality, no chroma was measured, or the image is grayscale (chroma below ``min_chroma``)."""
    if chroma is None or not colour_applies(intended_use) or not chroma >= min_chroma:
        return None
    return f"{COLOUR_REASON} (mean chroma {chroma:.0f} of 255, where scans are grayscale, below {min_chroma:g})"
