"""Files that appear whole: JSON and bytes written to a temporary file beside the target, then renamed.

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
from pathlib import Path


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
