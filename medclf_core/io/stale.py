"""Leftovers of killed processes: is a process alive, and which temporary folders are stale.

Two writers leave temporary folders behind when they are killed half-way: a dataset zip's
extraction (``medclf-zip-<pid>-*`` in the temp folder, :mod:`medclf_core.data.extract`) and a
run's registration (``.tmp-<run>-*`` in the models folder, :mod:`medclf_core.registry.store`);
uploads kept for background jobs (:mod:`medclf_core.data.uploads`) age out the same way.
:func:`remove_stale_folders` is the one rule for all of them; :func:`pid_alive` the one test of
whether a process still runs (the training jobs' lock uses it too).

Example (a registration killed two hours ago left its temporary folder)::

    >>> import tempfile, time
    >>> models = Path(tempfile.mkdtemp())
    >>> (models / ".tmp-chest-3k2j1x").mkdir()
    >>> two_hours_ago = time.time() - 7200
    >>> os.utime(models / ".tmp-chest-3k2j1x", (two_hours_ago, two_hours_ago))
    >>> remove_stale_folders(models, ".tmp-")
    ['.tmp-chest-3k2j1x']
    >>> remove_stale_folders(models, ".tmp-")
    []
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

STALE_AFTER_S = 3600.0  # a temporary folder nothing was written into for an hour has lost its writer


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` is running: False for no pid, a pid that cannot exist, a process that is
    gone, and a finished child not yet reaped (a zombie); True for a live process of another user.

    A zombie counts as gone because it will never clean up after itself (the data extractions
    once counted it alive, so a finished worker's folders were kept until it was reaped).

    >>> pid_alive(os.getpid()), pid_alive(None), pid_alive(0)
    (True, False, False)
    """
    if not pid or pid <= 0:
        return False  # 0 and negative pids name process groups, never one process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True  # exists, owned by someone else (PermissionError)
    # A finished child that was not reaped yet is a zombie: reap it if it is ours.
    with contextlib.suppress(OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False  # someone else's zombie
    return True


def newest_mtime(folder: Path) -> float:
    """The latest modification time of ``folder`` and of anything inside it, at any depth."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def owner_pid(name: str, prefix: str) -> int | None:
    """The pid in a folder named ``<prefix><pid>-<anything>``, else None.

    >>> owner_pid("medclf-zip-4242-x1y2", "medclf-zip-"), owner_pid("medclf-zip-old", "medclf-zip-")
    (4242, None)
    """
    pid_text, dash, _ = name[len(prefix):].partition("-")
    return int(pid_text) if name.startswith(prefix) and dash and pid_text.isdigit() else None


def remove_stale_folders(base: str | os.PathLike, prefix: str = "", *, max_age_s: float = STALE_AFTER_S,
                         pid_in_name: bool = False, last_touched: Callable[[Path], float] = newest_mtime,
                         keep: Callable[[Path], bool] | None = None) -> list[str]:
    """Remove the folders directly in ``base`` (never links) whose name starts with ``prefix`` and
    whose writer is gone; the sorted names of those removed.

    With ``pid_in_name``, a folder named ``<prefix><pid>-...`` is stale exactly when that process is
    gone (:func:`pid_alive`), whatever its age. Any other folder is stale once ``last_touched(folder)``
    (by default :func:`newest_mtime`: a writer still at work keeps it young) is more than
    ``max_age_s`` seconds ago. ``keep(folder)`` True spares a folder (one still in use).
    Never raises: a folder that cannot be inspected or removed is left alone.
    """
    try:
        candidates = sorted(p for p in Path(base).iterdir()
                            if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    now, removed = time.time(), []
    for folder in candidates:
        if keep is not None and keep(folder):
            continue
        pid = owner_pid(folder.name, prefix) if pid_in_name else None
        try:
            stale = not pid_alive(pid) if pid is not None else now - last_touched(folder) > max_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder.name)
    return removed
