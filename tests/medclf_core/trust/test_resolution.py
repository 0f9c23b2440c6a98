"""medclf_core.trust.resolution: an image far smaller than the model's input gets a caution, not a refusal."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.trust.ood import fit_gate
from medclf_core.trust.resolution import SMALL_FRACTION, small_image_reason
from medclf_core.trust.verdict import unfamiliar_message, verdict


@pytest.mark.parametrize("size,small", [((64, 64), True), ((111, 400), True), ((112, 112), False),
                                        ((400, 111), True), ((512, 512), False), ((0, 64), False)])
def test_the_cut_is_half_the_input_side_on_the_shorter_side(size, small):
    assert SMALL_FRACTION == 0.5
    assert (small_image_reason(size, 224) is not None) is small


def test_a_small_image_is_shown_with_a_caution_that_says_why_and_is_not_refused():
    v = verdict(None, None, size=(64, 64), input_side=224)
    assert v["ood"] is None and v["unfamiliar"] is True and v["unfamiliar_checks"] == ["size"]
    assert v["ood_checks"] == [] and "64 x 64 pixels" in v["unfamiliar_reason"]  # a caution, not a refusal check
    assert unfamiliar_message(v) == ("Caution: this image is small (it is 64 x 64 pixels, enlarged 3.5 times to the "
                                     "224 pixels the model reads, so fine detail is missing), so the finding is less "
                                     "certain.")
    large = verdict(None, None, size=(300, 300), input_side=224)
    assert large["unfamiliar"] is None and large["unfamiliar_checks"] == [] and unfamiliar_message(large) is None


def test_small_and_unlike_the_training_images_says_both_and_a_refusal_says_neither():
    rng = np.random.default_rng(0)
    gate = fit_gate(rng.normal(size=(200, 4)), rng.integers(0, 2, 200), rng.normal(size=(80, 4)))
    near = gate.near_threshold * 1.2  # between the unfamiliar and the refuse thresholds
    v = verdict(gate, None, score=near, size=(64, 80), input_side=224)
    assert v["ood"] is False and v["unfamiliar_checks"] == ["features", "size"]
    message = unfamiliar_message(v, {"n": 87, "metrics": {"accuracy": 0.931}})
    assert message.startswith("Caution: this image is unlike this model's training images (on 87 images from "
                              "another source, its accuracy was 93.1%) and small (it is 64 x 80 pixels")
    refused = verdict(gate, None, score=gate.threshold * 2, size=(64, 64), input_side=224)
    assert refused["ood"] is True and refused["unfamiliar"] is False and refused["unfamiliar_checks"] == []
    assert refused["unfamiliar_reason"] is None
