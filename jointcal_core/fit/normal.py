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

Everything that depends only on which rows are active and which parameters are free (block
ids, sort orders, segments, star/block pairs) is kept in a :class:`Plan`, which the solver
caches between Gauss-Newton steps (the rows only change when outliers are rejected). The Schur
term lives in fit/schur.py.
"""

from __future__ import annotations

import functools

import numpy as np

from ..threads import blas_threads, parallel_map
from .problem import Linearization

__all__ = ["BlockStructure", "block_structure", "Plan", "normal_matrix", "accumulate_gradient",
           "rows_dot_model", "sum_by_index"]


def _single_threaded_blas(func):
    """Run ``func`` with one BLAS thread: its many small products lose 10-30x to thread
    start-up and contention with a multithreaded BLAS (measured on the 2-core machine)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
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

    def __init__(self, ranges, gblock, cols, keep, slot_of, explicit: bool = True):
        self.ranges, self.gblock, self.cols, self.keep, self.slot_of = ranges, gblock, cols, keep, slot_of
        self.explicit = explicit        # slots given by the model (else one slot of row patterns)

    @property
    def n_blocks(self) -> int:
        return len(self.cols)


def block_structure(lin: Linearization, free_index: np.ndarray) -> BlockStructure:
    """Block ids and free columns of each block; ``free_index`` maps parameters to free indices (-1)."""
    n_rows, k = lin.model_cols.shape
    ranges = getattr(lin, "slot_ranges", None)
    sblock = getattr(lin, "slot_block", None)
    explicit = ranges is not None and sblock is not None
    if not explicit:
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
    return BlockStructure(list(ranges), gblock, cols, keep, np.asarray(slot_of, dtype=np.int64), explicit)


def block_vals(model_vals: np.ndarray, bs: BlockStructure, rows: np.ndarray, t: int, b: int) -> np.ndarray:
    """Derivatives (len(rows), n_free) of block ``b`` in slot ``t``: its free columns only."""
    start, stop = bs.ranges[t]
    keep = bs.keep[b]
    if keep.size == stop - start:
        return model_vals[rows, start:stop]
    return model_vals[np.ix_(rows, start + keep)]


def segments(keys: np.ndarray):
    """Sort order, segment starts and the key of each segment."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if keys.size else np.zeros(0, int)
    return order, starts, sorted_keys[starts] if keys.size else sorted_keys


class Plan:
    """The row structure of a linearisation over the free parameters, reusable between steps.

    Parameters
    ----------
    lin : Linearization
        With derivatives (``model_cols``, ``slot_ranges``/``slot_block`` or not).
    free_index : ndarray of int64, shape (n_model_params,)
        Free-parameter index of every model parameter (-1: held).

    Attributes
    ----------
    bs : BlockStructure
    slot_rows : list of ndarray
        Rows touching a block in each slot.
    """

    def __init__(self, lin: Linearization | None, free_index: np.ndarray | None, bs: BlockStructure | None = None):
        self.bs = block_structure(lin, free_index) if bs is None else bs
        self.slot_rows = [np.flatnonzero(self.bs.gblock[:, t] >= 0) for t in range(len(self.bs.ranges))]
        self._groups = None
        self.schur = None           # fit/schur.py's SchurPlan, built on first use

    def subset(self, rows: np.ndarray) -> "Plan":
        """The plan of the rows ``rows`` (increasing indices) only, same blocks and columns."""
        bs = self.bs
        return Plan(None, None, BlockStructure(bs.ranges, bs.gblock[rows], bs.cols, bs.keep, bs.slot_of, bs.explicit))

    def normal_groups(self) -> list:
        """Rows grouped by their tuple of blocks: ``(rows, parts, cols, span)``.

        ``rows`` is a slice when the group's rows are contiguous (models emit the rows of a
        ccdImage together, so the derivatives are then read as views, without copies);
        ``parts`` the (slot, block) pairs; ``cols`` the free columns; ``span`` the range of
        ``model_cols`` columns they come from when it is one full range (else None).
        """
        if self._groups is not None:
            return self._groups
        bs = self.bs
        gb = bs.gblock
        n_slots = len(bs.ranges)
        rows_all = np.flatnonzero(np.any(gb >= 0, axis=1))
        groups = []
        if rows_all.size:
            base = bs.n_blocks + 1
            keys = np.zeros(rows_all.size, dtype=np.int64)
            for t in range(n_slots):
                keys = keys * base + (gb[rows_all, t] + 1)
            order, starts, _ = segments(keys)
            rows_sorted = rows_all[order]
            ends = np.r_[starts[1:], rows_sorted.size]
            for s0, s1 in zip(starts.tolist(), ends.tolist()):
                rows = rows_sorted[s0:s1]
                parts = [(t, int(gb[rows[0], t])) for t in range(n_slots)
                         if gb[rows[0], t] >= 0 and bs.keep[gb[rows[0], t]].size]
                if not parts:
                    continue
                cols = np.concatenate([bs.cols[b] for _, b in parts])
                ranges = [bs.ranges[t] for t, _ in parts]
                full = all(bs.keep[b].size == bs.ranges[t][1] - bs.ranges[t][0] for t, b in parts)
                adjacent = all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
                span = (ranges[0][0], ranges[-1][1]) if full and adjacent else None
                if rows[-1] - rows[0] == rows.size - 1:
                    rows = slice(int(rows[0]), int(rows[-1]) + 1)
                groups.append((rows, parts, cols, span))
        self._groups = groups
        return groups

    def group_vals(self, model_vals: np.ndarray, group) -> np.ndarray:
        """Derivatives (n_rows_of_group, n_cols) of one normal group (a view when possible)."""
        rows, parts, _, span = group
        if span is not None:
            return model_vals[rows, span[0]:span[1]]
        if isinstance(rows, slice):
            rows = np.arange(rows.start, rows.stop)
        vals = [block_vals(model_vals, self.bs, rows, t, b) for t, b in parts]
        return vals[0] if len(vals) == 1 else np.concatenate(vals, axis=1)


#: the normal groups are summed in this many parts (a fixed number, so that the sums, and the
#: fit's results to the last bit, do not depend on the number of threads running them)
_N_PARTS = 4
#: largest normal matrix summed per part (bytes of each part's copy)
_MAX_COPY_BYTES = 64 * 2 ** 20


def _parts(groups: list, n_parts: int = _N_PARTS) -> list[list]:
    """The normal groups cut into ``n_parts`` runs of about equal row counts."""
    if n_parts <= 1 or len(groups) < 2 * n_parts:
        return [groups]
    sizes = np.array([(g[0].stop - g[0].start) if isinstance(g[0], slice) else g[0].size for g in groups])
    cuts = np.searchsorted(np.cumsum(sizes), sizes.sum() * np.arange(1, n_parts) / n_parts)
    return [groups[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(groups)]) if b > a]


def _threaded(work, parts: list):
    """The sum of ``work(part)`` over the parts, in part order, the parts run on the worker
    threads (numpy and the single-threaded BLAS release the GIL in the products)."""
    results = parallel_map(work, parts)
    if results[0] is None:
        return None
    for r in results[1:]:
        results[0] += r
    return results[0]


@_single_threaded_blas
def normal_matrix(lin: Linearization, plan: Plan, n_free: int) -> np.ndarray:
    """Dense ``Jm^T Jm`` over the free parameters.

    Rows are grouped by the tuple of their blocks in every slot (e.g. (chip, visit) = one
    ccdImage); each group adds one ``V^T V`` over the concatenated columns of its blocks. The
    groups are summed in parts on the worker threads, each part into its own matrix when that
    copy is small (else in one part).
    """
    n_parts = _N_PARTS if 8 * n_free * n_free <= _MAX_COPY_BYTES else 1

    def work(part):
        a = np.zeros((n_free, n_free))
        for group in part:
            v = plan.group_vals(lin.model_vals, group)
            cols = group[2]
            a[np.ix_(cols, cols)] += v.T @ v
        return a

    return _threaded(work, _parts(plan.normal_groups(), n_parts))


@_single_threaded_blas
def accumulate_gradient(lin: Linearization, plan: Plan, n_free: int, row_weights: np.ndarray) -> np.ndarray:
    """``sum_rows V_row * row_weights[row]`` over the free parameters."""
    def work(part):
        g = np.zeros(n_free)
        for group in part:
            g[group[2]] += row_weights[group[0]] @ plan.group_vals(lin.model_vals, group)
        return g

    return _threaded(work, _parts(plan.normal_groups()))


@_single_threaded_blas
def rows_dot_model(lin: Linearization, plan: Plan, delta_free: np.ndarray) -> np.ndarray:
    """``Jm @ delta`` for every row, shape (n_rows,)."""
    out = np.zeros(lin.residual.size)

    def work(part):            # the groups' rows are disjoint: the threads write apart
        for group in part:
            out[group[0]] = plan.group_vals(lin.model_vals, group) @ delta_free[group[2]]

    _threaded(work, _parts(plan.normal_groups()))
    return out
