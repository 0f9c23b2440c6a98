"""A run's progress as a stream of JSON lines, written by training and read by the app or CLI.

Each line is one event: ``{"event": "...", "time": <unix seconds>, ...}``. Events,
in order: ``start``, ``audit``, ``split``, ``epoch_begin``, ``batch`` (throttled),
``epoch`` (with metrics and ETA), ``phase`` (fine-tuning), ``evaluate``, then one of
``done`` (with ``run_dir``), ``cancelled`` or ``error`` (with a plain ``message``).
A reader can follow a file that is still being written: lines are appended whole
and flushed.

:class:`TrainingProgress` folds the events into what a progress display shows (phase,
epoch and batch, ETA, fraction, curves); the Train page (through
:func:`medclf_core.training.jobs.job_progress`) and the CLI's progress bars both use it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from medclf_core.trust.card_facts import CV_SPLIT_PURPOSE


class EventLog:
    """Append events to a JSON-lines file and/or pass them to listeners."""

    def __init__(self, path: str | os.PathLike | None = None, listeners: list[Callable[[dict], None]] | None = None):
        self.path = Path(path) if path else None
        self.listeners = list(listeners or [])
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **data) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **data}
        line = json.dumps(record, default=str)
        with self._lock:
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
                    f.flush()
            for listener in self.listeners:
                listener(record)
        return record


def read_events(path: str | os.PathLike) -> list[dict]:
    """All complete events in a (possibly still growing) JSON-lines file."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written right now
    return out


# ---------------------------------------------------------------------------- the fold

PHASE_NAMES = {"train": "training", "fine_tune": "fine-tuning", "features": "computing backbone features"}
#: The events that end a run, and the outcome each one means (a job's state: medclf_core.training.jobs).
FINAL_EVENTS = {"done": "done", "cancelled": "cancelled", "error": "failed"}


class TrainingProgress:
    """A run's events folded into what a progress display shows: the Train page (through
    :func:`medclf_core.training.jobs.job_progress`) and the CLI's progress bars both read it.

    Feed it events in order (:meth:`add`, or :func:`fold_events` for a whole log) and read
    :attr:`state`: ``phase, epoch, epochs, batch, batches, eta_s, fraction, history``
    (per-epoch metrics, one curve per ensemble member), ``audit, split, notices, devices,
    images_per_s, speed`` (what that counts: :func:`speed_text`), ``run_dir, name, metrics, message,
    outcome`` (``done``, ``cancelled`` or ``failed`` once a final event came, the last one deciding; else
    None), and ``member, members`` for an ensemble. :meth:`text` is the one-line summary. ``batch``
    counts finished batches of the current epoch; a new epoch (or phase) shows no batch until its
    first one has run, so the first shown is ``1/N``.

    >>> p = TrainingProgress(epochs=4)
    >>> p.add({"event": "epoch_begin", "epoch": 2, "epochs": 4, "phase": "train"})
    >>> p.text()
    'Training: epoch 2/4 · ETA estimating...'
    >>> p.add({"event": "batch", "epoch": 2, "epochs": 4, "batch": 1, "batches": 4, "eta_s": 75})
    >>> p.text(), p.state["fraction"]
    ('Training: epoch 2/4, batch 1/4 · ETA 1 min 15 s', 0.3125)
    """

    def __init__(self, epochs: int | None = None):
        self.state: dict = {"phase": "starting", "epoch": 0, "epochs": epochs, "batch": 0, "batches": None,
                            "eta_s": None, "fraction": 0.0, "history": [], "audit": None, "split": None,
                            "notices": [], "devices": None, "images_per_s": None, "run_dir": None, "name": None,
                            "metrics": None, "message": None, "outcome": None, "speed": None,
                            "cross_validation": None}
        self._on_features = False  # the transfer recipe: the head's epochs run on cached backbone features

    def add(self, ev: dict) -> None:
        """Fold one event in."""
        out = self.state
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
            self._on_features = ev.get("phase") == "features" or (self._on_features and ev.get("phase") == "train")
            if ev.get("members"):
                out["phase"] += f" model {ev['member']} of {ev['members']}"
                out["member"], out["members"] = ev["member"], ev["members"]
            out["epoch"], out["epochs"] = ev.get("epoch", 0), ev.get("epochs", out["epochs"])
            # nothing of the new epoch has run yet: its batch count comes with its first batch event
            out["batch"], out["batches"] = 0, None
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
            if ev.get("images_per_s"):
                out["speed"] = speed_text(ev["images_per_s"], on_features=self._on_features)
            if out["batches"]:
                out["batch"] = out["batches"]
        elif kind == "evaluate" and ev.get("split") == "cross-validation":  # a small-data run: every image
            out["cross_validation"] = {"folds": ev.get("folds"), "n": ev.get("n")}
            out["phase"] = "evaluating by cross-validation (out-of-fold predictions of every image)"
        elif kind == "evaluate":
            out["phase"] = f"evaluating on the {ev.get('split')} split"
        elif kind == "done":
            out["run_dir"], out["name"], out["metrics"] = ev.get("run_dir"), ev.get("name"), ev.get("metrics")
            out["phase"] = "finished"
        if kind in FINAL_EVENTS:
            out["outcome"] = FINAL_EVENTS[kind]
            out["message"] = ev.get("message") or out["message"]
        out["fraction"] = self._fraction()

    def _fraction(self) -> float:
        out = self.state
        epochs = out["epochs"] or 0
        if out["phase"] == "finished":
            return 1.0
        if not epochs or not out["epoch"]:
            return 0.0
        within = (out["batch"] / out["batches"]) if out["batches"] else 0.0
        member, members = out.get("member", 1), out.get("members", 1)  # ensembles: models train one after another
        done = ((max(out["epoch"], 1) - 1) + within) / epochs
        return float(min(max((member - 1 + done) / members, 0.0), 1.0))

    def text(self) -> str:
        """``Training: epoch 2/4, batch 1/4 · ETA 12 s``, or the phase alone before the first epoch."""
        out = self.state
        if not out["epoch"]:
            return f"{out['phase'].capitalize()} ..."
        batch = f", batch {out['batch']}/{out['batches']}" if out["batches"] and out["batch"] >= 1 else ""
        return (f"{out['phase'].capitalize()}: epoch {out['epoch']}/{out['epochs'] or '?'}{batch}"
                f" · ETA {format_eta(out['eta_s'])}")


def speed_text(per_s: float, *, on_features: bool) -> str:
    """What a training speed counts: images through the model, or (transfer recipe, head phase) cached
    backbone features through the classifier head, which is no image speed at all.

    >>> speed_text(41.6, on_features=False), speed_text(10069, on_features=True)
    ('42 images/s', 'classifier head on cached backbone features: 10069 feature vectors/s')
    """
    if on_features:
        return f"classifier head on cached backbone features: {per_s:.0f} feature vectors/s"
    return f"{per_s:.0f} images/s"


def fold_events(events: list[dict], epochs: int | None = None) -> dict:
    """:attr:`TrainingProgress.state` after ``events``, with its ``text``."""
    progress = TrainingProgress(epochs)
    for ev in events:
        progress.add(ev)
    return {**progress.state, "text": progress.text()}


def format_eta(seconds: float | None) -> str:
    """A remaining time as people read it.

    >>> format_eta(None), format_eta(42.4), format_eta(125), format_eta(3 * 3600 + 60)
    ('estimating...', '42 s', '2 min 05 s', '3 h 01 min')
    """
    if seconds is None:
        return "estimating..."
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def split_caption(state: dict) -> str:
    """What the Train page says above a run's table of images per split. A small-data run's classifier and
    figures use every image by cross-validation; its split still fits the out-of-distribution check.

    >>> split_caption({"cross_validation": None})
    'Images per split:'
    >>> split_caption({"cross_validation": {"folds": 5, "n": 80}})[:94]
    'Images per split: the classifier and its figures use all 80 images (5-fold cross-validation, o'
    """
    cv = state.get("cross_validation")
    if not cv:
        return "Images per split:"
    return (f"Images per split: the classifier and its figures use all {cv.get('n')} images ({cv.get('folds')}-fold "
            f"cross-validation, out-of-fold predictions); this split {CV_SPLIT_PURPOSE}.")
