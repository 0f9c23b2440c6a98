"""Background training jobs for the app: one at a time, state on disk, never Streamlit.

A job is a folder ``<jobs dir>/<job id>/``::

    config.json     {"job_id", "config" (TrainConfig fields), "models_dir", "created"}
    events.jsonl    the run's progress, written by training's EventLog (see medclf_core.events)
    status.json     {"state": queued|running|done|cancelled|failed, "message", "run_dir", ...}
    pid             the worker's process id
    cancel          present once a cancel was requested (training checks it after every batch)
    worker.log      the worker's stdout/stderr (for developers; never shown as a traceback)

The worker is a separate process, ``python -m medclf_core.jobs run <job dir>``, that
calls :func:`medclf_core.training.train`. Only one job runs at a time: ``<jobs dir>/lock``
holds the running job's id and pid; a lock whose process is gone is stale and is
taken over. Because everything lives on disk, a page switch, a browser reload or a
second browser tab sees the same job and its progress.

The jobs dir is ``$MEDCLF_JOBS_DIR``, else ``<models dir>/.jobs``.

Example::

    >>> job = start_job(TrainConfig(data="samples/datasets/chest_xray", epochs=2, image_size=64))  # doctest: +SKIP
    >>> job_progress(job)["state"]                                                                  # doctest: +SKIP
    'running'
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core.ensemble import check_members
from medclf_core.errors import DatasetError, MedclfError
from medclf_core.events import read_events
from medclf_core.registry import default_models_dir

JOBS_DIR_ENV = "MEDCLF_JOBS_DIR"
LOCK_FILE = "lock"
FINAL_STATES = ("done", "cancelled", "failed")
# A lock without a live pid is still honoured this long (the worker is being started).
LAUNCH_GRACE_S = 20.0
PHASE_NAMES = {"train": "training", "fine_tune": "fine-tuning", "features": "computing backbone features"}


class JobBusy(MedclfError):
    """Another training job is running; the message names it."""


def jobs_dir(models_dir: str | os.PathLike | None = None) -> Path:
    env = os.environ.get(JOBS_DIR_ENV)
    if env:
        return Path(env)
    return Path(models_dir or default_models_dir()) / ".jobs"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that was not reaped yet is a zombie: not alive for our purposes.
    with contextlib.suppress(OSError, ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


# ---------------------------------------------------------------------------- lock

def _lock_path(root: Path) -> Path:
    return root / LOCK_FILE


def read_lock(root: Path) -> dict | None:
    """The lock's content, or None when there is no valid lock (stale locks are removed)."""
    path = _lock_path(root)
    info = _read_json(path)
    if info is None:
        if path.exists():
            # Half-written or damaged; honour it briefly, then treat as stale.
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > LAUNCH_GRACE_S:
                    path.unlink()
                    return None
            return {"job_id": "?", "pid": None}
        return None
    pid = info.get("pid")
    if pid_alive(pid):
        return info
    if pid is None and time.time() - float(info.get("time", 0)) < LAUNCH_GRACE_S:
        return info  # being launched
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _take_lock(root: Path, job_id: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(_lock_path(root), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(root)
            if holder is None:
                continue  # stale lock removed: try again
            raise JobBusy(_busy_message(root, holder)) from None
        with os.fdopen(fd, "w") as f:
            json.dump({"job_id": job_id, "pid": None, "time": time.time()}, f)
        return
    raise JobBusy("Another training job is starting; try again in a moment.")


def _busy_message(root: Path, holder: dict) -> str:
    job_id = holder.get("job_id", "?")
    cfg = _read_json(root / job_id / "config.json", {}) or {}
    config = cfg.get("config") or {}
    what = f"'{config['name']}'" if config.get("name") else f"a run on '{Path(str(config.get('data', '?'))).name}'"
    started = cfg.get("created", "")
    return (f"A training job is already running: {what} (job {job_id}{', started ' + started if started else ''}). "
            "Only one job runs at a time; wait for it to finish or cancel it.")


def _release_lock(root: Path, job_id: str) -> None:
    info = _read_json(_lock_path(root))
    if info is not None and info.get("job_id") == job_id:
        with contextlib.suppress(OSError):
            _lock_path(root).unlink()


# ---------------------------------------------------------------------------- jobs

def new_job_id(name: str | None = None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def _check_test_time_views(config: dict) -> None:
    """Refuse test-time views the augmentation does not support now, not in the worker."""
    from medclf_core.augment import AugmentConfig
    from medclf_core.tta import check_views

    augment = config.get("augment", "auto")
    try:
        flips = (AugmentConfig.from_dict(augment) if isinstance(augment, dict)
                 else None if augment == "auto" else AugmentConfig.preset(augment))
        check_views(config.get("tta"), horizontal_flip_trained=flips.horizontal_flip if flips else None)
    except ValueError as exc:
        raise MedclfError(str(exc)) from None


def start_job(cfg, models_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
              python: str | None = None) -> str:
    """Launch training in a background process and return the job id.

    ``cfg`` is a :class:`medclf_core.training.TrainConfig` or a dict of its fields.
    Raises :class:`JobBusy` (naming the running job) when one is running, and
    :class:`MedclfError` for a configuration that cannot start.
    """
    from medclf_core.training import TrainConfig

    config = asdict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise MedclfError(f"Unknown training option(s): {', '.join(unknown)}.")
    if not config.get("data"):
        raise DatasetError("Choose a dataset first.")
    data_path = Path(str(config["data"])).expanduser()
    if not data_path.exists():
        raise DatasetError(f"Dataset not found: {config['data']} is not a folder or a zip file.")
    config["data"] = str(data_path.resolve())  # the worker runs from the repository root
    _check_test_time_views(config)
    try:
        check_members(config.get("ensemble", 1))
    except ValueError as exc:
        raise MedclfError(str(exc)) from None
    models_dir = Path(models_dir or default_models_dir()).resolve()
    if config.get("name"):
        from medclf_core.registry import check_run_name

        check_run_name(config["name"])
        if (models_dir / config["name"]).exists():
            raise MedclfError(f"A model named '{config['name']}' already exists; choose another run name.")
    root = Path(root) if root else jobs_dir(models_dir)
    job_id = new_job_id()
    _take_lock(root, job_id)
    try:
        jobdir = root / job_id
        jobdir.mkdir(parents=True)
        _write_json(jobdir / "config.json", {"job_id": job_id, "config": config, "models_dir": str(models_dir),
                                             "created": datetime.now(UTC).isoformat(timespec="seconds")})
        _write_json(jobdir / "status.json", {"state": "queued", "time": time.time()})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONUNBUFFERED": "1"}
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(jobdir / "worker.log", "ab") as log:
            proc = subprocess.Popen([python or sys.executable, "-m", "medclf_core.jobs", "run", str(jobdir)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=repo, start_new_session=True)
        (jobdir / "pid").write_text(str(proc.pid))
        _write_json(_lock_path(root), {"job_id": job_id, "pid": proc.pid, "time": time.time()})
    except BaseException:
        _release_lock(root, job_id)
        raise
    return job_id


def job_dir(job_id: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root) if root else jobs_dir()
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise MedclfError(f"'{job_id}' is not a job id.")
    return root / job_id


def list_jobs(root: str | os.PathLike | None = None) -> list[str]:
    """Job ids, newest first."""
    root = Path(root) if root else jobs_dir()
    if not root.is_dir():
        return []
    return sorted((d.name for d in root.iterdir() if d.is_dir() and (d / "config.json").is_file()), reverse=True)


def running_job(root: str | os.PathLike | None = None) -> str | None:
    """The id of the job holding the lock, if its worker is alive (or being started)."""
    root = Path(root) if root else jobs_dir()
    info = read_lock(root)
    return info.get("job_id") if info else None


def latest_job(root: str | os.PathLike | None = None) -> str | None:
    return running_job(root) or next(iter(list_jobs(root)), None)


def cancel_job(job_id: str, root: str | os.PathLike | None = None) -> None:
    """Ask the job to stop; training stops after the current batch and saves nothing."""
    d = job_dir(job_id, root)
    if d.is_dir():
        (d / "cancel").touch()


def wait_for_job(job_id: str, root: str | os.PathLike | None = None, timeout: float = 600, poll: float = 0.5) -> dict:
    deadline = time.time() + timeout
    while True:
        p = job_progress(job_id, root)
        if p["state"] in FINAL_STATES or time.time() > deadline:
            return p
        time.sleep(poll)


def job_progress(job_id: str, root: str | os.PathLike | None = None) -> dict:
    """Everything the Train page shows about a job, from its files alone.

    Keys: ``job_id, name, state (queued|running|done|cancelled|failed), message, phase,
    epoch, epochs, batch, batches, eta_s, fraction, history (per-epoch metrics),
    audit, split, notices, run_dir, metrics, config, created, cancel_requested``.
    """
    d = job_dir(job_id, root)
    cfg = _read_json(d / "config.json", {}) or {}
    status = _read_json(d / "status.json", {}) or {}
    events = read_events(d / "events.jsonl")
    out = {"job_id": job_id, "name": (cfg.get("config") or {}).get("name"), "config": cfg.get("config", {}),
           "created": cfg.get("created"), "state": status.get("state", "queued"), "message": status.get("message"),
           "phase": "starting", "epoch": 0, "epochs": (cfg.get("config") or {}).get("epochs"), "batch": 0,
           "batches": None, "eta_s": None, "history": [], "audit": None, "split": None, "notices": [],
           "run_dir": status.get("run_dir"), "metrics": status.get("metrics"),
           "cancel_requested": (d / "cancel").exists(), "devices": None, "images_per_s": None}
    for ev in events:
        kind = ev.get("event")
        if kind == "start":
            out["phase"] = "checking the dataset"
            out["epochs"] = (ev.get("config") or {}).get("epochs", out["epochs"])
        elif kind == "audit":
            out["audit"] = {k: ev.get(k) for k in ("counts", "warnings", "unreadable", "duplicate_groups",
                                                   "near_duplicate_groups")}
        elif kind == "split":
            out["split"] = ev.get("counts")
            out["phase"] = "building the model"
        elif kind == "devices":
            out["devices"] = ev.get("description")
        elif kind == "notice":
            out["notices"].append(ev.get("message"))
        elif kind == "epoch_begin":
            out["phase"] = PHASE_NAMES.get(ev.get("phase", "train"), "training")
            if ev.get("members"):
                out["phase"] += f" model {ev['member']} of {ev['members']}"
                out["member"], out["members"] = ev["member"], ev["members"]
            out["epoch"], out["epochs"], out["batch"] = ev.get("epoch", 0), ev.get("epochs", out["epochs"]), 0
        elif kind == "batch":
            out["epoch"], out["epochs"] = ev.get("epoch", out["epoch"]), ev.get("epochs", out["epochs"])
            out["batch"], out["batches"], out["eta_s"] = ev.get("batch", 0), ev.get("batches"), ev.get("eta_s")
        elif kind == "epoch":
            member = ev.get("member")  # ensembles: one curve per member; a resumed epoch replaces its record
            out["history"] = [h for h in out["history"] if h.get("member") != member or h["epoch"] < ev.get("epoch", 0)]
            out["history"].append({"epoch": ev.get("epoch"), **(ev.get("metrics") or {}),
                                   **({"member": member} if member else {})})
            out["eta_s"] = ev.get("eta_s")
            out["images_per_s"] = ev.get("images_per_s") or out["images_per_s"]
            if out["batches"]:
                out["batch"] = out["batches"]
        elif kind == "evaluate":
            out["phase"] = f"evaluating on the {ev.get('split')} split"
        elif kind == "done":
            out["run_dir"], out["name"], out["metrics"] = ev.get("run_dir"), ev.get("name"), ev.get("metrics")
        elif kind in ("error", "cancelled"):
            out["message"] = out["message"] or ev.get("message")
    # A worker that died without writing a final state (killed, out of memory) is a failure.
    if out["state"] not in FINAL_STATES:
        pid = _read_int(d / "pid")
        started = float(status.get("time", 0) or 0)
        if pid is not None and not pid_alive(pid):
            out["state"] = "failed"
            out["message"] = ("The training process stopped unexpectedly (it may have run out of memory "
                              "or been killed). Nothing was saved.")
        elif pid is None and time.time() - started > LAUNCH_GRACE_S * 3:
            out["state"] = "failed"
            out["message"] = "The training process never started."
    if out["state"] == "done":
        out["phase"] = "finished"
    elif out["state"] in ("cancelled", "failed"):
        out["phase"] = out["state"]
    epochs = out["epochs"] or 0
    if out["state"] == "done":
        out["fraction"] = 1.0
    elif epochs:
        within = (out["batch"] / out["batches"]) if out["batches"] else 0.0
        member, members = out.get("member", 1), out.get("members", 1)  # ensembles: models train one after another
        done = ((max(out["epoch"], 1) - 1) + within) / epochs if out["epoch"] else 0.0
        out["fraction"] = float(np.clip((member - 1 + done) / members, 0.0, 1.0))
    else:
        out["fraction"] = 0.0
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


# ---------------------------------------------------------------------------- datasets for the app

def audit_source(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> dict:
    """Scan and audit a dataset folder or zip; a JSON-ready summary for the Train page.

    Keys: ``root`` (the folder to train on; the extracted folder for a zip),
    ``class_names, presplit, counts, imbalance_ratio, unreadable, duplicate_groups,
    near_duplicate_groups, cross_split_duplicates, warnings, n_images``.
    Raises :class:`DatasetError` with a plain message.
    """
    from medclf_core.data import audit_dataset, scan_dataset

    index = scan_dataset(source, extract_to=extract_to)
    report = audit_dataset(index)
    d = report.to_dict()
    imbalance = d["imbalance_ratio"]
    return {"root": index.root, "name": index.name, "class_names": index.class_names, "presplit": index.presplit,
            "counts": d["counts"], "imbalance_ratio": imbalance if np.isfinite(imbalance) else None,
            "unreadable": d["unreadable"], "duplicate_groups": d["duplicate_groups"],
            "near_duplicate_groups": d["near_duplicate_groups"],
            "cross_split_duplicates": d["cross_split_duplicates"], "skipped": d["skipped"],
            "warnings": report.warnings(), "n_images": sum(sum(v.values()) for v in d["counts"].values())}


def run_test_predictions(card: dict, evaluation: dict | None) -> dict | None:
    """The stored test-split predictions of a run (evaluation.json) in :func:`medclf_core.inference.predict_folder`'s shape."""
    preds = (evaluation or {}).get("predictions") or []
    names = list(card.get("class_names") or [])
    if not preds or not names:
        return None
    source = Path(str((card.get("dataset") or {}).get("source", "")))
    rows = [p for p in preds if p.get("label") in names]
    if not rows:
        return None
    return {"files": [str(source / p["file"]) for p in rows], "rel": [p["file"] for p in rows],
            "y_true": np.array([names.index(p["label"]) for p in rows], dtype=int),
            "probs": np.array([p["probabilities"] for p in rows], dtype=np.float64), "skipped": [],
            "split": (evaluation or {}).get("split", "test"), "class_names": names, "dataset": str(source)}


# ---------------------------------------------------------------------------- the worker

def run_worker(jobdir: str | os.PathLike) -> int:
    """Body of the background process: train, then record the outcome in status.json."""
    from medclf_core.errors import TrainingCancelled
    from medclf_core.events import EventLog

    jobdir = Path(jobdir)
    root = jobdir.parent
    job_id = jobdir.name
    spec = _read_json(jobdir / "config.json", {}) or {}
    cancel_file = jobdir / "cancel"
    _write_json(jobdir / "status.json", {"state": "running", "time": time.time(), "pid": os.getpid()})
    log = EventLog(jobdir / "events.jsonl")

    def stop_on_term(signum, frame):  # a polite kill counts as a cancel
        cancel_file.touch()

    signal.signal(signal.SIGTERM, stop_on_term)
    state: dict = {"state": "failed", "message": "Training stopped for an unknown reason."}
    try:
        if cancel_file.exists():
            log.emit("cancelled", message="Training was cancelled; no model was saved.")
            state = {"state": "cancelled", "message": "Training was cancelled before it started; no model was saved."}
            return 0
        from medclf_core.training import TrainConfig, train

        cfg = TrainConfig(**spec["config"])
        run_dir = train(cfg, models_dir=spec.get("models_dir"), events=log, cancel=cancel_file.exists)
        from medclf_core.registry import read_card

        card = read_card(run_dir)
        state = {"state": "done", "run_dir": str(run_dir), "name": card.get("name"), "metrics": card.get("metrics"),
                 "message": f"Training finished: model '{card.get('name')}' is registered."}
        return 0
    except TrainingCancelled:
        state = {"state": "cancelled", "message": "Training was cancelled; no model was saved."}
        return 0
    except MedclfError as exc:
        state = {"state": "failed", "message": str(exc)}
        return 1
    except MemoryError:
        state = {"state": "failed", "message": "Training ran out of memory. Try a smaller batch size or image size."}
        return 1
    except Exception as exc:  # a bug: the full traceback goes to worker.log, a plain line to the UI
        import traceback

        traceback.print_exc()
        text = str(exc)
        if "OOM" in text or "ResourceExhausted" in type(exc).__name__:
            msg = "Training ran out of memory. Try a smaller batch size or image size."
        else:
            msg = f"Training failed unexpectedly ({type(exc).__name__}: {text[:300]})."
        state = {"state": "failed", "message": msg}
        return 1
    finally:
        _write_json(jobdir / "status.json", {**state, "time": time.time()})
        _release_lock(root, job_id)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m medclf_core.jobs run JOB_DIR", file=sys.stderr)
        return 2
    return run_worker(argv[1])


if __name__ == "__main__":
    sys.exit(main())
