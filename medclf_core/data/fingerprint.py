"""What data a figure rests on: a content fingerprint of a dataset, and the split ``auto`` means.

A fingerprint is a sha256 over (relative path, class, sha256 of the file's bytes) of every file
of the split, so it changes when an image, a label or a split changes and not when the folder
moves. No image is decoded (cheap next to the audit). Recorded evaluations carry it, so two
figures can be told apart as "same data" or "other data".

    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("NORMAL", "PNEUMONIA"):
    ...     (root / cls).mkdir()
    ...     _ = (root / cls / "a.png").write_bytes(cls.encode())
    >>> len(dataset_fingerprint(root)), dataset_fingerprint(root) == dataset_fingerprint(root, split="auto")
    (64, True)
"""

from __future__ import annotations

import hashlib
import tempfile

from medclf_core.data.scan import DatasetIndex, scan_dataset


def evaluated_split(index: DatasetIndex, split: str) -> str:
    """The one rule for ``split="auto"``: the ``test`` folder of a pre-split dataset that has one, else
    ``all``; any other ``split`` is returned as it is. Evaluation and the fingerprint of what it
    evaluated both call it, so the two always mean the same images.

    >>> evaluated_split(DatasetIndex("/nowhere", ["a", "b"], [], presplit=False), "auto")
    'all'
    """
    if split != "auto":
        return split
    return "test" if index.presplit and any(it.split == "test" for it in index.items) else "all"


def dataset_fingerprint(data, *, split: str = "all") -> str:
    """A content fingerprint of a dataset, without decoding any image.

    ``data``: an ``AuditReport`` (its pixel fingerprint, the one training records in
    ``card["dataset"]["fingerprint"]``), a :class:`DatasetIndex`, or a dataset folder or zip.
    For an index or a path it is the sha256 over (relative path, class, sha256 of the
    file's bytes) of the files in ``split`` ("all", "train", "val", "test", or "auto":
    :func:`evaluated_split`, as ``evaluate`` chooses).
    """
    if isinstance(getattr(data, "fingerprint", None), str):
        return data.fingerprint
    if hasattr(data, "items") and hasattr(data, "class_names") and hasattr(data, "presplit"):
        return _index_fingerprint(data, split)
    with tempfile.TemporaryDirectory(prefix="medclf-fp-") as tmp:
        return _index_fingerprint(scan_dataset(data, extract_to=tmp), split)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "unreadable"
    return h.hexdigest()


def _index_fingerprint(index: DatasetIndex, split: str) -> str:
    split = evaluated_split(index, split)
    lines = [f"{it.rel}\t{index.class_names[it.label]}\t{_file_digest(it.path)}"
             for it in sorted(index.items, key=lambda x: x.rel) if split == "all" or it.split == split]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
