"""Scan a dataset folder or zip into an index of its images and classes (nothing is decoded here).

A dataset is a folder of class sub-folders::

    root/<class>/<image files>                 # split for you (stratified, seeded)
    root/{train,val,test}/<class>/<files>      # split already; any of val/test may be missing

or a ``.zip`` of either (extracted by :mod:`medclf_core.data.extract`). Class names are the
folder names, sorted.

Example::

    >>> import shutil, tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("NORMAL", "PNEUMONIA"):
    ...     (root / cls).mkdir()
    ...     _ = (root / cls / "a.png").write_bytes(b"")
    >>> index = scan_dataset(root)
    >>> index.class_names, index.presplit, split_counts({"all": index.items}, index.class_names)
    (['NORMAL', 'PNEUMONIA'], False, {'all': {'NORMAL': 1, 'PNEUMONIA': 1}})
    >>> shutil.rmtree(root)
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medclf_core.data.extract import new_extraction_dir, remove_extraction, safe_extract_zip
from medclf_core.errors import DatasetError
from medclf_core.io.images import is_image_candidate

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
DATASET_MAX_FILES = 200_000  # image files one dataset or upload may hold


@dataclass
class Item:
    """One image file of a dataset, with its class (``label``, an index into the class names)."""

    path: str          # absolute path
    rel: str           # path relative to the dataset root (stable across machines)
    label: int
    split: str | None  # None when the dataset is not pre-split


@dataclass
class DatasetIndex:
    """What :func:`scan_dataset` found: the dataset folder, its classes and image files."""

    root: str
    class_names: list[str]
    items: list[Item]
    presplit: bool
    skipped: list[dict] = field(default_factory=list)  # files ignored by the scan, with the reason
    extracted_to: str | None = None  # the temporary folder a zip was extracted into (removed by release_dataset)
    source_name: str | None = None  # a zip's stem when its classes sit at the top of the zip (no wrapping folder)

    @property
    def name(self) -> str:
        """The dataset's name: its folder's, or for a zip without a wrapping folder the zip's (never the
        extraction folder's)."""
        return self.source_name or Path(self.root).name


def dataset_name_from_file(file_name: str) -> str:
    """A dataset name from an uploaded file's name: its stem with anything but letters, digits, ``.``, ``_``
    and ``-`` made ``-`` (``data`` when nothing is left).

    >>> dataset_name_from_file("CT MRI (v2).zip")
    'CT-MRI-v2'
    """
    stem = Path(str(file_name).replace("\\", "/")).name
    stem = stem[:-4] if stem.lower().endswith(".zip") else Path(stem).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "data"


def _single_child_root(root: Path) -> Path:
    """A zip often wraps the dataset in one top folder; step into it."""
    while True:
        children = [c for c in root.iterdir() if not c.name.startswith((".", "__MACOSX"))]
        dirs = [c for c in children if c.is_dir()]
        if len(dirs) == 1 and not [c for c in children if c.is_file()]:
            sub = dirs[0]
            if sub.name.lower() in SPLIT_ALIASES:
                return root  # a test-only dataset (root/test/<class>/...) keeps its split
            grandchildren = [c for c in sub.iterdir() if c.is_dir() and not c.name.startswith(".")]
            if grandchildren and any(g.is_dir() for g in grandchildren):
                root = sub
                continue
        return root


def _class_dirs(folder: Path) -> list[Path]:
    """The sub-folders that can be classes or splits (hidden and ``_`` folders are not), by name."""
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))),
                  key=lambda d: d.name)


def _files_under(folder: Path) -> list[Path]:
    """Every file at any depth under ``folder`` that may be an image, in path order."""
    return sorted((p for p in folder.rglob("*") if p.is_file() and is_image_candidate(p)), key=lambda p: str(p))


def scan_dataset(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> DatasetIndex:
    """Index a dataset folder or zip. Does not decode images (see :func:`medclf_core.data.audit.audit_dataset`).

    A zip is extracted into ``extract_to``, else into a new temporary folder that
    :func:`release_dataset` (or leaving :func:`open_dataset`) removes; any left at exit are
    removed then, and those of a killed process by
    :func:`medclf_core.data.extract.remove_stale_extractions`.
    """
    path = Path(source).expanduser()
    temp: Path | None = None
    if path.is_file() and (zipfile.is_zipfile(path) or path.suffix.lower() == ".zip"):  # a damaged zip says so
        dest = Path(extract_to) if extract_to else (temp := new_extraction_dir())
        try:
            skipped = safe_extract_zip(path, dest)
            # Messages name the zip, never the server's extraction folder.
            root = _single_child_root(dest)
            index = _scan_folder(root, source, skipped, shown=Path(source).name)
            if root == dest:
                index.source_name = dataset_name_from_file(path.name)
        except BaseException:
            if temp is not None:
                remove_extraction(temp)
            raise
        index.extracted_to = str(temp) if temp is not None else None
        return index
    return _scan_folder(path, source, [])


def _scan_folder(path: Path, source, skipped: list[dict], shown: str | None = None) -> DatasetIndex:
    if path.is_file():
        raise DatasetError(f"{Path(source).name} is a single file. A dataset is a folder (or a .zip) with one "
                           "subfolder per class, e.g. NORMAL/ and PNEUMONIA/; to classify one image, use Predict.")
    if not path.is_dir():
        raise DatasetError(f"Dataset not found: {source} is not a folder or a zip file.")
    path = path.resolve()
    shown = shown or str(path)
    top = _class_dirs(path)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in top if d.name.lower() in SPLIT_ALIASES}
    items: list[Item] = []
    if split_dirs and len(split_dirs) == len(top):
        class_names = sorted({c.name for d in split_dirs.values() for c in _class_dirs(d)})
        if not class_names:
            raise DatasetError(f"{shown} has train/val/test folders but no class folders inside them.")
        for split, d in sorted(split_dirs.items()):
            for cdir in _class_dirs(d):
                label = class_names.index(cdir.name)
                items += [Item(str(f), f.relative_to(path).as_posix(), label, split) for f in _files_under(cdir)]
        presplit = True  # a test-only folder is a valid evaluation set; split_dataset asks for 'train'
    else:
        class_names = [d.name for d in top]
        for label, cdir in enumerate(top):
            items += [Item(str(f), f.relative_to(path).as_posix(), label, None) for f in _files_under(cdir)]
        presplit = False
        for f in path.iterdir():
            if f.is_file() and is_image_candidate(f):
                skipped.append({"file": f.name, "reason": "image outside any class folder"})
    if len(class_names) < 2:
        raise DatasetError(
            f"{shown} must contain at least two class folders (found {len(class_names)}: "
            f"{', '.join(class_names) or 'none'}). Layout: root/<class>/<images> or root/train/<class>/<images>."
        )
    if not items:
        raise DatasetError(f"No image files found under {shown}.")
    if len(items) > DATASET_MAX_FILES:
        raise DatasetError(f"The dataset has {len(items)} image files; the limit is {DATASET_MAX_FILES}.")
    return DatasetIndex(str(path), class_names, items, presplit, skipped)


def release_dataset(index: DatasetIndex) -> None:
    """Remove the temporary folder :func:`scan_dataset` extracted a zip into (nothing for a folder,
    or for a zip extracted into a folder the caller chose). The index's files are gone afterwards."""
    if index.extracted_to:
        remove_extraction(index.extracted_to)
        index.extracted_to = None


@contextmanager
def open_dataset(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> Iterator[DatasetIndex]:
    """:func:`scan_dataset` as a context manager: a zip's temporary extraction is removed on leaving.

    Example::

        with open_dataset("data.zip") as index:
            report = audit_dataset(index)
    """
    index = scan_dataset(source, extract_to)
    try:
        yield index
    finally:
        release_dataset(index)


def split_counts(splits: dict[str, list[Item]], class_names: list[str]) -> dict[str, dict[str, int]]:
    """Images per class in each split: ``{split: {class: n}}``, every class listed (0 when absent).

    The one class count (the audit, the card's dataset counts and the trust refit use it).

    >>> split_counts({"train": [Item("/a", "a", 1, "train")], "val": []}, ["cat", "dog"])
    {'train': {'cat': 0, 'dog': 1}, 'val': {'cat': 0, 'dog': 0}}
    """
    out = {}
    for split, its in splits.items():
        per_label = Counter(it.label for it in its)
        out[split] = {c: per_label.get(k, 0) for k, c in enumerate(class_names)}
    return out
