"""The transfer recipe's feature cache: one traced backbone call per batch shape, the same features as direct calls.

:func:`~medclf_core.training.transfer.cache_features` pads a last, partial batch to the fixed
batch shape instead of tracing the backbone again, reuses the traced call across calls on one
extractor, and runs the augmentation views as one traced function. These tests check that none
of that changes a feature or a random draw.
"""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.data.augment import AugmentConfig, build_augmenter
from medclf_core.io.images import load_for_model
from medclf_core.training.transfer import cache_features, traced_augmenter, traced_forward

SIZE = 32


@pytest.fixture
def extractor():
    """A fresh small bn_cnn (BatchNorm layers, in inference mode here) up to its pooled features."""
    from medclf_core.models.architectures import build_model
    from medclf_core.training.transfer import feature_extractor

    model = build_model("bn_cnn", 2, SIZE, 1, filters=(4, 8), dense_units=0)
    return feature_extractor(model, "gap")


@pytest.fixture
def paths(pattern_dataset):
    """Seven images: one full batch of 4 and a partial batch of 3."""
    return [str(p) for p in sorted(pattern_dataset.rglob("*.png"))][:7]


def test_a_partial_last_batch_gives_the_features_of_an_unpadded_call(extractor, paths):
    """The zero rows that pad the last batch to the traced shape change no real image's features."""
    feats = cache_features(extractor, paths, image_size=SIZE, channels=1, batch_size=4)
    images = np.stack([load_for_model(p, SIZE, 1) for p in paths]).astype(np.float32)
    direct = np.concatenate([np.asarray(extractor(images[:4], training=False)),
                             np.asarray(extractor(images[4:], training=False))])
    assert feats.shape == (1, len(paths), direct.shape[1])
    np.testing.assert_allclose(feats[0], direct, rtol=1e-5, atol=1e-6)


def test_the_backbone_is_traced_once_for_every_call_on_one_extractor(extractor, paths, traces):
    """Two calls (train views, then validation images), each ending on a partial batch: one backbone trace."""
    cache_features(extractor, paths, image_size=SIZE, channels=1, batch_size=4, views=("original", "hflip"))
    cache_features(extractor, paths[:3], image_size=SIZE, channels=1, batch_size=4)
    assert traces.count("backbone_forward") == 1


def test_a_new_batch_shape_gets_its_own_trace(extractor, paths, traces):
    """The traced call is per batch shape: a different batch size is traced, not fed a wrong shape."""
    traced_forward(extractor, 4, SIZE, 1)
    out = traced_forward(extractor, 2, SIZE, 1)(np.zeros((1, SIZE, SIZE, 1), np.float32))
    assert out.shape[0] == 1
    assert traces.count("backbone_forward") == 1


def test_the_traced_call_does_not_keep_its_extractor_alive(paths):
    """The per-extractor cache holds the extractor weakly: a finished run's backbone can be freed."""
    import gc
    import weakref

    from medclf_core.models.architectures import build_model
    from medclf_core.training.transfer import feature_extractor

    extractor = feature_extractor(build_model("bn_cnn", 2, SIZE, 1, filters=(4,), dense_units=0), "gap")
    cache_features(extractor, paths[:3], image_size=SIZE, channels=1, batch_size=4)
    gone = weakref.ref(extractor)
    del extractor
    gc.collect()
    assert gone() is None


def test_traced_augmentation_draws_what_the_eager_layers_draw():
    """Seeded: the traced augmenter gives the same pixels as the eager layers, batch after batch and on a
    partial batch, so cached augmented views are those of the eager path."""
    x = np.random.default_rng(0).uniform(0, 255, (5, 24, 24, 1)).astype(np.float32)
    cfg = AugmentConfig.preset("chest_xray")
    eager, traced = build_augmenter(cfg, 3), traced_augmenter(cfg, 3)
    for batch in (x, x, x[:2]):
        a, b = np.asarray(eager(batch)), np.asarray(traced(batch))
        assert np.abs(a - batch).max() > 1.0  # the transform did something
        np.testing.assert_array_equal(a, b)


def test_augmented_views_are_seeded_and_differ_from_the_image(extractor, paths):
    """Same seed, same augmented features; the augmented view is not the original."""
    cfg = AugmentConfig.preset("chest_xray")
    common = dict(image_size=SIZE, channels=1, batch_size=4, views=("original", "augment1"), augment=cfg, seed=5)
    a = cache_features(extractor, paths, **common)
    b = cache_features(extractor, paths, **common)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


def test_the_views_of_a_partial_last_batch_share_backbone_calls(extractor, paths, monkeypatch):
    """Seven images in batches of 4, three views: the last batch's 3 x 3 rows go through in 3 calls of 4 rows,
    not 3 padded calls, and each view's features are those of its own unpadded call."""
    from medclf_core.training import transfer

    cfg = AugmentConfig.preset("brain_mri")
    views = ("original", "hflip", "augment2")
    common = dict(image_size=SIZE, channels=1, batch_size=4, views=views, augment=cfg, seed=5)
    feats = cache_features(extractor, paths, **common)
    sizes = []
    forward = transfer.traced_forward

    def counting(*args):
        predict = forward(*args)
        return lambda x: (sizes.append(int(x.shape[0])), predict(x))[1]

    monkeypatch.setattr(transfer, "traced_forward", counting)
    assert np.array_equal(cache_features(extractor, paths, **common), feats)   # seeded, same as unpacked
    assert sizes == [4, 4, 4, 4, 4, 1]   # the full batch's 3 views, then the last batch's 9 rows as 4 + 4 + 1

    images = np.stack([load_for_model(p, SIZE, 1) for p in paths]).astype(np.float32)
    augment = build_augmenter(cfg, 7)  # seed 5 + the view's index 2, its draws batch after batch
    direct = {"original": images, "hflip": images[:, :, ::-1],
              "augment2": np.concatenate([np.clip(np.asarray(augment(images[i:i + 4])), 0, 255) for i in (0, 4)])}
    for k, view in enumerate(views):
        want = np.concatenate([np.asarray(extractor(direct[view][:4], training=False)),
                               np.asarray(extractor(direct[view][4:], training=False))])
        np.testing.assert_allclose(feats[k], want, rtol=1e-5, atol=1e-5)


def test_augmenters_are_traced_once_for_every_call_and_batch_size(extractor, paths, traces):
    """Each augmented view's augmenter is traced once per thread and config, for every batch size and call
    (a trace costs about half a second on a CPU; twice per view and call before); reseeded, the second call
    draws what the first did."""
    cfg = AugmentConfig.preset("brain_mri")
    common = dict(image_size=SIZE, channels=1, batch_size=4, views=("original", "augment1", "augment2"), augment=cfg)
    a = cache_features(extractor, paths, seed=21, **common)   # a full and a partial batch
    cache_features(extractor, paths[:2], seed=99, **common)
    b = cache_features(extractor, paths, seed=21, **common)
    np.testing.assert_array_equal(a, b)
    augment_traces = [name for name in traces if name != "backbone_forward"]
    assert len(augment_traces) <= 2, traces   # one per augmented view (none if an earlier test traced them)


def test_the_next_view_is_augmented_while_the_backbone_runs(extractor, paths, monkeypatch):
    """Run ahead (:func:`~medclf_core.training.transfer.run_ahead`): the backbone's first call waits until the
    second view has been made; one after the other (the old loop), that never happens while it waits. The
    features stay those of the plain order (seeded draws included)."""
    import threading

    from medclf_core.training import transfer

    cfg = AugmentConfig.preset("brain_mri")
    common = dict(image_size=SIZE, channels=1, batch_size=4, views=("original", "augment1"), augment=cfg, seed=3)
    plain = cache_features(extractor, paths, **common)
    made, second_view, overlapped = [], threading.Event(), []
    view, forward = transfer._view, transfer.backbone_forward

    def counting_view(*args):
        made.append(args[1])
        if len(made) == 2:
            second_view.set()
        return view(*args)

    def waiting_forward(*args):
        predict = forward(*args)

        def call(x):
            if not overlapped:
                overlapped.append(second_view.wait(timeout=10))
            return predict(x)
        return call

    monkeypatch.setattr(transfer, "_view", counting_view)
    monkeypatch.setattr(transfer, "backbone_forward", waiting_forward)
    np.testing.assert_array_equal(cache_features(extractor, paths, **common), plain)
    assert overlapped == [True]


def test_run_ahead_keeps_order_raises_where_it_failed_and_stops_when_closed():
    """Items in order; a producer's error reaches the caller at its item; closed early, the thread ends."""
    import threading
    from contextlib import closing

    from medclf_core.training.transfer import run_ahead

    assert list(run_ahead(iter(range(50)), 2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad image")

    got = []
    with pytest.raises(ValueError, match="bad image"):
        for item in run_ahead(failing(), 2):
            got.append(item)
    assert got == [1]
    with closing(run_ahead(iter(range(10**6)), 2)) as items:
        assert next(items) == 0
    assert not [t for t in threading.enumerate() if t.name == "medclf-run-ahead"]
