"""medclf_core.data.near_duplicates: the bounded near-duplicate search (issue 17) finds the components of all pairs."""

from __future__ import annotations

import time

import numpy as np
import pytest

import medclf_core.data.near_duplicates as near_module
from medclf_core.data.near_duplicates import UnionFind, near_pairs
from medclf_core.errors import DatasetError


def _brute_components(codes: list[str], max_distance: int) -> set[frozenset[int]]:
    """Components of the all-pairs graph, the obvious quadratic way (small inputs only)."""
    ints = [int(c, 16) for c in codes]
    uf = UnionFind(len(codes))
    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            if bin(ints[i] ^ ints[j]).count("1") <= max_distance:
                uf.union(i, j)
    comps: dict[int, set[int]] = {}
    for i in range(len(codes)):
        comps.setdefault(uf.find(i), set()).add(i)
    return {frozenset(c) for c in comps.values()}


def _components(pairs, n: int) -> set[frozenset[int]]:
    uf = UnionFind(n)
    for a, b in pairs:
        uf.union(a, b)
    comps: dict[int, set[int]] = {}
    for i in range(n):
        comps.setdefault(uf.find(i), set()).add(i)
    return {frozenset(c) for c in comps.values()}


def _flip(code: int, rng, n_bits: int, width: int = 256) -> int:
    for b in rng.choice(width, n_bits, replace=False):
        code ^= 1 << int(b)
    return code


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_distance", [0, 3, 8])
def test_near_pairs_finds_the_same_components_as_all_pairs(seed, max_distance):
    rng = np.random.default_rng(seed)
    codes = []
    for _ in range(12):  # clusters: chains of small steps, exact repeats, and loners
        base = int.from_bytes(rng.bytes(32), "big")
        for _ in range(int(rng.integers(1, 8))):
            base = _flip(base, rng, int(rng.integers(0, 6)))
            codes.append(base)
    codes += codes[:5]
    order = rng.permutation(len(codes))
    hexes = [f"{codes[i]:064x}" for i in order]
    pairs = near_pairs(hexes, max_distance)
    assert len(pairs) <= len(hexes) - 1
    assert _components(pairs, len(hexes)) == _brute_components(hexes, max_distance)


def test_near_pairs_of_thousands_of_close_codes_stays_linear():
    """3,000 codes all within a few bits of each other: the old search kept ~4.5 million pairs."""
    rng = np.random.default_rng(0)
    base = int.from_bytes(rng.bytes(32), "big")
    codes = [f"{_flip(base, rng, 3):064x}" for _ in range(1500)] + [f"{base:064x}"] * 1500
    pairs = near_pairs(codes, 8)
    assert len(pairs) == len(codes) - 1
    assert _components(pairs, len(codes)) == {frozenset(range(len(codes)))}


def test_near_pair_search_stops_past_its_deadline():

    codes = [f"{i:064x}" for i in range(50)]
    with pytest.raises(DatasetError, match="took too long"):
        near_pairs(codes, 8, deadline=time.monotonic() - 1)


def test_unrelated_codes_need_no_comparison(monkeypatch):
    """Pigeonhole bands set aside codes with no possible neighbour: 20,000 unrelated images, no all-pairs scan."""
    rng = np.random.default_rng(5)
    codes = [rng.bytes(32).hex() for _ in range(20_000)]
    close = int(codes[0], 16) ^ 0b1011  # one near pair among them
    codes.append(f"{close:064x}")
    compared = []
    real = near_module._within
    monkeypatch.setattr(near_module, "_within", lambda rows, cands, d: compared.append(len(rows) * len(cands))
                        or real(rows, cands, d))
    assert near_pairs(codes, 8) == [(0, 20_000)]
    assert sum(compared) < 10 * len(codes)

