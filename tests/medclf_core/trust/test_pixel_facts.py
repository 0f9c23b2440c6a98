"""medclf_core.trust.pixel_facts: the original pixels' colour and size, read once per decoded image."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.trust.colour import mean_chroma
from medclf_core.trust.pixel_facts import PixelFacts, pixel_facts


@pytest.mark.parametrize("shape", [(30, 50), (30, 50, 3), (30, 50, 4)])
def test_the_facts_are_the_colour_check_and_the_size_before_any_resize(shape):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    facts = pixel_facts(pixels)
    assert facts == PixelFacts(mean_chroma(pixels), (30, 50))
    assert (facts.chroma == 0.0) is (len(shape) == 2) and all(isinstance(v, int) for v in facts.size)


def test_unknown_facts_make_no_check():
    assert PixelFacts() == (None, None)
