"""Model export (SavedModel, TFLite): same outputs as the registry model, card travels with it, atomic."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medclf_core.registry.export import export_archive, export_files, export_model, run_tflite


@pytest.fixture(scope="module")
def predictor(trained_run):
    from medclf_core.inference.predictor import Predictor

    return Predictor.from_run(trained_run, tta=())


@pytest.fixture(scope="module")
def batch(predictor, sample_images, chest_sample):
    """Fixture images as the model takes them: the larger chest X-rays plus a few of the training sample."""
    from medclf_core.io.images import load_image

    files = list(sample_images) + sorted(p for p in Path(chest_sample).rglob("*.jpeg"))[:4]
    return np.stack([predictor.prepare(load_image(f).pixels) for f in files]).astype(np.float32)


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    return {"savedmodel": export_model(trained_run, "savedmodel", out / "tiny-savedmodel"),
            "tflite": export_model(trained_run, "tflite", out / "tiny.tflite")}


def test_savedmodel_gives_the_registry_models_probabilities(exports, predictor, batch):
    import tensorflow as tf

    raw = np.asarray(predictor.model.predict_on_batch(batch))
    loaded = tf.saved_model.load(str(exports["savedmodel"]))
    got = loaded.serve(tf.constant(batch)).numpy()
    assert got.shape == raw.shape == (len(batch), 2)
    np.testing.assert_allclose(got, raw, atol=1e-4, rtol=0)
    one = loaded.serve(tf.constant(batch[:1])).numpy()  # any batch size
    np.testing.assert_allclose(one, raw[:1], atol=1e-4, rtol=0)


def test_tflite_gives_the_registry_models_probabilities(exports, predictor, batch):
    import tensorflow as tf

    raw = np.asarray(predictor.model.predict_on_batch(batch))
    np.testing.assert_allclose(run_tflite(exports["tflite"], batch), raw, atol=1e-4, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(exports["tflite"]))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(inp["shape_signature"][1:]) == [predictor.image_size, predictor.image_size, predictor.channels]
    for k in range(len(batch)):  # the plain one-image way a consumer calls it
        interpreter.set_tensor(inp["index"], batch[k:k + 1])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], raw[k], atol=1e-4, rtol=0)


def test_the_consumer_applying_the_temperature_gets_predicts_probabilities(exports, predictor, batch):
    """Export + the card's temperature (as EXPORT.md says) = what ``predict`` prints."""
    from medclf_core.trust.calibration import apply_temperature

    card = json.loads((exports["savedmodel"] / "assets" / "card.json").read_text())
    t = card["export"]["calibration_temperature"]
    assert t == (card.get("calibration") or {}).get("temperature")
    raw = run_tflite(exports["tflite"], batch)
    consumer = apply_temperature(raw, t, positive=predictor.positive)
    np.testing.assert_allclose(consumer, predictor.predict_batch(batch), atol=1e-4, rtol=0)


def test_the_card_and_gate_travel_with_the_export(exports, trained_run):
    run = Path(trained_run)
    original = json.loads((run / "card.json").read_text())
    sm = exports["savedmodel"]
    assert (sm / "saved_model.pb").is_file()
    for card_path in (sm / "assets" / "card.json", exports["tflite"].with_name("tiny.card.json")):
        card = json.loads(card_path.read_text())
        assert card["name"] == original["name"] and card["class_names"] == original["class_names"]
        assert card["threshold"] == original["threshold"]
        assert "run_dir" not in card  # no server path
        ex = card["export"]
        assert ex["input"]["shape"][1:] == [32, 32, 1] and ex["output"]["class_names"] == original["class_names"]
        assert any("temperature" in s for s in ex["consumer_must_apply"])
    for note in (sm / "assets" / "EXPORT.md", exports["tflite"].with_name("tiny.EXPORT.md")):
        text = note.read_text()
        assert "not for clinical use" in text and "raw, not calibrated" in text
        if (original.get("calibration") or {}).get("temperature"):
            assert "temperature T =" in text
    has_gate = (run / "ood.npz").is_file()
    assert (sm / "assets" / "ood.npz").is_file() == has_gate
    assert exports["tflite"].with_name("tiny.ood.npz").is_file() == has_gate
    if has_gate:
        assert (sm / "assets" / "ood.npz").read_bytes() == (run / "ood.npz").read_bytes()
    leftovers = [p.name for p in sm.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporaries renamed or removed


def test_existing_output_is_refused_unless_overwrite(trained_run, exports, tmp_path):
    from medclf_core.errors import MedclfError

    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    with pytest.raises(MedclfError, match="already exists"):
        export_model(trained_run, "tflite", target)
    assert target.read_bytes() == b"old"
    with pytest.raises(MedclfError, match="Unknown export format"):
        export_model(trained_run, "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    export_model(trained_run, "tflite", target, overwrite=True)
    assert target.read_bytes()[4:8] == b"TFL3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.EXPORT.md", "m.card.json", "m.ood.npz", "m.tflite"] \
        or sorted(p.name for p in tmp_path.iterdir()) == ["m.EXPORT.md", "m.card.json", "m.tflite"]


def test_a_failed_export_leaves_nothing_behind(trained_run, tmp_path, monkeypatch):
    from medclf_core.registry import export as model_export
    from medclf_core.errors import MedclfError

    def broken(saved):
        raise MedclfError("conversion failed")

    monkeypatch.setattr(model_export, "_convert_tflite", broken)
    with pytest.raises(MedclfError, match="conversion failed"):
        export_model(trained_run, "tflite", tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_cli_export(trained_run, tmp_path, capsys):
    from medclf_core.cli.commands import main

    out = tmp_path / "cli.tflite"
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["output"] == str(out)
    assert out.is_file() and (tmp_path / "cli.card.json").is_file()
    assert main(["export", str(trained_run), "--format", "tflite", "--output", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(trained_run), "--format", "onnx", "--output", str(out)])


def test_export_archive_zips_the_export(trained_run, exports):
    import io

    for fmt in ("savedmodel", "tflite"):
        data, name = export_archive(trained_run, fmt)
        assert name == f"tiny-chest-{fmt}.zip"
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        if fmt == "savedmodel":
            assert {"tiny-chest-savedmodel/saved_model.pb", "tiny-chest-savedmodel/assets/card.json",
                    "tiny-chest-savedmodel/assets/EXPORT.md"} <= set(names)
        else:
            assert {"tiny-chest.tflite", "tiny-chest.card.json", "tiny-chest.EXPORT.md"} <= set(names)
        assert len(names) == len(export_files(exports[fmt], fmt))


def test_an_uncalibrated_run_without_gate(trained_run, tmp_path, batch):
    """An older run (no temperature, no ood.npz): the note says so, and a stale gate beside an
    overwritten export is removed (it belonged to another model)."""
    from helpers import as_older_run

    from medclf_core.registry.store import load_run

    run = as_older_run(trained_run, tmp_path / "models" / "old-run", name="old-run")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.ood.npz").write_bytes(b"stale")
    (out / "old.tflite").write_bytes(b"stale")
    path = export_model(run, "tflite", out / "old.tflite", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.EXPORT.md", "old.card.json", "old.tflite"]
    card = json.loads((out / "old.card.json").read_text())
    assert card["export"]["calibration_temperature"] is None
    assert "No calibration temperature" in (out / "old.EXPORT.md").read_text()
    model, _ = load_run(run)
    np.testing.assert_allclose(run_tflite(path, batch), np.asarray(model.predict_on_batch(batch)), atol=1e-4, rtol=0)
    sm = export_model(run, "savedmodel", out / "old-sm")
    assert not (sm / "assets" / "ood.npz").exists() and (sm / "assets" / "card.json").is_file()
