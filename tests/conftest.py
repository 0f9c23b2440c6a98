"""Shared fixtures: small committed sample data, tiny generated datasets, one tiny trained run.

Everything here works on a fresh clone without ../shared and without network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU tests; a GPU box must give the same answers

import pytest

from helpers import CHEST_SAMPLE, SAMPLES, TINY, make_pattern_dataset


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains several models or starts processes (still part of CI)")


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Converted backbones (:mod:`medclf_core.training.lite_backbone`) go to a folder of this session's, never
    to the user's ``~/.cache/medclf``: a test neither reads a file an earlier session left nor leaves one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDCLF_CACHE_DIR", str(tmp_path_factory.mktemp("medclf-cache")))
        yield


@pytest.fixture(scope="session")
def chest_sample() -> Path:
    return CHEST_SAMPLE


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    return sorted((SAMPLES / "images" / "chest_xray").iterdir())


@pytest.fixture(scope="session")
def dicom_samples() -> list[Path]:
    return sorted((SAMPLES / "dicom").glob("*.dcm"))


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


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory):
    """A real Orthanc with DICOMweb on a free port (tests/pacs_server.py), one per test module."""
    from pacs_server import OrthancServer, require_orthanc

    require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()
