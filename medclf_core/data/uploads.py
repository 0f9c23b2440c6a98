"""Evaluation sets uploaded from the browser, staged in a temporary folder that does not outlive them.

The Evaluate page takes a zip laid out as for training (``<class>/...`` or
``train|val|test/<class>/...``) or loose images with their class. Either is written
into a private temporary folder, as a dataset folder that
:func:`medclf_core.inference.predictor.predict_folder` reads like any other, so an upload
gets exactly the evaluation a folder on the server gets. A zip goes through
:func:`medclf_core.data.dataset.scan_dataset`, so the dataset zip guards (member count,
unpacked size, compression ratio, paths that escape the folder, links) apply.

The folder must live as long as the page shows the result (the misclassified images
are read from it), and no longer: :class:`StagedDataset` removes it when it is
replaced (:meth:`StagedDataset.remove`), when the object is dropped (the browser
session that held it ends) and at exit. It is named like the dataset extractions of
:mod:`medclf_core.data.dataset` (``medclf-zip-<pid>-...``), so
:func:`medclf_core.data.dataset.remove_stale_extractions` removes those of a killed process.

Example::

    >>> staged = stage_images({"NORMAL": [("a.png", png_bytes)], "PNEUMONIA": []})   # doctest: +SKIP
    >>> predict_folder(predictor, staged.root, "all")                                 # doctest: +SKIP
    >>> staged.remove()                                                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from medclf_core.data.dataset import EXTRACTION_PREFIX, remove_stale_extractions, scan_dataset
from medclf_core.errors import DatasetError

DATA_FOLDER = "data"


class StagedDataset:
    """A private temporary folder holding one uploaded dataset; ``root`` is the dataset folder in it.

    ``skipped``: zip members that were not extracted, with the reason (unsafe paths, links, ...).
    """

    def __init__(self) -> None:
        remove_stale_extractions()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{EXTRACTION_PREFIX}{os.getpid()}-upload-"))
        self.root = str(self.folder / DATA_FOLDER)
        self.skipped: list[dict] = []
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def remove(self) -> None:
        """Delete the folder and everything in it (idempotent)."""
        self._finalizer()

    @property
    def removed(self) -> bool:
        return not self._finalizer.alive


def stage_zip(data: bytes, name: str = "upload.zip") -> StagedDataset:
    """Extract an uploaded dataset zip (the dataset zip guards apply); :class:`DatasetError` with a plain
    message (naming the upload's file ``name``) when it is not a usable dataset, and then nothing is
    left on disk."""
    staged = StagedDataset()
    try:
        archive = staged.folder / _safe_file_name(name, 1, {DATA_FOLDER})
        archive.write_bytes(data)
        index = scan_dataset(archive, extract_to=staged.folder / DATA_FOLDER)
        archive.unlink()  # the extracted files are what is read; the zip would only double the disk used
        staged.root, staged.skipped = index.root, list(index.skipped)
    except BaseException:
        staged.remove()
        raise
    return staged


def _safe_file_name(name: str, k: int, taken: set[str]) -> str:
    """The upload's own file name without any folder part, never hidden, never a duplicate."""
    base = Path(str(name).replace("\\", "/")).name.lstrip(".").strip() or f"image-{k}"
    stem, suffix = Path(base).stem, Path(base).suffix
    out, n = base, 2
    while out.lower() in taken:
        out, n = f"{stem}-{n}{suffix}", n + 1
    taken.add(out.lower())
    return out


def stage_images(by_class: Mapping[str, Sequence[tuple[str, bytes]]]) -> StagedDataset:
    """Write uploaded images into ``<class>/<file name>`` folders, one per class of ``by_class`` (a class
    with no image still gets its folder, so images of one class can be evaluated). ``by_class`` maps each
    class name (the model's) to ``(file name, bytes)`` pairs; :class:`DatasetError` when there is no image."""
    if not any(by_class.values()):
        raise DatasetError("Add at least one image first.")
    staged = StagedDataset()
    try:
        for cls, files in by_class.items():
            if not cls or cls.startswith((".", "_")) or Path(cls).name != cls:
                raise DatasetError(f"'{cls}' cannot be used as a class folder name.")
            folder = Path(staged.root) / cls
            folder.mkdir(parents=True)
            taken: set[str] = set()
            for k, (name, data) in enumerate(files, 1):
                (folder / _safe_file_name(name, k, taken)).write_bytes(data)
    except BaseException:
        staged.remove()
        raise
    return staged
