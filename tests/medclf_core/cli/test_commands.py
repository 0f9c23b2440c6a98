"""medclf_core.cli.commands: the commands' JSON shape, exit codes, plain error messages, and what each
command asks of the core (``predict --cam --report`` decodes and explains each image once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY

from medclf_core.cli.commands import main


def _json_out(capsys) -> object:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_help_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "medclf_core", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    for word in ("audit", "train", "evaluate", "predict", "dataset layout"):
        assert word in res.stdout


def test_audit_json(chest_sample, capsys):
    assert main(["audit", str(chest_sample), "--json", "--no-progress"]) == 0
    out = _json_out(capsys)
    assert out["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert out["counts"]["all"] == {"NORMAL": 40, "PNEUMONIA": 40}
    for key in ("imbalance_ratio", "unreadable", "duplicate_groups", "near_duplicate_groups", "fingerprint"):
        assert key in out


@pytest.mark.slow
def test_train_json_then_evaluate_and_predict(chest_sample, sample_images, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["train", str(chest_sample), "--arch", "simple_cnn", "--epochs", "1", "--image-size", str(TINY),
                 "--channels", "1", "--batch-size", "16", "--name", "cli-run", "--models-dir", str(models),
                 "--json", "--no-progress"]) == 0
    out = _json_out(capsys)
    assert {"run_dir", "class_names", "metrics"} <= set(out)
    assert out["run_dir"] == str(models / "cli-run")

    assert main(["evaluate", "cli-run", str(chest_sample), "--models-dir", str(models), "--json", "--no-progress",
                 "--bootstrap", "50"]) == 0
    ev = _json_out(capsys)
    for key in ("n", "class_names", "accuracy", "per_class", "macro_f1", "auc", "confusion_matrix", "threshold",
                "sensitivity", "specificity"):
        assert key in ev, key
    assert ev["n"] == 80 and sum(map(sum, ev["confusion_matrix"])) == 80
    assert set(ev["per_class"]["NORMAL"]) == {"precision", "recall", "f1", "support"}

    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    files = [str(p) for p in sample_images[:2]] + [str(bad)]
    cams = tmp_path / "cams"
    assert main(["predict", str(models / "cli-run"), *files, "--json", "--cam", str(cams)]) == 2
    res = _json_out(capsys)
    assert [r["file"] for r in res] == files
    assert set(res[0]) >= {"file", "label", "probabilities"} and res[0]["label"] in ("NORMAL", "PNEUMONIA")
    assert sum(res[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(res[2]) == {"file", "file_label", "error"} and "not an image" in res[2]["error"]
    assert [r["file_label"] for r in res] == [Path(f).name for f in files]  # the safe label: no folders
    assert len(list(cams.glob("*.png"))) == 2

    assert main(["predict", str(models / "cli-run"), files[0], "--json"]) == 0
    capsys.readouterr()
    assert main(["list", "--models-dir", str(models), "--json"]) == 0
    assert [r["name"] for r in _json_out(capsys)] == ["cli-run"]


@pytest.mark.parametrize("argv,fragment", [
    (["audit", "/no/such/folder"], "Dataset not found"),
    (["evaluate", "no-such-run", "."], "No model run"),
    (["predict", "no-such-run", "x.png"], "No model run"),
])
def test_errors_are_one_line_messages(argv, fragment, capsys, tmp_path):
    assert main([*argv, *(["--models-dir", str(tmp_path)] if argv[0] != "audit" else [])]) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "x", "--arch", "nope"])
    assert info.value.code == 2


def test_train_refuses_a_bad_setting_before_training(chest_sample, tmp_path, capsys):
    models = tmp_path / "models"
    assert main(["train", str(chest_sample), "--name", "../evil", "--models-dir", str(models)]) == 1
    assert "not a valid run name" in capsys.readouterr().err
    assert main(["train", str(chest_sample), "--augment", "chest_xray", "--tta", "hflip",
                 "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err
    assert "laterality" in err and "Traceback" not in err
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"data": str(chest_sample), "epoch": 3}))
    assert main(["train", "--config", str(cfg_file)]) == 1
    assert f"Unknown training option(s) in {cfg_file}: epoch." in capsys.readouterr().err
    assert not models.exists()


def test_refit_trust_then_predict_and_evaluate_carry_ood_and_ece(trained_run, chest_sample, sample_images, tmp_path,
                                                                  capsys):
    from helpers import as_older_run

    models = tmp_path / "models"
    run = as_older_run(trained_run, models / "tiny-chest")  # a run from before the trust layer
    # before the refit: not checked, but the keys are there
    assert main(["predict", str(run), str(sample_images[0]), "--json"]) == 0
    (res,) = _json_out(capsys)
    assert res["ood"] is None and res["ood_score"] is None and res["ood_reason"] is None

    assert main(["refit-trust", "tiny-chest", str(chest_sample), "--models-dir", str(models), "--json",
                 "--no-progress"]) == 0
    out = _json_out(capsys)
    assert (run / "ood.npz").is_file() and out["ood"]["rule"].startswith("unfamiliar: 99th percentile")
    card = json.loads((run / "card.json").read_text())
    assert card["calibration"]["temperature"] == out["calibration"]["temperature"]
    assert card["ood"]["threshold"] == out["ood"]["threshold"] and card["threshold"] == out["threshold"]

    assert main(["predict", str(run), *map(str, sample_images[:2]), "--json"]) == 0
    res = _json_out(capsys)
    assert all(isinstance(r["ood"], bool) and isinstance(r["ood_score"], float) and "ood_reason" in r for r in res)
    assert all(isinstance(r["unfamiliar"], bool) and "unfamiliar_reason" in r for r in res)  # the caution tier

    assert main(["evaluate", str(run), str(chest_sample), "--json", "--no-progress", "--bootstrap", "0"]) == 0
    ev = _json_out(capsys)
    assert 0 <= ev["ece"] <= 1 and ev["n"] == 80
    o = ev["ood"]
    assert o["checked"] and o["n"] == 80 and 0 <= o["fraction_flagged"] <= 1 and "metrics_without_flagged" in o
    assert o["coverage"] == 1 - o["fraction_flagged"] and isinstance(o["n_unfamiliar"], int)
    # text output mentions both
    assert main(["evaluate", str(run), str(chest_sample), "--no-progress", "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert "Expected calibration error" in text and "Out of distribution:" in text
    assert main(["refit-trust", "tiny-chest", "--models-dir", str(models), "--no-progress"]) == 0  # DATA from card
    assert "Temperature" in capsys.readouterr().out


def test_evaluate_record_keeps_the_result_beside_the_model(trained_run, chest_sample, tmp_path, capsys):
    import shutil

    from medclf_core.registry.evaluations import list_evaluations

    run = tmp_path / "models" / "tiny"
    shutil.copytree(trained_run, run)
    assert main(["evaluate", str(run), str(chest_sample), "--json", "--bootstrap", "0", "--no-progress"]) == 0
    assert "recorded" not in _json_out(capsys) and not list_evaluations(run)  # only when asked
    assert main(["evaluate", str(run), str(chest_sample), "--json", "--bootstrap", "0", "--no-progress",
                 "--record"]) == 0
    result = _json_out(capsys)
    (record,) = list_evaluations(run)
    assert record["file"] == Path(result["recorded"]).name
    assert record["dataset"] == chest_sample.name and record["n"] == result["n"] == 80
    assert record["metrics"]["accuracy"] == pytest.approx(result["accuracy"])
    assert record["fingerprint"] and record["ood"]["checked"] is (result["ood"]["checked"])


def test_evaluate_group_pattern_resamples_patients_and_is_recorded(trained_run, chest_sample, tmp_path, capsys):
    import shutil

    from medclf_core.registry.evaluations import list_evaluations

    run = tmp_path / "models" / "tiny"
    shutil.copytree(trained_run, run)
    assert main(["evaluate", str(run), str(chest_sample), "--group-pattern", "person(", "--no-progress"]) == 2
    assert "--group-pattern is not a regular expression" in capsys.readouterr().err
    assert main(["evaluate", str(run), str(chest_sample), "--bootstrap", "50", "--no-progress",
                 "--group-pattern", r"^(IM|NORMAL2|person)"]) == 0
    out = capsys.readouterr().out
    assert "(resampling 3 patients or cases, not images)" in out and "Note: The patient pattern" not in out
    # a pattern that matches no name says so (walk-through, session 21: it was silently accepted)
    assert main(["evaluate", str(run), str(chest_sample), "--bootstrap", "50", "--no-progress",
                 "--group-pattern", r"zzz\d+"]) == 0
    out = capsys.readouterr().out
    assert "Note: The patient pattern matched none of the 80 file names" in out and "resampling" not in out
    assert main(["evaluate", str(run), str(chest_sample), "--json", "--bootstrap", "50", "--no-progress",
                 "--group-pattern", r"^(IM|NORMAL2|person)", "--record"]) == 0
    assert _json_out(capsys)["n_groups"] == 3
    (record,) = list_evaluations(run)
    assert record["n_groups"] == 3 and record["group_pattern"] == r"^(IM|NORMAL2|person)"


def test_predict_with_cam_and_report_decodes_and_explains_each_image_once(trained_run, sample_images, tmp_path,
                                                                          monkeypatch, capsys):
    """One decode and one heat map per image serve its prediction, its overlay PNG and its PDF report."""
    import medclf_core
    from medclf_core.inference.predictor import Predictor
    from medclf_core.io import images

    decoded: list[str] = []
    original_load = images.load_image

    def counting_load(path, *a, **k):
        decoded.append(Path(path).name)
        return original_load(path, *a, **k)

    # every module that bound load_image by name (the predictor, the reports) gets the counting one
    for module in [m for name, m in sys.modules.items() if name.startswith(medclf_core.__name__)]:
        if getattr(module, "load_image", None) is original_load:
            monkeypatch.setattr(module, "load_image", counting_load)
    explained: list[int] = []
    original_explain = Predictor.explain

    def counting_explain(self, imgs, *a, **k):
        explained.append(len(imgs))
        return original_explain(self, imgs, *a, **k)

    monkeypatch.setattr(Predictor, "explain", counting_explain)
    files = [str(p) for p in sample_images[:2]]
    cams, reports = tmp_path / "cams", tmp_path / "reports"
    assert main(["predict", str(trained_run), *files, "--cam", str(cams), "--report", str(reports), "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(Path(r["cam"]).is_file() and Path(r["report"]).is_file() for r in results)
    assert sorted(decoded) == sorted(Path(f).name for f in files)  # each file decoded once
    assert explained == [len(files)]  # one batch of maps, each image in it once


def test_evaluate_reports_what_deferring_gains(trained_run, chest_sample, capsys):
    """`evaluate --json` carries the "selective" entry; the text says what deferring 10% does, per ordering."""
    args = ["evaluate", str(trained_run), str(chest_sample), "--no-progress", "--bootstrap", "0"]
    assert main([*args, "--json"]) == 0
    sel = _json_out(capsys)["selective"]
    row = sel["orderings"]["confidence"]["table"][2]
    assert row["coverage"] == 0.9 and row["n_kept"] == 72 and sel["n"] == 80
    assert main(args) == 0
    text = capsys.readouterr().out
    from medclf_core.trust.selective import deferral_sentence
    for ordering in ("confidence", "unfamiliar"):
        line = deferral_sentence(sel, ordering)
        assert line.endswith("(n 72 of 80)") and line[0].upper() + line[1:] + "\n" in text
    assert "least confident" in text and "most unfamiliar" in text
