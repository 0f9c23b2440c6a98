"""medclf_core.explain.cams: heat maps are correct (they localise), consistent, and the engines agree.

The localisation proof uses the ``localisation`` fixture (conftest.py): a small simple_cnn
trained where the class is decided by one 9x9 pattern among bright distractor squares;
each method's peak must fall inside the pattern on at least 90% of held-out images.
"""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.explain.cams import METHODS, gradcam_tape, heatmaps, model_batch
from medclf_core.models.architectures import build_model

MIN_HIT_RATE = 0.90


def peak_in_box(heatmap: np.ndarray, box) -> bool:
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    y0, x0, y1, x1 = box
    return bool(y0 <= y < y1 and x0 <= x < x1)



# ----------------------------------------------------------------------------- localisation (the proof)

def test_localisation_model_is_accurate(localisation):
    model, (images, labels, _) = localisation
    accuracy = float((model.predict(images[..., None].astype("float32"), verbose=0).argmax(1) == labels).mean())
    assert accuracy >= 0.95


@pytest.mark.parametrize("method", METHODS)
def test_peak_falls_inside_the_deciding_pattern(localisation, method):
    model, (images, _, boxes) = localisation
    maps = heatmaps(model, list(images), method=method)
    hit_rate = float(np.mean([peak_in_box(m, b) for m, b in zip(maps, boxes, strict=True)]))
    print(f"\nlocalisation {method}: {hit_rate:.2f} of {len(images)} held-out images")
    assert hit_rate >= MIN_HIT_RATE, f"{method}: peak inside the pattern on only {hit_rate:.0%}"


def test_a_misplaced_map_would_fail_the_localisation_check(localisation):
    """The check can fail: maps shifted by half the image miss the pattern."""
    model, (images, _, boxes) = localisation
    maps = heatmaps(model, list(images[:30]))
    shifted = [np.roll(m, images.shape[1] // 2, axis=(0, 1)) for m in maps]
    assert np.mean([peak_in_box(m, b) for m, b in zip(shifted, boxes[:30], strict=True)]) < 0.5


# ----------------------------------------------------------------------------- consistency

def test_keras_vis_gradcam_matches_a_plain_gradient_tape(localisation):
    model, (images, _, _) = localisation
    subset = list(images[:8])
    keras_vis = heatmaps(model, subset, method="gradcam", engine="tf-keras-vis")
    for a, b in zip(keras_vis, gradcam_tape(model, subset), strict=True):
        assert a.max() == pytest.approx(1.0)
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("arch", ["trained_simple_cnn", "bn_cnn"])
def test_compiled_engine_matches_tf_keras_vis(localisation, noise_images, method, arch):
    """The fast traced path gives tf-keras-vis's maps, for the predicted and for a chosen class."""
    if arch == "trained_simple_cnn":
        model, (images, _, _) = localisation
        subset = list(images[:6])
    else:
        model, subset = build_model("bn_cnn", 3, 32, 3), noise_images
    for class_index in (None, 1):
        compiled = heatmaps(model, subset, method=method, class_index=class_index)
        keras_vis = heatmaps(model, subset, method=method, class_index=class_index, engine="tf-keras-vis")
        for a, b in zip(compiled, keras_vis, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_maps_do_not_depend_on_the_batch_and_are_deterministic(localisation, method):
    model, (images, _, _) = localisation
    subset = list(images[:5])
    batched = heatmaps(model, subset, method=method, batch_size=5)
    one_by_one = heatmaps(model, subset, method=method, batch_size=1)
    again = heatmaps(model, subset, method=method, batch_size=5)
    for a, b, c in zip(batched, one_by_one, again, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_array_equal(a, c)


def test_class_index_selects_the_explained_class(localisation):
    model, (images, labels, boxes) = localisation
    i = int(np.flatnonzero(labels == 0)[0])
    own, other = heatmaps(model, [images[i]] * 2, class_index=[0, 1])
    assert peak_in_box(own, boxes[i]) and not np.allclose(own, other)
    with pytest.raises(ValueError, match="class_index"):
        heatmaps(model, [images[i]], class_index=7)



def test_prepared_inputs_give_the_same_maps(localisation):
    model, (images, _, _) = localisation
    subset = list(images[:4])
    x = model_batch(model, subset)
    for method in METHODS:
        for a, b in zip(heatmaps(model, subset, method=method), heatmaps(model, subset, method=method, inputs=x),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="prepared"):
        heatmaps(model, subset, inputs=x[:2])


@pytest.mark.parametrize("method", METHODS)
def test_constant_image_gives_flat_map_never_nan(localisation, method):
    model, _ = localisation
    for image in (np.zeros((50, 60), np.uint8), np.full((20, 20, 3), 200, np.uint8)):
        (m,) = heatmaps(model, [image], method=method)
        assert m.shape == image.shape[:2] and np.isfinite(m).all() and np.ptp(m) == 0


def test_huge_logits_stay_finite(noise_images):
    """Grad-CAM++ multiplies by exp(score); a logit of several hundred must not give inf/NaN."""
    model = build_model("simple_cnn", 2, 32, 1)
    head = model.get_layer("predictions")
    head.set_weights([w * 1e4 for w in head.get_weights()])
    for method in METHODS:
        for m in heatmaps(model, noise_images, method=method):
            assert np.isfinite(m).all() and 0 <= m.min() and m.max() <= 1



# ----------------------------------------------------------------------------- the CLI

def test_cli_predict_writes_maps_with_the_chosen_method(trained_run, sample_images, tmp_path, capsys):
    from medclf_core.cli.commands import main

    files = [str(p) for p in sample_images[:2]]
    assert main(["predict", str(trained_run), *files, "--cam", str(tmp_path), "--cam-method", "gradcam++"]) == 0
    assert len(list(tmp_path.glob("*_cam.png"))) == 2


def test_cli_predict_json_carries_the_faithfulness_of_each_map(trained_run, sample_images, tmp_path, capsys):
    import json

    from medclf_core.cli.commands import main

    files = [str(p) for p in sample_images[:2]]
    assert main(["predict", str(trained_run), *files, "--cam", str(tmp_path), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for r in results:
        assert r["cam_method"] == "gradcam" and "faithfulness" in r
        f = r["faithfulness"]
        assert (f is None and r["faithfulness_note"]) or (isinstance(f, float) and f <= 1.0)
    assert main(["predict", str(trained_run), files[0], "--cam", str(tmp_path)]) == 0
    assert "(faithfulness " in capsys.readouterr().out
