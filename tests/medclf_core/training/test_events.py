"""medclf_core.training.events: the event log, and the one fold of its events that the Train page and the CLI show."""

from __future__ import annotations

import pytest

from medclf_core.training.events import EventLog, TrainingProgress, fold_events, format_eta, read_events


def test_format_eta():
    assert format_eta(None) == "estimating..."
    assert format_eta(42.4) == "42 s"
    assert format_eta(125) == "2 min 05 s"
    assert format_eta(3 * 3600 + 60) == "3 h 01 min"


def test_event_log_round_trip_skips_a_line_being_written(tmp_path):
    seen = []
    log = EventLog(tmp_path / "e" / "events.jsonl", [seen.append])
    log.emit("start", config={"epochs": 2})
    log.emit("epoch_begin", epoch=1, epochs=2)
    with open(tmp_path / "e" / "events.jsonl", "a") as f:
        f.write('{"event": "batch", "ep')
    events = read_events(tmp_path / "e" / "events.jsonl")
    assert [e["event"] for e in events] == ["start", "epoch_begin"] == [e["event"] for e in seen]


def test_a_new_epoch_or_phase_shows_no_batch_until_its_first_one_ran():
    """Issue 16: the progress said "batch 0/4" at the start of every epoch; the first shown is now 1/N."""
    p = TrainingProgress(epochs=3)
    shown = []
    events = [{"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": "features"},
              {"event": "batch", "epoch": 1, "epochs": 1, "batch": 10, "batches": 10, "eta_s": 0, "phase": "features"},
              {"event": "epoch_begin", "epoch": 1, "epochs": 3, "phase": "train"},
              {"event": "batch", "epoch": 1, "epochs": 3, "batch": 1, "batches": 4, "eta_s": 9},
              {"event": "batch", "epoch": 1, "epochs": 3, "batch": 4, "batches": 4, "eta_s": 6},
              {"event": "epoch", "epoch": 1, "epochs": 3, "eta_s": 6, "metrics": {"loss": 0.5}},
              {"event": "epoch_begin", "epoch": 2, "epochs": 3, "phase": "train"},
              {"event": "batch", "epoch": 2, "epochs": 3, "batch": 1, "batches": 4, "eta_s": 5}]
    for ev in events:
        p.add(ev)
        shown.append(p.text())
    assert not any("batch 0/" in t for t in shown), shown
    assert shown[1] == "Computing backbone features: epoch 1/1, batch 10/10 · ETA 0 s"
    assert shown[2] == "Training: epoch 1/3 · ETA 0 s"  # not the features' 10/10, nor 0/4
    assert shown[3].startswith("Training: epoch 1/3, batch 1/4")
    assert shown[5].startswith("Training: epoch 1/3, batch 4/4")
    assert shown[6].startswith("Training: epoch 2/3 ·")
    assert shown[7].startswith("Training: epoch 2/3, batch 1/4")
    assert p.state["fraction"] == pytest.approx((1 + 1 / 4) / 3)
    assert p.state["history"] == [{"epoch": 1, "loss": 0.5}]


def test_the_fold_of_a_whole_log_and_its_summary():
    events = [{"event": "start", "config": {"epochs": 2}},
              {"event": "split", "counts": {"train": {"a": 3}}},
              {"event": "notice", "message": "Class weights: a 1.00"}]
    out = fold_events(events)
    assert out["phase"] == "building the model" and out["epochs"] == 2 and out["fraction"] == 0.0
    assert out["text"] == "Building the model ..." and out["notices"] == ["Class weights: a 1.00"]
    done = fold_events([*events, {"event": "done", "run_dir": "/m/r", "name": "r", "metrics": {"accuracy": 1.0}}])
    assert done["fraction"] == 1.0 and done["name"] == "r" and done["run_dir"] == "/m/r"


def test_the_cli_progress_printer_reads_the_same_fold(capsys, monkeypatch):
    import sys

    from medclf_core.cli.console import TrainProgressPrinter

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: bars (a pipe gets the epoch lines only)

    events = [{"event": "start", "config": {"epochs": 2}},
              {"event": "epoch_begin", "epoch": 1, "epochs": 2, "phase": "train"},
              {"event": "batch", "epoch": 1, "epochs": 2, "batch": 1, "batches": 3, "eta_s": 4.0,
               "metrics": {"loss": 0.7, "accuracy": 0.5}},
              {"event": "epoch", "epoch": 1, "epochs": 2, "eta_s": 3.0, "seconds": 1.0,
               "metrics": {"loss": 0.7, "accuracy": 0.5, "val_loss": 0.6, "val_accuracy": 0.5}},
              {"event": "epoch_begin", "epoch": 2, "epochs": 2, "phase": "train"}]
    printer = TrainProgressPrinter()
    for ev in events:
        printer(ev)
    assert printer.progress.state == {k: v for k, v in fold_events(events).items() if k != "text"}
    assert printer.bar.desc.startswith("Training: epoch 2/2")
    assert "Epoch 1/2: loss 0.7000" in capsys.readouterr().err
    printer({"event": "done"})


def test_the_outcome_is_the_last_final_event():
    assert fold_events([{"event": "start"}])["outcome"] is None
    p = fold_events([{"event": "start"}, {"event": "done", "run_dir": "r", "name": "n", "message": "registered"}])
    assert (p["outcome"], p["message"], p["phase"]) == ("done", "registered", "finished")
    p = fold_events([{"event": "error", "message": "first"}, {"event": "error", "message": "with the log's name"}])
    assert (p["outcome"], p["message"]) == ("failed", "with the log's name")
    assert fold_events([{"event": "cancelled", "message": "no model"}])["outcome"] == "cancelled"


def test_the_speed_says_what_it_counts():
    """Issue 26: '10069 images/s' was the classifier head's speed on cached backbone features, not images."""
    from medclf_core.training.events import fold_events

    def epoch(phase):
        return [{"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": phase},
                {"event": "epoch", "epoch": 1, "epochs": 1, "metrics": {}, "images_per_s": 10069.0, "phase": phase}]

    assert fold_events(epoch("train"))["speed"] == "10069 images/s"  # a model trained on images
    on_features = fold_events([{"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": "features"}, *epoch("train")])
    assert "images/s" not in on_features["speed"] and "cached backbone features" in on_features["speed"]
    fine_tuned = fold_events([{"event": "epoch_begin", "epoch": 1, "epochs": 1, "phase": "features"},
                              *epoch("train"), *epoch("fine_tune")])
    assert fine_tuned["speed"] == "10069 images/s"  # fine-tuning runs on images again


def test_a_cross_validated_run_says_its_split_only_fits_the_out_of_distribution_check():
    """Walk-through: a run on the 80-image sample showed 'Images per split' (56/12/12) as if its figures came
    from a 12-image test split; its classifier and figures use all 80 images by cross-validation."""
    from medclf_core.training.events import split_caption

    p = TrainingProgress(epochs=60)
    p.add({"event": "split", "counts": {"train": {"a": 28}, "val": {"a": 6}, "test": {"a": 6}}})
    assert split_caption(p.state) == "Images per split:"
    p.add({"event": "evaluate", "split": "cross-validation", "folds": 5, "n": 80})
    assert p.state["cross_validation"] == {"folds": 5, "n": 80} and "cross-validation" in p.state["phase"]
    words = split_caption(p.state)
    assert "use all 80 images (5-fold cross-validation" in words and "out-of-distribution check" in words
