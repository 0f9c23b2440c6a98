"""Augmentation settings (medclf_core.data.augment): the shortcut-erasing probabilities are validated, the
presets say which datasets erase, and a bad setting in a training config is a plain message."""

from __future__ import annotations

import numpy as np
import pytest

from medclf_core.data.augment import PRESETS, AugmentConfig, build_augmenter
from medclf_core.errors import MedclfError


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5", True, None])
def test_erase_probabilities_outside_0_to_1_are_refused(value):
    for name in ("erase_marks", "erase_border"):
        with pytest.raises(ValueError, match=f"'{name}' is a probability between 0 and 1"):
            AugmentConfig(**{name: value})


@pytest.mark.parametrize("value", [-1, 65, 2.0, True, "4"])
def test_mark_directions_must_be_a_small_whole_number(value):
    with pytest.raises(ValueError, match="'mark_directions' is a whole number from 0 to 64"):
        AugmentConfig(mark_directions=value)


def test_mark_directions_alone_is_not_an_image_augmentation():
    cfg = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False, mark_directions=4)
    assert not cfg.enabled and build_augmenter(cfg, 0) is None


def test_erasing_alone_counts_as_augmentation_and_round_trips():
    cfg = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False, erase_border=0.25)
    assert cfg.enabled
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig.from_dict({"rotation": 0.1}).erase_marks == 0.0   # older cards: no erasing


def test_only_the_chest_preset_erases():
    erasing = {name for name in PRESETS if AugmentConfig.preset(name).erase_marks or
               AugmentConfig.preset(name).erase_border}
    assert erasing == {"chest_xray"}


def test_a_bad_probability_in_a_training_config_is_a_plain_message(tmp_path):
    from medclf_core.training.config import TrainConfig

    with pytest.raises(MedclfError, match="'erase_marks' is a probability"):
        TrainConfig(data=str(tmp_path), augment={"erase_marks": 2}).validate()


def test_build_augmenter_erases_first_and_is_seeded():
    """The erasing step runs on a float batch tensor in eager mode, as the feature-caching pass calls it."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 30, (2, 64, 64, 1)).astype(np.float32)
    batch[:, 16:64, 16:48] = 130.0   # a body with air on three sides
    cfg = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, horizontal_flip=False, erase_border=1.0)
    a = build_augmenter(cfg, 3)(tf.constant(batch)).numpy()
    b = build_augmenter(cfg, 3)(tf.constant(batch)).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, batch)
    assert np.array_equal(a[:, 20:60, 20:44], batch[:, 20:60, 20:44])
