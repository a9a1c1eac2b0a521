"""Fast assembly of the reduced normal equations by parameter blocks.

Rows of a joint calibration touch few *parameter blocks* (a ccdImage's polynomial, a chip's,
a visit's), and every row touching a given block touches the same columns. Grouping by blocks
turns the two costly products into dense matrix products (BLAS) over groups:

- ``A = Jm^T Jm``: for each pair of blocks met in one row, ``V_b1^T V_b2`` over those rows;
- the Schur term ``sum_stars B_j C_j^-1 B_j^T``: write ``C_j^-1 = L_j L_j^T`` and aggregate per
  (star, block) ``Y = sum_rows V_row (L_j^T w_row)^T``; then for each pair of blocks seen on
  one star, ``Y_b1 Y_b2^T`` summed over the stars they share, as one product per block pair.

The cost is what the problem needs (sum over stars of (blocks x params)^2) done by BLAS
instead of scattered sparse updates: at tract scale (400k measurements, 2.7k model
parameters) it replaced a 91 s scipy.sparse product by a few seconds.

Blocks come from ``Linearization.slot_ranges`` / ``slot_block`` when the model gives them;
otherwise every distinct row pattern of ``model_cols`` is one block.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .problem import Linearization

__all__ = ["BlockStructure", "block_structure", "normal_matrix", "schur_term", "accumulate_gradient",
           "rows_dot_model", "sum_by_index"]

def _single_threaded_blas(func):
    """Run ``func`` with one BLAS thread: its many small products lose 10-30x to thread
    start-up and contention with a multithreaded BLAS (measured on the 2-core machine)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper


def sum_by_index(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = sum of values[index == i]`` (what ``np.add.at`` does, ~10x faster).

    Parameters
    ----------
    index : ndarray of int, shape (m,)
        Target row of every value, in [0, n).
    values : ndarray, shape (m, ...)
    n : int

    Returns
    -------
    ndarray, shape (n, ...)
    """
    flat = values.reshape(values.shape[0], -1)
    out = np.empty((n, flat.shape[1]))
    for k in range(flat.shape[1]):
        out[:, k] = np.bincount(index, weights=flat[:, k], minlength=n)
    return out.reshape((n,) + values.shape[1:])


# rows per chunk when materialising per-row outer products (bounds memory to ~100 MB)
_CHUNK_ROWS = 60_000


class BlockStructure:
    """Blocks of the free model parameters, per slot.

    Attributes
    ----------
    ranges : list of (start, stop)
        Slot column ranges within ``model_cols``.
    gblock : ndarray of int64, shape (n_rows, n_slots)
        Global block id of each row in each slot (-1: none).
    cols : list of ndarray
        Free-parameter indices of every global block (local slots whose parameter is not
        free are dropped; ``keep[b]`` tells which local slots remain).
    keep : list of ndarray of int
        Local column positions (within the slot range) kept for each global block.
    slot_of : ndarray of int, shape (n_blocks,)
    """

    def __init__(self, ranges, gblock, cols, keep, slot_of):
        self.ranges, self.gblock, self.cols, self.keep, self.slot_of = ranges, gblock, cols, keep, slot_of

    @property
    def n_blocks(self) -> int:
        return len(self.cols)


def block_structure(lin: Linearization, free_index: np.ndarray) -> BlockStructure:
    """Block ids and free columns of each block; ``free_index`` maps parameters to free indices (-1)."""
    n_rows, k = lin.model_cols.shape
    ranges = getattr(lin, "slot_ranges", None)
    sblock = getattr(lin, "slot_block", None)
    if ranges is None or sblock is None:
        used = np.any(lin.model_vals != 0, axis=1)
        _, inverse = np.unique(lin.model_cols, axis=0, return_inverse=True)
        ranges, sblock = ((0, k),), np.where(used, inverse.ravel(), -1)[:, None]
    gblock = np.full(sblock.shape, -1, dtype=np.int64)
    cols, keep, slot_of = [], [], []
    offset = 0
    for t, (start, stop) in enumerate(ranges):
        ids = sblock[:, t]
        valid = ids >= 0
        uniq, first, inverse = np.unique(ids[valid], return_index=True, return_inverse=True)
        rows_valid = np.flatnonzero(valid)
        gblock[rows_valid, t] = offset + inverse
        for b, row in enumerate(rows_valid[first]):
            free = free_index[lin.model_cols[row, start:stop]]
            local = np.flatnonzero(free >= 0)
            cols.append(free[local])
            keep.append(local)
            slot_of.append(t)
        offset += uniq.size
    return BlockStructure(list(ranges), gblock, cols, keep, np.asarray(slot_of, dtype=np.int64))


def _segments(keys: np.ndarray):
    """Sort order, segment starts and the key of each segment."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if keys.size else np.zeros(0, int)
    return order, starts, sorted_keys[starts] if keys.size else sorted_keys


def _block_vals(lin: Linearization, bs: BlockStructure, rows: np.ndarray, t: int, b: int) -> np.ndarray:
    start, stop = bs.ranges[t]
    keep = bs.keep[b]
    if keep.size == stop - start:
        return lin.model_vals[rows, start:stop]
    return lin.model_vals[np.ix_(rows, start + keep)]


@_single_threaded_blas
def normal_matrix(lin: Linearization, bs: BlockStructure, n_free: int) -> np.ndarray:
    """Dense ``Jm^T Jm`` over the free parameters.

    Rows are grouped by the tuple of their blocks in every slot (e.g. (chip, visit) = one
    ccdImage); each group adds one ``V^T V`` over the concatenated columns of its blocks.
    """
    a = np.zeros((n_free, n_free))
    n_slots = len(bs.ranges)
    gb = bs.gblock
    rows_all = np.flatnonzero(np.any(gb >= 0, axis=1))
    if rows_all.size == 0:
        return a
    base = bs.n_blocks + 1
    keys = np.zeros(rows_all.size, dtype=np.int64)
    for t in range(n_slots):
        keys = keys * base + (gb[rows_all, t] + 1)
    order, starts, _ = _segments(keys)
    rows_sorted = rows_all[order]
    ends = np.r_[starts[1:], rows_sorted.size]
    for s0, s1 in zip(starts, ends):
        rows = rows_sorted[s0:s1]
        first = rows[0]
        parts, cols = [], []
        for t in range(n_slots):
            b = gb[first, t]
            if b < 0 or bs.keep[b].size == 0:
                continue
            parts.append(_block_vals(lin, bs, rows, t, b))
            cols.append(bs.cols[b])
        if not parts:
            continue
        v = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        c = cols[0] if len(cols) == 1 else np.concatenate(cols)
        a[np.ix_(c, c)] += v.T @ v
    return a


def accumulate_gradient(lin: Linearization, bs: BlockStructure, n_free: int, row_weights: np.ndarray) -> np.ndarray:
    """``sum_rows V_row * row_weights[row]`` over the free parameters."""
    g = np.zeros(n_free)
    for t, (start, stop) in enumerate(bs.ranges):
        rows = np.flatnonzero(bs.gblock[:, t] >= 0)
        if rows.size == 0:
            continue
        per_block = sum_by_index(bs.gblock[rows, t], lin.model_vals[rows, start:stop] * row_weights[rows, None],
                                 bs.n_blocks)
        for b in np.flatnonzero(bs.slot_of == t):
            g[bs.cols[b]] += per_block[b, bs.keep[b]]
    return g


def rows_dot_model(lin: Linearization, bs: BlockStructure, delta_free: np.ndarray) -> np.ndarray:
    """``Jm @ delta`` for every row, shape (n_rows,)."""
    out = np.zeros(lin.residual.size)
    for t, (start, stop) in enumerate(bs.ranges):
        rows = np.flatnonzero(bs.gblock[:, t] >= 0)
        if rows.size == 0:
            continue
        width = stop - start
        dense = np.zeros((bs.n_blocks, width))
        for b in np.flatnonzero(bs.slot_of == t):
            dense[b, bs.keep[b]] = delta_free[bs.cols[b]]
        out[rows] += np.einsum("ij,ij->i", lin.model_vals[rows, start:stop], dense[bs.gblock[rows, t]])
    return out


def _star_entries(lin, bs, z, t):
    """Aggregate ``Y = sum V_row z_row^T`` per (star, block) for slot ``t``."""
    start, stop = bs.ranges[t]
    rows_all = np.flatnonzero((bs.gblock[:, t] >= 0) & (lin.star >= 0))
    nb = bs.n_blocks
    keys = lin.star[rows_all] * nb + bs.gblock[rows_all, t]
    order, starts, seg_keys = _segments(keys)
    s = z.shape[1]
    y = np.empty((seg_keys.size, s, stop - start))
    ends = np.r_[starts[1:], keys.size]
    # chunk on segment boundaries to bound the memory of the per-row outer products
    seg = 0
    while seg < seg_keys.size:
        seg_end = int(np.searchsorted(starts, starts[seg] + _CHUNK_ROWS, side="left"))
        seg_end = max(seg_end, seg + 1)
        r0, r1 = starts[seg], ends[seg_end - 1]
        rows = rows_all[order[r0:r1]]
        outer = z[rows][:, :, None] * lin.model_vals[rows, start:stop][:, None, :]
        y[seg:seg_end] = np.add.reduceat(outer, starts[seg:seg_end] - r0, axis=0)
        seg = seg_end
    star_of = seg_keys // nb
    block_of = seg_keys % nb
    return star_of, block_of, y


@_single_threaded_blas
def schur_term(lin: Linearization, bs: BlockStructure, n_free: int, z: np.ndarray) -> np.ndarray:
    """``sum_j B_j C_j^-1 B_j^T`` with ``z_row = L_j^T w_row`` given per row (shape (n_rows, s))."""
    stars, blocks, ys = [], [], []
    for t in range(len(bs.ranges)):
        st, bl, y = _star_entries(lin, bs, z, t)
        # block-major storage: the entries of one block are contiguous, so the gathers of a
        # block pair below read one compact range (measured 2x faster than star-major)
        bm = np.lexsort((st, bl))
        stars.append(st[bm])
        blocks.append(bl[bm])
        ys.append(y[bm])
    star = np.concatenate(stars) if stars else np.zeros(0, np.int64)
    block = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    slot = np.concatenate([np.full(s.size, t) for t, s in enumerate(stars)]) if stars else np.zeros(0, np.int64)
    local = np.concatenate([np.arange(s.size) for s in stars]) if stars else np.zeros(0, np.int64)
    # entries sorted by (star, block): pairs within a star with block1 <= block2
    order = np.lexsort((block, star))
    star, block, slot, local = star[order], block[order], slot[order], local[order]
    p1, p2 = _pairs_within(star)
    nb = max(bs.n_blocks, 1)
    keys = block[p1] * nb + block[p2]
    porder, starts, seg_keys = _segments(keys)
    ends = np.r_[starts[1:], keys.size]
    # entry indices per pair in segment order, gathered once (slices below are views)
    local1, local2 = local[p1[porder]], local[p2[porder]]
    index = [_as_index(c) for c in bs.cols]
    segments = list(zip(starts.tolist(), ends.tolist(), seg_keys.tolist()))

    def accumulate(part):
        # each unordered block pair is met once and the sum is mirrored at the end (out + out^T),
        # so the symmetric diagonal blocks (b1 == b2) go in with half weight
        out = np.zeros((n_free, n_free))
        for s0, s1, key in part:
            b1, b2 = divmod(key, nb)
            y1 = _entry_rows(ys, bs, b1, local1[s0:s1])
            if b1 == b2:        # entries are unique per (star, block): the pair is an entry with itself
                _add(out, index[b1], index[b1], 0.5 * (y1.T @ y1))
            else:
                _add(out, index[b1], index[b2], y1.T @ _entry_rows(ys, bs, b2, local2[s0:s1]))
        return out

    n_threads = _threads(len(segments))
    if n_threads == 1:
        out = accumulate(segments)
        out += out.T
        return out
    # numpy releases the GIL in the gathers and the (single-threaded) BLAS products: split the
    # block pairs into chunks of about equal work, one partial sum per thread
    work = np.cumsum(ends - starts)
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_threads) / n_threads)
    parts = [segments[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(segments)])]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = list(pool.map(accumulate, parts))
    out = results[0]
    for r in results[1:]:
        out += r
    out += out.T
    return out


def _threads(n_tasks: int) -> int:
    """Worker threads for the Schur products: ``JOINTCAL_THREADS`` or the CPU count, at most 4."""
    try:
        n = int(os.environ.get("JOINTCAL_THREADS", "0"))
    except ValueError:
        n = 0
    n = n if n > 0 else min(os.cpu_count() or 1, 4)
    return max(1, min(n, n_tasks // 64 or 1))


def _as_index(cols: np.ndarray):
    """A slice when ``cols`` is a contiguous increasing range (fast in-place adds), else the array."""
    if cols.size and cols[-1] - cols[0] == cols.size - 1 and np.all(np.diff(cols) == 1):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


def _add(out: np.ndarray, i1, i2, blk: np.ndarray) -> None:
    if isinstance(i1, slice) and isinstance(i2, slice):
        out[i1, i2] += blk
    else:
        out[np.ix_(np.arange(out.shape[0])[i1], np.arange(out.shape[1])[i2])] += blk


def _entry_rows(ys, bs: BlockStructure, b: int, local: np.ndarray) -> np.ndarray:
    """Entries of block ``b`` as a (n * s, p_kept) matrix (stars x star-parameters by columns)."""
    y = ys[bs.slot_of[b]][local]
    n, s, width = y.shape
    keep = bs.keep[b]
    if keep.size != width:
        y = y[:, :, keep]
    return y.reshape(n * s, -1)


def _pairs_within(star: np.ndarray):
    """Index pairs (i <= j) of entries belonging to the same star (entries sorted by star)."""
    if star.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, star[1:] != star[:-1]])
    counts = np.diff(np.r_[starts, star.size])
    first, second = [], []
    for n in np.unique(counts):
        iu, ju = np.triu_indices(int(n))
        base = starts[counts == n]
        first.append((base[:, None] + iu[None, :]).ravel())
        second.append((base[:, None] + ju[None, :]).ravel())
    return np.concatenate(first), np.concatenate(second)
