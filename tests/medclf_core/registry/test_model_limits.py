"""Model files checked against stated limits before Keras builds them (issue 26): a refusal, never a memory kill."""

from __future__ import annotations

import json
import zipfile

import pytest
from bad_inputs import HOSTILE_MODEL_CONFIGS, keras_config, write_keras_file
from helpers import REPO

from medclf_core.cli.commands import main
from medclf_core.errors import ModelError
from medclf_core.registry import model_limits
from medclf_core.registry.store import check_model_file, load_model_file, scan_registry

CARD = {"class_names": ["NORMAL", "PNEUMONIA"], "created": "2026-01-01T00:00:00+00:00"}


def _run(models, name, write_model):
    folder = models / name
    folder.mkdir(parents=True)
    write_model(folder / "model.keras")
    (folder / "card.json").write_text(json.dumps({"name": name, **CARD}))
    return folder


def _layers():
    import keras

    inp = keras.Input((20, 20, 3))
    x = keras.layers.Conv2D(6, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = keras.layers.SeparableConv2D(5, 3, use_bias=False)(x)
    x = keras.layers.Conv2D(4, 1, groups=1, use_bias=False)(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def _nested():
    import keras

    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(7), keras.layers.Dense(3)])
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inp))
    x = keras.layers.Dense(8)(x)
    return keras.Model(inp, keras.layers.Dense(2)(inner(x)))


@pytest.mark.parametrize("build", [_layers, _nested], ids=["layer-kinds", "nested-model"])
def test_parameters_counted_from_the_config_match_keras(build, tmp_path):
    model = build()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        facts = model_limits.check_model_config(model_limits.read_config(zf, path.name), path.name)
    assert facts.parameters == model.count_params()
    assert facts.input_shapes == [tuple(model.input_shape[1:])]


@pytest.mark.parametrize("name", sorted(HOSTILE_MODEL_CONFIGS))
def test_a_model_file_over_the_limits_is_refused_and_listed_unusable(name, tmp_path, capsys):
    config, says = HOSTILE_MODEL_CONFIGS[name]
    run = _run(tmp_path / "models", "crafted", lambda p: write_keras_file(p, config))
    with pytest.raises(ModelError, match="refused|states no image|not an object") as err:
        check_model_file(run / "model.keras")
    assert says in str(err.value)
    runs, unreadable = scan_registry(tmp_path / "models")
    assert runs == [] and [u["name"] for u in unreadable] == ["crafted"] and says in unreadable[0]["reason"]
    assert main(["list", "--models-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert "crafted" in out and "UNREADABLE" in out and says in out


def test_a_real_model_with_a_huge_input_is_refused_before_it_is_built(tmp_path, capsys):
    """A valid Keras file: tiny weights, 20000 x 20000 input. It loads; its first prediction needs gigabytes."""
    import keras

    def save(path):
        inp = keras.Input((20000, 20000, 1))
        keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inp))).save(path)

    run = _run(tmp_path / "models", "wide", save)
    with pytest.raises(ModelError, match=r"20000 x 20000 x 1 images \(limit 1024 x 1024"):
        load_model_file(run / "model.keras")
    assert [u["name"] for u in scan_registry(tmp_path / "models")[1]] == ["wide"]
    assert main(["predict", str(run), str(REPO / "samples" / "chest_xray" / "normal_1.png")]) == 1
    err = capsys.readouterr().err
    assert "refused before building it" in err and "Traceback" not in err


def test_limits_are_inclusive_and_the_bundled_models_pass(tmp_path):
    at_limit = write_keras_file(tmp_path / "ok.keras", keras_config((model_limits.MAX_INPUT_SIDE,) * 2 + (3,)))
    check_model_file(at_limit)  # no error
    runs, unreadable = scan_registry(REPO / "models")
    assert unreadable == [] and len(runs) >= 3


def test_a_model_file_changed_after_a_check_is_checked_again(tmp_path):
    path = write_keras_file(tmp_path / "m.keras", keras_config())
    check_model_file(path)
    write_keras_file(path, keras_config((50000, 50000, 3)))
    import os

    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    with pytest.raises(ModelError, match="50000 x 50000"):
        check_model_file(path)


def test_a_config_too_large_to_read_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(model_limits, "MAX_CONFIG_BYTES", 100)
    path = write_keras_file(tmp_path / "m.keras", keras_config())
    with pytest.raises(ModelError, match="config"):
        load_model_file(path)
