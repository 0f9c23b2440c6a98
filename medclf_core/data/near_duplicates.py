"""Near-duplicate images: a difference hash per image, and the groups of images whose hashes are close.

:func:`dhash` reduces an image to 256 bits that survive re-encoding and rescaling;
:func:`near_pairs` links every hash to the first of its group (Hamming distance at most a
few bits, transitively) in bounded memory and, for unrelated images, linear time.
:class:`UnionFind` merges the groups (the audit and the split both use it).

Example (two hashes one bit apart, and a third far from both)::

    >>> near_pairs(["00" * 32, "00" * 31 + "01", "ff" * 32], max_distance=2)
    [(0, 1)]
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from medclf_core.errors import DatasetError

_NEAR_BUDGET = 1 << 21  # (rows x candidates) compared at once: about 64 MB of XORed hash words


def dhash(pixels: np.ndarray, side: int = 16) -> str:
    """Difference hash (``side*side`` bits, hex): robust to re-encoding and rescaling.

    256 bits rather than the classic 64: at 8x8 many chest films look alike.
    """
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits((small[:, 1:] > small[:, :-1]).flatten()).tobytes().hex()


class UnionFind:
    """Disjoint sets of ``0..n-1``: :meth:`union` merges two sets, :meth:`find` names a set by its smallest member."""

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


def near_pairs(codes: list[str], max_distance: int, *, deadline: float | None = None) -> list[tuple[int, int]]:
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
    if max_distance < 0 or len(codes) < 2:
        return []
    uniq, first, inverse = np.unique(_as_words(codes), axis=0, return_index=True, return_inverse=True)
    search = _ComponentSearch(uniq, max_distance, deadline)
    search.run(first)
    # Map back to input indices: each code joins the first input index of its component's seed.
    roots = first[search.comp][inverse.reshape(-1)]
    return [(int(r), i) for i, r in enumerate(roots.tolist()) if r != i]


class _ComponentSearch:
    """The breadth-first search of :func:`near_pairs` over distinct codes ``uniq``: ``comp[k]`` is the
    seed (an index into ``uniq``) of code ``k``'s component once :meth:`run` has returned."""

    def __init__(self, uniq: np.ndarray, max_distance: int, deadline: float | None):
        self.uniq, self.max_distance, self.deadline = uniq, max_distance, deadline
        self.comp = np.full(len(uniq), -1, dtype=np.int64)
        self.unvisited = np.ones(len(uniq), dtype=bool)

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DatasetError("The near-duplicate search took too long for this many images; "
                               "audit fewer images at a time or turn the near-duplicate check off "
                               "(near-duplicate distance -1).")

    def run(self, first: np.ndarray) -> None:
        """Assign every code a component, seeds taken in the order of the codes' first appearance."""
        # Codes with no possible neighbour are their own component, without a single comparison.
        alone = _isolated(self.uniq, self.max_distance)
        self.comp[alone] = np.flatnonzero(alone)
        self.unvisited[alone] = False
        order = np.argsort(first, kind="stable")  # deterministic: input order
        order = order[~alone[order]]
        pos = 0
        while pos < len(order):
            self.check_time()
            left = np.flatnonzero(self.unvisited)
            if not left.size:
                break
            batch_size = max(1, min(1024, _NEAR_BUDGET // len(left)))
            seeds = order[pos:pos + batch_size]
            pos += len(seeds)
            seeds = seeds[self.unvisited[seeds]]
            if seeds.size:
                self._seed_batch(seeds, left)

    def _seed_batch(self, seeds: np.ndarray, left: np.ndarray) -> None:
        """Close seeds with no neighbour among the unvisited codes ``left`` at once; flood from the others."""
        near = _within(self.uniq[seeds], self.uniq[left], self.max_distance)
        self_hit = left[None, :] == seeds[:, None]
        lonely = ~(near & ~self_hit).any(axis=1)
        self.comp[seeds[lonely]] = seeds[lonely]
        self.unvisited[seeds[lonely]] = False
        for seed in seeds[~lonely]:
            if self.unvisited[seed]:  # else reached from an earlier seed of this batch
                self._flood(seed)

    def _flood(self, seed: int) -> None:
        """Give ``seed``'s component everything reachable from it in steps of at most ``max_distance`` bits."""
        self.unvisited[seed] = False
        self.comp[seed] = seed
        frontier = np.array([seed])
        while frontier.size:
            self.check_time()
            cands = np.flatnonzero(self.unvisited)
            if not cands.size:
                break
            reached = np.zeros(len(cands), dtype=bool)
            step = max(1, _NEAR_BUDGET // len(cands))
            for start in range(0, len(frontier), step):
                reached |= _within(self.uniq[frontier[start:start + step]], self.uniq[cands],
                                   self.max_distance).any(axis=0)
            frontier = cands[reached]
            self.unvisited[frontier] = False
            self.comp[frontier] = seed
