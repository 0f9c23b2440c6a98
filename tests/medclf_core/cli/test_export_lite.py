"""``medclf export-lite``: the fast-start LiteRT files of named runs, or why a run has none."""

from __future__ import annotations

import json
import shutil

import pytest

from medclf_core.cli.commands import main
from medclf_core.errors import MedclfError
from medclf_core.inference.lite import lite_mismatch
from medclf_core.inference.lite_export import recorded_no_fast_path


def test_export_lite_says_why_a_run_has_no_fast_path_once_per_model_file(trained_run, tmp_path, capsys):
    run = tmp_path / "tiny"
    shutil.copytree(trained_run, run)
    assert main(["export-lite", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {str(run): "no fast path: the classifier does not sit on a global average pooling "
                             "(e.g. a hidden Dense layer or Flatten)"}  # simple_cnn: Flatten, hidden Dense
    assert not (run / "model.tflite").exists()
    assert lite_mismatch(run)[0].startswith("no fast path: the classifier")  # served by TensorFlow, and why
    # recorded for this model file: the app start's --stale pass does not load it (and TensorFlow) again ...
    assert main(["export-lite", str(run), "--stale", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {}
    # ... until the model file changes (retrained, replaced by hand): said of another model file
    sidecar = json.loads((run / "model.tflite.json").read_text())
    (run / "model.tflite.json").write_text(json.dumps({**sidecar, "model_sha256": "0" * 64}))
    assert recorded_no_fast_path(run) is None
    assert main(["export-lite", str(run), "--stale", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert recorded_no_fast_path(run) == out[str(run)].removeprefix("no fast path: ")


def test_export_lite_needs_a_run():
    with pytest.raises(MedclfError, match="Name at least one model"):
        from medclf_core.cli.commands import cmd_export_lite
        from medclf_core.cli.parser import build_parser

        cmd_export_lite(build_parser().parse_args(["export-lite"]))
