"""Disk housekeeping: remove what a killed process left behind.

- :func:`remove_stale_registrations`: ``.tmp-<run>-*`` folders that
  :func:`medclf_core.registry.store.write_run_atomically` writes a run into before renaming it;
  a registration killed half-way leaves one behind. Call it before a registration and
  when listing runs.
- :func:`medclf_core.data.dataset.remove_stale_extractions`: ``medclf-zip-<pid>-*`` folders of
  zips extracted by a process that is gone (re-exported here).
- :func:`remove_stale_uploads`: dataset zips uploaded on the Train page (``<jobs dir>/uploads/<digest>``),
  which a background run reads after the upload, so they cannot go with the browser session.

Example (a registration killed two hours ago left its temporary folder)::

    >>> import tempfile
    >>> models = Path(tempfile.mkdtemp())
    >>> (models / ".tmp-chest-3k2j1x").mkdir()
    >>> two_hours_ago = time.time() - 7200
    >>> os.utime(models / ".tmp-chest-3k2j1x", (two_hours_ago, two_hours_ago))
    >>> remove_stale_registrations(models)
    ['.tmp-chest-3k2j1x']
    >>> remove_stale_registrations(models)
    []
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from medclf_core.data.dataset import remove_stale_extractions

__all__ = ["REGISTRATION_TMP_PREFIX", "remove_stale_extractions", "remove_stale_registrations",
           "remove_stale_uploads"]

REGISTRATION_TMP_PREFIX = ".tmp-"
STALE_AFTER_S = 3600.0
UPLOADS_KEPT_S = 86400.0  # a Train-page upload is kept a day after it was last used


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
    return _remove_untouched(models_dir, lambda p: p.name.startswith(REGISTRATION_TMP_PREFIX), max_age_s)


def _remove_untouched(base: str | os.PathLike, wanted, max_age_s: float) -> list[str]:
    """Remove the folders directly in ``base`` (not links) for which ``wanted(path)`` holds and in which
    nothing changed for ``max_age_s`` seconds; sorted names of those removed. Never raises."""
    try:
        candidates = sorted(p for p in Path(base).iterdir() if p.is_dir() and not p.is_symlink() and wanted(p))
    except OSError:
        return []
    now, removed = time.time(), []
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


def remove_stale_uploads(uploads_dir: str | os.PathLike, *, in_use: Iterable[str | os.PathLike] = (),
                         max_age_s: float = UPLOADS_KEPT_S) -> list[str]:
    """Remove upload folders in ``uploads_dir`` untouched for ``max_age_s`` (default a day), except those
    holding a path in ``in_use`` (the data of a running job). Returns the names of the folders removed.

    A run trained on an upload keeps working without it; only its own-split pictures on the Evaluate
    page say that the images are no longer on this server. Never raises.

    >>> import tempfile
    >>> uploads = Path(tempfile.mkdtemp())
    >>> for name in ("old", "busy", "new"):
    ...     (uploads / name).mkdir()
    >>> for name in ("old", "busy"):
    ...     os.utime(uploads / name, (time.time() - 2 * 86400,) * 2)
    >>> remove_stale_uploads(uploads, in_use=[uploads / "busy" / "data.zip"])
    ['old']
    """
    busy = set()
    for path in in_use:
        try:
            busy.add(Path(path).resolve())
        except (OSError, RuntimeError):
            continue

    def idle(folder: Path) -> bool:
        resolved = folder.resolve()
        return not any(b == resolved or resolved in b.parents for b in busy)

    return _remove_untouched(uploads_dir, idle, max_age_s)
