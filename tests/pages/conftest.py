"""Fixtures for the Streamlit page tests (streamlit.testing.v1.AppTest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO


@pytest.fixture
def app_env(tmp_path, monkeypatch, trained_run):
    """The app pointed at a models folder holding one tiny run (shared, read-only) and an empty jobs folder."""
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(Path(trained_run).parent))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))  # the test's own datasets (medclf_core.server.access)
    monkeypatch.delenv("MEDCLF_DEFAULT_MODEL", raising=False)
    return Path(trained_run)


@pytest.fixture
def own_models(tmp_path, monkeypatch, trained_run):
    """A private models folder with two copies of the tiny run ('tiny-a', 'tiny-b'), safe to delete from."""
    models = tmp_path / "models"
    for name in ("tiny-a", "tiny-b"):
        dst = models / name
        shutil.copytree(trained_run, dst)
        card = json.loads((dst / "card.json").read_text())
        card["name"] = name
        (dst / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(models))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))  # the test's own datasets (medclf_core.server.access)
    return models


@pytest.fixture
def page():
    """``page("predict")``: an AppTest for pages/predict.py (run it with ``.run()``)."""
    from streamlit.testing.v1 import AppTest

    def make(name: str):
        return AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=180)

    return make


@pytest.fixture
def refitted_env(tmp_path, monkeypatch, trained_run):
    """A private models folder with the tiny run refitted (OOD gate + temperature) and an intended use
    (chest radiographs) in its card."""
    from helpers import CHEST_SAMPLE, as_older_run

    from medclf_core.training.refit import refit_trust

    run = as_older_run(trained_run, tmp_path / "models" / "tiny-chest")
    refit_trust(run, CHEST_SAMPLE)
    card = json.loads((run / "card.json").read_text())
    card["intended_use"] = {"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}
    (run / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))  # the test's own datasets (medclf_core.server.access)
    monkeypatch.delenv("MEDCLF_DEFAULT_MODEL", raising=False)
    return run


@pytest.fixture
def older_env(tmp_path, monkeypatch, trained_run):
    """A private models folder with the tiny run as written before the trust layer (no gate, no calibration)."""
    from helpers import as_older_run

    run = as_older_run(trained_run, tmp_path / "models" / "tiny-chest")
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MEDCLF_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("MEDCLF_DATA_ROOTS", str(tmp_path))  # the test's own datasets (medclf_core.server.access)
    monkeypatch.delenv("MEDCLF_DEFAULT_MODEL", raising=False)
    return run
