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
    return models


@pytest.fixture
def page():
    """``page("predict")``: an AppTest for pages/predict.py (run it with ``.run()``)."""
    from streamlit.testing.v1 import AppTest

    def make(name: str):
        return AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=180)

    return make
