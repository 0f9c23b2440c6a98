"""Split a dataset into train / validation / test without leaks: stratified, seeded, groups kept whole.

Exact and near duplicates found by the audit (:mod:`medclf_core.data.audit`), and optionally
the images of one patient (a pattern on the file name), always land on the same side, so that
validation and test numbers are not flattered by copies of training images.

Example (a tiny dataset of two classes of ten random images each)::

    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from medclf_core.data.audit import audit_dataset
    >>> from medclf_core.data.scan import scan_dataset, split_counts
    >>> root, rng = Path(tempfile.mkdtemp()), np.random.default_rng(0)
    >>> for cls in ("NORMAL", "PNEUMONIA"):
    ...     (root / cls).mkdir()
    ...     for i in range(10):
    ...         Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / cls / f"{i}.png")
    >>> index = scan_dataset(root)
    >>> splits = split_dataset(index, audit_dataset(index, workers=1), val_fraction=0.2, test_fraction=0.2, seed=1337)
    >>> split_counts(splits, index.class_names)
    {'train': {'NORMAL': 6, 'PNEUMONIA': 6}, 'val': {'NORMAL': 2, 'PNEUMONIA': 2}, 'test': {'NORMAL': 2, 'PNEUMONIA': 2}}
    >>> shutil.rmtree(root)
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from medclf_core.data.audit import AuditReport
from medclf_core.data.near_duplicates import UnionFind
from medclf_core.data.scan import SPLIT_NAMES, DatasetIndex, Item
from medclf_core.errors import DatasetError


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


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot serve as a group pattern (a plain clause), or None.

    >>> pattern_problem(r"person\\d+") is None, pattern_problem("person(")
    (True, 'is not a regular expression (missing ), unterminated subpattern at position 6)')
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"is not a regular expression ({exc})"
    return None


def unmatched_note(rels: list[str], pattern: str | None) -> str | None:
    """A plain note when ``pattern`` gives no patient id for some of the file names ``rels`` (each of those then
    counts as a patient of its own), or for none (the intervals resample images as without a pattern); None
    when every name gives one, or without a pattern.

    >>> unmatched_note(["a/person1_x.png", "a/person1_y.png", "b/IM-3.png"], r"person\\d+")
    'The patient pattern matched 2 of the 3 file names; the other one counts as a patient of its own.'
    """
    if not pattern or not rels:
        return None
    matched = sum(bool(group_key(r, pattern)) for r in rels)  # an empty id is no patient
    if matched == len(rels):
        return None
    if not matched:
        return (f"The patient pattern matched none of the {len(rels)} file names: the intervals resample images, "
                "as without a pattern.")
    rest = len(rels) - matched
    others = "the other one counts" if rest == 1 else f"each of the other {rest} counts"
    return f"The patient pattern matched {matched} of the {len(rels)} file names; {others} as a patient of its own."


def duplicate_components(items: list[Item], report: AuditReport, group_pattern: str | None = None) -> list[list[int]]:
    """Groups of item indices that must stay together: exact and near duplicates, and the
    images of one patient when ``group_pattern`` extracts a patient id from file names."""
    position = {it.rel: k for k, it in enumerate(items)}
    uf = UnionFind(len(items))
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
    """``items`` split by ``fractions`` (split name -> fraction), each duplicate or patient group whole."""
    groups = duplicate_components(items, report, group_pattern)
    idx = stratified_group_split([it.label for it in items], groups, fractions, seed)
    return {s: [items[k] for k in ks] for s, ks in idx.items()}

