"""Background training jobs for the app: one at a time, state on disk, never Streamlit.

A job is a folder ``<jobs dir>/<job id>/``::

    config.json     {"job_id", "config" (TrainConfig fields), "models_dir", "created"}
    events.jsonl    the run's progress, written by training's EventLog (see medclf_core.training.events)
    status.json     {"state": queued|running|done|cancelled|failed, "message", "run_dir", ...}
    pid             the worker's process id
    cancel          present once a cancel was requested (training checks it after every batch)
    worker.log      the worker's stdout/stderr (for developers; never shown as a traceback)

The worker is a separate process, ``python -m medclf_core.training.jobs run <job dir>``, that
calls :func:`medclf_core.training.train`. Only one job runs at a time: ``<jobs dir>/lock``
holds the running job's id and pid; a lock whose process is gone is stale and is
taken over. Because everything lives on disk, a page switch, a browser reload or a
second browser tab sees the same job and its progress.

The jobs dir is ``$MEDCLF_JOBS_DIR``, else ``<models dir>/.jobs``. What the Train page
shows of a job is :func:`job_progress`: the job's state on top of the run's events folded
by :class:`medclf_core.training.events.TrainingProgress`.

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

from medclf_core.errors import TRAINING_OUT_OF_MEMORY, MedclfError, brief, is_out_of_memory
from medclf_core.training.events import fold_events, read_events
from medclf_core.registry.store import default_models_dir, read_json, write_json

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
    """The JSON in ``path`` (:func:`medclf_core.registry.store.read_json`), or ``default`` when missing or damaged."""
    return read_json(path.parent, path.name, default)


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
    (:meth:`medclf_core.training.TrainConfig.validate`, which the worker's ``train`` calls too).
    """
    from medclf_core.training import TrainConfig

    cfg = TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
    models_dir = Path(models_dir or default_models_dir()).resolve()
    cfg.validate(models_dir)
    config = asdict(cfg)
    config["data"] = str(Path(str(cfg.data)).expanduser().resolve())  # the worker runs from the repository root
    root = Path(root) if root else jobs_dir(models_dir)
    job_id = new_job_id()
    _take_lock(root, job_id)
    try:
        jobdir = root / job_id
        jobdir.mkdir(parents=True)
        write_json(jobdir / "config.json", {"job_id": job_id, "config": config, "models_dir": str(models_dir),
                                            "created": datetime.now(UTC).isoformat(timespec="seconds")})
        write_json(jobdir / "status.json", {"state": "queued", "time": time.time()})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONUNBUFFERED": "1"}
        # medclf_core is installed (pyproject.toml, ``pip install -e .``): no PYTHONPATH for the worker. It runs
        # from the repository root, so relative paths in a config (init_from, weights) mean what they always did.
        with open(jobdir / "worker.log", "ab") as log:
            proc = subprocess.Popen([python or sys.executable, "-m", "medclf_core.training.jobs", "run", str(jobdir)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=Path(__file__).resolve().parents[2], start_new_session=True)
        (jobdir / "pid").write_text(str(proc.pid))
        write_json(_lock_path(root), {"job_id": job_id, "pid": proc.pid, "time": time.time()})
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


def job_progress(job_id: str, root: str | os.PathLike | None = None) -> dict:
    """Everything the Train page shows about a job, from its files alone.

    Keys: those of :class:`medclf_core.training.events.TrainingProgress` (``phase, epoch, epochs,
    batch, batches, eta_s, fraction, text, history, audit, split, notices, devices,
    images_per_s, run_dir, name, metrics, message``) and the job's own: ``job_id, state
    (queued|running|done|cancelled|failed), config, created, cancel_requested``. A worker
    that died without writing a final state is reported as failed.
    """
    d = job_dir(job_id, root)
    cfg = job_spec(job_id, root)
    status = _read_json(d / "status.json", {}) or {}
    config = cfg["config"]
    out = fold_events(read_events(d / "events.jsonl"), epochs=config.get("epochs"))
    out.update({"job_id": job_id, "config": config, "created": cfg.get("created"),
                "state": status.get("state", "queued"), "cancel_requested": (d / "cancel").exists()})
    out["name"] = out["name"] or config.get("name")
    out["run_dir"] = status.get("run_dir") or out["run_dir"]
    out["metrics"] = status.get("metrics") or out["metrics"]
    out["message"] = status.get("message") or out["message"]
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
        out["phase"], out["fraction"] = "finished", 1.0
    elif out["state"] in ("cancelled", "failed"):
        out["phase"] = out["state"]
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- the worker

def run_worker(jobdir: str | os.PathLike) -> int:
    """Body of the background process: train, then record the outcome in status.json."""
    from medclf_core.errors import TrainingCancelled
    from medclf_core.training.events import EventLog

    jobdir = Path(jobdir)
    root = jobdir.parent
    job_id = jobdir.name
    spec = _read_json(jobdir / "config.json", {}) or {}
    cancel_file = jobdir / "cancel"
    write_json(jobdir / "status.json", {"state": "running", "time": time.time(), "pid": os.getpid()})
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

        cfg = TrainConfig.from_dict(spec["config"])
        run_dir = train(cfg, models_dir=spec.get("models_dir"), events=log, cancel=cancel_file.exists)
        from medclf_core.registry.store import read_card

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
    except Exception as exc:  # a bug: the full traceback goes to worker.log, a plain line to the UI
        import traceback

        traceback.print_exc()
        msg = (TRAINING_OUT_OF_MEMORY if is_out_of_memory(exc) else
               f"Training failed unexpectedly ({brief(exc)}); the job's worker.log has the details.")
        state = {"state": "failed", "message": msg}
        return 1
    finally:
        write_json(jobdir / "status.json", {**state, "time": time.time()})
        _release_lock(root, job_id)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m medclf_core.training.jobs run JOB_DIR", file=sys.stderr)
        return 2
    return run_worker(argv[1])


if __name__ == "__main__":
    sys.exit(main())
