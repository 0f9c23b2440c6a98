"""The frozen backbone's forward passes on LiteRT (:mod:`medclf_core.training.lite_backbone`).

A tiny bn_cnn at 32 px stands in for the pretrained backbone: its conversion takes ~1.5 s (a full
EfficientNet-Lite0, ~10 s). Each test points ``MEDCLF_CACHE_DIR`` at its own folder.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np
import pytest

from medclf_core.errors import TrainingCancelled
from medclf_core.training import lite_backbone
from medclf_core.training.transfer import cache_features

SIZE = 32
COMMON = dict(image_size=SIZE, channels=1, batch_size=4)


def tiny_extractor(scale: float = 1.0):
    """A small bn_cnn up to its pooled features, its weights seeded (the same every call), the first kernel
    multiplied by ``scale``."""
    import keras

    from medclf_core.models.architectures import build_model
    from medclf_core.training.transfer import feature_extractor

    keras.utils.set_random_seed(3)
    model = build_model("bn_cnn", 2, SIZE, 1, filters=(4, 8), dense_units=0)
    extractor = feature_extractor(model, "gap")
    first = next(w for w in extractor.weights if len(w.shape) == 4)
    first.assign(np.asarray(first) * scale)
    return extractor


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder, LiteRT forced on, and no interpreter left over in this thread from another test."""
    monkeypatch.setenv(lite_backbone.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(lite_backbone.LITE_ENV, "1")
    monkeypatch.setattr(lite_backbone, "_LOCAL", threading.local())
    monkeypatch.setattr(lite_backbone, "_FAILED", {})
    return tmp_path / lite_backbone.CACHE_SUBFOLDER


@pytest.fixture
def paths(pattern_dataset):
    """Seven images: one full batch of 4 and a partial batch of 3."""
    return [str(p) for p in sorted(pattern_dataset.rglob("*.png"))][:7]


@pytest.fixture
def conversions(monkeypatch):
    """The conversions run while the test runs (the real ones, counted)."""
    seen = []
    convert = lite_backbone.convert_extractor

    def counting(extractor, shape):
        seen.append(shape)
        return convert(extractor, shape)

    monkeypatch.setattr(lite_backbone, "convert_extractor", counting)
    return seen


def tensorflow_features(paths, monkeypatch, extractor, **kw):
    with monkeypatch.context() as patch:
        patch.setenv(lite_backbone.LITE_ENV, "0")
        return cache_features(extractor, paths, **COMMON, **kw)


def test_litert_features_equal_tensorflow_features(cache, paths, monkeypatch):
    """Two views, a partial last batch: LiteRT's features are TensorFlow's within float32 round-off, and the
    converted backbone is kept on disk."""
    extractor = tiny_extractor()
    lite = cache_features(extractor, paths, views=("original", "hflip"), **COMMON)
    assert len(list(cache.glob("*.tflite"))) == 1
    tf_feats = tensorflow_features(paths, monkeypatch, extractor, views=("original", "hflip"))
    assert lite.shape == tf_feats.shape == (2, 7, 8)
    assert np.abs(tf_feats).max() > 0.01
    np.testing.assert_allclose(lite, tf_feats, rtol=1e-4, atol=1e-5)


def test_the_converted_backbone_is_found_again_and_missed_when_the_weights_change(cache, paths, conversions):
    """A new process (no interpreter yet) with the same weights reads the file, converting nothing; other
    weights are another key, converted and kept beside it."""
    first = cache_features(tiny_extractor(), paths, **COMMON)
    assert len(conversions) == 1
    lite_backbone._LOCAL.__dict__.clear()   # as a new process: the file is all that is left
    again = cache_features(tiny_extractor(), paths, **COMMON)
    assert len(conversions) == 1
    np.testing.assert_array_equal(again, first)
    changed = cache_features(tiny_extractor(scale=1.5), paths, **COMMON)
    assert len(conversions) == 2
    assert len(list(cache.glob("*.tflite"))) == 2
    assert not np.allclose(changed, first)


def test_auto_skips_the_conversion_of_a_small_job_but_uses_a_kept_one(cache, paths, monkeypatch, caplog,
                                                                      conversions):
    """``auto``: a few forward passes on a cache miss run on TensorFlow (said why) and convert nothing; once a
    converted backbone is kept, the same small job runs on it."""
    monkeypatch.setenv(lite_backbone.LITE_ENV, "auto")
    with caplog.at_level(logging.INFO, logger="medclf_core.training.transfer"):
        cache_features(tiny_extractor(), paths, **COMMON)
    assert "small job (7 forward passes" in caplog.text
    assert conversions == [] and not list(cache.glob("*.tflite"))
    with monkeypatch.context() as patch:
        patch.setenv(lite_backbone.LITE_ENV, "1")
        cache_features(tiny_extractor(), paths[:2], **COMMON)
    lite_backbone._LOCAL.__dict__.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medclf_core.training.transfer"):
        cache_features(tiny_extractor(), paths, **COMMON)
    assert "on TensorFlow" not in caplog.text
    assert len(conversions) == 1


def test_without_litert_tensorflow_runs_and_says_why(cache, paths, monkeypatch, caplog):
    """LiteRT not importable: the features are TensorFlow's, and one log line says why."""
    extractor = tiny_extractor()
    want = tensorflow_features(paths, monkeypatch, extractor)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)   # import -> ImportError
    with caplog.at_level(logging.INFO, logger="medclf_core.training.transfer"):
        got = cache_features(extractor, paths, **COMMON)
    np.testing.assert_array_equal(got, want)
    assert "Backbone features on TensorFlow: LiteRT (ai-edge-litert) is not installed" in caplog.text
    assert not cache.exists()


def test_a_failed_conversion_falls_back_once(cache, paths, monkeypatch, caplog):
    """A backbone that does not convert runs on TensorFlow, said why, and is not converted again."""
    tries = []

    def failing(extractor, shape):
        tries.append(shape)
        raise ValueError("unsupported op")

    monkeypatch.setattr(lite_backbone, "convert_extractor", failing)
    extractor = tiny_extractor()
    with caplog.at_level(logging.INFO, logger="medclf_core.training.transfer"):
        got = cache_features(extractor, paths, **COMMON)
        cache_features(extractor, paths, **COMMON)
    np.testing.assert_array_equal(got, tensorflow_features(paths, monkeypatch, extractor))
    assert len(tries) == 1
    assert "could not be converted to LiteRT (ValueError: unsupported op)" in caplog.text


def test_progress_and_cancellation_on_the_litert_path(cache, paths, conversions):
    """Progress counts batches x views as before; a cancel after the first batch stops the job there, and a
    cancel before a conversion stops it before converting."""
    extractor = tiny_extractor()
    seen = []
    cache_features(extractor, paths, views=("original", "hflip"), progress=lambda d, t: seen.append((d, t)),
                   **COMMON)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(conversions) == 1
    seen.clear()
    with pytest.raises(TrainingCancelled):
        cache_features(extractor, paths, progress=lambda d, t: seen.append((d, t)), cancel=lambda: bool(seen),
                       **COMMON)
    assert seen == [(1, 2)]
    with pytest.raises(TrainingCancelled):
        cache_features(tiny_extractor(scale=2.0), paths, cancel=lambda: True, **COMMON)
    assert len(conversions) == 1


def test_each_thread_runs_its_own_interpreter(cache, paths):
    """Interpreters are not thread-safe: two threads get two, and the same features."""
    extractor = tiny_extractor()
    x = np.random.default_rng(0).uniform(0, 255, (5, SIZE, SIZE, 1)).astype(np.float32)
    got = {}

    def work(name):
        forward, why = lite_backbone.lite_forward(extractor, SIZE, 1, passes=5)
        got[name] = (forward, forward(x))

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got["a"][0] is not got["b"][0]
    assert got["a"][0].interpreter is not got["b"][0].interpreter
    np.testing.assert_array_equal(got["a"][1], got["b"][1])


def test_an_unreadable_file_is_replaced(cache, paths, conversions):
    """A damaged cache file (a crash cannot leave one, but a disk can) is removed and converted again."""
    extractor = tiny_extractor()
    want = cache_features(extractor, paths, **COMMON)
    (path,) = cache.glob("*.tflite")
    path.write_bytes(b"not a flatbuffer")
    lite_backbone._LOCAL.__dict__.clear()
    np.testing.assert_array_equal(cache_features(extractor, paths, **COMMON), want)
    assert len(conversions) == 2 and path.stat().st_size > 100


def test_a_file_that_loads_but_was_altered_is_replaced(cache, paths, conversions, caplog):
    """Another backbone's file under this key loads and runs, with wrong features: its checksum catches it, and
    so does a kept file without one."""
    extractor, other = tiny_extractor(), tiny_extractor(scale=2.0)
    want = cache_features(extractor, paths, **COMMON)
    cache_features(other, paths, **COMMON)
    mine = next(p for p in cache.glob("*.tflite") if p.stem == lite_backbone.extractor_key(
        extractor, (lite_backbone.LITE_BATCH, SIZE, SIZE, 1)))
    theirs = next(p for p in cache.glob("*.tflite") if p != mine)
    mine.write_bytes(theirs.read_bytes())
    lite_backbone._LOCAL.__dict__.clear()
    with caplog.at_level(logging.INFO, logger=lite_backbone.__name__):
        np.testing.assert_array_equal(cache_features(extractor, paths, **COMMON), want)
    assert len(conversions) == 3 and "does not match its checksum (altered)" in caplog.text
    lite_backbone.checksum_path(mine).unlink()
    lite_backbone._LOCAL.__dict__.clear()
    np.testing.assert_array_equal(cache_features(extractor, paths, **COMMON), want)
    assert len(conversions) == 4 and lite_backbone.checksum_path(mine).exists()


def test_the_cache_folder_keeps_the_most_recently_used_files_under_its_bound(tmp_path):
    """Pruned oldest first down to the bound; the file just written stays."""
    for k, size in enumerate((300, 300, 300, 500)):
        f = tmp_path / f"k{k}.tflite"
        f.write_bytes(b"x" * size)
        os.utime(f, (1000 + k, 1000 + k))
    removed = lite_backbone.prune(tmp_path, 700, keep=tmp_path / "k0.tflite")
    assert sorted(p.name for p in removed) == ["k1.tflite", "k2.tflite"]
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["k0.tflite", "k3.tflite"]


def test_the_cache_folder_is_documented_and_movable(monkeypatch, tmp_path):
    """``MEDCLF_CACHE_DIR`` moves it; without it, ``$XDG_CACHE_HOME/medclf`` or ``~/.cache/medclf``."""
    monkeypatch.setenv(lite_backbone.CACHE_ENV, str(tmp_path / "c"))
    assert lite_backbone.cache_folder() == tmp_path / "c" / "lite_backbones"
    monkeypatch.delenv(lite_backbone.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert lite_backbone.cache_folder() == tmp_path / "x" / "medclf" / "lite_backbones"
