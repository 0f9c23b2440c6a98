"""Training-time augmentation as Keras preprocessing layers, run inside ``tf.data``.

Each transform is a switch in :class:`AugmentConfig`. They run in the input
pipeline, after the cache, never inside the model: random layers in a model
disable XLA and would ship with the saved model.

Horizontal flips swap left and right, which changes the anatomy of a chest
X-ray (heart on the wrong side), so the ``chest_xray`` preset turns them off.

``erase_marks`` and ``erase_border`` (probabilities per image and view) take a
shortcut away: burned-in marks inpainted, random border boxes off the body
painted over (:mod:`medclf_core.data.erase`, OpenCV in a ``tf.numpy_function``,
first, before the geometric transforms move the marks).

Example::

    >>> cfg = AugmentConfig.preset("chest_xray")
    >>> cfg.horizontal_flip
    False
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MAX_MARK_DIRECTIONS = 64  # of the backbone's feature dimensions (1280 for EfficientNet-Lite0)

PRESETS = {
    # Seed 000's recipe: rotations, shifts, zoom, shear and horizontal flips.
    "default": dict(rotation=0.05, shift=0.1, zoom=0.1, shear=0.1, horizontal_flip=True),
    # Laterality matters on chest films: no flips; a few degrees of rotation. Burned-in marks are a shortcut
    # on the Kermany films: half the augmented views have them inpainted, half have border boxes off the body
    # erased, and the transfer head has their leading feature direction projected out (chosen on validation,
    # docs/BENCHMARKS.md "The recipe change, before and after").
    "chest_xray": dict(rotation=0.03, shift=0.08, zoom=0.1, shear=0.05, horizontal_flip=False,
                       erase_marks=0.5, erase_border=0.5, mark_directions=1),
    # Axial brain slices are roughly left-right symmetric; flips are safe.
    "brain_mri": dict(rotation=0.05, shift=0.1, zoom=0.1, shear=0.1, horizontal_flip=True),
    "none": dict(rotation=0.0, shift=0.0, zoom=0.0, shear=0.0, horizontal_flip=False),
}


@dataclass
class AugmentConfig:
    """Strengths of each random transform; 0 (or False) switches it off.

    ``rotation`` is a fraction of a full turn (0.05 = +/-18 degrees), ``shift``
    and ``zoom`` fractions of the image size, ``shear`` a fraction of the side.
    """

    rotation: float = 0.05
    shift: float = 0.1
    zoom: float = 0.1
    shear: float = 0.1
    horizontal_flip: bool = True
    vertical_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    erase_marks: float = 0.0   # probability that a view's burned-in marks are inpainted
    erase_border: float = 0.0  # probability that random border boxes off the body are painted over
    mark_directions: int = 0   # transfer recipe: feature directions of the marks projected out of the head

    def __post_init__(self):
        for name in ("erase_marks", "erase_border"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"'{name}' is a probability between 0 and 1, not {value!r}.")
        k = self.mark_directions
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_MARK_DIRECTIONS:
            raise ValueError(f"'mark_directions' is a whole number from 0 to {MAX_MARK_DIRECTIONS}, not {k!r}.")

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        if name not in PRESETS:
            raise ValueError(f"Unknown augmentation preset '{name}'; choose from {', '.join(PRESETS)}.")
        return cls(**PRESETS[name])

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        """Whether any image transform is on (``mark_directions`` acts on the head, not on images)."""
        return any(bool(v) for k, v in asdict(self).items() if k != "mark_directions")


def build_augmenter(cfg: AugmentConfig, seed: int) -> Augmenter | None:
    """An :class:`Augmenter` (``images -> images`` for a float batch (N, H, W, C) in 0..255), or None."""
    import keras

    steps, offsets = [], []   # offsets: each seeded step's seed, as an offset from ``seed``
    if cfg.erase_marks or cfg.erase_border:
        steps.append(_eraser_layer(cfg, seed + 7))
        offsets.append((7, steps[-1].reseed))
    if cfg.horizontal_flip or cfg.vertical_flip:
        mode = "horizontal_and_vertical" if cfg.horizontal_flip and cfg.vertical_flip else (
            "horizontal" if cfg.horizontal_flip else "vertical")
        steps.append(keras.layers.RandomFlip(mode, seed=seed))
        offsets.append((0, _reseed_layer(steps[-1])))
    geometric = _geometric_layers(cfg, seed)
    if geometric:
        steps.append(_fused_affine(geometric))
        offsets += [(offset, _reseed_layer(layer)) for offset, layer in zip(_geometric_offsets(cfg), geometric)]
    if cfg.brightness:
        steps.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 5))
        offsets.append((5, _reseed_layer(steps[-1])))
    if cfg.contrast:
        steps.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 6))
        offsets.append((6, _reseed_layer(steps[-1])))
    return Augmenter(steps, offsets) if steps else None


class Augmenter:
    """The config's random steps in order, ``images -> images``; each step draws from its own seeded state.

    :meth:`reseed` puts every step back where a new ``build_augmenter(cfg, seed)`` starts (the same draws
    after it), keeping the same layers: a ``tf.function`` that captured them runs again instead of tracing
    new ones (half a second per trace and batch shape on a CPU, :func:`medclf_core.training.transfer.traced_augmenter`).
    """

    def __init__(self, steps: list, offsets: list):
        self.steps, self._offsets = steps, offsets

    def __call__(self, images):
        for step in self.steps:
            images = step(images, training=True)
        return images

    def reseed(self, seed: int) -> None:
        for offset, reseed in self._offsets:
            reseed(seed + offset)


def _reseed_layer(layer):
    """``seed -> None``: a Keras random layer's generator set to ``SeedGenerator(seed)``'s first state."""
    import numpy as np

    def reseed(seed: int) -> None:
        state = layer.generator.state
        state.assign(np.array([seed, 0], dtype=str(state.dtype)))

    return reseed


def _geometric_offsets(cfg: AugmentConfig) -> list[int]:
    """The seed offsets of the geometric layers that are on (rotation 1, shift 2, zoom 3, shear 4), in order."""
    return [k for k, on in ((1, cfg.rotation), (2, cfg.shift), (3, cfg.zoom), (4, cfg.shear)) if on]


def _geometric_layers(cfg: AugmentConfig, seed: int) -> list:
    """The random geometric layers that are on, in the order they compose, each with its own seed (as before the
    fusion, so each draws the same parameters for the same seed)."""
    import keras

    layers = []
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 1))
    if cfg.shift:
        layers.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed + 2))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, cfg.zoom, fill_mode="constant", seed=seed + 3))
    if cfg.shear:
        layers.append(keras.layers.RandomShear(x_factor=cfg.shear, y_factor=cfg.shear, fill_mode="constant",
                                               seed=seed + 4))
    return layers


def _fused_affine(layers: list):
    """Rotation, shift, zoom and shear as ONE resampling: each layer draws its parameters as it would
    (``get_random_transformation``, same seeds, same ranges), the matrices (output pixel -> input pixel) are
    multiplied in the order the layers ran, and the batch is interpolated once (bilinear, zeros outside).

    Four layers in a row interpolated four times: four times the work and four blurs; a corner that one
    step moved out of the frame was lost even if the next moved it back. One resampling of the composed
    map is the exact composition of the four transforms, in a quarter of the time."""
    import keras
    from keras import ops

    def step(images, training=True):
        images = ops.cast(images, "float32")
        height, width = ops.cast(ops.shape(images)[1], "float32"), ops.cast(ops.shape(images)[2], "float32")
        total = None
        for layer in layers:
            m = _layer_matrix(layer, layer.get_random_transformation(images, training=True), height, width)
            total = m if total is None else ops.matmul(total, m)
        flat = ops.reshape(total, (-1, 9))[:, :8]
        return keras.ops.image.affine_transform(images, flat, interpolation="bilinear", fill_mode="constant",
                                                fill_value=0.0)

    return step


def _layer_matrix(layer, t: dict, height, width):
    """The 3x3 matrices (N, 3, 3) that ``layer`` (Keras 3's random geometric layers) resamples with for draw ``t``:
    output pixel (x, y, 1) -> input pixel, the same matrices as each layer's own transform."""
    from keras import ops

    name = type(layer).__name__
    if name == "RandomRotation":
        rows = ops.cast(t["rotation_matrix"], "float32")
    elif name == "RandomTranslation":
        d = ops.cast(t["translations"], "float32")
        one, zero = ops.ones_like(d[:, :1]), ops.zeros_like(d[:, :1])
        rows = ops.concatenate([one, zero, -d[:, :1], zero, one, -d[:, 1:]], axis=1)
    elif name == "RandomZoom":
        zx, zy = ops.cast(t["width_zoom"], "float32"), ops.cast(t["height_zoom"], "float32")
        zero = ops.zeros_like(zx)
        rows = ops.concatenate([zx, zero, (width - 1.0) / 2.0 * (1.0 - zx),
                                zero, zy, (height - 1.0) / 2.0 * (1.0 - zy)], axis=1)
    elif name == "RandomShear":
        s = ops.cast(t["shear_factor"], "float32")
        one, zero = ops.ones_like(s[:, :1]), ops.zeros_like(s[:, :1])
        rows = ops.concatenate([one, s[:, :1], zero, s[:, 1:], one, zero], axis=1)
    else:
        raise TypeError(f"No matrix for {name}.")
    rows = rows[:, :6]
    bottom = ops.concatenate([ops.zeros_like(rows[:, :2]), ops.ones_like(rows[:, :1])], axis=1)
    return ops.reshape(ops.concatenate([rows, bottom], axis=1), (-1, 3, 3))


def _eraser_layer(cfg: AugmentConfig, seed: int):
    """:class:`~medclf_core.data.erase.ShortcutEraser` as a step on a float batch tensor (``tf.numpy_function``)."""
    import numpy as np
    import tensorflow as tf

    from medclf_core.data.erase import ShortcutEraser

    eraser = ShortcutEraser(marks=cfg.erase_marks, border=cfg.erase_border, seed=seed)

    def erase(images, training=True):
        out = tf.numpy_function(eraser, [images], tf.float32, stateful=True)
        out.set_shape(images.shape)
        return out

    def reseed(seed: int) -> None:
        eraser.rng = np.random.default_rng(seed)

    erase.reseed = reseed
    return erase
