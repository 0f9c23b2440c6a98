"""Training-time erasing of shortcuts: burned-in marks inpainted, random border boxes off the body erased.

Chest films of the Kermany set carry an "R" marker, corner text and lines burned into the air
around the body, more often on pneumonia films, and the bundled chest model's P(PNEUMONIA) drops
when they are inpainted (docs/BENCHMARKS.md, "Shortcuts"). Two augmentations take that cue away
from a model in training, each applied to a view with its own probability:

- ``marks``: the burned-in marks (:func:`medclf_core.data.marks.burned_in_marks`) painted over
  from their surroundings (:func:`~medclf_core.data.marks.inpaint_marks`, ``cv2.inpaint``);
- ``border``: one to three random boxes along the border (a corner box or a strip along an edge),
  restricted to the air off the body (:func:`~medclf_core.data.marks.body_mask`) and painted over
  from their surroundings, whether or not the detector finds a mark there.

The body's pixels are never changed by ``border``; ``marks`` changes only what the detector calls
a mark. Plain OpenCV and NumPy, run in the ``tf.data`` pipeline or the feature-caching pass through
:class:`ShortcutEraser` (``tf.numpy_function`` in :func:`medclf_core.data.augment.build_augmenter`),
never inside the model. Seeded: the same seed and the same batches give the same images.

Example (a dark film, a body, a white "R" in the corner)::

    >>> import cv2
    >>> img = np.full((160, 160), 10, np.uint8); img[30:160, 40:120] = 120
    >>> _ = cv2.putText(img, "R", (4, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2)
    >>> out = erase_shortcuts(img, np.random.default_rng(0), marks=1.0, border=0.0)
    >>> int(img[2:26, 2:26].max()), int(out[2:26, 2:26].max()) < 60, bool((out[40:150, 50:110] == 120).all())
    (255, True, True)
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from medclf_core.data.marks import body_mask, burned_in_marks, gray_levels

CORNER_SIDE = (0.08, 0.25)    # a corner box's sides, as a share of the image's height and width
STRIP_WIDTH = (0.03, 0.10)    # a border strip's thickness, as a share of the side it runs along
STRIP_LENGTH = (0.3, 1.0)     # ... and its length
MAX_BOXES = 3                 # boxes per erased view (1 to this many)
INPAINT_RADIUS = 3
#: Bytes of remembered body and mark masks, packed 8 pixels a byte (~12.5 kB an image of 224 px: ~2600 images):
#: a run's training images, so the mark-projection pass finds the masks its augmented views found.
CACHE_BYTES = 32 * 1024 * 1024


def border_boxes(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask (H, W) of 1 to ``MAX_BOXES`` random boxes touching the border: corner boxes or edge strips.

    >>> m = border_boxes((50, 80), np.random.default_rng(1))
    >>> m.shape, bool(m.any()), bool(m[20:30, 30:50].any())
    ((50, 80), True, False)
    """
    h, w = shape
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, MAX_BOXES + 1))):
        if rng.random() < 0.5:  # a corner box
            bh, bw = (max(1, int(round(s * rng.uniform(*CORNER_SIDE)))) for s in (h, w))
            top, left = rng.random() < 0.5, rng.random() < 0.5
            y0, x0 = (0 if top else h - bh), (0 if left else w - bw)
        else:  # a strip along one edge
            edge = int(rng.integers(4))
            along, across = (w, h) if edge < 2 else (h, w)
            length = max(1, int(round(along * rng.uniform(*STRIP_LENGTH))))
            thick = max(1, int(round(across * rng.uniform(*STRIP_WIDTH))))
            start = int(rng.integers(0, along - length + 1))
            if edge < 2:  # top or bottom
                bh, bw, y0, x0 = thick, length, (0 if edge == 0 else h - thick), start
            else:  # left or right
                bh, bw, y0, x0 = length, thick, start, (0 if edge == 2 else w - thick)
        mask[y0:y0 + bh, x0:x0 + bw] = True
    return mask


def erase_shortcuts(image: np.ndarray, rng: np.random.Generator, *, marks: float, border: float) -> np.ndarray:
    """``image`` (uint8, H x W or H x W x 1/3) with its marks inpainted (probability ``marks``) and random
    border boxes off the body painted over (probability ``border``); an unchanged copy when neither is drawn.

    Both draws are made for every image, so one image's outcome does not shift the next one's randomness.
    """
    return _erase(image, *_draw(image.shape[:2], rng, marks, border))


def _draw(shape: tuple[int, int], rng: np.random.Generator, marks: float, border: float):
    """One image's random choices, in a fixed order: erase its marks?, and its border boxes (or None)."""
    do_marks, do_border = rng.random() < marks, rng.random() < border
    return do_marks, (border_boxes(shape, rng) if do_border else None)


def _erase(image: np.ndarray, do_marks: bool, boxes: np.ndarray | None) -> np.ndarray:
    if not do_marks and boxes is None:
        return image.copy()
    gray = gray_levels(image)
    found = _masks(gray, do_marks)
    region = found["marks"].copy() if do_marks else np.zeros(gray.shape, bool)
    if boxes is not None:
        region |= boxes & ~found["body"]
    if not region.any():
        return image.copy()
    src = np.ascontiguousarray(image if image.ndim == 2 or image.shape[2] != 1 else image[..., 0])
    out = cv2.inpaint(src, region.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return out.reshape(image.shape)


def _masks(gray: np.ndarray, with_marks: bool) -> dict:
    """``{"body", "marks"?}`` of ``gray``, remembered (packed) for the most recent images up to
    :data:`CACHE_BYTES`: finding the body and marks is most of an erase's cost, and the feature-caching passes
    erase each training image in several views (the same batch once per augmented view), then once more with
    every mark inpainted (the mark projection, :mod:`medclf_core.training.invariance`). Pure functions of
    ``gray``: remembered or not, the masks are the same."""
    global _CACHED_BYTES
    key = hashlib.blake2b(gray.tobytes(), digest_size=16).digest() + bytes(str(gray.shape), "ascii")
    with _LOCK:
        packed = _CACHE.get(key)
        if packed is not None:
            _CACHE.move_to_end(key)
    found = {name: np.unpackbits(bits, count=gray.size).reshape(gray.shape).view(bool)
             for name, bits in (packed or {}).items()}
    if "body" in found and (not with_marks or "marks" in found):
        return found
    if "body" not in found:
        found["body"] = body_mask(gray)
    if with_marks and "marks" not in found:
        found["marks"] = burned_in_marks(gray, body=found["body"])
    packed = {name: np.packbits(mask.reshape(-1)) for name, mask in found.items()}
    with _LOCK:
        old = _CACHE.pop(key, None)
        _CACHED_BYTES += sum(b.nbytes for b in packed.values()) - sum(b.nbytes for b in (old or {}).values())
        _CACHE[key] = packed
        while _CACHED_BYTES > CACHE_BYTES and len(_CACHE) > 1:
            _CACHED_BYTES -= sum(b.nbytes for b in _CACHE.popitem(last=False)[1].values())
    return found


_CACHE: OrderedDict[bytes, dict] = OrderedDict()
_CACHED_BYTES = 0
_LOCK = threading.Lock()


class ShortcutEraser:
    """A seeded callable ``batch -> batch`` for float batches (N, H, W, C) in 0..255, as ``tf.data`` holds them.

    One ``numpy`` generator, drawn image by image in order before any work: the same seed and the same
    batches in the same order give the same output. The images of a batch are then erased on a few
    threads (OpenCV releases the GIL), which the output does not depend on.
    """

    def __init__(self, *, marks: float, border: float, seed: int):
        self.marks, self.border = float(marks), float(border)
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        out = batch.copy()
        images = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        draws = [_draw(image.shape[:2], self.rng, self.marks, self.border) for image in images]
        todo = [i for i, (do_marks, boxes) in enumerate(draws) if do_marks or boxes is not None]
        for i, erased in zip(todo, _pool().map(lambda i: _erase(images[i], *draws[i]), todo), strict=True):
            changed = erased != images[i]
            out[i][changed] = erased[changed]  # untouched pixels keep their exact float values
        return out


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                       thread_name_prefix="medclf-erase")
        return _POOL


_POOL: ThreadPoolExecutor | None = None
