"""A real Orthanc for the PACS tests (tests/pacs_server.py), and a tiny model that is fast to run.

``orthanc``: one server for the module's tests (``orthanc_server``, tests/conftest.py), emptied and loaded with the committed DICOM samples before
each test. ``private_orthanc``: a server of a test's own, which the test may stop (the PACS going down).
``tiny_predictor``: an untrained two-class CNN whose card declares chest X-rays (CR/DX, CHEST), so that the
header gate refuses the CT and MR samples and accepts the CR one, exactly as for uploads.
"""

from __future__ import annotations

import pytest

from pacs_server import OrthancServer, require_orthanc


@pytest.fixture
def orthanc(orthanc_server, dicom_samples, monkeypatch):
    orthanc_server.clear()
    orthanc_server.upload(dicom_samples)
    monkeypatch.setenv("MEDCLF_PACS_USER", orthanc_server.user)
    monkeypatch.setenv("MEDCLF_PACS_PASSWORD", orthanc_server.password)
    return orthanc_server


@pytest.fixture
def private_orthanc(tmp_path, dicom_samples):
    require_orthanc()
    server = OrthancServer(tmp_path / "own-orthanc").start()
    server.upload(dicom_samples)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_card():
    return {"name": "tiny-chest", "class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
            "threshold": 0.5, "cam_layer": "conv", "created": "2025-01-01T00:00:00+00:00",
            "intended_use": {"summary": "chest X-rays of adults", "modalities": ["CR", "DX"], "body_parts": ["CHEST"]}}


@pytest.fixture(scope="session")
def tiny_predictor(tiny_card):
    import keras

    from medclf_core.inference.predictor import Predictor

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return Predictor(keras.Model(inputs, outputs), dict(tiny_card))
