"""Datasets: scan a folder or zip, audit it, split it without leaks.

A dataset is a folder of class sub-folders::

    root/<class>/<image files>                 # split for you (stratified, seeded)
    root/{train,val,test}/<class>/<files>      # split already; any of val/test may be missing

or a ``.zip`` of either. Class names are the folder names, sorted.

The audit decodes every file once (through the same decoder training uses), so
an unreadable file is found before training, listed, and skipped. Exact
duplicates (same decoded pixels, MD5) and near-duplicates (256-bit difference
hash within ``near_duplicate_distance`` bits) are grouped; splits keep each group
on one side so that validation numbers are not flattered by leaked copies.

Example (a tiny dataset of two classes of ten random images each)::

    >>> import tempfile
    >>> from PIL import Image
    >>> root, rng = Path(tempfile.mkdtemp()), np.random.default_rng(0)
    >>> for cls in ("NORMAL", "PNEUMONIA"):
    ...     (root / cls).mkdir()
    ...     for i in range(10):
    ...         Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / cls / f"{i}.png")
    >>> index = scan_dataset(root)
    >>> report = audit_dataset(index, workers=1)
    >>> report.counts, report.warnings()
    ({'all': {'NORMAL': 10, 'PNEUMONIA': 10}}, [])
    >>> splits = split_dataset(index, report, val_fraction=0.2, test_fraction=0.2, seed=1337)
    >>> split_counts(splits, index.class_names)
    {'train': {'NORMAL': 6, 'PNEUMONIA': 6}, 'val': {'NORMAL': 2, 'PNEUMONIA': 2}, 'test': {'NORMAL': 2, 'PNEUMONIA': 2}}
    >>> shutil.rmtree(root)
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from medclf_core.io.archive import ZipLimits, limit_violation, unsafe_member_reason
from medclf_core.errors import DatasetError, ImageError
from medclf_core.io.images import is_image_candidate, load_image

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}

# Zip safety limits (a dataset zip is user-supplied).
ZIP_MAX_MEMBERS = 200_000
ZIP_MAX_TOTAL_BYTES = 8 * 2**30
ZIP_MAX_RATIO = 200
# Audit limits, per dataset or upload: files scanned, decoded pixels in all, and wall time.
DATASET_MAX_FILES = 200_000
AUDIT_MAX_TOTAL_PIXELS = 200 * 10**9
AUDIT_MAX_SECONDS = 3600.0


@dataclass
class Item:
    path: str          # absolute path
    rel: str           # path relative to the dataset root (stable across machines)
    label: int
    split: str | None  # None when the dataset is not pre-split


@dataclass
class DatasetIndex:
    root: str
    class_names: list[str]
    items: list[Item]
    presplit: bool
    skipped: list[dict] = field(default_factory=list)  # files ignored by the scan, with the reason
    extracted_to: str | None = None  # the temporary folder a zip was extracted into (removed by release_dataset)

    @property
    def name(self) -> str:
        return Path(self.root).name


@dataclass
class AuditReport:
    """What the audit found; everything is JSON-serialisable via :meth:`to_dict`."""

    class_names: list[str]
    counts: dict[str, dict[str, int]]              # split (or "all") -> class -> readable images
    imbalance_ratio: float                         # largest class / smallest class (readable images)
    unreadable: list[dict]                         # {"file", "error"}
    duplicate_groups: list[list[str]]              # exact duplicates (same pixels), relative paths
    near_duplicate_groups: list[list[str]]         # near-identical images (dHash), not exact copies
    cross_split_duplicates: list[list[str]]        # groups spanning train/val/test in a pre-split dataset
    conflicting_labels: list[list[str]]            # identical images filed under different classes
    fingerprint: str                               # sha256 over (relative path, pixel md5) of readable files
    hashes: dict[str, str] = field(default_factory=dict, repr=False)    # rel -> md5 of decoded pixels
    dhashes: dict[str, str] = field(default_factory=dict, repr=False)   # rel -> 256-bit dHash (hex)
    skipped: list[dict] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)  # {"file", "warning"}: decoded, but the data is damaged

    def to_dict(self, include_hashes: bool = False) -> dict:
        d = asdict(self)
        if not include_hashes:
            d.pop("hashes")
            d.pop("dhashes")
        return d

    def warnings(self) -> list[str]:
        """Plain-language findings worth a clinician's attention before training."""
        out = []
        if self.unreadable:
            out.append(f"{len(self.unreadable)} file(s) could not be read and will be skipped.")
        if self.damaged:
            out.append(f"{len({d['file'] for d in self.damaged})} file(s) have damaged image data (parts may be "
                       "grey or garbled); check them before training.")
        if self.imbalance_ratio >= 1.5:
            out.append(f"Classes are imbalanced (largest/smallest = {self.imbalance_ratio:.1f}); "
                       "class weights will be used by default.")
        n_dup = sum(len(g) - 1 for g in self.duplicate_groups)
        if n_dup:
            out.append(f"{n_dup} exact duplicate image(s) in {len(self.duplicate_groups)} group(s); "
                       "each group is kept on one side of the split.")
        if self.near_duplicate_groups:
            out.append(f"{len(self.near_duplicate_groups)} group(s) of near-identical images; kept together when splitting.")
        if self.cross_split_duplicates:
            out.append(f"{len(self.cross_split_duplicates)} duplicate group(s) cross the given train/val/test folders: "
                       "validation and test numbers will be optimistic.")
        if self.conflicting_labels:
            out.append(f"{len(self.conflicting_labels)} identical image(s) are filed under different classes.")
        for split, per_class in self.counts.items():
            for cls, n in per_class.items():
                if n == 0:
                    out.append(f"Class '{cls}' has no images in '{split}'.")
        return out


# ---------------------------------------------------------------------------- scanning

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
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))),
                  key=lambda d: d.name)


def _files_under(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file() and is_image_candidate(p)), key=lambda p: str(p))


def scan_dataset(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> DatasetIndex:
    """Index a dataset folder or zip. Does not decode images (see :func:`audit_dataset`).

    A zip is extracted into ``extract_to``, else into a new temporary folder that
    :func:`release_dataset` (or leaving :func:`open_dataset`) removes; any left at exit are
    removed then, and those of a killed process by :func:`remove_stale_extractions`.
    """
    path = Path(source).expanduser()
    temp: Path | None = None
    if path.is_file() and (zipfile.is_zipfile(path) or path.suffix.lower() == ".zip"):  # a damaged zip says so
        dest = Path(extract_to) if extract_to else (temp := _new_extraction_dir())
        try:
            skipped = safe_extract_zip(path, dest)
            # Messages name the zip, never the server's extraction folder.
            index = _scan_folder(_single_child_root(dest), source, skipped, shown=Path(source).name)
        except BaseException:
            if temp is not None:
                _remove_extraction(temp)
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


# ---------------------------------------------------------------------------- temporary extractions

EXTRACTION_PREFIX = "medclf-zip-"
_extractions: dict[str, int] = {}  # temporary extraction folder -> pid of the process that made it
_extractions_lock = threading.Lock()


def _new_extraction_dir() -> Path:
    """A new private temporary folder for one zip, named after this process; first removes what killed
    processes left behind (see :func:`remove_stale_extractions`)."""
    remove_stale_extractions()
    folder = Path(tempfile.mkdtemp(prefix=f"{EXTRACTION_PREFIX}{os.getpid()}-"))
    with _extractions_lock:
        _extractions[str(folder)] = os.getpid()
    return folder


def _remove_extraction(folder: str | os.PathLike) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with _extractions_lock:
        _extractions.pop(str(folder), None)


def release_dataset(index: DatasetIndex) -> None:
    """Remove the temporary folder :func:`scan_dataset` extracted a zip into (nothing for a folder,
    or for a zip extracted into a folder the caller chose). The index's files are gone afterwards."""
    if index.extracted_to:
        _remove_extraction(index.extracted_to)
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


@atexit.register
def _remove_own_extractions() -> None:
    """At exit, remove this process's temporary extractions (never a parent's, after a fork)."""
    with _extractions_lock:
        mine = [f for f, pid in _extractions.items() if pid == os.getpid()]
    for folder in mine:
        _remove_extraction(folder)


def remove_stale_extractions(temp_dir: str | os.PathLike | None = None, *, max_age_s: float = 86400.0) -> list[str]:
    """Remove ``medclf-zip-<pid>-*`` folders in the temp folder whose process is gone (killed before it
    could clean up), and ``medclf-zip-*`` folders of earlier versions (no pid in the name) untouched
    for ``max_age_s`` (default a day). Returns their names.

    Safe to call at any start (app, CLI): a live process's extraction is never touched.
    """
    base = Path(temp_dir or tempfile.gettempdir())
    removed = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(EXTRACTION_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    now = time.time()
    for folder in candidates:
        pid_text = folder.name[len(EXTRACTION_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and "-" in folder.name[len(EXTRACTION_PREFIX):]:
            stale = not _pid_alive(int(pid_text))
        else:
            try:
                stale = now - folder.stat().st_mtime > max_age_s
            except OSError:
                continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


# ---------------------------------------------------------------------------- audit

def dhash(pixels: np.ndarray, side: int = 16) -> str:
    """Difference hash (``side*side`` bits, hex): robust to re-encoding and rescaling.

    256 bits rather than the classic 64: at 8x8 many chest films look alike.
    """
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits((small[:, 1:] > small[:, :-1]).flatten()).tobytes().hex()


def _inspect(item: Item) -> tuple[str | None, str | None, str | None, int, list[str]]:
    """(pixel md5, dHash, error, decoded pixel count, decoder warnings) of one file."""
    try:
        img = load_image(item.path)
    except ImageError as exc:
        return None, None, str(exc), 0, []
    except MemoryError:
        return None, None, "The image is too large to decode with the memory available.", 0, []
    except Exception as exc:  # a decoder bug must not stop the audit
        return None, None, f"The file could not be decoded ({type(exc).__name__}).", 0, []
    digest = hashlib.md5(img.pixels.tobytes() + str(img.pixels.shape).encode()).hexdigest()
    return digest, dhash(img.pixels), None, int(img.pixels.shape[0] * img.pixels.shape[1]), list(img.warnings)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


_NEAR_BUDGET = 1 << 21  # (rows x candidates) compared at once: about 64 MB of XORed hash words


def _as_words(codes: list[str]) -> np.ndarray:
    """Hex hash codes as an (n, words) uint64 array (zero-padded to whole 64-bit words)."""
    raw = [bytes.fromhex(c) for c in codes]
    width = max((len(r) for r in raw), default=0)
    width = -(-width // 8) * 8 or 8
    buf = b"".join(r.ljust(width, b"\0") for r in raw)
    return np.frombuffer(buf, dtype=np.uint64).reshape(len(codes), width // 8)


def _within(rows: np.ndarray, cands: np.ndarray, max_distance: int) -> np.ndarray:
    """Boolean (len(rows), len(cands)): Hamming distance <= ``max_distance``, in bounded-size chunks."""
    out = np.zeros((len(rows), len(cands)), dtype=bool)
    step = max(1, _NEAR_BUDGET // max(len(rows), 1))
    for start in range(0, len(cands), step):
        block = cands[start:start + step]
        dist = np.bitwise_count(rows[:, None, :] ^ block[None, :, :]).sum(axis=2, dtype=np.int32)
        out[:, start:start + step] = dist <= max_distance
    return out


def _isolated(words: np.ndarray, max_distance: int) -> np.ndarray:
    """Codes that cannot be within ``max_distance`` bits of any other (boolean mask), found in linear time.

    Pigeonhole: split the bits into ``max_distance + 1`` disjoint bands; two codes differing in at
    most ``max_distance`` bits agree exactly on at least one band. A code whose value in every band
    is unique among all codes therefore has no near neighbour.
    """
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1)
    n_bands = max_distance + 1
    if n_bands > bits.shape[1] // 2:
        return np.zeros(len(words), dtype=bool)  # bands too thin to separate anything
    alone = np.ones(len(words), dtype=bool)
    for band in np.array_split(np.arange(bits.shape[1]), n_bands):
        keys = np.packbits(bits[:, band], axis=1)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        alone &= counts[inverse.reshape(-1)] == 1
    return alone


def _near_pairs(codes: list[str], max_distance: int, *, deadline: float | None = None) -> list[tuple[int, int]]:
    """Pairs linking every code to the first code of its near-duplicate component (Hamming distance
    at most ``max_distance`` bits, transitively), never more than ``len(codes) - 1`` pairs.

    The components are exactly those of the graph of all pairs within ``max_distance``, but that
    graph is never built: identical codes are merged first, codes that share no band of bits with any
    other (see :func:`_isolated`) are set aside without a comparison, then a breadth-first search walks
    the rest, comparing each frontier only with the codes not yet reached, in chunks of bounded size.
    Memory is O(n); time is linear for unrelated images and at most O(n^2) word comparisons (numpy)
    for thousands of mutually similar ones.
    ``deadline`` (a :func:`time.monotonic` value) stops a search that would take too long with a
    :class:`DatasetError`.
    """
    n = len(codes)
    if max_distance < 0 or n < 2:
        return []
    words = _as_words(codes)
    uniq, first, inverse = np.unique(words, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    m = len(uniq)
    comp = np.full(m, -1, dtype=np.int64)  # component seed (an index into uniq) of each distinct code
    unvisited = np.ones(m, dtype=bool)
    # Codes with no possible neighbour are their own component, without a single comparison.
    alone = _isolated(uniq, max_distance)
    comp[alone] = np.flatnonzero(alone)
    unvisited[alone] = False
    # Walk the other distinct codes in the order of their first appearance (deterministic, input order).
    order = np.argsort(first, kind="stable")
    order = order[~alone[order]]
    m = len(order)

    def check_time() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise DatasetError("The near-duplicate search took too long for this many images; "
                               "audit fewer images at a time or turn the near-duplicate check off "
                               "(near-duplicate distance -1).")

    pos = 0
    while pos < m:
        check_time()
        left = np.flatnonzero(unvisited)
        if not left.size:
            break
        batch_size = max(1, min(1024, _NEAR_BUDGET // len(left)))
        seeds = order[pos:pos + batch_size]
        pos += len(seeds)
        seeds = seeds[unvisited[seeds]]
        if not seeds.size:
            continue
        near = _within(uniq[seeds], uniq[left], max_distance)
        self_hit = left[None, :] == seeds[:, None]
        lonely = ~(near & ~self_hit).any(axis=1)
        comp[seeds[lonely]] = seeds[lonely]
        unvisited[seeds[lonely]] = False
        for seed in seeds[~lonely]:
            if not unvisited[seed]:
                continue  # reached from an earlier seed of this batch
            unvisited[seed] = False
            comp[seed] = seed
            frontier = np.array([seed])
            while frontier.size:
                check_time()
                cands = np.flatnonzero(unvisited)
                if not cands.size:
                    break
                reached = np.zeros(len(cands), dtype=bool)
                step = max(1, _NEAR_BUDGET // len(cands))
                for start in range(0, len(frontier), step):
                    reached |= _within(uniq[frontier[start:start + step]], uniq[cands], max_distance).any(axis=0)
                frontier = cands[reached]
                unvisited[frontier] = False
                comp[frontier] = seed
    # Map back to input indices: each code joins the first input index of its component's seed.
    root_of_uniq = first[comp]
    roots = root_of_uniq[inverse]
    return [(int(r), i) for i, r in enumerate(roots.tolist()) if r != i]


def _audit_seconds() -> float:
    """The audit's time limit: ``MEDCLF_AUDIT_MAX_SECONDS`` when set (0: none), else :data:`AUDIT_MAX_SECONDS`."""
    try:
        return float(os.environ.get("MEDCLF_AUDIT_MAX_SECONDS", AUDIT_MAX_SECONDS))
    except ValueError:
        return AUDIT_MAX_SECONDS


def _too_slow(limit_s: float) -> DatasetError:
    limit = f"{limit_s / 60:.0f} minutes" if limit_s >= 120 else f"{limit_s:.0f} seconds"
    return DatasetError(f"Auditing this dataset took longer than the limit of {limit} and was stopped; "
                        "audit fewer images at a time (the limit is set by MEDCLF_AUDIT_MAX_SECONDS).")


def _decode_all(items: list[Item], workers: int, deadline: float | None, limit_s: float,
                progress: Callable[[int, int], None] | None) -> list[tuple]:
    """:func:`_inspect` every item on a thread pool, stopping (with :class:`DatasetError`) past the
    deadline or once the decoded pixels exceed :data:`AUDIT_MAX_TOTAL_PIXELS`."""
    results = []
    total_pixels = 0
    pool = ThreadPoolExecutor(workers)
    window = 256 * workers  # submitted at a time: bounded bookkeeping for any number of files
    try:
        for start in range(0, len(items), window):
            for res in pool.map(_inspect, items[start:start + window]):
                results.append(res)
                total_pixels += res[3]
                if total_pixels > AUDIT_MAX_TOTAL_PIXELS:
                    raise DatasetError(f"The dataset's images hold more than {AUDIT_MAX_TOTAL_PIXELS / 1e9:g} "
                                       "gigapixels in all, more than one audit may decode; use fewer or smaller "
                                       "images.")
                if deadline is not None and time.monotonic() > deadline:
                    raise _too_slow(limit_s)
                if progress:
                    progress(len(results), len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def audit_dataset(index: DatasetIndex, *, near_duplicate_distance: int = 8, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  max_seconds: float | None = None) -> AuditReport:
    """Decode every image once, find unreadable files and duplicates, count classes.

    ``near_duplicate_distance`` is the dHash Hamming radius for near-duplicates
    (0 keeps only identical hashes; -1 turns the check off).
    ``progress(done, total)`` is called as files are decoded.

    Bounded for any input: exact duplicates are grouped by pixel hash first (one image per group
    enters the near-duplicate search), the near-duplicate search never builds the list of all
    close pairs, and the audit stops with a :class:`DatasetError` past ``max_seconds`` (default
    :data:`AUDIT_MAX_SECONDS`, or ``MEDCLF_AUDIT_MAX_SECONDS``; 0 for none) or past
    :data:`AUDIT_MAX_TOTAL_PIXELS` decoded pixels.
    """
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    limit_s = _audit_seconds() if max_seconds is None else max_seconds
    deadline = time.monotonic() + limit_s if limit_s and limit_s > 0 else None
    results = _decode_all(index.items, workers, deadline, limit_s, progress)

    unreadable, readable_idx = [], []
    hashes: dict[str, str] = {}
    dhashes: dict[str, str] = {}
    damaged = []
    for i, (digest, dh, err, _, warns) in enumerate(results):
        it = index.items[i]
        if err:
            unreadable.append({"file": it.rel, "error": err})
        else:
            damaged += [{"file": it.rel, "warning": w} for w in warns]
            readable_idx.append(i)
            hashes[it.rel] = digest
            dhashes[it.rel] = dh

    items = [index.items[i] for i in readable_idx]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        by_hash[hashes[it.rel]].append(k)
    duplicate_groups = [[items[k].rel for k in ks] for ks in by_hash.values() if len(ks) > 1]
    conflicting = [g for g, ks in ((g, by_hash[hashes[g[0]]]) for g in duplicate_groups)
                   if len({items[k].label for k in ks}) > 1]

    uf = _UnionFind(len(items))
    for ks in by_hash.values():
        for k in ks[1:]:
            uf.union(ks[0], k)
    # One representative per exact-duplicate group enters the near-duplicate search (same pixels, same dHash).
    reps = [ks[0] for ks in by_hash.values()]
    for a, b in _near_pairs([dhashes[items[k].rel] for k in reps], near_duplicate_distance, deadline=deadline):
        uf.union(reps[a], reps[b])
    groups: dict[int, list[int]] = defaultdict(list)
    for k in range(len(items)):
        groups[uf.find(k)].append(k)
    near_groups = [[items[k].rel for k in ks] for ks in groups.values()
                   if len(ks) > 1 and len({hashes[items[k].rel] for k in ks}) > 1]
    cross = []
    if index.presplit:
        cross = [[items[k].rel for k in ks] for ks in groups.values() if len({items[k].split for k in ks}) > 1]

    by_split: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_split[it.split or "all"].append(it)
    counts = split_counts(by_split, index.class_names)
    totals = Counter(it.label for it in items)
    sizes = [totals.get(c, 0) for c in range(len(index.class_names))]
    imbalance = (max(sizes) / min(sizes)) if min(sizes) > 0 else float("inf")
    fingerprint = hashlib.sha256("\n".join(f"{it.rel}\t{hashes[it.rel]}" for it in sorted(items, key=lambda x: x.rel))
                                 .encode()).hexdigest()
    return AuditReport(index.class_names, counts, round(imbalance, 3), unreadable,
                       duplicate_groups, near_groups, cross, conflicting, fingerprint, hashes, dhashes,
                       list(index.skipped), damaged)


# ---------------------------------------------------------------------------- splitting

def group_key(rel: str, pattern: str | None) -> str | None:
    """The patient (or study) id in a file name, from the first group of ``pattern`` (or the whole match).

    Example: ``group_key("PNEUMONIA/person12_virus_40.jpeg", r"person\\d+")`` is ``"person12"``.
    """
    if not pattern:
        return None
    m = re.search(pattern, Path(rel).name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def duplicate_components(items: list[Item], report: AuditReport, group_pattern: str | None = None) -> list[list[int]]:
    """Groups of item indices that must stay together: exact and near duplicates, and the
    images of one patient when ``group_pattern`` extracts a patient id from file names."""
    position = {it.rel: k for k, it in enumerate(items)}
    uf = _UnionFind(len(items))
    for group in report.duplicate_groups + report.near_duplicate_groups:
        present = [position[r] for r in group if r in position]
        for k in present[1:]:
            uf.union(present[0], k)
    first_of: dict[str, int] = {}
    for k, it in enumerate(items):
        key = group_key(it.rel, group_pattern)
        if key is not None:
            uf.union(first_of.setdefault(key, k), k)
    comps: dict[int, list[int]] = defaultdict(list)
    for k in range(len(items)):
        comps[uf.find(k)].append(k)
    return list(comps.values())


def stratified_group_split(labels: list[int], groups: list[list[int]], fractions: dict[str, float],
                           seed: int) -> dict[str, list[int]]:
    """Assign whole groups to splits so each class gets about ``fractions`` of its items.

    Greedy and deterministic for a given seed: groups are shuffled, then each goes
    to the split whose per-class quota is most unfilled.
    """
    rng = np.random.default_rng(seed)
    n_classes = max(labels) + 1 if labels else 0
    class_totals = np.bincount(labels, minlength=n_classes).astype(float)
    names = list(fractions)
    targets = {s: class_totals * fractions[s] for s in names}
    filled = {s: np.zeros(n_classes) for s in names}
    out: dict[str, list[int]] = {s: [] for s in names}
    order = rng.permutation(len(groups))
    # Large groups first so they do not overshoot a small split at the end.
    order = sorted(order, key=lambda g: -len(groups[g]))
    for g in order:
        members = groups[g]
        cls = Counter(labels[k] for k in members).most_common(1)[0][0]
        deficits = {s: (targets[s][cls] - filled[s][cls]) / max(targets[s][cls], 1e-9) for s in names}
        best = max(names, key=lambda s: (deficits[s], fractions[s]))
        out[best].extend(members)
        for k in members:
            filled[best][labels[k]] += 1
    return {s: sorted(v) for s, v in out.items()}


def split_dataset(index: DatasetIndex, report: AuditReport, *, val_fraction: float = 0.15,
                  test_fraction: float = 0.15, seed: int = 1337, group_pattern: str | None = None) -> dict[str, list[Item]]:
    """Train/val/test lists of readable items, stratified, seeded, duplicate groups kept whole.

    ``group_pattern`` (a regular expression on the file name) keeps each patient's images on one
    side, e.g. ``r"^(person\\d+|IM-\\d+|NORMAL2-IM-\\d+)"`` for the Kermany chest X-rays.

    A pre-split dataset keeps its folders; a missing val (or test) split is carved
    out of train with the same rules.
    """
    readable = [it for it in index.items if it.rel in report.hashes]
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError("Validation and test fractions must each be in [0, 1) and add up to less than 1.")
    if index.presplit:
        if not any(it.split == "train" for it in index.items):
            present = sorted({it.split for it in index.items if it.split})
            raise DatasetError(f"{index.name} has {', '.join(present) or 'split'} folders but no 'train' folder: "
                               "training needs one (evaluating on it works as it is).")
        splits = {s: [it for it in readable if it.split == s] for s in SPLIT_NAMES}
        carve = {}
        if not splits["val"]:
            carve["val"] = val_fraction
        if not splits["test"] and test_fraction > 0:
            carve["test"] = test_fraction
        if carve:
            pool = splits["train"]
            carved = _split_items(pool, report, {"train": 1 - sum(carve.values()), **carve}, seed, group_pattern)
            splits["train"] = carved["train"]
            for s in carve:
                splits[s] = carved[s]
    else:
        fr = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        splits = _split_items(readable, report, {k: v for k, v in fr.items() if v > 0}, seed, group_pattern)
        splits.setdefault("test", [])
        splits.setdefault("val", [])
    if not splits["train"]:
        raise DatasetError("The training split is empty.")
    present = {it.label for it in splits["train"]}
    missing = [index.class_names[c] for c in range(len(index.class_names)) if c not in present]
    if missing:
        raise DatasetError(f"Class(es) {', '.join(missing)} have no readable training images.")
    return splits


def _split_items(items: list[Item], report: AuditReport, fractions: dict[str, float], seed: int,
                 group_pattern: str | None = None) -> dict[str, list[Item]]:
    groups = duplicate_components(items, report, group_pattern)
    idx = stratified_group_split([it.label for it in items], groups, fractions, seed)
    return {s: [items[k] for k in ks] for s, ks in idx.items()}


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


# ---------------------------------------------------------------------------- the Train page's dataset summary

CHANNEL_SAMPLE = 32
COLOUR_MIN_DIFFERENCE = 3.0  # mean |R-G|, |G-B| in grey levels: JPEG chroma noise on a grey film stays below it


def dataset_channels(index: DatasetIndex, sample: int = CHANNEL_SAMPLE) -> int:
    """1 when the dataset's images are grayscale, 3 when they are colour: the default input of a model for it.

    Decodes up to ``sample`` images spread evenly over the dataset (every class), through the
    same decoder as training. An RGB file whose channels are (nearly) equal is a grey image
    saved as colour and counts as grayscale. The majority of the readable sample decides;
    grayscale when none is readable.
    """
    items = index.items
    if not items:
        return 1
    step = max(1, len(items) // max(1, sample))
    colour = grey = 0
    for item in items[::step][:sample]:
        try:
            px = load_image(item.path).pixels
        except (ImageError, OSError):
            continue
        if px.ndim == 3 and px.shape[2] >= 3:
            p = px[..., :3].astype(np.int16)
            diff = max(float(np.abs(p[..., 0] - p[..., 1]).mean()), float(np.abs(p[..., 1] - p[..., 2]).mean()))
            if diff >= COLOUR_MIN_DIFFERENCE:
                colour += 1
                continue
        grey += 1
    return 3 if colour > grey else 1


def audit_source(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> dict:
    """Scan and audit a dataset folder or zip; a JSON-ready summary for the Train page.

    Keys: ``root`` (the folder to train on; the extracted folder for a zip), ``name``,
    ``class_names, presplit, counts, imbalance_ratio, unreadable, duplicate_groups,
    near_duplicate_groups, cross_split_duplicates, skipped, warnings, n_images`` and
    ``channels`` (:func:`dataset_channels`: 1 for a grayscale dataset, 3 for colour).
    Raises :class:`DatasetError` with a plain message.
    """
    index = scan_dataset(source, extract_to=extract_to)
    report = audit_dataset(index)
    d = report.to_dict()
    imbalance = d["imbalance_ratio"]
    return {"root": index.root, "name": index.name, "class_names": index.class_names, "presplit": index.presplit,
            "counts": d["counts"], "imbalance_ratio": imbalance if np.isfinite(imbalance) else None,
            "unreadable": d["unreadable"], "duplicate_groups": d["duplicate_groups"],
            "near_duplicate_groups": d["near_duplicate_groups"],
            "cross_split_duplicates": d["cross_split_duplicates"], "skipped": d["skipped"],
            "warnings": report.warnings(), "n_images": sum(sum(v.values()) for v in d["counts"].values()),
            "channels": dataset_channels(index)}
