"""Background training jobs for the app: one at a time, state on disk, never Streamlit.

A job is a folder ``<jobs dir>/<job id>/``::

    config.json     {"job_id", "config" (TrainConfig fields), "models_dir", "created", "validated"}
    events.jsonl    the run's progress and its outcome, written by training's EventLog (see
                    medclf_core.training.events): the one record of what happened to the job
    pid             the worker's process id
    cancel          present once a cancel was requested (training checks it after every batch)
    worker.log      the worker's stdout/stderr (for developers; never shown as a traceback)

The worker is a separate process, ``python -m medclf_core.training.jobs run <job dir>``, that
calls :func:`medclf_core.training.train`. Only one job runs at a time: ``<jobs dir>/lock``
holds the running job's id and pid; a lock whose process is gone is stale and is
taken over. Because everything lives on disk, a page switch, a browser reload or a
second browser tab sees the same job and its progress.

The jobs dir is ``$MEDCLF_JOBS_DIR``, else ``<models dir>/.jobs``. What the Train page
shows of a job is :func:`job_progress`: the run's events folded by
:class:`medclf_core.training.events.TrainingProgress`, whose final event (``done``,
``cancelled``, ``error``) is the job's outcome; the worker's process decides only
between queued, running, and a worker that died without an outcome.

The settings are validated once, by :func:`start_job`; ``config.json``'s ``validated`` is
the stamp of that check (:meth:`medclf_core.training.TrainConfig.stamp`). The worker trusts
the settings it reads only when they still match it; a config changed or written by hand
since is validated again before any work.

Example::

    >>> from medclf_core.training import TrainConfig
    >>> start_job({"data": "samples/datasets/chest_xray", "colour": 1})
    Traceback (most recent call last):
    ...
    medclf_core.errors.MedclfError: Unknown training option(s): colour.
    >>> job = start_job(TrainConfig(data="samples/datasets/chest_xray", epochs=2, image_size=64))  # doctest: +SKIP
    >>> job_progress(job)["state"]                                                                  # doctest: +SKIP
    'running'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from medclf_core.errors import TRAINING_OUT_OF_MEMORY, MedclfError, TrainingCancelled, brief, is_out_of_memory
from medclf_core.io.stale import pid_alive
from medclf_core.training.config import TrainConfig
from medclf_core.training.events import FINAL_EVENTS, EventLog, fold_events, read_events
from medclf_core.training.run import train
from medclf_core.io.atomic import read_json, write_json
from medclf_core.registry.store import default_models_dir

JOBS_DIR_ENV = "MEDCLF_JOBS_DIR"
LOCK_FILE = "lock"
FINAL_STATES = ("done", "cancelled", "failed")
# A lock without a live pid is still honoured this long (the worker is being started).
LAUNCH_GRACE_S = 20.0


class JobBusy(MedclfError):
    """Another training job is running; the message names it."""


def jobs_dir(models_dir: str | os.PathLike | None = None) -> Path:
    env = os.environ.get(JOBS_DIR_ENV)
    if env:
        return Path(env)
    return Path(models_dir or default_models_dir()) / ".jobs"


def _read_json(path: Path, default=None):
    """The JSON in ``path`` (:func:`medclf_core.io.atomic.read_json`), or ``default`` when missing or damaged."""
    return read_json(path.parent, path.name, default)


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


def job_spec(job_id: str, root: str | os.PathLike | None = None) -> dict:
    """The job's ``config.json`` (``job_id, config, models_dir, created``); ``{}`` when missing or damaged.
    ``config`` is always a dict. Cheap: no event log is read."""
    try:
        cfg = _read_json(job_dir(job_id, root) / "config.json", {}) or {}
    except MedclfError:  # not a job id (a damaged lock file): nothing to read
        cfg = {}
    return {**cfg, "config": cfg.get("config") or {}}


def _busy_message(root: Path, holder: dict) -> str:
    job_id = holder.get("job_id", "?")
    cfg = job_spec(job_id, root)
    config = cfg["config"]
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

def new_job_id() -> str:
    """A job id that sorts by launch time: ``<UTC date>-<time>-<random>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def start_job(cfg, models_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
              python: str | None = None) -> str:
    """Launch training in a background process and return the job id.

    ``cfg`` is a :class:`medclf_core.training.TrainConfig` or a dict of its fields.
    Raises :class:`JobBusy` (naming the running job) when one is running, and
    :class:`MedclfError` for a configuration that cannot start
    (:meth:`medclf_core.training.TrainConfig.validate`: the one check on this path; the worker trusts it).
    """
    cfg = TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    models_dir = Path(models_dir or default_models_dir()).resolve()
    if cfg.data:  # the worker runs in the job folder, not in the caller's: the settings it is given are checked
        moved = {k: v for k, v in _absolute_paths(asdict(cfg)).items() if getattr(cfg, k) != v}
        cfg = dataclasses.replace(cfg, **moved) if moved else cfg
    if not cfg.is_validated(models_dir):
        cfg.validate(models_dir)
    config = asdict(cfg)
    root = Path(root) if root else jobs_dir(models_dir)
    job_id = new_job_id()
    _take_lock(root, job_id)
    try:
        jobdir = root / job_id
        jobdir.mkdir(parents=True)
        write_json(jobdir / "config.json", {"job_id": job_id, "config": config, "models_dir": str(models_dir),
                                            "created": datetime.now(UTC).isoformat(timespec="seconds"),
                                            "validated": cfg.stamp(models_dir)})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONUNBUFFERED": "1"}
        # medclf_core is installed (pyproject.toml): no PYTHONPATH for the worker. It runs in the job folder;
        # every path in its config is absolute (_absolute_paths), so the caller's working directory is not needed.
        with open(jobdir / "worker.log", "ab") as log:
            proc = subprocess.Popen([python or sys.executable, "-m", "medclf_core.training.jobs", "run", str(jobdir)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=jobdir, start_new_session=True)
        (jobdir / "pid").write_text(str(proc.pid))
        write_json(_lock_path(root), {"job_id": job_id, "pid": proc.pid, "time": time.time()})
    except BaseException:
        _release_lock(root, job_id)
        raise
    return job_id


def _absolute_paths(config: dict) -> dict:
    """The config's paths relative to the caller's working directory made absolute: the dataset, an
    ``init_from`` or ``weights`` that names an existing file or folder (a run name or ``imagenet`` stays).

    >>> _absolute_paths({"data": "d", "init_from": "some-run", "weights": "imagenet"})["data"] == \\
    ...     str(Path.cwd() / "d")
    True
    """
    out = {"data": str(Path(str(config["data"])).expanduser().resolve())}
    for key in ("init_from", "weights"):
        value = config.get(key)
        if value and Path(str(value)).expanduser().exists():
            out[key] = str(Path(str(value)).expanduser().resolve())
    return out


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


def job_progress(job_id: str, root: str | os.PathLike | None = None) -> dict:
    """Everything the Train page shows about a job, from its files alone.

    Keys: those of :class:`medclf_core.training.events.TrainingProgress` (``phase, epoch, epochs,
    batch, batches, eta_s, fraction, text, history, audit, split, notices, devices,
    images_per_s, run_dir, name, metrics, message, outcome, cross_validation``) and the job's own: ``job_id, state
    (queued|running|done|cancelled|failed), config, created, cancel_requested``. The state is the
    events' outcome; without one, the worker's process says queued or running, and a worker that
    died without an outcome is reported as failed.
    """
    d = job_dir(job_id, root)
    cfg = job_spec(job_id, root)
    config = cfg["config"]
    out = fold_events(read_events(d / "events.jsonl"), epochs=config.get("epochs"))
    out.update({"job_id": job_id, "config": config, "created": cfg.get("created"),
                "state": out["outcome"] or _worker_state(d), "cancel_requested": (d / "cancel").exists()})
    out["name"] = out["name"] or config.get("name")
    if out["state"] == "failed" and not out["outcome"]:
        out["message"] = (WORKER_NEVER_STARTED if _read_int(d / "pid") is None else WORKER_DIED)
    if out["state"] == "done":
        out["phase"], out["fraction"] = "finished", 1.0
    elif out["state"] in ("cancelled", "failed"):
        out["phase"] = out["state"]
    return out


WORKER_DIED = ("The training process stopped unexpectedly (it may have run out of memory or been killed). "
               "Nothing was saved.")
WORKER_NEVER_STARTED = "The training process never started."


def _worker_state(d: Path) -> str:
    """queued, running, or failed (its process is gone, or never came) for a job without an outcome."""
    pid = _read_int(d / "pid")
    if pid is not None:
        return "running" if pid_alive(pid) else "failed"
    try:
        launched = (d / "config.json").stat().st_mtime
    except OSError:
        launched = 0.0
    return "failed" if time.time() - launched > LAUNCH_GRACE_S * 3 else "queued"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- the worker

def run_worker(jobdir: str | os.PathLike) -> int:
    """Body of the background process: train; the outcome is the last event of the job's log.

    :func:`medclf_core.training.train` ends the log with ``done``, ``cancelled`` or ``error``;
    the worker adds one only for what happens outside it (a cancel before the start, a config
    that cannot be read, a bug, whose traceback goes to ``worker.log``).
    """
    jobdir = Path(jobdir)
    spec = _read_json(jobdir / "config.json", {}) or {}
    cancel_file = jobdir / "cancel"
    ended: list[dict] = []
    log = EventLog(jobdir / "events.jsonl", listeners=[lambda ev: ended.append(ev) if ev["event"] in FINAL_EVENTS
                                                       else None])

    def stop_on_term(signum, frame):  # a polite kill counts as a cancel
        cancel_file.touch()

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        if cancel_file.exists():
            log.emit("cancelled", message="Training was cancelled before it started; no model was saved.")
            return 0
        models_dir = spec.get("models_dir")
        cfg = TrainConfig.from_dict(spec.get("config") or {}).trust_stamp(spec.get("validated"), models_dir)
        train(cfg, models_dir=models_dir, events=log, cancel=cancel_file.exists)
        return 0
    except TrainingCancelled:
        return 0
    except MedclfError as exc:
        if not ended:
            log.emit("error", message=str(exc))
        return 1
    except Exception as exc:  # a bug: the full traceback goes to worker.log, a plain line to the UI
        import traceback

        traceback.print_exc()
        log.emit("error", message=TRAINING_OUT_OF_MEMORY if is_out_of_memory(exc) else
                 f"Training failed unexpectedly ({brief(exc)}); the job's worker.log has the details.")
        return 1
    finally:
        if not ended:
            log.emit("error", message="Training stopped for an unknown reason.")
        _release_lock(jobdir.parent, jobdir.name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m medclf_core.training.jobs run JOB_DIR", file=sys.stderr)
        return 2
    return run_worker(argv[1])


if __name__ == "__main__":
    sys.exit(main())
