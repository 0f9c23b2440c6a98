"""medclf_core.registry.evaluations: evaluations on other data, recorded beside the model and read back."""

from __future__ import annotations

import json
import os

import pytest

from medclf_core.errors import ModelError
from medclf_core.registry.evaluations import list_evaluations, record_evaluation

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
    assert rec["n_per_class"] == {"NORMAL": 3, "PNEUMONIA": 7}  # the matrix's rows: a sensitivity's own n
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
