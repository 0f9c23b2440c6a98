"""medclf_core.cli.parser: the sub-commands' arguments, the train flags generated from TrainConfig, and
the arguments turned into a TrainConfig."""

from __future__ import annotations

import json

import pytest
from helpers import REPO

from medclf_core.cli.commands import main
from medclf_core.cli.parser import build_parser, parse_command_line, train_config_from_args, tta_views


def test_every_command_has_its_sub_parser_and_the_common_options():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"audit", "train", "evaluate", "predict", "refit-trust", "recalibrate", "export",
                             "export-lite", "list"}
    for name, sub in commands.items():
        dests = {a.dest for a in sub._actions}
        assert {"json", "no_progress"} <= dests, name
        assert ("models_dir" in dests) is (name != "audit"), name
    args = parser.parse_args(["predict", "run", "a.png", "b.dcm", "--cam", "maps", "--report", "pdfs"])
    assert (args.command, args.files, args.cam, args.report, args.cam_method, args.opacity) == (
        "predict", ["a.png", "b.dcm"], "maps", "pdfs", "gradcam", 0.45)


def test_tta_views():
    assert tta_views(None) is None and tta_views("none") == []
    assert tta_views("hflip,,vflip ") == ["hflip", "vflip"]


def test_a_config_file_that_is_not_one_json_object_is_refused_plainly(tmp_path, capsys):
    cfg_file = tmp_path / "c.json"
    for text in ("[1, 2]", "{not json"):
        cfg_file.write_text(text)
        assert main(["train", "--config", str(cfg_file)]) == 1
        err = capsys.readouterr().err
        assert str(cfg_file) in err and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 1
    assert "Cannot read the config file" in capsys.readouterr().err


def test_train_config_file_with_flag_overrides(tmp_path, chest_sample):

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

    from medclf_core.training import TrainConfig
    from medclf_core.training.devices import MIXED_PRECISION_CHOICES
    from medclf_core.trust.metrics import THRESHOLD_METHODS

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


def test_bundled_training_configs_are_valid():
    from medclf_core.models.architectures import ARCHITECTURES
    from medclf_core.registry.card import ModelCard

    configs = sorted((REPO / "configs").glob("*.json"))
    assert len(configs) >= 3
    for c in configs:
        cfg = train_config_from_args(build_parser().parse_args(["train", "--config", str(c)])).resolved()
        assert cfg.name == c.stem and cfg.arch in ARCHITECTURES
        # what the config declares for the card must read back as a valid card
        ModelCard.from_dict({"name": cfg.name, "class_names": ["a", "b"], "intended_use": cfg.intended_use,
                             "training_data": cfg.training_data})


def test_recalibrate_and_site_flags():
    """``recalibrate`` needs ``--site``; ``predict`` and ``evaluate`` take ``--site`` (None: the card's calibration)."""
    parser = build_parser()
    args = parser.parse_args(["recalibrate", "run", "data", "--site", "north"])
    assert (args.site, args.target_sensitivity, args.split) == ("north", 0.95, "all")
    with pytest.raises(SystemExit):
        parser.parse_args(["recalibrate", "run", "data"])
    assert parser.parse_args(["predict", "run", "a.png"]).site is None
    assert parser.parse_args(["evaluate", "run", "d", "--site", "x"]).site == "x"


def test_files_may_come_after_the_options(capsys):
    """Walk-through: `predict MODEL --models-dir D img.png` was refused with "unrecognized arguments: img.png"."""
    args = parse_command_line(["predict", "m", "a.png", "--models-dir", "D", "b.png", "--tta", "none", "c.png"])
    assert args.files == ["a.png", "b.png", "c.png"] and args.models_dir == "D" and args.tta == "none"
    assert parse_command_line(["export-lite", "--all", "a", "--stale", "b"]).models == ["a", "b"]
    with pytest.raises(SystemExit):
        parse_command_line(["predict", "m", "a.png", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_command_line(["evaluate", "m", "data", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
