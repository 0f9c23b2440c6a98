"""The dataset audit: decode every image once, before training, and say what is wrong with the set.

The audit decodes every file through the same decoder training uses, so an unreadable file is
found before training, listed, and skipped. Exact duplicates (same decoded pixels, MD5) and
near-duplicates (256-bit difference hash within ``near_duplicate_distance`` bits, see
:mod:`medclf_core.data.near_duplicates`) are grouped; :mod:`medclf_core.data.split` keeps each
group on one side so that validation numbers are not flattered by leaked copies.

Example (a tiny dataset of two classes of ten random images each)::

    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root, rng = Path(tempfile.mkdtemp()), np.random.default_rng(0)
    >>> for cls in ("NORMAL", "PNEUMONIA"):
    ...     (root / cls).mkdir()
    ...     for i in range(10):
    ...         Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / cls / f"{i}.png")
    >>> report = audit_dataset(scan_dataset(root), workers=1)
    >>> report.counts, report.warnings(), report.duplicate_groups
    ({'all': {'NORMAL': 10, 'PNEUMONIA': 10}}, [], [])
    >>> shutil.rmtree(root)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from medclf_core.data.channels import dataset_channels
from medclf_core.data.near_duplicates import UnionFind, dhash, near_pairs
from medclf_core.data.scan import DatasetIndex, Item, scan_dataset, split_counts
from medclf_core.errors import DatasetError, ImageError
from medclf_core.io.images import load_image

# Audit limits, per dataset or upload: decoded pixels in all, and wall time.
AUDIT_MAX_TOTAL_PIXELS = 200 * 10**9
AUDIT_MAX_SECONDS = 3600.0


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
    digest = pixel_digest(img.pixels)
    return digest, dhash(img.pixels), None, int(img.pixels.shape[0] * img.pixels.shape[1]), list(img.warnings)


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
    decoded = _Decoded.sort(index.items, _decode_all(index.items, workers, deadline, limit_s, progress))
    items, hashes = decoded.items, decoded.hashes
    by_hash: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        by_hash[hashes[it.rel]].append(k)
    duplicate_groups = [[items[k].rel for k in ks] for ks in by_hash.values() if len(ks) > 1]
    conflicting = [g for g, ks in ((g, by_hash[hashes[g[0]]]) for g in duplicate_groups)
                   if len({items[k].label for k in ks}) > 1]
    groups = _similar_groups(decoded, by_hash, near_duplicate_distance, deadline)
    near_groups = [[items[k].rel for k in ks] for ks in groups if len({hashes[items[k].rel] for k in ks}) > 1]
    cross = []
    if index.presplit:
        cross = [[items[k].rel for k in ks] for ks in groups if len({items[k].split for k in ks}) > 1]
    counts, imbalance = _class_counts(items, index.class_names)
    return AuditReport(index.class_names, counts, round(imbalance, 3), decoded.unreadable,
                       duplicate_groups, near_groups, cross, conflicting, _fingerprint(items, hashes), hashes,
                       decoded.dhashes, list(index.skipped), decoded.damaged)


@dataclass
class _Decoded:
    """The audit's decoding sorted out: readable ``items`` with their hashes, and what failed or is damaged."""

    items: list[Item]
    hashes: dict[str, str]   # rel -> md5 of decoded pixels
    dhashes: dict[str, str]  # rel -> dHash
    unreadable: list[dict]
    damaged: list[dict]

    @classmethod
    def sort(cls, items: list[Item], results: list[tuple]) -> _Decoded:
        """Sort the :func:`_inspect` ``results`` of ``items`` (same order) into readable and unreadable."""
        out = cls([], {}, {}, [], [])
        for it, (digest, dh, err, _, warns) in zip(items, results):
            if err:
                out.unreadable.append({"file": it.rel, "error": err})
                continue
            out.damaged += [{"file": it.rel, "warning": w} for w in warns]
            out.items.append(it)
            out.hashes[it.rel] = digest
            out.dhashes[it.rel] = dh
        return out


def _similar_groups(decoded: _Decoded, by_hash: dict[str, list[int]], near_duplicate_distance: int,
                    deadline: float | None) -> list[list[int]]:
    """Every readable item's group of exact and near duplicates (indices into ``decoded.items``), singletons
    included. One representative per exact-duplicate group enters the near-duplicate search (same
    pixels, same dHash)."""
    items = decoded.items
    uf = UnionFind(len(items))
    for ks in by_hash.values():
        for k in ks[1:]:
            uf.union(ks[0], k)
    reps = [ks[0] for ks in by_hash.values()]
    for a, b in near_pairs([decoded.dhashes[items[k].rel] for k in reps], near_duplicate_distance,
                           deadline=deadline):
        uf.union(reps[a], reps[b])
    groups: dict[int, list[int]] = defaultdict(list)
    for k in range(len(items)):
        groups[uf.find(k)].append(k)
    return list(groups.values())


def _class_counts(items: list[Item], class_names: list[str]) -> tuple[dict[str, dict[str, int]], float]:
    """Readable images per split (``"all"`` when not pre-split) and class, and largest / smallest class."""
    by_split: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_split[it.split or "all"].append(it)
    totals = Counter(it.label for it in items)
    sizes = [totals.get(c, 0) for c in range(len(class_names))]
    imbalance = (max(sizes) / min(sizes)) if min(sizes) > 0 else float("inf")
    return split_counts(by_split, class_names), imbalance


def pixel_digest(pixels) -> str:
    """The identity of an image's decoded pixels (md5 of their bytes and shape): what the audit calls two
    identical images, what training records of its images (``training_images.json``) and evaluation compares.

    >>> import numpy as np
    >>> a, b = np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8)   # the same bytes, another shape
    >>> pixel_digest(a) == pixel_digest(a.copy()), pixel_digest(a) == pixel_digest(b)
    (True, False)
    """
    return hashlib.md5(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


def pixel_fingerprint(hashes: dict[str, str]) -> str:
    """The audit's dataset fingerprint (what ``card["dataset"]["fingerprint"]`` holds) from ``{relative path:
    pixel_digest}`` of the readable files: an evaluation that decoded the same files gets the same value."""
    text = "\n".join(f"{rel}\t{digest}" for rel, digest in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _fingerprint(items: list[Item], hashes: dict[str, str]) -> str:
    """sha256 over (relative path, pixel md5) of the readable files, in path order."""
    text = "\n".join(f"{it.rel}\t{hashes[it.rel]}" for it in sorted(items, key=lambda x: x.rel))
    return hashlib.sha256(text.encode()).hexdigest()


def audit_source(source: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> dict:
    """Scan and audit a dataset folder or zip; a JSON-ready summary for the Train page.

    Keys: ``root`` (the folder to train on; the extracted folder for a zip), ``name``,
    ``class_names, presplit, counts, imbalance_ratio, unreadable, duplicate_groups,
    near_duplicate_groups, cross_split_duplicates, skipped, warnings, n_images`` and
    ``channels`` (:func:`medclf_core.data.channels.dataset_channels`: 1 for a grayscale dataset, 3 for colour).
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
