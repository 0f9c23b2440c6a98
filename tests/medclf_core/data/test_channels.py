"""medclf_core.data.channels: a dataset's default model input follows its images (grey or colour)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medclf_core.data.channels import dataset_channels
from medclf_core.data.scan import scan_dataset


def test_dataset_channels_grey_grey_saved_as_rgb_and_colour(tmp_path):
    """Issue 16: the Train page's default input follows the dataset's images."""
    rng = np.random.default_rng(0)

    def write(root, colour: bool, as_rgb: bool):
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(3):
                grey = rng.integers(0, 255, (24, 24), dtype=np.uint8)
                if colour:
                    img = np.stack([grey, 255 - grey, rng.integers(0, 255, (24, 24), dtype=np.uint8)], axis=-1)
                else:
                    img = np.stack([grey] * 3, axis=-1) if as_rgb else grey
                Image.fromarray(img).save(root / cls / f"{i}.png")
        return scan_dataset(root)

    assert dataset_channels(write(tmp_path / "grey", colour=False, as_rgb=False)) == 1
    assert dataset_channels(write(tmp_path / "grey_rgb", colour=False, as_rgb=True)) == 1
    assert dataset_channels(write(tmp_path / "colour", colour=True, as_rgb=True)) == 3

