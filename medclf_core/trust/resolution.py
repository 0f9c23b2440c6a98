"""A caution for an image much smaller than what the model reads: enlarged, it has no fine detail to show.

Every image is resized to the model's input (224 px for the bundled models). An image whose shorter side is under
half of that (a thumbnail, a cropped screenshot, a 64 x 64 DICOM) is enlarged more than twice, so the model sees
interpolated pixels with no detail at the scale of a small lesion, and none of the bundled models' training images
were that small (shorter sides: brain 150 px and up, chest X-rays 224 px and up, in ``../shared``). The finding is
still shown, with this caution: :func:`~medclf_core.trust.verdict.verdict` marks the result ``unfamiliar``.

    >>> small_image_reason((64, 64), 224)
    'it is 64 x 64 pixels, enlarged 3.5 times to the 224 pixels the model reads, so fine detail is missing'
    >>> small_image_reason((512, 480), 224) is None, small_image_reason(None, 224) is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

#: Shorter side below this fraction of the model's input side: the image gets the small-image caution.
SMALL_FRACTION = 0.5


def small_image_reason(size: Sequence[int] | None, input_side: int | None,
                       fraction: float = SMALL_FRACTION) -> str | None:
    """The plain caution for an image of ``size`` (height, width of the original pixels) on a model that reads
    ``input_side`` pixels; None when it is large enough or either is unknown."""
    if size is None or not input_side or len(size) < 2 or min(size[:2]) <= 0:
        return None
    short = min(int(size[0]), int(size[1]))
    if short >= fraction * input_side:
        return None
    return (f"it is {int(size[0])} x {int(size[1])} pixels, enlarged {input_side / short:.1f} times to the "
            f"{input_side} pixels the model reads, so fine detail is missing")
