"""Distributed training on CPU: MirroredStrategy over logical CPU devices, MultiWorkerMirroredStrategy over
two local worker processes on loopback ports (TF_CONFIG), and resuming a multi-worker run after a worker died.

Each run happens in fresh processes: logical devices and collective ops must be set up before TF initialises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, TINY, make_pattern_dataset

from medclf_core.training.devices import free_local_ports
from medclf_core.training.events import read_events
from medclf_core.io.atomic import read_json
from medclf_core.registry.store import list_runs

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _train_cmd(data: Path, models: Path, events: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medclf_core", "train", str(data), "--models-dir", str(models),
            "--events", str(events), "--no-progress", "--json", *extra]


class Workers:
    """Start the same train command as N workers of one TF_CONFIG cluster on loopback; always stopped."""

    def __init__(self, tmp: Path, n: int = 2):
        self.tmp, self.n, self.procs = tmp, n, []

    def start(self, data: Path, models: Path, *extra: str, tag: str = "a") -> list[Path]:
        ports = free_local_ports(self.n)
        events = []
        for i in range(self.n):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": i}}
            ev = self.tmp / f"events-{i}.jsonl"
            log = open(self.tmp / f"worker-{i}-{tag}.log", "w")  # noqa: SIM115 (closed with the process)
            proc = subprocess.Popen(_train_cmd(data, models, ev, *extra), cwd=REPO, stdout=log, stderr=log,
                                    env={**ENV, "TF_CONFIG": json.dumps(tf_config)})
            self.procs.append((proc, log))
            events.append(ev)
        return events

    def wait(self, timeout: float) -> list[int]:
        deadline = time.time() + timeout
        codes = []
        for proc, _ in self.procs[-self.n:]:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.time())))
        return codes

    def log(self, i: int, tag: str = "a") -> str:
        return (self.tmp / f"worker-{i}-{tag}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    """Same recipe (global batch 16; learning rate 1e-3 per replica, scaled linearly) on one and on two devices.

    Both runs go at once (one process each) to keep the wall time down on a small machine.
    """
    data = make_pattern_dataset(tmp_path / "p", n_per_class=60, size=32)
    common = ["--epochs", "10", "--image-size", "32", "--channels", "1", "--augment", "none"]
    cmds = {1: _train_cmd(data, tmp_path / "m1", tmp_path / "e1.jsonl", *common, "--batch-size", "16", "--lr", "2e-3"),
            2: _train_cmd(data, tmp_path / "m2", tmp_path / "e2.jsonl", *common, "--batch-size", "8", "--lr", "1e-3",
                          "--devices", "2")}
    procs = {}
    try:
        for n, cmd in cmds.items():
            procs[n] = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        outs = {n: p.communicate(timeout=420) for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for n, p in procs.items():
        assert p.returncode == 0, outs[n][1][-3000:]
    devices = [e for e in read_events(tmp_path / "e2.jsonl") if e["event"] == "devices"][0]
    assert devices["strategy"] == "mirrored" and devices["replicas"] == 2
    assert devices["global_batch_size"] == 16 and devices["learning_rate"] == pytest.approx(2e-3)
    epochs = [e for e in read_events(tmp_path / "e2.jsonl") if e["event"] == "epoch"]
    assert epochs and all(e["images_per_s"] > 0 for e in epochs)

    r1, r2 = (json.loads(outs[n][0].splitlines()[-1]) for n in (1, 2))
    card2 = read_json(Path(r2["run_dir"]), "card.json")
    assert card2["training"]["replicas"] == 2 and card2["training"]["images_per_s"] > 0

    def held_out_accuracy(r):  # validation and test pooled: 36 images
        v, t = r["validation_metrics"], r["metrics"]
        return (v["accuracy"] * v["n"] + t["accuracy"] * t["n"]) / (v["n"] + t["n"])

    a1, a2 = held_out_accuracy(r1), held_out_accuracy(r2)
    assert a1 >= 0.8 and a2 >= 0.8, (a1, a2, r1, r2)
    assert abs(a1 - a2) <= 0.15, (a1, a2)


def test_two_workers_train_one_model_and_register_one_run(tmp_path):
    data = make_pattern_dataset(tmp_path / "p", n_per_class=12, size=TINY)
    models = tmp_path / "models"
    with Workers(tmp_path) as workers:
        events = workers.start(data, models, "--epochs", "2", "--image-size", str(TINY), "--channels", "1",
                               "--batch-size", "4", "--name", "cluster-run")
        codes = workers.wait(timeout=420)
        assert codes == [0, 0], workers.log(0) + workers.log(1)
    runs = list_runs(models)
    assert [r["name"] for r in runs] == ["cluster-run"]
    assert not (models / ".work").exists()
    ev0, ev1 = read_events(events[0]), read_events(events[1])
    d0, d1 = ([e for e in ev if e["event"] == "devices"][0] for ev in (ev0, ev1))
    assert d0["strategy"] == d1["strategy"] == "multi_worker"
    assert d0["replicas"] == 2 and d0["workers"] == 2 and d0["global_batch_size"] == 8
    assert d0["chief"] and not d1["chief"]
    done0, done1 = ev0[-1], ev1[-1]
    assert done0["event"] == done1["event"] == "done"
    assert done1["registered"] is False and "registered" not in done0
    # one model: both workers hold the same weights, so they measure the same validation metrics
    e0, e1 = ([e["metrics"] for e in ev if e["event"] == "epoch"] for ev in (ev0, ev1))
    assert e0 == e1
    card = read_json(models / "cluster-run", "card.json")
    assert card["training"]["workers"] == 2 and card["training"]["strategy"] == "multi_worker"


def test_a_killed_worker_resumes_the_cluster_from_its_backup(tmp_path):
    data = make_pattern_dataset(tmp_path / "p", n_per_class=12, size=TINY)
    models = tmp_path / "models"
    args = ("--epochs", "3", "--image-size", str(TINY), "--channels", "1", "--batch-size", "4", "--name", "resumed")
    with Workers(tmp_path) as workers:
        events = workers.start(data, models, *args, tag="a")
        deadline = time.time() + 300
        killed = False
        while time.time() < deadline and not killed:
            if any(e["event"] == "epoch" and e["epoch"] >= 1 for e in read_events(events[1])):
                workers.procs[1][0].send_signal(signal.SIGKILL)
                killed = True
            elif any(p.poll() is not None for p, _ in workers.procs):
                break
            time.sleep(0.05)
        assert killed, "worker 1 finished or failed before it could be killed:\n" + workers.log(1)
        # Its peer cannot go on without it: it blocks in the next all-reduce (or fails after TF's health
        # check). A job scheduler restarts the whole cluster; here we stop worker 0 the same way.
        time.sleep(2)
        workers.procs[0][0].kill()
        for p, _ in workers.procs:
            p.wait()
        assert list_runs(models) == []  # nothing half-written is registered
        assert len(list((models / ".work").iterdir())) == 2  # one work folder per worker

        events = workers.start(data, models, *args, tag="b")
        codes = workers.wait(timeout=420)
        assert codes == [0, 0], workers.log(0, "b") + workers.log(1, "b")
    for ev in events:
        resumed = [e for e in read_events(ev) if e["event"] == "resumed"]
        assert resumed and resumed[-1]["epoch"] >= 2, resumed  # continued after the last finished epoch
    assert [r["name"] for r in list_runs(models)] == ["resumed"]
    history = read_json(models / "resumed", "history.json")
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert not (models / ".work").exists()
