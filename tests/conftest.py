"""Shared fixtures: small committed sample data, tiny generated datasets, one tiny trained run.

Everything here works on a fresh clone without ../shared and without network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU tests; a GPU box must give the same answers

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CHEST_SAMPLE = SAMPLES / "datasets" / "chest_xray"
SHARED_DATA = REPO.parent / "shared" / "data"
TINY = 32  # image side used by training tests: fast on a 2-core CPU


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains several models or starts processes (still part of CI)")


@pytest.fixture(scope="session")
def chest_sample() -> Path:
    return CHEST_SAMPLE


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    return sorted((SAMPLES / "images" / "chest_xray").iterdir())


@pytest.fixture(scope="session")
def dicom_samples() -> list[Path]:
    return sorted((SAMPLES / "dicom").glob("*.dcm"))


def make_pattern_dataset(root: Path, n_per_class: int = 12, size: int = 40, classes=("circle", "square"),
                         seed: int = 0) -> Path:
    """A learnable 2-class dataset: a bright circle or square on noise, at random places."""
    import cv2

    rng = np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            cx, cy = rng.integers(10, size - 10, 2)
            if ci == 0:
                cv2.circle(img, (int(cx), int(cy)), 7, 255, -1)
            else:
                cv2.rectangle(img, (int(cx) - 6, int(cy) - 6), (int(cx) + 6, int(cy) + 6), 255, -1)
            Image.fromarray(img).save(d / f"{cls}_{i:03d}.png")
    return root


@pytest.fixture
def pattern_dataset(tmp_path) -> Path:
    return make_pattern_dataset(tmp_path / "patterns")


@pytest.fixture
def chest_copy(tmp_path, chest_sample) -> Path:
    dst = tmp_path / "chest"
    shutil.copytree(chest_sample, dst)
    return dst


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny simple_cnn run on the committed chest sample, shared by read-only tests."""
    from medclf_core.training import TrainConfig, train

    models = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(data=str(CHEST_SAMPLE), arch="simple_cnn", epochs=2, image_size=TINY, channels=1,
                      batch_size=16, name="tiny-chest")
    return train(cfg, models_dir=models)
