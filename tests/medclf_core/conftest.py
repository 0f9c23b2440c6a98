"""Fixtures shared by tests of several layers of medclf_core."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import CHEST_SAMPLE, as_older_run

from medclf_core.training.refit import refit_trust


@pytest.fixture(scope="module")
def older(trained_run, tmp_path_factory):
    """The tiny run as a run written before the trust layer (no gate, no calibration)."""
    return as_older_run(trained_run, tmp_path_factory.mktemp("older") / "tiny-old", name="tiny-old")


@pytest.fixture(scope="module")
def refitted(older, tmp_path_factory):
    """A copy of the older run, refitted (gate + temperature), and the refit's result."""
    run = tmp_path_factory.mktemp("refit") / "tiny-refit"
    shutil.copytree(older, run)
    card = json.loads((run / "card.json").read_text())
    card["name"] = "tiny-refit"
    (run / "card.json").write_text(json.dumps(card))
    return run, refit_trust(run, CHEST_SAMPLE)


@pytest.fixture
def traces(monkeypatch):
    """The names of the tf.functions traced while the test runs (every trace TensorFlow counts towards
    its "triggered tf.function retracing" warning)."""
    from tensorflow.python.eager.polymorphic_function import polymorphic_function as pf

    seen: list[str] = []
    original = pf._FrequentTracingDetectorManager.called_with_tracing

    def counting(self, key, function_name, omit_warning):
        seen.append(getattr(function_name, "__name__", str(function_name)))
        return original(self, key, function_name, omit_warning)

    monkeypatch.setattr(pf._FrequentTracingDetectorManager, "called_with_tracing", counting)
    return seen
