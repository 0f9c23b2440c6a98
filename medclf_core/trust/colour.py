"""A pixel check for "not this kind of image": a colour photograph or graphic is not a radiograph, CT or MR image.

Radiographs, CT and MR images are grayscale: stored as one band, or as RGB with R = G = B (plus a few levels of
JPEG colour noise, or an annotation arrow). A photograph or a graphic has real colour. The check measures the
**mean chroma** of the image's original pixels, before any grayscale conversion for the model: the mean of
``max(R, G, B) - min(R, G, B)``, on 0-255 (0 for a one-band image), over the pixels that are not near-black
(``max(R, G, B) >= ``:data:`DARK_LEVEL`, 32). Near-black pixels are left out because a black surround says
nothing about colour and dilutes the mean: scikit-image's Hubble deep field (coloured galaxies on black) has a
mean chroma of 8 over all pixels and 34 over its lit ones. An image whose mean chroma is at least
:data:`COLOUR_MIN_CHROMA` (24) is refused, with :data:`COLOUR_REASON`, by a model whose card declares
radiological modalities (CT / MR / CR / DX ...: :func:`~medclf_core.trust.population.router_classes`; the
bundled imaging-modality model declares them too, so it is covered); a card that declares none is not affected.

Why 32 and 24 (measured on every image of /work/shared/data, 2026-12-06; docs/BENCHMARKS.md "Colour check"):
over lit pixels the grayscale scans reach 16.8 (a MedPix MRI with coloured annotation arrows; JPEG noise stays
below 13; 0 for every chest X-ray, Sartaj MRI, demo film and DICOM sample); the photographs of scikit-image's
samples start at 34.2 (the Hubble deep field; the others from 38.4, immunohistochemistry). 24 is about 1.4x
above the first and below the second. One medical image is above it: a teal-tinted photograph of a CT film
(MedPix, chroma 34.5, 1 of 2184 in ``modality/``), which is refused. A DICOM whose
PhotometricInterpretation is RGB, YBR or PALETTE COLOR is decoded to RGB (:mod:`medclf_core.io.dicom`), so
its pixels are checked the same way; the header tag itself is not used (a secondary capture of a grayscale
scan is often stored as RGB).

Example::

    >>> import numpy as np
    >>> grey = np.full((8, 8, 3), 100, np.uint8); mean_chroma(grey), mean_chroma(grey[..., 0])
    (0.0, 0.0)
    >>> red = grey.copy(); red[..., 0] = 200; mean_chroma(red)
    100.0
    >>> night = np.zeros((8, 8, 3), np.uint8); night[0, 0] = (200, 100, 100); mean_chroma(night)  # black is left out
    100.0
    >>> colour_reason({"modalities": ["MR"]}, 100.0)
    'a colour image (photograph or graphic): not a radiograph, CT or MR image (mean chroma 100 of 255, where scans are grayscale, below 24)'
    >>> colour_reason({"modalities": ["MR"]}, 3.0) is None, colour_reason({}, 100.0) is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from medclf_core.io.images import as_gray_or_rgb_uint8
from medclf_core.trust.population import router_classes

COLOUR_MIN_CHROMA = 24.0
#: Pixels darker than this in every band (max(R, G, B) below it) are not counted: black has no colour to show.
DARK_LEVEL = 32
COLOUR_REASON = "a colour image (photograph or graphic): not a radiograph, CT or MR image"
COLOUR_RULE = (f"refused when the original pixels' mean chroma (max - min of R, G, B, 0-255, over pixels not "
               f"darker than {DARK_LEVEL}) is >= {COLOUR_MIN_CHROMA:g}, for a model whose card declares CT, MR or X-ray")
#: At most about this many pixels are read (a regular stride): the mean of a 2048 px image costs no more.
_SAMPLE_PIXELS = 512 * 512


def mean_chroma(pixels: np.ndarray, dark_level: int = DARK_LEVEL) -> float:
    """Mean of ``max(R, G, B) - min(R, G, B)`` on 0-255 over the pixels with ``max(R, G, B) >= dark_level``
    (0 for a one-band image or one with no such pixel; an alpha band is ignored; other dtypes are scaled to 0-255
    by their own range first, as the decoder does), over a regular subsample of at most about
    :data:`_SAMPLE_PIXELS` pixels."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return 0.0
    step = max(1, int(np.ceil(np.sqrt(arr.shape[0] * arr.shape[1] / _SAMPLE_PIXELS))))
    rgb = as_gray_or_rgb_uint8(arr[::step, ::step, :3]).astype(np.int16)  # other dtypes: by their own range
    brightest = rgb.max(axis=2)
    lit = brightest >= dark_level
    return float(np.mean((brightest - rgb.min(axis=2))[lit])) if lit.any() else 0.0


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
