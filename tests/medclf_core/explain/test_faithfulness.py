"""medclf_core.explain.faithfulness: the deletion-curve score tells a right map from a wrong one, and its words."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.explain.cams import METHODS, heatmaps
from medclf_core.explain.faithfulness import (BETTER_THAN_RANDOM, RELIES_ON_MAP, WORSE_THAN_RANDOM,
                                              deletion_faithfulness, faithfulness_verdict, format_faithfulness)


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

    Measured on the log-odds from float32 probabilities (issue 24): mean faithfulness 0.18 (Grad-CAM), 0.36
    (Grad-CAM++), 0.42 (Score-CAM); inverted maps about -6.5 (on the probability: 0.27, 0.41, 0.51 and about -5).
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


# ----------------------------------------------------------------------------- the log-odds scale (issue 24)

def _saturated_square_model(size=40, gain=2000.0):
    """A hand-built Keras model with known weights: P(class 1) rises with the area of bright (> 127) pixels.

    A 3x3 mean filter minus 0.5 and a ReLU (``conv``) fire on bright regions only; their mean over
    the image times ``gain``, minus 5, is class 1's logit (class 0's is 0). A 16x16 square of 255
    on 40x40 dark noise gives a logit near 120, and still above 17 with 10% of the image deleted on
    it: P = 1.0 in float32, the saturation of issue 24. The blank (the image's mean grey, ~60)
    fires nothing: logit -5.
    """
    import keras

    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-0.5], np.float32)])
    model.get_layer("predictions").set_weights([np.array([[0.0, gain]], np.float32), np.array([0.0, -5.0], np.float32)])
    return model


def _square_images(n=4, size=40, side=16):
    """Dark noise with one bright ``side`` x ``side`` square each, and the squares' (y0, x0)."""
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 40, (n, size, size, 1)).astype(np.float32)
    corners = rng.integers(2, size // 2 - side + 1, (n, 2))   # top-left quarter: a half-image roll moves it off
    for img, (y0, x0) in zip(images, corners, strict=True):
        img[y0:y0 + side, x0:x0 + side] = 255.0
    return images, corners


def test_a_saturated_model_still_gets_a_falling_curve_on_the_log_odds_scale():
    """At P = 1.0 the probability curve is flat until the square is nearly gone; the log-odds fall at the first
    step."""
    model = _saturated_square_model()
    x, corners = _square_images()
    assert (model.predict_on_batch(x)[:, 1] == 1.0).all()   # saturated in float32
    maps = []
    for y0, x0 in corners:
        m = np.zeros((40, 40), np.float32)
        m[y0:y0 + 16, x0:x0 + 16] = 1.0
        maps.append(m)
    odds = deletion_faithfulness(model.predict_on_batch, x, maps, 1)
    prob = deletion_faithfulness(model.predict_on_batch, x, maps, 1, scale="probability")
    for lo, pr in zip(odds, prob, strict=True):
        assert lo["scale"] == "log-odds" and pr["scale"] == "probability"
        assert pr["curve_map"][0] == 1.0 and pr["curve_map"][1] > 0.9999   # 10% deleted: still P = 1.000
        assert lo["curve_map"][1] < lo["curve_map"][0] - 5.0                 # the log-odds fall at once
        assert lo["score"] > 30.0 and lo["blank_score"] == pytest.approx(-5.0, abs=0.01)
        assert lo["faithfulness"] > RELIES_ON_MAP
    # from float32 probabilities (P = 1.0) the log-odds are those of the logits up to about 87, where the
    # other class's probability underflows (clipped at float32's smallest normal number); the logits are exact
    exact = deletion_faithfulness(keras_logits(model), x, maps, 1, output="logits")
    cap = -np.log(np.finfo(np.float32).tiny)
    for a, b in zip(odds, exact, strict=True):
        assert b["score"] > cap + 10.0 and a["score"] == pytest.approx(cap, abs=0.01)
        below = np.asarray(b["curve_map"]) < cap - 5.0   # the map's curve (the random one averages three)
        assert below.sum() >= 5
        np.testing.assert_allclose(np.asarray(a["curve_map"])[below], np.asarray(b["curve_map"])[below], atol=0.01)
        assert b["faithfulness"] > RELIES_ON_MAP


def keras_logits(model):
    """The model's pre-softmax logits, from the logits view the heat maps use (centred logits)."""
    from medclf_core.explain.views import logits_view

    view, _ = logits_view(model)
    return lambda batch: np.asarray(view.predict_on_batch(batch))


def test_grad_cam_on_the_pattern_scores_high_and_moved_off_it_scores_low():
    """The saturated square model's own Grad-CAM maps lie on the square: high; the same maps rolled by half
    the image (off the square, onto noise): at most BETTER_THAN_RANDOM."""
    model = _saturated_square_model()
    x, _ = _square_images()
    maps = heatmaps(model, list(x.astype(np.uint8)), method="gradcam", class_index=1, cam_layer="conv")
    moved = [np.roll(m, (20, 20), axis=(0, 1)) for m in maps]
    on = [d["faithfulness"] for d in deletion_faithfulness(model.predict_on_batch, x, maps, 1)]
    off = [d["faithfulness"] for d in deletion_faithfulness(model.predict_on_batch, x, moved, 1)]
    assert min(on) >= RELIES_ON_MAP and max(off) <= BETTER_THAN_RANDOM, (on, off)


def test_trained_pattern_model_maps_on_the_pattern_beat_the_same_maps_moved_off(localisation):
    """The trained pattern model (tests' localisation fixture, saturated on most images): Grad-CAM and Grad-CAM++
    maps score high on the log-odds scale; the same maps moved off the pattern (rolled by half the image) low.

    Measured (24 held-out images): see the printed means.
    """
    model, (images, labels, _) = localisation
    x, classes = images[:24, ..., None].astype(np.float32), labels[:24]
    saturated = float(np.mean(model.predict_on_batch(x).max(axis=1) >= 0.999))
    logits = keras_logits(model)   # as the Predictor: exact log-odds beyond float32's probabilities
    for method in ("gradcam", "gradcam++"):
        maps = heatmaps(model, list(images[:24]), method=method, class_index=classes)
        moved = [np.roll(m, (m.shape[0] // 2, m.shape[1] // 2), axis=(0, 1)) for m in maps]
        on = [d["faithfulness"] for d in deletion_faithfulness(logits, x, maps, classes, output="logits")]
        off = [d["faithfulness"] for d in deletion_faithfulness(logits, x, moved, classes, output="logits")]
        print(f"\n{method}: on the pattern {np.mean(on):.2f} (share >= {RELIES_ON_MAP}: "
              f"{np.mean(np.asarray(on) >= RELIES_ON_MAP):.2f}), moved off {np.mean(off):.2f} "
              f"(share <= {BETTER_THAN_RANDOM}: {np.mean(np.asarray(off) <= BETTER_THAN_RANDOM):.2f}); "
              f"share with P >= 0.999: {saturated:.2f}")
        on, off = np.asarray(on), np.asarray(off)
        assert np.mean(on) > BETTER_THAN_RANDOM and np.mean(on >= RELIES_ON_MAP) >= 0.3, (method, on)
        assert np.mean(off) <= BETTER_THAN_RANDOM and np.mean(off <= BETTER_THAN_RANDOM) >= 0.9, (method, off)
        assert np.mean(on > off) >= 0.75 and np.mean(on) > np.mean(off) + 1.0, (method, on, off)


def test_scales_and_outputs_are_checked():
    predict, _ = _box_model((6, 18, 14, 26))
    x = _box_image((6, 18, 14, 26))[None]
    with pytest.raises(ValueError, match="scale"):
        deletion_faithfulness(predict, x, [np.ones((32, 32))], 1, scale="logit")
    with pytest.raises(ValueError, match="output"):
        deletion_faithfulness(predict, x, [np.ones((32, 32))], 1, output="scores")


# ----------------------------------------------------------------------------- the words shown with a score

def test_verdict_words_change_at_the_named_thresholds():
    """The same words the Predict page showed before (0.3 inclusive, 0.1 exclusive), from one place; a clearly
    negative score (-0.3 or below: a CT scored -0.63 in the walk-through, said "no better than random") says
    the map is worse than random."""
    relies, somewhat, random_ = ("the model relies on the highlighted regions", "somewhat better than random regions",
                                 "no better than random regions: do not read much into this map")
    worse = "worse than random regions: do not rely on this map"
    assert (RELIES_ON_MAP, BETTER_THAN_RANDOM, WORSE_THAN_RANDOM) == (0.3, 0.1, -0.3)
    assert [faithfulness_verdict(s) for s in (1.0, 0.3, 0.2999, 0.1001, 0.1, 0.0, -0.2999, -0.3, -0.63, -4.0)] == [
        relies, relies, somewhat, somewhat, random_, random_, random_, worse, worse, worse]


def test_format_faithfulness_has_two_decimals_and_no_negative_zero():
    assert format_faithfulness(0.4173) == "0.42" and format_faithfulness(np.float32(-0.3)) == "-0.30"
    assert format_faithfulness(-0.0012) == "0.00"
    assert format_faithfulness(None) == format_faithfulness(float("nan")) == "n/a"
