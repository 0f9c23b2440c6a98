"""medclf_core.registry: atomic writes, list/load/delete, safe loading."""

from __future__ import annotations

import json

import pytest

from medclf_core.errors import ModelError
from medclf_core.registry import (check_run_name, delete_run, list_runs, load_model_file, load_run, resolve_run,
                                  unique_run_name, write_run_atomically)


def _tiny_model():
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


def _write(folder, name="r"):
    _tiny_model().save(folder / "model.keras")
    (folder / "card.json").write_text(json.dumps({"name": name, "class_names": ["a", "b"], "created": "2026-01-01"}))


def test_atomic_write_registers_complete_runs(tmp_path):
    run = write_run_atomically(tmp_path, "good", _write)
    assert run == tmp_path / "good" and (run / "model.keras").is_file()
    assert [r["name"] for r in list_runs(tmp_path)] == ["r"]
    model, card = load_run("good", tmp_path)
    assert card["run_dir"] == str(run) and model.output_shape == (None, 2)


def test_failed_write_leaves_nothing(tmp_path):
    def crash(folder):
        _write(folder)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_run_atomically(tmp_path, "bad", crash)
    assert list(tmp_path.iterdir()) == [] and list_runs(tmp_path) == []


def test_incomplete_write_is_refused(tmp_path):
    with pytest.raises(ModelError, match="incomplete"):
        write_run_atomically(tmp_path, "half", lambda f: (f / "card.json").write_text("{}"))
    assert list(tmp_path.iterdir()) == []


def test_existing_name_is_not_overwritten(tmp_path):
    write_run_atomically(tmp_path, "x", _write)
    with pytest.raises(ModelError, match="already exists"):
        write_run_atomically(tmp_path, "x", _write)
    assert unique_run_name("x", tmp_path) == "x-2"


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 101])
def test_bad_names(name):
    with pytest.raises(ModelError):
        check_run_name(name)


def test_hidden_and_partial_folders_are_not_listed(tmp_path):
    (tmp_path / ".tmp-abc").mkdir()
    (tmp_path / "nocard").mkdir()
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "card.json").write_text("{}")
    assert list_runs(tmp_path) == []


def test_delete(tmp_path):
    write_run_atomically(tmp_path, "gone", _write)
    delete_run("gone", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="No model run"):
        resolve_run("gone", tmp_path)


def test_safe_mode_refuses_lambda(tmp_path):
    import keras

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelError, match="Lambda"):
        load_model_file(path)


def test_damaged_model_file(tmp_path):
    path = tmp_path / "bad.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelError):
        load_model_file(path)
