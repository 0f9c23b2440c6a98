"""medclf_core.inference.lite: the LiteRT fast path gives what the Keras model gives, or is not used.

Tiny real models, converted for real: probabilities, decision, trust verdict, Grad-CAM and Grad-CAM++ maps and
the faithfulness score agree with the TensorFlow path for every architecture whose classifier is linear on a
global average pooling; the others, stale files and ``MEDCLF_BACKEND=keras`` fall back to TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medclf_core.inference.lite import BACKEND_ENV, lite_mismatch
from medclf_core.inference.lite_export import LITE_FILE, LITE_META, lite_problem, recorded_no_fast_path, write_lite
from medclf_core.inference.predictor import Predictor
from medclf_core.inference.warmup import ModelLock, warm_in_steps, warm_up_plan, warm_up_steps
from medclf_core.io.atomic import write_json
from medclf_core.registry.store import CARD_FILE, MODEL_FILE

# name: (architecture, classes, options, heat-map layer, side); "gap-cnn" is a user's model of the same form as the
# shipped EfficientNet-Lite transfer models (conv layer -> GAP -> Dropout -> Dense softmax)
FAST = {"gap-cnn": ("gap-cnn", 2, {}, "conv2_relu", 32),
        "gap-cnn-3-classes": ("gap-cnn", 3, {}, "conv2_relu", 32),
        "efficientnet_lite0": ("efficientnet_lite0", 2, {"weights": "imagenet"}, "top_relu", 64)}  # the shipped trunk
SLOW = {"simple_cnn-flatten": ("simple_cnn", 2, {"filters": (4, 8)}, "conv2", 32),
        "bn_cnn-pooled-then-dense": ("bn_cnn", 2, {"dense_units": 8, "filters": (4, 8)}, "block2_relu", 32),
        "bn_cnn-max-pool-before-gap": ("bn_cnn", 2, {"dense_units": 0, "filters": (4, 8)}, "block2_relu", 32)}


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Textured images of several sizes (not the model's), so every map and score differs between them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 40 + 7 * i, 36 + 5 * i
        yy, xx = np.mgrid[:h, :w]
        blob = 200 * np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / (2 * (4 + 3 * i) ** 2))
        out.append(np.clip(blob + rng.normal(40, 12, (h, w)), 0, 255).astype(np.uint8))
    return out


def _build(arch: str, classes: int, side: int, options: dict):
    """A fresh model whose initial weights are the same in every run (seeded): with the global random state
    left to the tests before, one simple_cnn-flatten init in a few gave a Grad-CAM of all zeros (every cell's
    weighted sum negative under the ReLU), and the no-fast-path test that draws it failed by test order."""
    import keras

    from medclf_core.models.architectures import build_model
    from medclf_core.models.head import classifier_head

    keras.utils.set_random_seed(1000 * classes + side)
    if arch != "gap-cnn":
        return build_model(arch, classes, side, 1, **options)
    inputs = keras.Input((side, side, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for i, f in enumerate((6, 8), 1):
        x = keras.layers.Conv2D(f, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier_head(x, classes, 0, 0.3), name="gap_cnn")


def _run(folder: Path, arch: str, classes: int, options: dict, cam_layer: str, side: int, gate: bool = True) -> Path:
    """A run folder (model.keras, card, an OOD gate fitted on the model's own features) with a head whose
    weights are not the initial ones (a clear decision, maps that differ by class)."""
    from medclf_core.trust.features import features_and_probabilities
    from medclf_core.trust.ood import fit_gate

    model = _build(arch, classes, side, options)
    head = model.get_layer("predictions")
    rng = np.random.default_rng(classes)
    head.set_weights([w + rng.normal(0, 0.5, w.shape).astype(np.float32) for w in head.get_weights()])
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    names = [f"c{k}" for k in range(classes)]
    write_json(folder / CARD_FILE, {"name": folder.name, "class_names": names, "cam_layer": cam_layer,
                                    "architecture": arch, "input_shape": [side, side, 1],
                                    **({"threshold": 0.4, "positive_class": "c1"} if classes == 2 else {})})
    if gate:
        batch = np.stack([Predictor(model, {"class_names": names}).prepare(a) for a in _images(24, seed=3)])
        feats, probs = features_and_probabilities(model, batch)
        fit_gate(feats[:16], probs[:16].argmax(1), feats[16:], percentile=90).save(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(FAST))
def fast_run(request, tmp_path_factory):
    from medclf_core.registry.store import load_run

    folder = _run(tmp_path_factory.mktemp("lite") / request.param, *FAST[request.param])
    model, card = load_run(folder)
    assert write_lite(model, card, folder) == folder / LITE_META
    return folder


def _both(run: Path, monkeypatch) -> tuple[Predictor, Predictor]:
    lite = Predictor.from_run(run, router=None)
    monkeypatch.setenv(BACKEND_ENV, "keras")
    keras_one = Predictor.from_run(run, router=None)
    monkeypatch.delenv(BACKEND_ENV)
    assert lite.lite is not None and keras_one.lite is None
    return lite, keras_one


def test_the_fast_path_gives_the_keras_models_results(fast_run, monkeypatch):
    lite, keras_one = _both(fast_run, monkeypatch)
    images = _images(4)
    got, want = lite.predict(images), keras_one.predict(images)
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert np.allclose(list(g["probabilities"].values()), list(w["probabilities"].values()), atol=1e-4)
        assert g["ood"] == w["ood"] and g["ood_checks"] == w["ood_checks"]
        assert g["ood_score"] == pytest.approx(w["ood_score"], rel=1e-3, abs=1e-4)  # float32, XNNPACK vs oneDNN
    assert len({r.label for r in got} | {r["ood"] for r in got}) > 1 or len(lite.class_names) > 2
    for method in ("gradcam", "gradcam++"):
        peaks = []
        for k in range(len(lite.class_names)):
            posed = _well_posed(lite, images, method, k)
            for g, w, ok in zip(lite.explain(images, method, k), keras_one.explain(images, method, k), posed,
                                strict=True):
                assert g.heatmap.shape == w.heatmap.shape
                if ok:
                    assert np.abs(g.heatmap - w.heatmap).max() < 1e-3, (method, k)
                    peaks.append(w.heatmap.max())
        assert len(peaks) >= len(images) and max(peaks) == 1.0  # compared maps, not all empty
    scored = lite.explain(images, "gradcam", faithfulness=True)
    reference = keras_one.explain(images, "gradcam", faithfulness=True)
    assert [h.faithfulness for h in scored] == pytest.approx([h.faithfulness for h in reference], abs=1e-3)


def _well_posed(lite: Predictor, images, method: str, k: int) -> list[bool]:
    """Per image: is the class's raw map above float noise? Its peak over the largest sum of absolute terms
    ``sum_k |W_kc| A_k``: an untrained model's class with (almost) no positive evidence has a map of rounding
    errors, which the scaling to [0, 1] blows up differently in float32 on either backend."""
    x = np.stack([lite.prepare(a) for a in images]).astype(np.float32)
    acts = lite.lite.run(x)[1]
    raw = lite.lite.raw_cams(x, method, np.full(len(x), k))
    scale = np.einsum("nijd,d->nij", acts, np.abs(lite.lite.kernel[:, k]).astype(np.float32))
    return [bool(r.max() > 1e-4 * s.max()) for r, s in zip(raw, scale, strict=True)]


def test_score_cam_on_litert_and_the_keras_model_only_for_the_tf_keras_vis_engine(fast_run, monkeypatch):
    lite, keras_one = _both(fast_run, monkeypatch)
    images = _images(3)
    for k in range(len(lite.class_names)):
        posed = _well_posed(lite, images, "gradcam", k)
        for g, w, ok in zip(lite.explain(images, "scorecam", k, max_channels=6),
                            keras_one.explain(images, "scorecam", k, max_channels=6), posed, strict=True):
            assert not ok or np.abs(g.heatmap - w.heatmap).max() < 1e-3, k
    assert not lite.keras_loaded and not lite.needs_keras("scorecam") and lite.needs_keras("gradcam", "tf-keras-vis")
    got = lite.explain(images[:1], "gradcam", 0, engine="tf-keras-vis")[0]
    assert lite.keras_loaded and np.abs(got.heatmap - lite.explain(images[:1], "gradcam", 0)[0].heatmap).max() < 1e-3
    with pytest.raises(ValueError, match="Unknown method"):
        lite.explain(images, "occlusion")


def test_a_batch_runs_a_row_at_a_time_so_the_interpreter_is_never_resized(fast_run):
    """A batch of another size would make LiteRT allocate its tensors again, holding the GIL (the server then
    could not send the overlay the browser waited for): every call runs one row, with the numbers of a batch."""
    from medclf_core.inference.lite import ROWS_PER_CALL

    p = Predictor.from_run(fast_run, router=None)
    runner = p.lite._runner
    x = np.stack([p.prepare(a) for a in _images(5, seed=7)]).astype(np.float32)
    probs, acts = p.lite.run(x)
    assert ROWS_PER_CALL == 1 and list(runner.get_input_details()["image"]["shape"])[0] == 1
    rows = [p.lite.run(x[i:i + 1]) for i in range(len(x))]
    assert np.array_equal(probs, np.concatenate([r[0] for r in rows]))
    assert np.array_equal(acts, np.concatenate([r[1] for r in rows]))
    assert len({float(a.sum()) for a in acts}) == len(x)  # five different images, five answers
    p.explain(_images(1), "gradcam", faithfulness=True)  # its deletion test: dozens of masked copies in one call
    assert list(runner.get_input_details()["image"]["shape"])[0] == 1


def test_the_warm_up_of_a_litert_model_never_loads_tensorflows_model(fast_run):
    p = Predictor.from_run(fast_run, router=None)
    assert list(warm_up_steps(p)) == ["predict", "gradcam"]  # nothing is traced on LiteRT: no CPU spent on the rest
    assert not p.keras_loaded


def test_a_litert_model_is_warmed_entirely_before_it_is_ready_so_no_thread_waits_for_nothing(fast_run):
    p, done = Predictor.from_run(fast_run, router=None), []
    assert warm_up_plan(p) == list(warm_up_steps(p))
    assert warm_in_steps(p, ModelLock(), ready_after="gradcam", when_done=lambda: done.append(1)) is None
    assert done == [1]


def test_a_fresh_process_predicts_and_draws_without_tensorflow(fast_run):
    code = ("import sys, numpy as np; from medclf_core.inference.predictor import Predictor; "
            f"p = Predictor.from_run({str(fast_run)!r}, router=None); img = np.eye(50, dtype=np.uint8) * 200; "
            "r = p.predict([img])[0]; h = p.explain([img], 'gradcam', faithfulness=True)[0]; "
            "p.explain([img], 'scorecam', 0); p.explain([img], 'gradcam++', 1); "
            "print(p.lite is not None, h.heatmap.shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop(BACKEND_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-5:] == ["True", "(50,", "50)", "False", "False"]


def test_stale_or_damaged_files_fall_back_to_tensorflow(fast_run, tmp_path, caplog, monkeypatch):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(fast_run, run)
    assert lite_mismatch(run)[0] is None
    data = bytearray((run / LITE_FILE).read_bytes())
    data[-100] ^= 0xFF
    (run / LITE_FILE).write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="medclf_core.inference.lite"):
        assert Predictor.from_run(run, router=None).lite is None
    assert "does not match the checksum" in caplog.text
    shutil.copy(fast_run / LITE_FILE, run / LITE_FILE)
    with open(run / MODEL_FILE, "ab") as f:  # a retrained (here: changed) model.keras
        f.write(b"\0")
    assert "made from another model.keras" in lite_mismatch(run)[0]
    shutil.copy(fast_run / MODEL_FILE, run / MODEL_FILE)
    meta = json.loads((run / LITE_META).read_text())
    (run / LITE_META).write_text(json.dumps({**meta, "cam_layer": "elsewhere"}))
    assert Predictor.from_run(run, router=None).lite is None
    (run / LITE_META).unlink()
    assert "no model.tflite" in lite_mismatch(run)[0]


@pytest.mark.parametrize("name", sorted(SLOW))
def test_a_classifier_that_is_not_linear_on_pooled_features_has_no_fast_path(name, tmp_path):
    from medclf_core.registry.store import load_run

    run = _run(tmp_path / name, *SLOW[name], gate=False)
    model, card = load_run(run)
    assert "global average pooling" in lite_problem(model, card["cam_layer"])  # no GAP, or not on the layer
    (run / LITE_META).write_text("{}")  # left by an earlier model of another architecture
    (run / LITE_FILE).write_bytes(b"old")
    assert write_lite(model, card, run) is None and not (run / LITE_FILE).exists()
    assert recorded_no_fast_path(run) == lite_problem(model, card["cam_layer"])  # said once for this model file
    assert lite_mismatch(run)[0].startswith("no fast path: ")
    p = Predictor.from_run(run, router=None)
    assert p.lite is None and p.explain(_images(1), "gradcam")[0].heatmap.max() > 0
    assert lite_problem(model, None).startswith("the card names no single")
