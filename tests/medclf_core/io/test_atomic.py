"""medclf_core.io.atomic: JSON and bytes that appear whole, damaged JSON read as absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medclf_core.errors import ModelError
from medclf_core.io.atomic import (json_text, read_json, read_versioned_npz, write_bytes_atomically, write_json,
                                   write_npz)


def test_write_json_turns_numpy_and_paths_into_plain_json(tmp_path):
    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("a/b"), "nested": [{"x": 1}]}
    write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text()) == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "a/b",
                                                               "nested": [{"x": 1}]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_json_text_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json_text({"x": object()})


def test_a_failed_json_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "status.json"
    write_json(path, {"state": "old"})
    with pytest.raises(TypeError):
        write_json(path, {"state": object()})
    assert read_json(tmp_path, "status.json") == {"state": "old"}


def test_write_bytes_atomically_replaces_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.pdf"
    write_bytes_atomically(path, b"first")
    write_bytes_atomically(path, b"second")
    assert path.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == ["report.pdf"]

    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_bytes_atomically(path, b"third")
    assert path.read_bytes() == b"second" and [p.name for p in tmp_path.iterdir()] == ["report.pdf"]


def test_damaged_side_files_read_as_absent(tmp_path):
    (tmp_path / "history.json").write_bytes(b"\xff\xfe")
    (tmp_path / "evaluation.json").write_text("{")
    assert read_json(tmp_path, "history.json", default=[]) == []
    assert read_json(tmp_path, "evaluation.json") is None
    assert read_json(tmp_path, "missing.json", default={}) == {}


def test_a_versioned_npz_reads_back_and_a_newer_or_damaged_one_is_a_plain_error(tmp_path):
    path = write_npz(tmp_path / "thing.npz", version=np.int32(2), values=np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["thing.npz"]  # no temporary file left beside it
    assert read_versioned_npz(path, 2, "thing", lambda z: z["values"].tolist()) == [0, 1, 2]
    with pytest.raises(ModelError, match=r"thing.npz was written by a newer medclf \(version 2\)"):
        read_versioned_npz(path, 1, "thing", lambda z: None)
    with pytest.raises(ModelError, match=r"The thing thing.npz is damaged \(KeyError\)"):
        read_versioned_npz(path, 2, "thing", lambda z: z["missing"])
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="is damaged"):
        read_versioned_npz(path, 2, "thing", lambda z: None)
