"""medclf_core.explain.faithfulness: the deletion-curve score tells a right map from a wrong one, and its words."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.explain.cams import METHODS, heatmaps
from medclf_core.explain.faithfulness import (BETTER_THAN_RANDOM, RELIES_ON_MAP, deletion_faithfulness,
                                              faithfulness_verdict, format_faithfulness)


def _box_model(box, size=32):
    """A known model: P(class 1) rises with the brightness inside ``box``, nothing else counts."""
    y0, x0, y1, x1 = box
    calls = []

    def predict(batch):
        calls.append(len(batch))
        inside = batch[:, y0:y1, x0:x1, 0].mean(axis=(1, 2))
        p1 = 1.0 / (1.0 + np.exp(-(inside - 100.0) / 15.0))
        return np.stack([1 - p1, p1], axis=1)

    return predict, calls


def _box_image(box, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 40, (size, size, 1)).astype(np.float32)
    y0, x0, y1, x1 = box
    x[y0:y1, x0:x1] = 230.0
    return x


def test_faithfulness_is_high_for_the_right_map_and_negative_for_an_inverted_one():
    box = (6, 18, 14, 26)
    predict, calls = _box_model(box)
    x = _box_image(box)[None]
    right = np.zeros((32, 32), np.float32)
    right[box[0]:box[2], box[1]:box[3]] = 1.0
    inverted = 1.0 - right
    flat = np.zeros((32, 32), np.float32)
    (good,) = deletion_faithfulness(predict, x, [right], 1)
    (bad,) = deletion_faithfulness(predict, x, [inverted], 1)
    (none,) = deletion_faithfulness(predict, x, [flat], 1)
    assert good["faithfulness"] > 0.8 and bad["faithfulness"] < -0.3, (good, bad)
    assert abs(none["faithfulness"]) < 0.35   # a flat map is a random order
    # the curves: 11 points, both start at the image's score and end at the blank image's
    assert len(good["fractions"]) == len(good["curve_map"]) == len(good["curve_random"]) == 11
    assert good["curve_map"][0] == good["curve_random"][0] == pytest.approx(good["score"])
    assert good["curve_map"][-1] == pytest.approx(good["blank_score"])
    assert good["blank"] == "image mean" and good["note"] is None
    # every step of one image in one predict call: 2 + 9 * (1 + 3 random orders)
    assert calls[0] == 38
    # a map at the image's (larger) size is resized to the model input
    big = np.kron(right, np.ones((3, 3), np.float32))
    assert deletion_faithfulness(predict, x, [big], 1)[0]["faithfulness"] == pytest.approx(good["faithfulness"],
                                                                                           abs=0.05)


def test_faithfulness_is_batched_deterministic_and_says_when_it_cannot_tell():
    box = (6, 18, 14, 26)
    predict, calls = _box_model(box)
    x = np.stack([_box_image(box, seed=s) for s in range(3)])
    right = np.zeros((32, 32), np.float32)
    right[box[0]:box[2], box[1]:box[3]] = 1.0
    out = deletion_faithfulness(predict, x, [right] * 3, [1, 1, 0])
    assert calls == [3 * 38]
    assert out == deletion_faithfulness(predict, x, [right] * 3, [1, 1, 0])
    # class 0: the blank image scores it higher than the image does, so deletion cannot test the map
    assert out[2]["faithfulness"] is None and "blank image" in out[2]["note"]
    with pytest.raises(ValueError):
        deletion_faithfulness(predict, x, [right] * 2, 1)


def test_faithfulness_of_real_maps_on_the_pattern_model(localisation):
    """The trained pattern model: every method's maps beat random order, inverted maps are worse than random.

    Measured: mean faithfulness 0.27 (Grad-CAM), 0.41 (Grad-CAM++), 0.51 (Score-CAM); inverted maps about -5.
    """
    model, (images, labels, _) = localisation
    subset, classes = list(images[:24]), labels[:24]
    x = images[:24, ..., None].astype(np.float32)
    results = {}
    for method in METHODS:
        maps = heatmaps(model, subset, method=method, class_index=classes)
        right = [d["faithfulness"] for d in deletion_faithfulness(model.predict_on_batch, x, maps, classes)]
        wrong = [d["faithfulness"] for d in deletion_faithfulness(model.predict_on_batch, x, [1 - m for m in maps],
                                                                  classes)]
        results[method] = (float(np.mean(right)), float(np.mean(wrong)))
    print(f"\nmean faithfulness (maps, inverted maps): {results}")
    for method, (right, wrong) in results.items():
        assert right > 0.15 and wrong < 0.0 and right > wrong + 0.5, (method, right, wrong)


# ----------------------------------------------------------------------------- the words shown with a score

def test_verdict_words_change_at_the_named_thresholds():
    """The same words the Predict page showed before (0.3 inclusive, 0.1 exclusive), from one place."""
    relies, somewhat, random_ = ("the model relies on the highlighted regions", "somewhat better than random regions",
                                 "no better than random regions: do not read much into this map")
    assert (RELIES_ON_MAP, BETTER_THAN_RANDOM) == (0.3, 0.1)
    assert [faithfulness_verdict(s) for s in (1.0, 0.3, 0.2999, 0.1001, 0.1, 0.0, -4.0)] == [
        relies, relies, somewhat, somewhat, random_, random_, random_]


def test_format_faithfulness_has_two_decimals_and_no_negative_zero():
    assert format_faithfulness(0.4173) == "0.42" and format_faithfulness(np.float32(-0.3)) == "-0.30"
    assert format_faithfulness(-0.0012) == "0.00"
    assert format_faithfulness(None) == format_faithfulness(float("nan")) == "n/a"
