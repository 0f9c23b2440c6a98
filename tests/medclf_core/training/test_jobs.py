"""Background training jobs: launch, progress, one-at-a-time, cancel, failure, stale locks."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import numpy as np
import pytest

from helpers import TINY, wait_for_job
from medclf_core.training import jobs
from medclf_core.reports import plots
from medclf_core.errors import DatasetError, MedclfError
from medclf_core.registry.store import list_runs
from medclf_core.training.events import read_events


def _wait(pred, timeout=120.0, poll=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out")


@pytest.mark.slow

def _run_worker_in_this_process(job_dir) -> int:
    """jobs.run_worker here, with pytest's SIGTERM handler put back afterwards (the worker installs its own)."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return jobs.run_worker(job_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)

def test_job_runs_refuses_a_second_and_cancels_then_a_new_one_completes(tmp_path, pattern_dataset):
    models, root = tmp_path / "models", tmp_path / "jobs"
    long_cfg = {"data": str(pattern_dataset), "epochs": 300, "image_size": TINY, "channels": 1, "batch_size": 2,
                "name": "long-run", "augment": "none"}
    job = jobs.start_job(long_cfg, models_dir=models, root=root)
    assert jobs.running_job(root) == job

    with pytest.raises(jobs.JobBusy, match="long-run"):
        jobs.start_job({**long_cfg, "name": "second"}, models_dir=models, root=root)

    p = _wait(lambda: (q := jobs.job_progress(job, root))["batch"] > 0 and q, timeout=150)
    assert p["state"] == "running" and p["epochs"] == 300 and 0 <= p["fraction"] < 1
    assert p["audit"]["counts"] and p["split"]

    jobs.cancel_job(job, root)
    p = wait_for_job(job, root, timeout=60)
    assert p["state"] == "cancelled", p
    assert "no model was saved" in p["message"]
    assert list_runs(models) == []
    assert not (models / ".work").exists() or not any((models / ".work").iterdir())
    assert jobs.running_job(root) is None

    short = jobs.start_job({"data": str(pattern_dataset), "epochs": 2, "image_size": TINY, "channels": 1,
                            "batch_size": 8, "name": "short-run"}, models_dir=models, root=root)
    p = wait_for_job(short, root, timeout=180)
    assert p["state"] == "done", p
    assert p["fraction"] == 1.0 and len(p["history"]) == 2
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(p["history"][0])
    assert [r["name"] for r in list_runs(models)] == ["short-run"]
    assert p["run_dir"].endswith("short-run") and p["metrics"]["accuracy"] is not None
    assert jobs.list_jobs(root) == [short, job]
    assert jobs.latest_job(root) == short


def test_a_failing_job_reports_a_plain_reason(tmp_path, pattern_dataset):
    """The worker's body, run in this process: a class folder without images fails with a plain message."""
    (pattern_dataset / "empty-class").mkdir()
    for f in (pattern_dataset / "square").iterdir():
        f.unlink()
    (pattern_dataset / "square").rmdir()
    root = tmp_path / "jobs"
    d = root / "j-fail"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"job_id": "j-fail", "models_dir": str(tmp_path / "m"),
                                               "config": {"data": str(pattern_dataset), "epochs": 1,
                                                          "image_size": TINY}}))
    (root / jobs.LOCK_FILE).write_text(json.dumps({"job_id": "j-fail", "pid": os.getpid(), "time": time.time()}))
    assert _run_worker_in_this_process(d) == 1
    p = jobs.job_progress("j-fail", root)
    assert p["state"] == "failed", p
    assert "empty-class" in p["message"] and "Traceback" not in p["message"]
    assert jobs.running_job(root) is None  # the worker released the lock
    # one record of the outcome: the event log's last event (no status file beside it)
    assert read_events(d / "events.jsonl")[-1]["event"] == "error"
    assert sorted(f.name for f in d.iterdir()) == ["config.json", "events.jsonl"]


def _job_folder(root, job_id, config, **spec):
    d = root / job_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"job_id": job_id, "config": config, **spec}))
    return d


def test_the_outcome_is_the_event_logs_final_event(tmp_path):
    """done, cancelled or failed: the last final event decides (the worker adds one after training's, e.g. a
    pointer to its log); the worker's process only decides between queued, running and died."""
    root = tmp_path / "jobs"
    d = _job_folder(root, "j-done", {"data": "x", "epochs": 1})
    done = {"event": "done", "run_dir": "/m/r", "name": "r", "metrics": {"accuracy": 1.0},
            "message": "Training finished: model 'r' is registered."}
    (d / "events.jsonl").write_text(json.dumps({"event": "start", "config": {"epochs": 1}}) + "\n" + json.dumps(done) + "\n")
    p = jobs.job_progress("j-done", root)
    assert (p["state"], p["run_dir"], p["name"], p["metrics"]) == ("done", "/m/r", "r", {"accuracy": 1.0})
    assert p["message"] == done["message"] and p["fraction"] == 1.0

    d = _job_folder(root, "j-bug", {"data": "x"})
    (d / "pid").write_text(str(os.getpid()))  # alive: the outcome still wins over "running"
    (d / "events.jsonl").write_text(json.dumps({"event": "error", "message": "Training failed unexpectedly (x)."})
                                    + "\n" + json.dumps({"event": "error", "message": "see worker.log"}) + "\n")
    p = jobs.job_progress("j-bug", root)
    assert (p["state"], p["message"]) == ("failed", "see worker.log")

    d = _job_folder(root, "j-new", {"data": "x"})
    assert jobs.job_progress("j-new", root)["state"] == "queued"  # launched, no worker yet
    (d / "pid").write_text(str(os.getpid()))
    assert jobs.job_progress("j-new", root)["state"] == "running"
    old = time.time() - jobs.LAUNCH_GRACE_S * 4
    (d / "pid").unlink()
    os.utime(d / "config.json", (old, old))
    p = jobs.job_progress("j-new", root)
    assert p["state"] == "failed" and p["message"] == jobs.WORKER_NEVER_STARTED


def test_start_job_validates_once_and_the_worker_trusts_only_an_unchanged_config(tmp_path, pattern_dataset,
                                                                                  monkeypatch):
    """The stamp in config.json is the validation start_job did; a config edited after it is validated again
    (here: a run name that escapes the models folder is refused by the worker before any work)."""
    from medclf_core.training import TrainConfig

    models = (tmp_path / "m").resolve()
    cfg = TrainConfig(data=str(pattern_dataset), epochs=1, image_size=TINY, name="ok")
    stamp = cfg.validate(models).stamp(models)
    assert TrainConfig(**dataclasses.asdict(cfg)).trust_stamp(stamp, models).is_validated(models)
    edited = TrainConfig(**{**dataclasses.asdict(cfg), "name": "../evil"})
    assert not edited.trust_stamp(stamp, models).is_validated(models)
    assert not TrainConfig(**dataclasses.asdict(cfg)).trust_stamp(stamp, tmp_path / "other").is_validated(
        tmp_path / "other")

    root = tmp_path / "jobs"
    d = _job_folder(root, "j-edited", {**dataclasses.asdict(cfg), "name": "../evil"}, models_dir=str(models),
                    validated=stamp)
    assert _run_worker_in_this_process(d) == 1
    p = jobs.job_progress("j-edited", root)
    assert p["state"] == "failed" and "not a valid run name" in p["message"]
    assert [e["event"] for e in read_events(d / "events.jsonl")] == ["error"]  # refused before "start"


def test_bad_configs_are_refused_before_launch(tmp_path):
    root = tmp_path / "jobs"
    with pytest.raises(DatasetError):
        jobs.start_job({"data": ""}, models_dir=tmp_path, root=root)
    with pytest.raises(DatasetError, match="not found"):
        jobs.start_job({"data": str(tmp_path / "missing")}, models_dir=tmp_path, root=root)
    with pytest.raises(MedclfError, match="Unknown training option"):
        jobs.start_job({"data": str(tmp_path), "colour": 1}, models_dir=tmp_path, root=root)
    with pytest.raises(MedclfError, match="not a valid run name"):
        jobs.start_job({"data": str(tmp_path), "name": "../evil"}, models_dir=tmp_path, root=root)
    with pytest.raises(MedclfError, match="laterality"):
        jobs.start_job({"data": str(tmp_path), "augment": "chest_xray", "tta": ["hflip"]}, models_dir=tmp_path, root=root)
    with pytest.raises(MedclfError, match="number of models to average"):
        jobs.start_job({"data": str(tmp_path), "ensemble": 0}, models_dir=tmp_path, root=root)
    with pytest.raises(MedclfError, match="Unknown test-time augmentation"):
        jobs.start_job({"data": str(tmp_path), "tta": ["spin"]}, models_dir=tmp_path, root=root)
    (tmp_path / "taken").mkdir()
    with pytest.raises(MedclfError, match="already exists"):
        jobs.start_job({"data": str(tmp_path), "name": "taken"}, models_dir=tmp_path, root=root)
    assert not (root / jobs.LOCK_FILE).exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_is_taken_over(tmp_path):
    root = tmp_path / "jobs"
    root.mkdir()
    (root / jobs.LOCK_FILE).write_text(json.dumps({"job_id": "old", "pid": _dead_pid(), "time": 0}))
    assert jobs.running_job(root) is None
    assert not (root / jobs.LOCK_FILE).exists()
    (root / jobs.LOCK_FILE).write_text(json.dumps({"job_id": "me", "pid": os.getpid(), "time": time.time()}))
    assert jobs.running_job(root) == "me"
    with pytest.raises(jobs.JobBusy, match="job me"):
        jobs._take_lock(root, "other")


def test_a_worker_that_died_is_reported_as_failed(tmp_path):
    root = tmp_path / "jobs"
    d = root / "j1"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"job_id": "j1", "config": {"data": "x", "epochs": 3, "name": "n"}}))
    (d / "pid").write_text(str(_dead_pid()))
    with open(d / "events.jsonl", "w") as f:
        f.write(json.dumps({"event": "epoch_begin", "epoch": 1, "epochs": 3}) + "\n")
        f.write(json.dumps({"event": "batch", "epoch": 1, "epochs": 3, "batch": 2, "batches": 4, "eta_s": 9}) + "\n")
        f.write('{"event": "batch", "epo')  # a line being written
    p = jobs.job_progress("j1", root)
    assert p["state"] == "failed" and "stopped unexpectedly" in p["message"]
    assert p["epoch"] == 1 and p["batch"] == 2 and p["batches"] == 4


def test_progress_fraction_and_history_from_events(tmp_path):
    root = tmp_path / "jobs"
    d = root / "j2"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"job_id": "j2", "config": {"data": "x", "epochs": 4}}))
    (d / "pid").write_text(str(os.getpid()))
    events = [{"event": "start", "config": {"epochs": 4}},
              {"event": "devices", "description": "2 GPU(s): GPU:0, GPU:1"},
              {"event": "epoch_begin", "epoch": 1, "epochs": 4},
              {"event": "epoch", "epoch": 1, "epochs": 4, "eta_s": 30, "images_per_s": 812.5,
               "metrics": {"loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5}},
              {"event": "epoch_begin", "epoch": 2, "epochs": 4},
              {"event": "batch", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "eta_s": 25}]
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    p = jobs.job_progress("j2", root)
    assert p["state"] == "running" and p["phase"] == "training"
    assert p["fraction"] == pytest.approx(1.5 / 4)
    assert p["history"] == [{"epoch": 1, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5}]
    assert p["eta_s"] == 25
    assert p["devices"] == "2 GPU(s): GPU:0, GPU:1" and p["images_per_s"] == 812.5
    with pytest.raises(MedclfError):
        jobs.job_dir("../x", root)


def test_progress_of_a_seed_ensemble_keeps_one_curve_per_model(tmp_path):
    root = tmp_path / "jobs"
    d = root / "j3"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"job_id": "j3", "config": {"data": "x", "epochs": 2, "ensemble": 2}}))
    (d / "pid").write_text(str(os.getpid()))
    m = {"loss": 0.7, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5}
    events = [{"event": "member", "member": 1, "members": 2, "seed": 1},
              {"event": "epoch_begin", "epoch": 1, "epochs": 2, "member": 1, "members": 2},
              {"event": "epoch", "epoch": 1, "epochs": 2, "eta_s": 30, "metrics": m, "member": 1, "members": 2},
              {"event": "epoch", "epoch": 2, "epochs": 2, "eta_s": 20, "metrics": m, "member": 1, "members": 2},
              {"event": "member", "member": 2, "members": 2, "seed": 2},
              {"event": "epoch_begin", "epoch": 1, "epochs": 2, "member": 2, "members": 2},
              {"event": "epoch", "epoch": 1, "epochs": 2, "eta_s": 10, "metrics": m, "member": 2, "members": 2},
              {"event": "epoch_begin", "epoch": 2, "epochs": 2, "member": 2, "members": 2}]
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    p = jobs.job_progress("j3", root)
    assert p["phase"] == "training model 2 of 2"
    assert p["fraction"] == pytest.approx((1 + 0.5) / 2)  # model 2 of 2, epoch 2 of 2 just begun
    assert [(h["member"], h["epoch"]) for h in p["history"]] == [(1, 1), (1, 2), (2, 1)]
    assert {t.name for t in plots.training_curves(p["history"]).data} == {
        "model 1 train", "model 1 val", "model 2 train", "model 2 val"}


def test_jobs_dir_env(tmp_path, monkeypatch):
    monkeypatch.delenv(jobs.JOBS_DIR_ENV, raising=False)
    assert jobs.jobs_dir(tmp_path) == tmp_path / ".jobs"
    monkeypatch.setenv(jobs.JOBS_DIR_ENV, str(tmp_path / "j"))
    assert jobs.jobs_dir(tmp_path) == tmp_path / "j"


def test_predict_folder_and_stored_predictions(trained_run, chest_sample):
    from medclf_core.inference.folder import predict_folder
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(trained_run)
    data = predict_folder(predictor, chest_sample, "all")
    assert data["probs"].shape == (80, 2) and len(data["files"]) == 80 and data["split"] == "all"
    assert np.allclose(data["probs"].sum(axis=1), 1, atol=1e-4)
    assert set(data["y_true"].tolist()) == {0, 1}
    # the stored test predictions: registry.stored_test_predictions, tested in test_registry.py


def test_the_worker_module_starts_from_any_folder_without_pythonpath(tmp_path):
    """The job worker imports the installed package (pyproject.toml): start_job sets no PYTHONPATH."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "medclf_core.training.jobs"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "usage: python -m medclf_core.training.jobs run JOB_DIR" in res.stderr, res.stderr
