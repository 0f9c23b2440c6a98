"""A run's progress as a stream of JSON lines, written by training and read by the app or CLI.

Each line is one event: ``{"event": "...", "time": <unix seconds>, ...}``. Events,
in order: ``start``, ``audit``, ``split``, ``epoch_begin``, ``batch`` (throttled),
``epoch`` (with metrics and ETA), ``phase`` (fine-tuning), ``evaluate``, then one of
``done`` (with ``run_dir``), ``cancelled`` or ``error`` (with a plain ``message``).
A reader can follow a file that is still being written: lines are appended whole
and flushed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


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
