"""Files that appear whole: JSON, bytes and NumPy archives written to a temporary file beside the target, then
renamed; a versioned NumPy archive read back with one plain error for a damaged or newer file.

A reader (the app listing runs, a job's status poll) never sees half a file, and a crash
leaves the old file or none. JSON is written indented, with NumPy scalars and arrays and
paths turned into plain JSON; damaged JSON reads as absent.

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_json(folder / "status.json", {"epoch": np.int64(3), "loss": np.float32(0.5)})
    >>> read_json(folder, "status.json"), read_json(folder, "missing.json", default={})
    ({'epoch': 3, 'loss': 0.5}, {})
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _temporary_beside(path: Path) -> Path:
    """A hidden name in ``path``'s folder (the rename stays on one filesystem, so it is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON (:func:`json_text`) via a temporary file and rename."""
    tmp = _temporary_beside(path)
    tmp.write_text(json_text(obj))
    os.replace(tmp, path)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write bytes via a temporary file and rename; the temporary file never outlives a failure."""
    tmp = _temporary_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(folder: str | os.PathLike, filename: str, default=None):
    """The JSON in ``folder/filename``, or ``default`` when it is missing, damaged, not UTF-8 or unreadable."""
    path = Path(folder) / filename
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # damaged, not UTF-8, unreadable: as if absent
        return default


def json_text(obj) -> str:
    """``obj`` as indented JSON; NumPy scalars and arrays and paths become plain JSON.

    >>> json_text({"p": Path("a/b")})
    '{\\n  "p": "a/b"\\n}'
    """
    return json.dumps(obj, indent=2, default=_json_default)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_npz(path: Path, **arrays) -> Path:
    """``numpy.savez_compressed`` of ``arrays`` via a temporary file and rename; returns ``path``."""
    import numpy as np

    tmp = _temporary_beside(path).with_suffix(".npz")  # numpy adds .npz to a name without it
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_versioned_npz(path: Path, max_version: int, what: str, build: Callable[..., T]) -> T:
    """``build(archive)`` of the NumPy archive at ``path`` (no pickles), whose ``version`` entry must be at most
    ``max_version``. A newer or damaged file raises :class:`~medclf_core.errors.ModelError` naming ``what``."""
    import numpy as np

    from medclf_core.errors import ModelError

    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) > max_version:
                raise ModelError(f"{path.name} was written by a newer medclf (version {int(z['version'])}).")
            return build(z)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, key and value errors on a damaged file
        raise ModelError(f"The {what} {path.name} is damaged ({type(exc).__name__}).") from None
