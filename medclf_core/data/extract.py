"""Dataset zips: extract them safely, into temporary folders that do not outlive their use.

:func:`safe_extract_zip` applies the zip guards of :mod:`medclf_core.io.archive` (the one set of
rules, shared with ``.keras`` model files) and words their refusals for a dataset. A zip that
:func:`medclf_core.data.scan.scan_dataset` extracts for itself goes into a private temporary folder
named ``medclf-zip-<pid>-*`` (:func:`new_extraction_dir`); it is removed by
:func:`remove_extraction`, at exit, or, when the process was killed, by the next
:func:`remove_stale_extractions` of any process.

Example::

    >>> import io, tempfile
    >>> buf = io.BytesIO()
    >>> with zipfile.ZipFile(buf, "w") as zf:
    ...     zf.writestr("A/ok.png", b"x")
    ...     zf.writestr("../up.png", b"x")
    >>> dest = new_extraction_dir()
    >>> safe_extract_zip(buf, dest)
    [{'file': '../up.png', 'reason': 'unsafe path'}]
    >>> remove_extraction(dest)
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

from medclf_core.errors import DatasetError
from medclf_core.io.archive import ZipLimits, limit_violation, unsafe_member_reason
from medclf_core.io.stale import remove_stale_folders

# Zip safety limits (a dataset zip is user-supplied).
ZIP_MAX_MEMBERS = 200_000
ZIP_MAX_TOTAL_BYTES = 8 * 2**30
ZIP_MAX_RATIO = 200
EXTRACTION_PREFIX = "medclf-zip-"
LEGACY_EXTRACTION_KEPT_S = 86400.0  # an extraction named without its pid (an earlier version) is kept a day


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> list[dict]:
    """Extract a dataset zip into ``dest``, refusing what could harm the server.

    The archive is refused outright (:class:`DatasetError`) when it has too many
    members, would unpack to too many bytes, or has a compression ratio typical of
    zip bombs; a member that inflates past its declared size also stops it.
    Single members are skipped, and listed as ``{"file", "reason"}`` in the
    returned report, when they would escape ``dest`` (absolute paths, ``..``,
    drive letters, backslash paths), are links or special files, are encrypted,
    use an unsupported compression, or are damaged.
    """
    skipped: list[dict] = []
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) and exc.strerror
               else str(exc)[:120] if isinstance(exc, zipfile.BadZipFile) else type(exc).__name__)
        raise DatasetError(f"The archive cannot be opened as a zip file ({why}).") from None
    with zf:
        infos = zf.infolist()
        _check_zip_limits(infos)
        for info in infos:
            reason = unsafe_member_reason(info, dest)
            if reason:
                skipped.append({"file": info.filename, "reason": reason})
                continue
            if "__MACOSX" in Path(info.filename).parts:
                continue  # macOS resource forks: never images
            target = dest / info.filename
            reason = _make_dir(target) if info.is_dir() else _extract_member(zf, info, target)
            if reason:
                skipped.append({"file": info.filename, "reason": reason})
    return skipped


def _check_zip_limits(infos: list[zipfile.ZipInfo]) -> None:
    """Refuse archives over the member-count, total-size or compression-ratio limits."""
    broken = limit_violation(infos, ZipLimits(ZIP_MAX_MEMBERS, ZIP_MAX_TOTAL_BYTES, ZIP_MAX_RATIO))
    if broken is None:
        return
    if broken.kind == "members":
        raise DatasetError(f"The zip has {broken.members} entries; the limit is {ZIP_MAX_MEMBERS}.")
    if broken.kind == "total":
        raise DatasetError(f"The zip would unpack to {broken.unpacked / 2**30:.1f} GB; the limit is "
                           f"{ZIP_MAX_TOTAL_BYTES // 2**30} GB.")
    raise DatasetError("The zip's compression ratio is suspiciously high (a possible zip bomb); refused.")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> str | None:
    """Stream one member to ``target``, never past its declared size.

    Returns a reason when the member is skipped (damaged, unsupported compression, a name the
    file system refuses, a path already taken by a folder or a file); raises :class:`DatasetError`
    when it inflates beyond its header (a zip bomb). A partly written file is removed; removing
    it never raises (the member is skipped either way).
    """
    import zlib

    created = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            return "a folder of the same name was already extracted"
        with zf.open(info) as src:
            with open(target, "wb") as out:
                created = True
                remaining = info.file_size + 1
                while chunk := src.read(1 << 20):
                    remaining -= len(chunk)
                    if remaining < 0:
                        raise DatasetError(f"Zip member {info.filename} is larger than its header claims; refused.")
                    out.write(chunk)
    except DatasetError:
        _discard(target, created)
        raise
    except NotImplementedError:
        _discard(target, created)
        return "unsupported compression method"
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError) as exc:
        _discard(target, created)
        return f"damaged ({type(exc).__name__})"
    except FileExistsError:
        return "its folder clashes with a file of the same name"
    except OSError as exc:
        _discard(target, created)
        return _os_reason(exc)
    return None


def _os_reason(exc: OSError) -> str:
    """Why a member cannot be written, without the server path in ``str(exc)``."""
    import errno

    if exc.errno == errno.ENAMETOOLONG:
        return "name too long for the file system"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return "its folder clashes with a file of the same name"
    if exc.errno == errno.EISDIR:
        return "a folder of the same name was already extracted"
    return f"cannot be written ({exc.strerror or type(exc).__name__})"


def _discard(target: Path, created: bool) -> None:
    """Remove a partly written member; never raises (the caller is already handling an error)."""
    if not created:
        return
    try:
        target.unlink(missing_ok=True)
    except OSError:
        pass


def _make_dir(target: Path) -> str | None:
    """Create a folder member; the reason it cannot be created, or None."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "a file of the same name was already extracted"
    except OSError as exc:
        return _os_reason(exc)
    return None


# ---------------------------------------------------------------------------- temporary extraction folders

_extractions: dict[str, int] = {}  # temporary extraction folder -> pid of the process that made it
_extractions_lock = threading.Lock()


def new_extraction_dir() -> Path:
    """A new private temporary folder for one zip, named after this process; first removes what killed
    processes left behind (see :func:`remove_stale_extractions`)."""
    remove_stale_extractions()
    folder = Path(tempfile.mkdtemp(prefix=f"{EXTRACTION_PREFIX}{os.getpid()}-"))
    with _extractions_lock:
        _extractions[str(folder)] = os.getpid()
    return folder


def remove_extraction(folder: str | os.PathLike) -> None:
    """Delete a folder made by :func:`new_extraction_dir` and everything in it (idempotent)."""
    shutil.rmtree(folder, ignore_errors=True)
    with _extractions_lock:
        _extractions.pop(str(folder), None)


@atexit.register
def _remove_own_extractions() -> None:
    """At exit, remove this process's temporary extractions (never a parent's, after a fork)."""
    with _extractions_lock:
        mine = [f for f, pid in _extractions.items() if pid == os.getpid()]
    for folder in mine:
        remove_extraction(folder)


def remove_stale_extractions(temp_dir: str | os.PathLike | None = None, *,
                             max_age_s: float = LEGACY_EXTRACTION_KEPT_S) -> list[str]:
    """Remove ``medclf-zip-<pid>-*`` folders in the temp folder whose process is gone (killed before it
    could clean up), and ``medclf-zip-*`` folders of earlier versions (no pid in the name) untouched
    for ``max_age_s`` (default a day). Returns their names, sorted.

    Safe to call at any start (app, CLI): a live process's extraction is never touched.
    """
    return remove_stale_folders(temp_dir or tempfile.gettempdir(), EXTRACTION_PREFIX, max_age_s=max_age_s,
                                pid_in_name=True, last_touched=lambda folder: folder.stat().st_mtime)
