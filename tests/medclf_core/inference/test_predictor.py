"""medclf_core.inference.predictor: thresholded decisions, per-file errors, heat maps ready to show, tracing."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.io.images import load_image
from medclf_core.inference.predictor import Predictor
from medclf_core.inference.results import HeatMap, Prediction
from medclf_core.trust.pixel_facts import pixel_facts


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_run(trained_run)


def test_threshold_decides_binary_label(predictor):
    probs = np.array([[0.6, 0.4]])
    predictor.threshold = 0.3
    assert predictor.describe(probs[0])["label"] == "PNEUMONIA"
    predictor.threshold = 0.5
    assert predictor.describe(probs[0])["label"] == "NORMAL"


@pytest.mark.parametrize("kind", ["jpeg", "dicom", "png-rgba", "bad"])
def test_predict_files_every_input_kind(predictor, sample_images, dicom_samples, tmp_path, kind):
    from PIL import Image

    if kind == "jpeg":
        f = sample_images[0]
    elif kind == "dicom":
        f = dicom_samples[0]
    elif kind == "png-rgba":
        f = tmp_path / "x.png"
        Image.open(sample_images[0]).convert("RGBA").save(f)
    else:
        f = tmp_path / "bad.dcm"
        f.write_bytes(b"DICM" * 10)
    (res,) = predictor.predict_files([f])
    if kind == "bad":
        assert "error" in res and "label" not in res
    else:
        assert res["label"] in predictor.class_names
        assert sum(res["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_batch_equals_single(predictor, sample_images):
    imgs = [load_image(p).pixels for p in sample_images]
    batch = predictor.predict_images(imgs)
    singles = np.concatenate([predictor.predict_images([im]) for im in imgs])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


# ----------------------------------------------------------------------------- Predictor.explain

def test_explain_is_the_one_way_to_a_heat_map(predictor, sample_images, monkeypatch):
    """Maps of the class each prediction names, at each image's size, the input prepared once."""
    from medclf_core.explain import cams as explain

    imgs = [load_image(p).pixels for p in sample_images[:3]]
    labels = [r.label for r in predictor.predict(imgs)]
    prepared = np.stack([predictor.prepare(a) for a in imgs])
    calls = []
    real_prepare = predictor.prepare
    monkeypatch.setattr(predictor, "prepare", lambda a: calls.append(1) or real_prepare(a))
    out = predictor.explain(imgs, "gradcam++", faithfulness=True)
    assert len(calls) == len(imgs)          # once per image, for the map and the deletion test
    calls.clear()
    again = predictor.explain(imgs, "gradcam++", prepared=prepared)
    assert not calls                        # the caller's prepared batch is reused
    reference = explain.heatmaps(predictor.model, imgs, method="gradcam++",
                                 class_index=[predictor.class_names.index(lb) for lb in labels],
                                 cam_layer=predictor.cam_layer)
    for im, e, e2, ref, label in zip(imgs, out, again, reference, labels, strict=True):
        assert isinstance(e, HeatMap) and e.method == "gradcam++" and e.class_name == label
        assert e.heatmap.shape == im.shape[:2] and 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
        np.testing.assert_allclose(e.heatmap, ref, atol=1e-5)
        np.testing.assert_allclose(e2.heatmap, ref, atol=1e-5)
        assert e2.faithfulness is None and e2.deletion is None      # only when asked
        assert e.deletion is not None and len(e.deletion["curve_map"]) == 11
        assert e.faithfulness is None or -10 < e.faithfulness <= 1.0
        assert e.faithfulness == e.deletion["faithfulness"]


def test_explain_target_by_name_or_index_and_bad_targets(predictor, sample_images):
    imgs = [load_image(p).pixels for p in sample_images[:2]]
    by_name = predictor.explain(imgs, "gradcam", "PNEUMONIA")
    by_index = predictor.explain(imgs, "gradcam", [1, 1])
    for a, b in zip(by_name, by_index, strict=True):
        assert a.class_index == b.class_index == 1
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
    scored = predictor.check_faithfulness(by_name)
    assert len(scored) == 2 and all(s.deletion is not None and "faithfulness" in s.deletion for s in scored)
    assert all(s.heatmap is e.heatmap for s, e in zip(scored, by_name, strict=True))  # scored, not recomputed
    assert predictor.explain([], "gradcam") == []
    with pytest.raises(ValueError, match="Unknown class"):
        predictor.explain(imgs, "gradcam", "CAT")
    with pytest.raises(ValueError, match="class_index"):
        predictor.explain(imgs, "gradcam", 5)
    with pytest.raises(ValueError, match="prepared"):
        predictor.explain(imgs, "gradcam", prepared=np.zeros((1, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match="Unknown method"):
        predictor.explain(imgs, "lime")


# ----------------------------------------------------------------------------- tracing (issue 16)

def test_prediction_is_traced_once_for_every_batch_size(trained_run, sample_images, traces):
    fresh = Predictor.from_run(trained_run)
    imgs = [load_image(p).pixels for p in sample_images]
    for n in (1, 2, 3, 5):
        assert len(fresh.predict(imgs[:n])) == n
    assert len(traces) == 1, traces


def test_heat_maps_and_their_scores_are_traced_once_for_every_batch_size(trained_run, sample_images, traces):
    fresh = Predictor.from_run(trained_run)
    imgs = [load_image(p).pixels for p in sample_images]
    fresh.explain(imgs[:1], "gradcam", faithfulness=True)
    first = len(traces)
    assert first >= 1
    for n in (2, 3, 5):
        assert len(fresh.explain(imgs[:n], "gradcam", faithfulness=True)) == n
    assert len(traces) == first, traces[first:]


def test_after_the_warm_up_the_first_image_traces_nothing(trained_run, sample_images, traces):
    fresh = Predictor.from_run(trained_run)
    fresh.warm_up()
    assert traces  # the warm-up did the tracing
    warmed = len(traces)
    img = load_image(sample_images[0]).pixels
    (result,) = fresh.predict([img])
    (e,) = fresh.explain([img], "gradcam", faithfulness=True)
    assert len(traces) == warmed, traces[warmed:]
    assert result["label"] in fresh.class_names and e.heatmap.shape == img.shape[:2]


def test_faithfulness_reads_the_logits_beyond_what_float32_probabilities_hold():
    """A hand-built model with a class-1 logit of about 120 on a bright square (P = 1.0, the other class's
    probability underflows to 0 in float32): the check's score is that logit, not the ~87 that clipped
    probabilities would give, and its curve falls at the first step where the probability's would not move."""
    import keras

    inputs = keras.Input((40, 40, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="conv")(x)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-0.5], np.float32)])
    model.get_layer("predictions").set_weights([np.array([[0.0, 2000.0]], np.float32),
                                                np.array([0.0, -5.0], np.float32)])
    image = np.random.default_rng(0).integers(0, 40, (40, 40), dtype=np.uint8)
    image[4:20, 4:20] = 255
    predictor = Predictor(model, {"class_names": ["empty", "square"]})
    heat = np.zeros((40, 40), np.float32)
    heat[4:20, 4:20] = 1.0
    (scored,) = predictor.check_faithfulness([HeatMap(heatmap=heat, image=image, method="gradcam", class_index=1,
                                                      class_name="square")])
    assert predictor.predict([image])[0]["probabilities"]["square"] == 1.0
    assert scored.deletion["scale"] == "log-odds" and scored.deletion["score"] > 100.0
    assert scored.deletion["curve_map"][1] < scored.deletion["score"] - 10.0
    assert scored.faithfulness is not None and scored.faithfulness >= 0.3


def test_the_traced_logits_are_those_of_keras_probabilities(trained_run, sample_images):
    """The faithfulness check's logits (the logits view, traced once) give the model's own probabilities."""
    fresh = Predictor.from_run(trained_run)
    x = np.stack([fresh.prepare(load_image(p).pixels) for p in sample_images[:3]]).astype(np.float32)
    z = fresh._model_logits(x)
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, fresh.model.predict_on_batch(x), atol=1e-5)


# ----------------------------------------------------------------------------- the facade: results ready to show

def test_predict_gives_the_decision_probabilities_and_verdict_of_describe(predictor, sample_images):
    from medclf_core.trust.verdict import ood_message

    imgs = [load_image(p).pixels for p in sample_images[:3]]
    results = predictor.predict(imgs)
    probs, feats = predictor.predict_batch_with_features(np.stack([predictor.prepare(a) for a in imgs]))
    verdicts = predictor.verdicts(feats, None, len(imgs), pixels=[pixel_facts(a) for a in imgs])
    for r, row, v in zip(results, probs, verdicts, strict=True):
        assert isinstance(r, Prediction) and r == predictor.describe(row, v)
        assert r.label == r["label"] in predictor.class_names
        assert r.flagged is (r["ood"] is True) and r.verdict_words == ood_message(r)


def test_explain_hands_back_the_display_map_its_overlay_and_its_score_in_words(predictor, sample_images):
    """compact=True: the map at display size, scored as shown; the overlay re-rendered at any opacity."""
    import cv2

    from medclf_core.explain.faithfulness import format_faithfulness
    from medclf_core.explain.render import overlay

    small = load_image(sample_images[0]).pixels
    big = cv2.resize(small, (1400, 1030), interpolation=cv2.INTER_LINEAR)  # over the 512 px display size
    (full,) = predictor.explain([big], "gradcam")
    (shown,) = predictor.explain([big], "gradcam", compact=True, faithfulness=True)
    assert full.heatmap.shape == big.shape[:2] and max(shown.heatmap.shape) == 512
    assert shown.image is not None and shown.image.shape == big.shape
    for opacity in (0.0, 0.45, 1.0):
        picture = shown.overlay(opacity)
        assert picture.shape == (*big.shape[:2], 3)
        np.testing.assert_array_equal(picture, overlay(big, shown.heatmap, opacity))
    np.testing.assert_array_equal(shown.overlay(0.0)[..., 0], big)            # opacity 0: the image itself
    (later,) = predictor.check_faithfulness(predictor.explain([big], "gradcam", compact=True))
    assert later.faithfulness == shown.faithfulness                            # the score of the map shown
    caption = shown.faithfulness_caption
    if shown.faithfulness is None:
        assert caption == f"Faithfulness: n/a ({shown.deletion['note']})."
    else:
        words = ("the model relies on the highlighted regions" if shown.faithfulness >= 0.3 else
                 "somewhat better than random regions" if shown.faithfulness > 0.1 else
                 "no better than random regions")
        assert caption.startswith(f"Faithfulness {format_faithfulness(shown.faithfulness)} (") and words in caption
