"""medclf_core.registry.card: one validated model-card type, other-source evaluations, metrics with n."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from helpers import REPO

from medclf_core.registry.card import (CARD_KEYS, CARD_SCHEMA_VERSION, DEFAULTS, CardError, ModelCard, dataset_fingerprint,
                              format_metric, list_evaluations, parse_card_text, record_evaluation)
from medclf_core.errors import ModelError

MODELS = REPO / "models"
BUNDLED = ("brain-mri-tumour", "chest-xray-pneumonia", "imaging-modality")
MINIMAL = {"name": "r", "class_names": ["a", "b"], "created": "2026-01-01"}


SCHEMA_1 = REPO / "tests" / "fixtures" / "schema1_cards"  # the bundled models' cards before schema 2


def _raw(name: str) -> dict:
    return json.loads((SCHEMA_1 / f"{name}.json").read_text())


def test_bundled_cards_are_schema_2_and_read():
    for name in BUNDLED:
        card = ModelCard.from_dict(json.loads((MODELS / name / "card.json").read_text()))
        assert card.schema_version == CARD_SCHEMA_VERSION and card.name == name and card.intended_use


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_schema_1_cards_read_with_defaults(name):
    raw = _raw(name)
    assert "schema_version" not in raw  # the older schema, read leniently
    card = ModelCard.from_dict(raw)
    assert isinstance(card, dict) and card.schema_version == 1
    assert set(DEFAULTS) | set(CARD_KEYS) <= set(card)  # every known key is there: no .get() needed
    assert card.name == name and card.class_names == raw["class_names"]
    assert card.tta == raw.get("tta", []) and card.ensemble == raw.get("ensemble")
    assert card.intended_use is None and card.calibration is None and card.bundled is False
    assert card.is_bundled and not card.is_toy and card.test_n == raw["metrics"]["n"]
    assert card.image_size == raw["input_shape"][0] and card.channels == 1
    if raw["positive_class"]:
        assert card.class_names[card.positive_index] == raw["positive_class"]
    else:
        assert card.positive_index is None


def test_minimal_card_gets_documented_defaults():
    card = ModelCard.from_dict({"name": "r", "class_names": ["a", "b"]})
    for key, default in DEFAULTS.items():
        assert card[key] == default, key
    card = ModelCard.from_dict(MINIMAL)
    assert card.schema_version == 1 and card.is_toy and card.test_n is None and card.run_dir is None
    assert card.metric("auc") is None and card.ci("accuracy") is None
    # defaults are copies: changing one card's never changes another's
    card.tta.append("hflip")
    assert ModelCard.from_dict(MINIMAL).tta == [] and DEFAULTS["tta"] == []


def test_to_dict_writes_the_schema_version_and_keeps_unknown_keys():
    raw = {**_raw("chest-xray-pneumonia"), "someone_elses_key": {"x": [1, 2]}, "run_dir": "/somewhere"}
    before = json.dumps(raw, sort_keys=True)
    card = ModelCard.from_dict(raw)
    assert json.dumps(raw, sort_keys=True) == before  # the input is not changed
    out = card.to_dict()
    assert out["schema_version"] == CARD_SCHEMA_VERSION == 2
    assert out["someone_elses_key"] == {"x": [1, 2]} and card["someone_elses_key"] == {"x": [1, 2]}
    assert "run_dir" not in out and card.run_dir == "/somewhere"
    again = ModelCard.from_dict(json.loads(json.dumps(out)))
    assert again.schema_version == 2 and again.to_dict() == out
    assert json.loads(json.dumps(card))["name"] == "chest-xray-pneumonia"  # a dict: serialisable as it is


def test_schema_2_fields_are_read():
    d = {**MINIMAL, "schema_version": 2, "bundled": True, "threshold": 1,
         "intended_use": {"summary": "Adult frontal chest films", "modalities": ["CR", "DX"], "body_parts": ["CHEST"],
                          "population": "adults", "not_for": ["children", "lateral films"]},
         "training_data": "3,600 films from one hospital", "calibration": {"method": "temperature", "temperature": 1.7},
         "ood": {"method": "mahalanobis", "threshold": 12.5}, "pretrained": "ImageNet (Keras applications)"}
    card = ModelCard.from_dict(d)
    assert card.intended_use["modalities"] == ["CR", "DX"] and card.training_data.startswith("3,600")
    assert card.calibration["temperature"] == 1.7 and card.ood["threshold"] == 12.5
    assert card.pretrained.startswith("ImageNet") and card.is_bundled
    assert card.threshold == 1.0 and isinstance(card.threshold, float)


@pytest.mark.parametrize("patch,fragment", [
    ({"created": 12345}, "'created' must be an ISO date"),
    ({"created": "yesterday"}, "'created' must be an ISO date"),
    ({"name": None}, "'name' must be a text"),
    ({"name": "../etc"}, "not a valid run name"),
    ({"class_names": [0, 1]}, "'class_names' must be a list of at least 2"),
    ({"class_names": ["only"]}, "'class_names' must be a list of at least 2"),
    ({"class_names": "ab"}, "'class_names' must be a list"),
    ({"class_names": ["a", "a"]}, "must not repeat"),
    ({"threshold": "0.5"}, "'threshold' must be a number between 0 and 1 or null (found the text '0.5')"),
    ({"threshold": 1.5}, "'threshold' must be a number between 0 and 1"),
    ({"threshold": True}, "'threshold' must be a number"),
    ({"threshold": float("nan")}, "'threshold' must be a number"),
    ({"positive_class": "c"}, "'positive_class' must be one of"),
    ({"input_shape": [64, 32, 1]}, "'input_shape' must be [size, size, 1 or 3]"),
    ({"input_shape": [64, 64, 4]}, "'input_shape'"),
    ({"input_shape": "64"}, "'input_shape'"),
    ({"tta": "hflip"}, "'tta' must be a list"),
    ({"metrics": []}, "'metrics' must be an object"),
    ({"metrics": {"n": "12"}}, "'metrics.n' must be a whole number"),
    ({"metrics": {"accuracy": "high"}}, "'metrics.accuracy' must be a number"),
    ({"metrics": {"ci95": {"accuracy": [0.5]}}}, "'metrics.ci95.accuracy'"),
    ({"config": None}, "'config' must be an object"),
    ({"dataset": {"counts": {"test": {"a": -1}}}}, "'dataset.counts'"),
    ({"ensemble": {"members": 1}}, "'ensemble.members'"),
    ({"bundled": "yes"}, "'bundled' must be true or false"),
    ({"schema_version": 99}, "newer than this medclf reads"),
    ({"schema_version": "2"}, "'schema_version' must be a whole number"),
    ({"intended_use": "chest"}, "'intended_use' must be an object"),
    ({"intended_use": {"modalities": "CR"}}, "'intended_use.modalities' must be a list"),
    ({"intended_use": {"modalities": ["<img src=x>"]}}, "DICOM Modality codes"),
    ({"training_data": 3}, "'training_data' must be a text"),
    ({"calibration": {"temperature": -1}}, "'calibration.temperature'"),
    ({"ood": [1]}, "'ood' must be an object"),
    ({"pretrained": 1}, "'pretrained' must be a text or an object"),
])
def test_invalid_fields_are_refused_with_a_plain_reason(patch, fragment):
    with pytest.raises(CardError) as info:
        ModelCard.from_dict({**_raw("chest-xray-pneumonia"), **patch})
    assert isinstance(info.value, ModelError)  # shown as a message, never as a traceback
    assert fragment in str(info.value) and fragment in info.value.reason
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("d,fragment", [
    ([], "it must be a JSON object, not a list"),
    ("card", "it must be a JSON object"),
    (None, "it must be a JSON object, not null"),
    ({"class_names": ["a", "b"]}, "it has no 'name'"),
    ({"name": "r"}, "it has no 'class_names'"),
])
def test_a_card_that_is_not_a_card_is_refused(d, fragment):
    with pytest.raises(CardError, match=fragment):
        ModelCard.from_dict(d)


def test_card_text_that_is_not_json_is_refused():
    with pytest.raises(CardError, match="not valid JSON") as info:
        parse_card_text('{"name": "r",', source="of run 'r'")
    assert "of run 'r'" in str(info.value) and info.value.reason.startswith("not valid JSON")
    with pytest.raises(CardError, match="not valid JSON"):
        parse_card_text(b"\xff\xfe{}")
    with pytest.raises(CardError, match="nested too deeply|not valid JSON"):
        parse_card_text("[" * 100_000)
    assert parse_card_text(json.dumps(MINIMAL)).name == "r"


def test_importing_the_card_module_does_not_import_tensorflow():
    code = "import sys, medclf_core.registry.card, medclf_core.registry.store; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------- format_metric

@pytest.mark.parametrize("args,kwargs,expected", [
    ((1.0, (1.0, 1.0), 12), {}, "1.000 (n = 12, too few images for a reliable figure)"),
    ((0.5, (0.2, 0.8), 29), {}, "0.500 (n = 29, too few images for a reliable figure)"),
    ((0.964, (0.951, 0.977), 779), {}, "0.964 (95% CI 0.951-0.977, n = 779)"),
    ((1.0, (1.0, 1.0), 200), {}, "1.000 (n = 200)"),
    ((1.0, (0.99991, 1.0), 200), {}, "1.000 (n = 200)"),
    ((0.9, (0.85, 0.95), None), {}, "0.900 (95% CI 0.850-0.950)"),
    ((0.9, None, None), {}, "0.900"),
    ((0.9, None, 30), {}, "0.900 (n = 30)"),
    ((None, (0.1, 0.2), 50), {}, "n/a"),
    ((float("nan"), None, 50), {}, "n/a"),
    ((0.964, (0.951, 0.977), 779), {"pct": True}, "96.4% (95% CI 95.1%-97.7%, n = 779)"),
    ((0.9, [0.8, None], 40), {}, "0.900 (n = 40)"),
])
def test_format_metric(args, kwargs, expected):
    assert format_metric(*args, **kwargs) == expected


def test_format_metric_never_prints_a_zero_width_interval():
    for n in (None, 5, 30, 1000):
        for v in (0.0, 0.5, 1.0):
            text = format_metric(v, (v, v), n)
            assert f"{v:.3f}-{v:.3f}" not in text and f"({v:.3f}-" not in text


def test_card_format_metric_uses_its_own_n_and_interval():
    card = ModelCard.from_dict(_raw("brain-mri-tumour"))
    assert card.format_metric("accuracy") == "0.853 (95% CI 0.735-0.971, n = 34)"
    assert card.format_metric("sensitivity") == "0.905 (n = 34)"
    toy = ModelCard.from_dict({**MINIMAL, "metrics": {"n": 12, "accuracy": 1.0, "ci95": {"accuracy": [1.0, 1.0]}}})
    assert toy.is_toy and toy.format_metric("accuracy") == "1.000 (n = 12, too few images for a reliable figure)"


# ---------------------------------------------------------------------------- other-source evaluations

RESULT = {"n": 200, "class_names": ["NORMAL", "PNEUMONIA"], "accuracy": 0.7, "balanced_accuracy": 0.68, "auc": 0.81,
          "macro_f1": 0.66, "sensitivity": 0.95, "specificity": 0.64, "ece": 0.04, "threshold": 0.14,
          "positive_class": "PNEUMONIA", "ci95": {"accuracy": [0.64, 0.76], "auc": [0.75, 0.86]},
          "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "per_class": {}, "confusion_matrix": [[1, 2], [3, 4]],
          "split": "all", "dataset": "/data/hospital-b", "skipped": [{"file": "x", "error": "bad"}], "model": "m"}


def test_record_evaluation_writes_one_atomic_record(tmp_path):
    from datetime import UTC, datetime

    fp = "ab12cd34ef56" + "0" * 52
    path = record_evaluation(tmp_path, RESULT, dataset="hospital-b", fingerprint=fp)
    assert path.parent == tmp_path / "evaluations"
    assert path.name == f"{datetime.now(UTC).date().isoformat()}-ab12cd34ef56.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    rec = json.loads(path.read_text())
    assert rec["dataset"] == "hospital-b" and rec["fingerprint"] == fp and rec["n"] == 200
    assert rec["metrics"] == {"accuracy": 0.7, "balanced_accuracy": 0.68, "macro_f1": 0.66, "auc": 0.81,
                              "sensitivity": 0.95, "specificity": 0.64, "ece": 0.04}
    assert rec["ci95"] == RESULT["ci95"] and rec["threshold"] == 0.14 and rec["skipped"] == 1
    assert rec["medclf_version"] and datetime.fromisoformat(rec["date"]).tzinfo is not None
    assert "roc" not in rec and "confusion_matrix" not in rec  # a summary, not the whole result
    # the same data on the same day replaces that day's record
    assert record_evaluation(tmp_path, {**RESULT, "accuracy": 0.71}, dataset="hospital-b", fingerprint=fp) == path
    assert [e["metrics"]["accuracy"] for e in list_evaluations(tmp_path)] == [0.71]


def test_record_evaluation_without_ece_or_ci(tmp_path):
    result = {k: v for k, v in RESULT.items() if k not in ("ece", "ci95", "sensitivity", "specificity")}
    rec = json.loads(record_evaluation(tmp_path, result, dataset="d", fingerprint="f" * 64).read_text())
    assert "ece" not in rec["metrics"] and rec["ci95"] == {}


@pytest.mark.parametrize("result,kw,fragment", [
    ({}, {}, "no image count"),
    ({**RESULT, "n": 0}, {}, "no image count"),
    (RESULT, {"dataset": " "}, "dataset name"),
    (RESULT, {"fingerprint": "../"}, "fingerprint"),
])
def test_record_evaluation_refuses_what_it_cannot_record(tmp_path, result, kw, fragment):
    with pytest.raises(ModelError, match=fragment):
        record_evaluation(tmp_path, result, **{"dataset": "d", "fingerprint": "f" * 64, **kw})
    assert not (tmp_path / "evaluations").exists()


def test_record_evaluation_that_cannot_be_written_is_a_plain_error(tmp_path):
    with pytest.raises(ModelError, match="not a model run folder"):
        record_evaluation(tmp_path / "missing", RESULT, dataset="d", fingerprint="f" * 64)
    (tmp_path / "evaluations").write_text("a file where the folder should be")
    with pytest.raises(ModelError, match="could not be recorded"):
        record_evaluation(tmp_path, RESULT, dataset="d", fingerprint="f" * 64)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "evaluations").unlink()
        tmp_path.chmod(0o555)
        try:
            with pytest.raises(ModelError, match="could not be recorded"):
                record_evaluation(tmp_path, RESULT, dataset="d", fingerprint="f" * 64)
        finally:
            tmp_path.chmod(0o755)


def test_list_evaluations_skips_damaged_records_and_sorts_newest_first(tmp_path):
    assert list_evaluations(tmp_path) == []
    folder = tmp_path / "evaluations"
    folder.mkdir()
    good = {"dataset": "a", "n": 40, "metrics": {"accuracy": 0.9, "auc": None}, "ci95": {}, "date": "2026-01-02T00:00:00+00:00"}
    (folder / "2026-01-02-aaaa.json").write_text(json.dumps(good))
    (folder / "2026-03-01-bbbb.json").write_text(json.dumps({**good, "dataset": "b", "date": "2026-03-01T00:00:00+00:00"}))
    (folder / "2026-01-03-cccc.json").write_text("{not json")
    (folder / "2026-01-04-dddd.json").write_text("[]")
    (folder / "2026-01-05-eeee.json").write_text(json.dumps({"dataset": "c"}))  # no n, no metrics
    (folder / "2026-01-06-ffff.json").write_bytes(b"\xff\xfe")
    (folder / ".2026-01-07-tmp.json.123.tmp").write_text(json.dumps(good))
    (folder / "2026-01-08-gggg.json").mkdir()
    evals = list_evaluations(tmp_path)
    assert [e["dataset"] for e in evals] == ["b", "a"]
    assert evals[1]["file"] == "2026-01-02-aaaa.json" and evals[1]["metrics"] == {"accuracy": 0.9}


# ---------------------------------------------------------------------------- dataset fingerprint

def _dataset(root):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / f"{split}-{cls}.png").write_bytes(f"pixels of {split} {cls}".encode())
    return root


def test_dataset_fingerprint_follows_content_and_split(tmp_path):
    data = _dataset(tmp_path / "data")
    fp = dataset_fingerprint(data)
    assert len(fp) == 64 and fp == dataset_fingerprint(data) == dataset_fingerprint(str(data))
    test_fp = dataset_fingerprint(data, split="auto")
    assert test_fp == dataset_fingerprint(data, split="test") != fp
    (data / "train" / "a" / "train-a.png").write_bytes(b"changed")
    assert dataset_fingerprint(data) != fp
    assert dataset_fingerprint(data, split="test") == test_fp  # the test split did not change
    zipped = tmp_path / "data.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in sorted(data.rglob("*")):
            zf.write(f, f"data/{f.relative_to(data)}")
    assert dataset_fingerprint(zipped) == dataset_fingerprint(data)


def test_dataset_fingerprint_of_an_audit_is_the_training_fingerprint(tmp_path):
    from medclf_core.data.dataset import scan_dataset

    class Report:  # what audit_dataset returns carries the fingerprint training records in the card
        fingerprint = "c5dfcea607938d836090d147a3aef2b0b6b51c065914373c113978bbb8675757"

    assert dataset_fingerprint(Report()) == Report.fingerprint
    data = _dataset(tmp_path / "data")
    assert dataset_fingerprint(scan_dataset(data)) == dataset_fingerprint(data)
