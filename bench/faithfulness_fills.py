"""Heat-map faithfulness, issue 24 item 5 rounds three and four: candidate ways to delete a heat map's cells
(fills, reference orders) for bench/faithfulness_scale.py, which documents them and prints their tables; split out
of it to keep each module under 400 lines.

Usage: imported by bench/faithfulness_scale.py and bench/faithfulness_synthetic.py (not run by itself).
"""

from __future__ import annotations

import numpy as np

CANDIDATE_RANDOM_ORDERS = 2   # as faithfulness_scale: with the reverse order, 2 + 9 * (2 + 2) = 38 passes


def cell_grid(x: np.ndarray, heatmap: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cell_of, cells, cell_heat)``: each pixel's cell of a ``grid`` x ``grid`` grid (2-D), the pixels per
    cell and each cell's mean heat, the map resized to the image as the shipped check does."""
    import cv2

    size = x.shape[0]
    heat = np.nan_to_num(np.asarray(heatmap, np.float32))
    if heat.shape != x.shape[:2]:
        heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_AREA if heat.size > size * size
                          else cv2.INTER_LINEAR)
    idx = np.minimum(np.arange(size) * grid // size, grid - 1)
    cell_of = idx[:, None] * grid + idx[None, :]
    cells = np.bincount(cell_of.ravel(), None, grid * grid)
    return cell_of, cells, np.bincount(cell_of.ravel(), heat.ravel(), grid * grid) / cells


FILL_SIZE = 64       # fills are computed at 64 px (grid cells of 4 px) and resized up: < 0.1 s per map
FILL_RADIUS = 3      # cv2.inpaint's neighbourhood, in FILL_SIZE pixels (about 10 px at 224)
FILL_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)   # "outside": Gaussian widths tried in turn, in FILL_SIZE pixels
BLOB_SIGMA = 2.0     # "blobs": random orders from 16 x 16 white noise smoothed by this many cells (Gaussian)
RULES = ("reverse", "telea", "ns", "outside", "blobs", "blobs-telea", "reverse-outside", "copy", "copy-far",
         "reverse-copy", "shift", "shift-copy")
SHIFT_MIN = 4   # "shift": the map's own ranking moved by at least this many cells (torus, either axis)


def shifted_orders(cell_heat: np.ndarray, ties: np.ndarray, grid: int, count: int, rng) -> list[np.ndarray]:
    """``shift``: reference orders that delete the map's own shape elsewhere: its cell heat rolled (on the
    torus) by ``count`` random offsets at least SHIFT_MIN cells in one axis, ranked hottest first as the
    map is. The fill's artefact of deleting one contiguous region then falls on both curves alike."""
    heat, out = cell_heat.reshape(grid, grid), []
    while len(out) < count:
        dy, dx = (int(v) for v in rng.integers(0, grid, 2))
        if max(min(dy, grid - dy), min(dx, grid - dx)) >= SHIFT_MIN:
            out.append(np.lexsort((ties, -np.roll(heat, (dy, dx), axis=(0, 1)).ravel())))
    return out


def fill_deleted(small: np.ndarray, small_mask: np.ndarray, rule: str) -> np.ndarray:
    """The deleted cells of one channel refilled from their surroundings, at FILL_SIZE px: ``small`` (L, L) float32,
    ``small_mask`` (L, L) uint8, 1 = deleted. ``telea`` / ``ns``: cv2.inpaint (Telea 2004 / Navier-Stokes);
    ``outside``: a normalised convolution, i.e. a Gaussian blur of the kept pixels only divided by the blur of
    the kept mask, at the narrowest width in FILL_SIGMAS that reaches each deleted pixel (weight >= 0.05)."""
    import cv2

    if rule in ("telea", "ns"):
        return cv2.inpaint(small, small_mask, FILL_RADIUS, cv2.INPAINT_TELEA if rule == "telea" else cv2.INPAINT_NS)
    keep = (small_mask == 0).astype(np.float32)
    out, todo = small.copy(), small_mask.astype(bool)
    for sigma in FILL_SIGMAS:
        num, den = cv2.GaussianBlur(small * keep, (0, 0), sigma), cv2.GaussianBlur(keep, (0, 0), sigma)
        ok = todo & (den >= 0.05)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
    out[todo] = small[keep > 0].mean() if keep.any() else small.mean()
    return out


COPY_FAR = 3.0   # "copy-far": the source cell is the nearest kept cell at least this many cells away


def copy_nearest_cells(x: np.ndarray, deleted_cells: np.ndarray, grid: int, tie: np.ndarray,
                       min_distance: float = 0.0) -> np.ndarray:
    """``copy``: each deleted cell takes the pixels of the nearest kept cell of the same image (cell centres,
    ties by ``tie``): the image's own texture instead of a smooth patch. Cells of unequal size (a side not
    divisible by the grid) copy the source cell's top-left part, its last row / column repeated if shorter.
    ``min_distance``: only kept cells at least that far (in cells) are sources, where there are any."""
    kept = np.flatnonzero(~deleted_cells)
    if not len(kept):
        return x.copy()
    rc = np.stack(np.divmod(np.arange(grid * grid), grid), axis=1)
    dist = ((rc[:, None, :] - rc[None, kept, :]) ** 2).sum(axis=2) + tie[kept][None, :] * 1e-3
    far = dist >= min_distance ** 2
    dist = np.where(far | ~far.any(axis=1, keepdims=True), dist, dist + 1e6)
    source = np.where(deleted_cells, kept[np.argmin(dist, axis=1)], np.arange(grid * grid))
    axes = []
    for size in x.shape[:2]:
        cell = np.minimum(np.arange(size) * grid // size, grid - 1)
        start = np.searchsorted(cell, np.arange(grid))
        length = np.bincount(cell, minlength=grid)
        axes.append((cell, start, length))
    (ry, sy, hy), (cx, sx, wx) = axes
    cell_yx = ry[:, None] * grid + cx[None, :]
    src_r, src_c = np.divmod(source[cell_yx], grid)
    offset_y = np.arange(x.shape[0])[:, None] - sy[ry][:, None]
    offset_x = np.arange(x.shape[1])[None, :] - sx[cx][None, :]
    yy = sy[src_r] + np.minimum(offset_y, hy[src_r] - 1)
    xx = sx[src_c] + np.minimum(offset_x, wx[src_c] - 1)
    return x[yy, xx]


def fill_inputs(x: np.ndarray, heatmap: np.ndarray, rule: str, grid: int = 16, steps: int = 10, random_orders: int = 3,
                seed: int = 0) -> list[np.ndarray]:
    """The shipped check's variants (same cells, same seeded orders: the map's, then 3 random; the same
    fully blank image-mean endpoint) with each step's deleted cells refilled by :func:`fill_deleted` over
    the union of the cells deleted so far, instead of the image mean. ``blobs``: the image-mean blank, but
    random orders that delete contiguous blobs (smoothed noise, BLOB_SIGMA cells) like a heat map's order
    does, instead of scattered cells; ``blobs-telea``: those orders with the Telea fill; ``reverse-outside``:
    the orders of :func:`candidate_inputs` (hottest first, coldest first, CANDIDATE_RANDOM_ORDERS random)
    with the ``outside`` fill, for :func:`candidate_score`; ``copy``: the shipped orders, each deleted cell
    replaced by the nearest kept cell (:func:`copy_nearest_cells`); ``copy-far``: the nearest at least
    COPY_FAR cells away; ``reverse-copy`` (round four): ``reverse-outside``'s orders and score with the ``copy``
    fill (ROAD's symmetric MoRF / LeRF comparison, Rong et al. 2022, with a texture-keeping fill); ``shift`` /
    ``shift-copy`` (round four): the shipped rule (mean / copy fill) against the map's own shape moved
    elsewhere (:func:`shifted_orders`) instead of random cells."""
    import cv2

    size, channels = x.shape[0], x.shape[-1]
    cell_of, cells, cell_heat = cell_grid(x, heatmap, grid)
    rng = np.random.default_rng(seed)   # as medclf_core.explain.faithfulness._deletion_inputs
    ties = rng.random(grid * grid)
    orders = [np.lexsort((ties, -cell_heat))]
    if rule.startswith("reverse-"):
        orders += [np.lexsort((ties, cell_heat))] + [rng.permutation(grid * grid)
                                                     for _ in range(CANDIDATE_RANDOM_ORDERS)]
    elif rule.startswith("shift"):
        orders += shifted_orders(cell_heat, ties, grid, random_orders, rng)
    elif rule.startswith("blobs"):
        orders += [np.argsort(-cv2.GaussianBlur(rng.random((grid, grid)), (0, 0), BLOB_SIGMA).ravel(), kind="stable")
                   for _ in range(random_orders)]
    else:
        orders += [rng.permutation(grid * grid) for _ in range(random_orders)]
    fill = {"blobs": "mean", "blobs-telea": "telea", "reverse-outside": "outside", "reverse-copy": "copy",
            "shift": "mean", "shift-copy": "copy"}.get(rule, rule)
    tie = rng.random(grid * grid)
    mean = x.reshape(-1, channels).mean(axis=0)
    small_idx = np.arange(FILL_SIZE) * grid // FILL_SIZE
    small_cell = small_idx[:, None] * grid + small_idx[None, :]
    small = [cv2.resize(np.ascontiguousarray(x[..., c]), (FILL_SIZE, FILL_SIZE), interpolation=cv2.INTER_AREA)
             for c in range(channels)]
    out = [x, np.broadcast_to(x.reshape(-1, channels).mean(axis=0), x.shape).astype(np.float32)]
    for order in orders:
        rank = np.empty(grid * grid, np.int64)
        rank[order] = np.arange(grid * grid)
        for n in (int(round(grid * grid * j / steps)) for j in range(1, steps)):
            deleted, small_mask = rank[cell_of] < n, (rank[small_cell] < n).astype(np.uint8)
            if fill.startswith("copy"):
                out.append(copy_nearest_cells(x, rank < n, grid, tie, COPY_FAR if fill == "copy-far" else 0.0))
                continue
            v = x.copy()
            for c in range(channels):
                if fill == "mean":
                    v[..., c][deleted] = mean[c]
                    continue
                filled = cv2.resize(fill_deleted(small[c], small_mask, fill), (size, size),
                                    interpolation=cv2.INTER_LINEAR)
                v[..., c][deleted] = filled[deleted]
            out.append(v)
    return out
