"""Disk housekeeping: remove what a killed process left behind.

- :func:`remove_stale_registrations`: ``.tmp-<run>-*`` folders that
  :func:`medclf_core.registry.write_run_atomically` writes a run into before renaming it;
  a registration killed half-way leaves one behind. Call it before a registration and
  when listing runs.
- :func:`medclf_core.data.remove_stale_extractions`: ``medclf-zip-<pid>-*`` folders of
  zips extracted by a process that is gone (re-exported here).

Example::

    >>> remove_stale_registrations("models")          # doctest: +SKIP
    ['.tmp-chest-3k2j1x']
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from medclf_core.data import remove_stale_extractions

__all__ = ["REGISTRATION_TMP_PREFIX", "remove_stale_extractions", "remove_stale_registrations"]

REGISTRATION_TMP_PREFIX = ".tmp-"
STALE_AFTER_S = 3600.0


def _newest_mtime(folder: Path) -> float:
    """The latest modification time of a folder and anything directly or deeply inside it."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def remove_stale_registrations(models_dir: str | os.PathLike, *, max_age_s: float = STALE_AFTER_S) -> list[str]:
    """Remove ``.tmp-*`` folders in ``models_dir`` untouched for ``max_age_s`` seconds (default an hour).

    A registration in progress keeps writing into its folder, so it is never old enough to be
    removed. Never raises: a folder that cannot be inspected or removed is left alone.
    Returns the names of the folders removed.
    """
    base = Path(models_dir)
    removed: list[str] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(REGISTRATION_TMP_PREFIX) and p.is_dir()
                      and not p.is_symlink()]
    except OSError:
        return removed
    now = time.time()
    for folder in candidates:
        try:
            if now - _newest_mtime(folder) <= max_age_s:
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder.name)
    return removed
