"""Datasets uploaded from the browser: evaluation sets staged in a temporary folder that does not outlive
them, and the Train page's kept uploads removed once unused.

The Evaluate page takes a zip laid out as for training (``<class>/...`` or
``train|val|test/<class>/...``) or loose images with their class. Either is written
into a private temporary folder, as a dataset folder that
:func:`medclf_core.inference.folder.predict_folder` reads like any other, so an upload
gets exactly the evaluation a folder on the server gets. A zip goes through
:func:`medclf_core.data.scan.scan_dataset`, so the dataset zip guards (member count,
unpacked size, compression ratio, paths that escape the folder, links) apply.

The folder must live as long as the page shows the result (the misclassified images
are read from it), and no longer: :class:`StagedDataset` removes it when it is
replaced (:meth:`StagedDataset.remove`), when the object is dropped (the browser
session that held it ends) and at exit. It is named like the dataset extractions of
:mod:`medclf_core.data.extract` (``medclf-zip-<pid>-...``), so
:func:`medclf_core.data.extract.remove_stale_extractions` removes those of a killed process.

A dataset zip uploaded on the Train page is kept instead (``<jobs dir>/uploads/<digest>``): a
background run reads it after the upload, so it cannot go with the browser session;
:func:`remove_stale_uploads` removes those unused for a day.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from medclf_core.data.extract import EXTRACTION_PREFIX, remove_stale_extractions
from medclf_core.data.scan import dataset_name_from_file, scan_dataset
from medclf_core.errors import DatasetError
from medclf_core.io.stale import remove_stale_folders

DATA_FOLDER = "data"
UPLOADS_KEPT_S = 86400.0  # a Train-page upload is kept a day after it was last used


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


def upload_extract_folder(folder: str | os.PathLike, upload_name: str) -> Path:
    """Where the Train page extracts a kept dataset zip: ``folder/<the zip's stem, made safe>``. The folder's
    name is the dataset's name (the default run name, the task, the card's training data), so a model trained
    on ``ctmri.zip`` is ``ctmri-...``, not ``data-...``.

    >>> upload_extract_folder("/jobs/uploads/ab12", "CT MRI.zip").name
    'CT-MRI'
    """
    return Path(folder) / dataset_name_from_file(upload_name)


def remove_stale_uploads(uploads_dir: str | os.PathLike, *, in_use: Iterable[str | os.PathLike] = (),
                         max_age_s: float = UPLOADS_KEPT_S) -> list[str]:
    """Remove upload folders in ``uploads_dir`` untouched for ``max_age_s`` (default a day), except those
    holding a path in ``in_use`` (the data of a running job). Returns the names of the folders removed.

    A run trained on an upload keeps working without it; only its own-split pictures on the Evaluate
    page say that the images are no longer on this server. Never raises.

    >>> import tempfile, time
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

    def holds_busy_path(folder: Path) -> bool:
        try:
            resolved = folder.resolve()
        except (OSError, RuntimeError):
            return True  # cannot tell: leave it alone
        return any(b == resolved or resolved in b.parents for b in busy)

    return remove_stale_folders(uploads_dir, max_age_s=max_age_s, keep=holds_busy_path)
