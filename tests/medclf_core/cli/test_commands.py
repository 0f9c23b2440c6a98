"""medclf_core.cli.commands: the commands' JSON shape, exit codes and plain error messages."""

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
    assert set(res[2]) == {"file", "error"} and "not an image" in res[2]["error"]
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


def test_train_config_file_with_flag_overrides(tmp_path, chest_sample):
    from medclf_core.cli.commands import build_parser, train_config_from_args

    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"data": str(chest_sample), "arch": "bn_cnn", "epochs": 30, "image_size": 96,
                                    "model_options": {"filters": [8, 16]}, "description": "x"}))
    args = build_parser().parse_args(["train", "--config", str(cfg_file), "--epochs", "2"])
    cfg = train_config_from_args(args)
    assert cfg.arch == "bn_cnn" and cfg.epochs == 2 and cfg.image_size == 96 and cfg.model_options == {"filters": [8, 16]}
    assert cfg.val_split == 0.15  # TrainConfig default when neither file nor flag sets it
    cfg_file.write_text(json.dumps({"data": "x", "epoch": 3}))
    assert main(["train", "--config", str(cfg_file)]) == 1


def test_train_flags_are_generated_from_the_config_fields(chest_sample):
    from dataclasses import fields

    from medclf_core.cli.commands import build_parser, train_config_from_args
    from medclf_core.training.devices import MIXED_PRECISION_CHOICES
    from medclf_core.trust.metrics import THRESHOLD_METHODS
    from medclf_core.training import TrainConfig

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train_parser._actions}
    config_only = {"cache", "model_options", "intended_use", "training_data"}
    assert {f.name for f in fields(TrainConfig)} - config_only <= set(by_dest)
    assert by_dest["mixed_precision"].choices == list(MIXED_PRECISION_CHOICES)
    assert by_dest["threshold_method"].choices == list(THRESHOLD_METHODS)
    assert "(default: 0.15)" in by_dest["val_split"].help and "(default: 1337)" in by_dest["seed"].help
    # the historical flag names map onto their fields
    args = parser.parse_args(["train", str(chest_sample), "--lr", "0.01", "--fine-tune-lr", "1e-4", "--devices", "2",
                              "--memory-growth", "off", "--weights", "none", "--tta", "hflip", "--freeze-batchnorm",
                              "--image-size", "64", "--channels", "1"])
    cfg = train_config_from_args(args)
    assert (cfg.learning_rate, cfg.fine_tune_learning_rate, cfg.logical_devices) == (0.01, 1e-4, 2)
    assert cfg.memory_growth is False and cfg.weights is None and cfg.tta == ["hflip"] and cfg.freeze_batchnorm
    assert (cfg.image_size, cfg.channels, cfg.epochs, cfg.patience) == (64, 1, None, 8)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "x", "--mixed-precision", "fp8"])


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


def test_bundled_training_configs_are_valid():
    from medclf_core.models.architectures import ARCHITECTURES
    from medclf_core.registry.card import ModelCard
    from medclf_core.cli.commands import build_parser, train_config_from_args

    configs = sorted((REPO / "configs").glob("*.json"))
    assert len(configs) >= 3
    for c in configs:
        cfg = train_config_from_args(build_parser().parse_args(["train", "--config", str(c)])).resolved()
        assert cfg.name == c.stem and cfg.arch in ARCHITECTURES
        # what the config declares for the card must read back as a valid card
        ModelCard.from_dict({"name": cfg.name, "class_names": ["a", "b"], "intended_use": cfg.intended_use,
                             "training_data": cfg.training_data})


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
    assert (run / "ood.npz").is_file() and out["ood"]["rule"].startswith("99th percentile")
    card = json.loads((run / "card.json").read_text())
    assert card["calibration"]["temperature"] == out["calibration"]["temperature"]
    assert card["ood"]["threshold"] == out["ood"]["threshold"] and card["threshold"] == out["threshold"]

    assert main(["predict", str(run), *map(str, sample_images[:2]), "--json"]) == 0
    res = _json_out(capsys)
    assert all(isinstance(r["ood"], bool) and isinstance(r["ood_score"], float) and "ood_reason" in r for r in res)

    assert main(["evaluate", str(run), str(chest_sample), "--json", "--no-progress", "--bootstrap", "0"]) == 0
    ev = _json_out(capsys)
    assert 0 <= ev["ece"] <= 1 and ev["n"] == 80
    o = ev["ood"]
    assert o["checked"] and o["n"] == 80 and 0 <= o["fraction_flagged"] <= 1 and "metrics_without_flagged" in o
    # text output mentions both
    assert main(["evaluate", str(run), str(chest_sample), "--no-progress", "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert "Expected calibration error" in text and "Out of distribution:" in text
    assert main(["refit-trust", "tiny-chest", "--models-dir", str(models), "--no-progress"]) == 0  # DATA from card
    assert "Temperature" in capsys.readouterr().out


def test_evaluate_record_keeps_the_result_beside_the_model(trained_run, chest_sample, tmp_path, capsys):
    import shutil

    from medclf_core.registry.card import list_evaluations

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
