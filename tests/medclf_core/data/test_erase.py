"""Shortcut erasing for training (medclf_core.data.erase) on drawn films: what changes and what must not.

Each film is synthetic (dark noisy air, a brighter body in the middle with air on every side, a white
"R" drawn in the top-left corner), so the marks' place and the body are known. Erasing must change the
marked or boxed air and leave the body's pixels exactly as they were, the same way for the same seed.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medclf_core.data.erase import ShortcutEraser, border_boxes, erase_shortcuts
from medclf_core.data.marks import body_mask


def film(size: int = 160, seed: int = 0, letter: bool = True) -> np.ndarray:
    """A dark noisy film, a body (an ellipse) with air all around it, and a white "R" in the corner."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 25, (size, size)).astype(np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c + size // 16), (int(size * 0.3), int(size * 0.36)), 0, 0, 360, 130, -1)
    if letter:
        cv2.putText(img, "R", (4, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 250, 2)
    return img


def _body(img: np.ndarray) -> np.ndarray:
    """The body, shrunk by 4 px: inpainting may only reach pixels next to the erased region."""
    return cv2.erode(body_mask(img).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)


def test_marks_are_inpainted_and_the_body_is_untouched():
    img = film()
    out = erase_shortcuts(img, np.random.default_rng(0), marks=1.0, border=0.0)
    letter = (slice(2, 26), slice(2, 26))
    assert img[letter].max() >= 240 and out[letter].max() < 80   # the white letter is gone
    body = _body(img)
    assert body.sum() > 3000 and np.array_equal(out[body], img[body])


def test_border_boxes_change_only_the_air_inside_the_boxes():
    img = film(letter=False)
    for seed in range(5):
        out = erase_shortcuts(img, np.random.default_rng(seed), marks=0.0, border=1.0)
        rng = np.random.default_rng(seed)
        rng.random(), rng.random()                          # the two probability draws come first
        boxes = border_boxes(img.shape, rng)
        changed = out != img
        assert changed.any(), seed                          # the boxes always reach the air around the body
        assert not (changed & ~boxes).any()                 # nothing outside the drawn boxes
        assert not (changed & body_mask(img)).any()         # and nothing on the body


def test_zero_probabilities_change_nothing_and_the_input_is_not_modified():
    img = film()
    before = img.copy()
    out = erase_shortcuts(img, np.random.default_rng(0), marks=0.0, border=0.0)
    assert np.array_equal(out, img) and out is not img
    erase_shortcuts(img, np.random.default_rng(0), marks=1.0, border=1.0)
    assert np.array_equal(img, before)


def test_border_boxes_touch_the_border_and_leave_the_centre():
    for seed in range(20):
        m = border_boxes((100, 140), np.random.default_rng(seed))
        assert m.any() and not m[40:60, 50:90].any()
        n, labels = cv2.connectedComponents(m.astype(np.uint8))
        for k in range(1, n):
            ys, xs = np.nonzero(labels == k)
            assert ys.min() == 0 or xs.min() == 0 or ys.max() == 99 or xs.max() == 139


def test_the_eraser_is_deterministic_per_seed_and_keeps_untouched_floats():
    batch = np.stack([film(seed=s) for s in range(4)])[..., None].astype(np.float32)
    batch[:, 60:70, 60:70] += 0.25                           # off-grid floats on the body
    a = ShortcutEraser(marks=0.5, border=0.5, seed=3)(batch)
    b = ShortcutEraser(marks=0.5, border=0.5, seed=3)(batch)
    c = ShortcutEraser(marks=0.5, border=0.5, seed=4)(batch)
    assert a.dtype == np.float32 and a.shape == batch.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[:, 60:70, 60:70], batch[:, 60:70, 60:70])


def test_rgb_images_are_erased_in_every_channel():
    img = np.repeat(film()[..., None], 3, axis=2)
    out = erase_shortcuts(img, np.random.default_rng(0), marks=1.0, border=0.0)
    assert out.shape == img.shape
    assert all(out[2:26, 2:26, k].max() < 80 for k in range(3))


@pytest.mark.parametrize("marks, border", [(1.0, 0.0), (0.0, 1.0)])
def test_in_the_tf_data_pipeline_the_erasing_runs_and_repeats(tmp_path, marks, border):
    """make_dataset(training=True) with only erasing on: the corner changes, the body does not, and the same
    seed gives the same batches."""
    from PIL import Image

    from medclf_core.data.augment import AugmentConfig
    from medclf_core.data.pipeline import make_dataset

    paths = []
    for k in range(3):
        paths.append(str(tmp_path / f"f{k}.png"))
        Image.fromarray(film(seed=k)).save(paths[-1])
    cfg = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False, erase_marks=marks,
                        erase_border=border)

    def run():
        ds = make_dataset(paths, [0, 1, 0], image_size=160, channels=1, batch_size=3, training=True,
                          augment=cfg, seed=5, cache=False, shuffle_buffer=1)
        return next(iter(ds))[0].numpy()[..., 0]

    first, again = run(), run()
    assert np.array_equal(first, again)
    for k in range(3):
        original = film(seed=k).astype(np.float32)
        assert not np.array_equal(first[k], original)
        body = _body(film(seed=k))
        assert np.array_equal(first[k][body], original[body])


def test_a_second_pass_over_a_runs_images_finds_their_masks_and_erases_the_same(monkeypatch):
    """300 images erased twice (a run's augmented views, then its mark-projection pass): the second pass finds
    every body and mark mask remembered (the old 128-image bound found none of them: a scan in the same order
    evicts each before its turn), and erases exactly what a fresh computation does."""
    from medclf_core.data import erase

    calls = []
    for name in ("body_mask", "burned_in_marks"):
        found = getattr(erase, name)
        monkeypatch.setattr(erase, name, lambda *a, _f=found, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    monkeypatch.setattr(erase, "_CACHE", erase.OrderedDict())
    monkeypatch.setattr(erase, "_CACHED_BYTES", 0, raising=False)
    images = [film(seed=i) for i in range(300)]   # distinct noisy films, each with an "R"
    first = [erase._erase(img, True, None) for img in images]
    assert calls.count("body_mask") == 300
    calls.clear()
    second = [erase._erase(img, True, None) for img in images]
    assert calls == []
    monkeypatch.setattr(erase, "_CACHE", erase.OrderedDict())
    fresh = [erase._erase(img, True, None) for img in images]
    for a, b, c in zip(first, second, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert sum(not np.array_equal(a, img) for a, img in zip(first, images)) > 0   # marks were inpainted
