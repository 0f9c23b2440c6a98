"""The whole corpus of bad inputs through Predictor.predict_files and ``python -m medclf_core predict``,
plus user-supplied models: safe mode against Lambda layers, plain messages for inputs that do not fit.

Uses a tiny untrained model (no training: fast), written as a normal registry run.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from bad_inputs import ALL_CASES, PATIENT_STRINGS, write_corpus
from helpers import REPO

from medclf_core.cli.commands import main
from medclf_core.errors import ModelError
from medclf_core.reports.predictions_csv import predictions_csv
from medclf_core.registry.store import write_run_atomically

CLASSES = ["NORMAL", "PNEUMONIA"]


def _save_run(models_dir, name, build):
    def write(folder):
        build().save(folder / "model.keras")
        (folder / "card.json").write_text(json.dumps({"name": name, "class_names": CLASSES, "threshold": 0.5,
                                                      "positive_class": "PNEUMONIA", "created": "2026-01-01"}))
    return write_run_atomically(models_dir, name, write)


def _tiny_model(shape=(16, 16, 1)):
    import keras

    inp = keras.Input(shape)
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _save_run(tmp_path_factory.mktemp("models"), "tiny", _tiny_model)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _check_results(results, corpus) -> None:
    assert [r["file"] for r in results] == [str(corpus[c.name]) for c in ALL_CASES]
    for case, r in zip(ALL_CASES, results, strict=True):
        if case.decodes:
            assert r["label"] in CLASSES, (case.name, r)
            assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        else:
            assert set(r) - {"file_label"} == {"file", "error"}, (case.name, r)  # the CLI adds the safe label
            assert case.error in r["error"], (case.name, r["error"])


def test_predict_files_over_the_corpus(run_dir, corpus):
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(run_dir)
    _check_results(predictor.predict_files([corpus[c.name] for c in ALL_CASES]), corpus)


def test_cli_predict_json_over_the_corpus_leaks_nothing(run_dir, corpus, capsys, caplog, tmp_path):
    """Per-file errors, exit 2, and no identifier in stdout, stderr, logs, written files or the CSV."""
    caplog.set_level(logging.DEBUG)
    files = [str(corpus[c.name]) for c in ALL_CASES]
    cams = tmp_path / "cams"
    assert main(["predict", str(run_dir), *files, "--json", "--cam", str(cams)]) == 2
    out = capsys.readouterr()
    results = json.loads(out.out.strip().splitlines()[-1])
    for r in results:
        r.pop("cam", None)
    _check_results(results, corpus)
    csv_text = predictions_csv(results)
    (tmp_path / "predictions.csv").write_text(csv_text)
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1 + sum(c.decodes for c in ALL_CASES)  # the CSV and one heat map per readable file
    everything = "\n".join([out.out, out.err, caplog.text, *(b.decode("latin-1") for b in written)]).lower()
    assert not [s for s in PATIENT_STRINGS if s.lower() in everything]
    assert str(corpus["rgb_png"].parent) not in csv_text


def test_cli_output_files_and_lines_carry_no_identifier_from_the_file_name(run_dir, tmp_path, capsys):
    """Issue 26: ``--cam``/``--report`` named their files after the input, patient name, MRN and birth date
    included. Output names are ``<index>_<safe stem>``, the lines printed the safe label; a file alone or
    with others gets the same name."""
    import numpy as np

    from bad_inputs import IDENTIFYING_FILE_NAME, dicom_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    dicom = folder / IDENTIFYING_FILE_NAME
    dicom.write_bytes(dicom_bytes(np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))))
    plain = folder / "PatientID_0042_chest.png"  # no header: the name pattern alone
    plain.write_bytes(_png())
    names = {}
    for label, files in (("alone", [dicom]), ("together", [dicom, plain])):
        out = tmp_path / label
        assert main(["predict", str(run_dir), *map(str, files), "--cam", str(out / "cams"),
                     "--report", str(out / "reports")]) == 0
        printed = capsys.readouterr()
        written = sorted(p.name for p in out.rglob("*") if p.is_file())
        text = " ".join([printed.out, printed.err, *written]).lower()
        assert not [s for s in (*PATIENT_STRINGS, "0042") if s.lower() in text], text
        names[label] = written
    assert names["alone"] == ["000_001_redacted_redacted_redacted_redacted_cam.png",
                              "000_001_redacted_redacted_redacted_redacted_report.pdf"]
    assert set(names["alone"]) < set(names["together"])
    assert "001_redacted_chest_cam.png" in names["together"]


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (40, 1))).save(buf, "PNG")
    return buf.getvalue()


def test_cli_predict_good_files_exit_0(run_dir, corpus, capsys):
    assert main(["predict", str(run_dir), str(corpus["rgb_png"]), str(corpus["dicom_monochrome1"]), "--json"]) == 0
    assert all("label" in r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_cli_as_a_module(run_dir, corpus):
    files = [str(corpus[n]) for n in ("gray8_png", "pdf_named_png", "dicom_no_pixel_data")]
    res = subprocess.run([sys.executable, "-m", "medclf_core", "predict", str(run_dir), *files, "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert results[0]["label"] in CLASSES
    assert set(results[1]) == {"file", "file_label", "error"} and "PDF" in results[1]["error"]
    assert "no pixel data" in results[2]["error"]
    assert "Traceback" not in res.stderr and not any(s in res.stdout + res.stderr for s in PATIENT_STRINGS)


# ----------------------------------------------------------------------------- user-supplied models

def _lambda_model(marker):
    import keras

    touch = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")  # noqa: S307
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Lambda(touch)(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def test_safe_mode_refuses_a_lambda_model_without_running_it(tmp_path, capsys, corpus):
    from medclf_core.registry.store import load_model_file

    marker = tmp_path / "code-ran"
    run = _save_run(tmp_path / "models", "evil", lambda: _lambda_model(marker))
    marker.unlink()  # building the model ran the function once; loading must not
    assert main(["predict", str(run), str(corpus["rgb_png"])]) == 1
    err = capsys.readouterr().err
    assert "Lambda" in err and "arbitrary code" in err and "Traceback" not in err
    assert not marker.exists()
    with pytest.raises(ModelError, match="Lambda"):
        load_model_file(run / "model.keras")
    assert not marker.exists()
    load_model_file(run / "model.keras", safe_mode=False)  # what safe mode prevents: the file's code runs
    assert marker.exists()


def _two_inputs():
    import keras

    a, b = keras.Input((16, 16, 1)), keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(x))


def _one_output():
    import keras

    inp = keras.Input((16, 16, 1))
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inp)))


def _flat_input():
    import keras

    inp = keras.Input((256,))
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))


def _dynamic():
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


@pytest.mark.parametrize("build,fragment", [
    (lambda: _tiny_model((16, 24, 1)), "square"),
    (lambda: _tiny_model((16, 16, 4)), "(size, size, 1)"),
    (_dynamic, "fixed square size"),
    (_two_inputs, "takes 2 inputs"),
    (_one_output, "at least two classes"),
    (_flat_input, "medclf needs images of shape"),
], ids=["non-square", "4-channels", "dynamic-size", "two-inputs", "one-output", "flat-input"])
def test_models_whose_inputs_do_not_fit_get_a_plain_message(build, fragment):
    from medclf_core.inference.predictor import Predictor

    with pytest.raises(ModelError) as info:
        Predictor(build(), {"class_names": CLASSES})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_an_unfit_model_in_one_line(tmp_path, corpus, capsys):
    run = _save_run(tmp_path / "models", "wide", lambda: _tiny_model((16, 24, 1)))
    assert main(["predict", str(run), str(corpus["rgb_png"])]) == 1
    err = capsys.readouterr().err
    assert "square" in err and "Traceback" not in err


def test_damaged_model_file_in_a_run(tmp_path, corpus, capsys):
    run = _save_run(tmp_path / "models", "broken", _tiny_model)
    (run / "model.keras").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert main(["predict", str(run), str(corpus["rgb_png"])]) == 1
    assert "damaged or not a Keras model" in capsys.readouterr().err


def test_zip_bomb_disguised_as_a_model_is_refused_before_keras_opens_it(tmp_path):
    import zipfile

    from medclf_core.registry.store import load_model_file

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", b"\0" * (60 * 2**20))
    with pytest.raises(ModelError, match="would unpack to"):
        load_model_file(bomb)
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    with pytest.raises(ModelError, match="not a .keras archive"):
        load_model_file(not_a_model)
    with pytest.raises(ModelError, match="does not exist"):
        load_model_file(tmp_path / "missing.keras")
