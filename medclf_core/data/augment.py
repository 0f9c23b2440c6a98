"""Training-time augmentation as Keras preprocessing layers, run inside ``tf.data``.

Each transform is a switch in :class:`AugmentConfig`. They run in the input
pipeline, after the cache, never inside the model: random layers in a model
disable XLA and would ship with the saved model.

Horizontal flips swap left and right, which changes the anatomy of a chest
X-ray (heart on the wrong side), so the ``chest_xray`` preset turns them off.

Example::

    >>> cfg = AugmentConfig.preset("chest_xray")
    >>> cfg.horizontal_flip
    False
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

PRESETS = {
    # Seed 000's recipe: rotations, shifts, zoom, shear and horizontal flips.
    "default": dict(rotation=0.05, shift=0.1, zoom=0.1, shear=0.1, horizontal_flip=True),
    # Laterality matters on chest films: no flips; a few degrees of rotation.
    "chest_xray": dict(rotation=0.03, shift=0.08, zoom=0.1, shear=0.05, horizontal_flip=False),
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
        return any(bool(v) for v in asdict(self).values())


def build_augmenter(cfg: AugmentConfig, seed: int):
    """A callable ``images -> images`` for a float batch (N, H, W, C) in 0..255, or None."""
    import keras

    layers = []
    if cfg.horizontal_flip or cfg.vertical_flip:
        mode = "horizontal_and_vertical" if cfg.horizontal_flip and cfg.vertical_flip else (
            "horizontal" if cfg.horizontal_flip else "vertical")
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 1))
    if cfg.shift:
        layers.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed + 2))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, cfg.zoom, fill_mode="constant", seed=seed + 3))
    if cfg.shear:
        layers.append(keras.layers.RandomShear(x_factor=cfg.shear, y_factor=cfg.shear, fill_mode="constant",
                                               seed=seed + 4))
    if cfg.brightness:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 5))
    if cfg.contrast:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 6))
    if not layers:
        return None

    def apply(images):
        for layer in layers:
            images = layer(images, training=True)
        return images

    return apply
