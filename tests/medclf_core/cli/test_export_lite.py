"""``medclf export-lite``: the fast-start LiteRT files of named runs, or why a run has none."""

from __future__ import annotations

import json

import pytest

from medclf_core.cli.commands import main
from medclf_core.errors import MedclfError


def test_export_lite_says_why_a_run_has_no_fast_path_and_needs_a_run(trained_run, capsys):
    assert main(["export-lite", str(trained_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {str(trained_run): "no fast path: the classifier does not sit on a global average pooling "
                                     "(e.g. a hidden Dense layer or Flatten)"}  # simple_cnn: Flatten, hidden Dense
    assert not (trained_run / "model.tflite").exists()
    assert main(["export-lite", str(trained_run), "--stale", "--json"]) == 0  # still no files: still stale
    assert str(trained_run) in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with pytest.raises(MedclfError, match="Name at least one model"):
        from medclf_core.cli.commands import cmd_export_lite
        from medclf_core.cli.parser import build_parser

        cmd_export_lite(build_parser().parse_args(["export-lite"]))
