"""The Schur term ``sum_j B_j C_j^-1 B_j^T`` of the reduced normal equations, by block pairs.

With ``C_j^-1 = L_j L_j^T`` and ``z_row = L_j^T w_row`` (w: the row's star derivatives), the
term of star j is ``Y_j^T Y_j`` where ``Y_j`` aggregates ``z_row V_row^T`` per (star, block)
*entry* (V: the row's derivatives in the block's columns). For every pair of blocks met on one
star, ``Y_b1^T Y_b2`` summed over the stars they share is one dense product (BLAS).

:class:`SchurPlan` holds what depends only on the rows (entry segments, sort orders, the pairs
of entries per star and their grouping by block pair); it is built once per row layout and
reused between Gauss-Newton steps. Stars are processed in chunks of at most ``_PAIR_CHUNK``
entry pairs, so the memory of the pair indices stays bounded whatever the number of
measurements.
"""

from __future__ import annotations

import numpy as np

from ..threads import parallel_map, worker_threads
from .normal import Plan, _single_threaded_blas, segments
from .problem import Linearization

__all__ = ["SchurPlan", "schur_term"]

# rows per chunk when materialising per-row outer products (bounds memory to ~100 MB)
_CHUNK_ROWS = 60_000
# entry pairs per star chunk (bounds the pair indices to ~200 MB)
_PAIR_CHUNK = 12_000_000


class SchurPlan:
    """Entries (star, block) per slot and their pairs per star, grouped by block pair.

    Parameters
    ----------
    star : ndarray of int64, shape (n_rows,)
        Fitted star of every row (-1: none).
    plan : Plan
        Block structure of the rows.
    """

    def __init__(self, star: np.ndarray, plan: Plan):
        bs = plan.bs
        nb = max(bs.n_blocks, 1)
        has_cols = np.array([k.size > 0 for k in bs.keep], bool)
        self.slots = []
        stars, blocks, slots, locals_ = [], [], [], []
        for t in range(len(bs.ranges)):
            rows_all = plan.slot_rows[t][star[plan.slot_rows[t]] >= 0]
            keys = star[rows_all] * nb + bs.gblock[rows_all, t]
            uniq, entry = np.unique(keys, return_inverse=True)
            st, bl = uniq // nb, uniq % nb
            # block-major storage: the entries of a block are contiguous, so the gathers of a
            # block pair read one compact range (measured 2x faster than star-major)
            bm = np.lexsort((st, bl))
            rank = np.empty_like(bm)
            rank[bm] = np.arange(bm.size)
            entry = rank[entry.ravel()]
            # runs of consecutive rows of one entry (a measurement's rows are adjacent), cut at
            # chunk boundaries: products are summed per run in row order, then per entry
            cut = np.zeros(rows_all.size, bool)
            cut[::_CHUNK_ROWS] = True
            run_start = np.flatnonzero(np.r_[True, entry[1:] != entry[:-1]] | cut) if entry.size else entry
            run_entry = entry[run_start]
            run_order, entry_start, _ = segments(run_entry)
            run_pos = np.empty_like(run_order)
            run_pos[run_order] = np.arange(run_order.size)
            contiguous = rows_all.size > 0 and rows_all[-1] - rows_all[0] == rows_all.size - 1
            # runs of one common length (a measurement's 2 astrometric rows, or 1 photometric row)
            lengths = np.diff(np.r_[run_start, rows_all.size])
            group = int(lengths[0]) if lengths.size and np.all(lengths == lengths[0]) else None
            self.slots.append(dict(rows=slice(int(rows_all[0]), int(rows_all[-1]) + 1) if contiguous else rows_all,
                                   n_rows=rows_all.size, run_start=run_start, group=group,
                                   run_pos=run_pos, entry_start=entry_start, n_entries=uniq.size))
            st, bl = st[bm], bl[bm]
            used = has_cols[bl] if bl.size else np.zeros(0, bool)     # blocks with free columns
            stars.append(st[used])
            blocks.append(bl[used])
            slots.append(np.full(int(used.sum()), t))
            locals_.append(np.flatnonzero(used))
        star_e = np.concatenate(stars) if stars else np.zeros(0, np.int64)
        block_e = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
        local_e = np.concatenate(locals_) if locals_ else np.zeros(0, np.int64)
        order = np.lexsort((block_e, star_e))
        star_e, block_e, local_e = star_e[order], block_e[order], local_e[order]
        self.chunks = [self._pairs(star_e[a:b], block_e[a:b], local_e[a:b], nb)
                       for a, b in _star_chunks(star_e, _PAIR_CHUNK)]
        self.index = [_as_index(c) for c in bs.cols]

    @staticmethod
    def _pairs(star, block, local, nb):
        """Entry pairs (block1 <= block2) of each star, grouped by block pair."""
        p1, p2 = _pairs_within(star)
        keys = block[p1] * nb + block[p2]
        # by block pair, then by star: the entries a segment gathers are increasing (compact reads;
        # runs of consecutive entries, as a block with itself, are read as views)
        porder = np.lexsort((p1, keys))
        sorted_keys = keys[porder]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if keys.size else np.zeros(0, int)
        seg_keys = sorted_keys[starts]
        ends = np.r_[starts[1:], keys.size]
        itype = np.int32 if local.size < 2 ** 31 else np.int64
        local1, local2 = local[p1[porder]].astype(itype), local[p2[porder]].astype(itype)
        b1, b2 = np.divmod(seg_keys, nb)
        return dict(local1=local1, local2=local2,
                    segments=list(zip(starts.tolist(), ends.tolist(), b1.tolist(), b2.tolist())))


def _star_chunks(star: np.ndarray, max_pairs: int):
    """(start, stop) ranges of the star-sorted entries, whole stars, about ``max_pairs`` pairs each."""
    if star.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, star[1:] != star[:-1]])
    counts = np.diff(np.r_[starts, star.size])
    cum = np.cumsum(counts * (counts + 1) // 2)
    out, i, done = [], 0, 0
    while i < starts.size:
        j = max(int(np.searchsorted(cum, done + max_pairs, side="right")), i + 1)
        out.append((int(starts[i]), int(starts[j]) if j < starts.size else star.size))
        done = int(cum[j - 1])
        i = j
    return out


def _entries(lin: Linearization, plan: Plan, sp: SchurPlan, z: np.ndarray, t: int) -> np.ndarray:
    """``Y = sum V_row z_row^T`` per (star, block) entry of slot ``t``, block-major, shape (n, s, width)."""
    start, stop = plan.bs.ranges[t]
    info = sp.slots[t]
    rows, n, run_start = info["rows"], info["n_rows"], info["run_start"]
    z_t = z[rows]
    vals = lin.model_vals[rows, start:stop]
    # run sums stored in entry order (block-major); with one run per entry they are the entries
    runs = np.empty((run_start.size, z.shape[1], stop - start))
    run_pos = info["run_pos"]
    g = info["group"]
    if g is not None:
        # runs of g rows: one stacked (s x g) @ (g x width) product per run (measured 10x faster
        # than the per-row outer products summed by reduceat)
        runs[run_pos] = np.matmul(z_t.reshape(-1, g, z.shape[1]).transpose(0, 2, 1),
                                  vals.reshape(-1, g, stop - start))
    else:
        for c0 in range(0, n, _CHUNK_ROWS):
            c1 = min(c0 + _CHUNK_ROWS, n)
            r0, r1 = np.searchsorted(run_start, [c0, c1])
            outer = z_t[c0:c1, :, None] * vals[c0:c1, None, :]
            runs[run_pos[r0:r1]] = np.add.reduceat(outer, run_start[r0:r1] - c0, axis=0)
    if runs.shape[0] == info["n_entries"]:
        return runs
    return np.add.reduceat(runs, info["entry_start"], axis=0)


@_single_threaded_blas
def schur_term(lin: Linearization, plan: Plan, n_free: int, z: np.ndarray) -> np.ndarray:
    """``sum_j B_j C_j^-1 B_j^T`` with ``z_row = L_j^T w_row`` given per row (shape (n_rows, s)).

    ``plan.schur`` is built on first use (from ``lin.star``) and kept with the plan.
    """
    if plan.schur is None:
        plan.schur = SchurPlan(lin.star, plan)
    sp, bs = plan.schur, plan.bs
    ys = [_entries(lin, plan, sp, z, t) for t in range(len(bs.ranges))]
    s = z.shape[1]
    width = max((y.shape[2] for y in ys), default=0)

    # one output for all threads: within a chunk every block pair is one segment and blocks have
    # disjoint columns, so the segments of different threads write disjoint parts of it
    total = np.zeros((n_free, n_free))

    def accumulate(chunk, part):
        # each unordered block pair is met once per chunk and the sum is mirrored at the end
        # (total + total^T), so the symmetric diagonal blocks (b1 == b2) go in with half weight
        local1, local2 = chunk["local1"], chunk["local2"]
        longest = max((s1 - s0 for s0, s1, _, _ in part), default=0)
        buf1, buf2 = np.empty(longest * s * width), np.empty(longest * s * width)
        for s0, s1, b1, b2 in part:
            y1 = _gather(ys, bs, b1, local1[s0:s1], buf1)
            if b1 == b2:        # entries are unique per (star, block): the pair is an entry with itself
                _add(total, sp.index[b1], sp.index[b1], 0.5 * (y1.T @ y1))
            else:
                _add(total, sp.index[b1], sp.index[b2], y1.T @ _gather(ys, bs, b2, local2[s0:s1], buf2))

    for chunk in sp.chunks:
        segs = chunk["segments"]
        n_threads = _threads(len(segs))
        if n_threads == 1:
            accumulate(chunk, segs)
            continue
        # numpy releases the GIL in the gathers and the (single-threaded) BLAS products: split the
        # block pairs into parts of about equal work, one part per thread
        work = np.cumsum([s1 - s0 for s0, s1, _, _ in segs])
        cuts = np.searchsorted(work, work[-1] * np.arange(1, n_threads) / n_threads)
        parts = [segs[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(segs)])]
        parallel_map(lambda part: accumulate(chunk, part), parts, n_threads)
    total += total.T
    return total


def _threads(n_tasks: int) -> int:
    """Worker threads for the Schur products: :func:`~jointcal_core.threads.worker_threads`,
    fewer when there are few block pairs (a thread per 64)."""
    return max(1, min(worker_threads(), n_tasks // 64 or 1))


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


def _gather(ys, bs, b: int, local: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Entries ``local`` (increasing) of block ``b`` as a (n * s, p_kept) matrix, gathered into
    ``buf`` (a reused buffer: fresh arrays of this size cost page faults at every step)."""
    src = ys[bs.slot_of[b]]
    n, (_, s, width) = local.size, src.shape
    if n and local[-1] - local[0] == n - 1:      # a contiguous run (e.g. a block with itself): a view
        y = src[local[0]:local[0] + n]
    else:
        y = buf[:n * s * width].reshape(n, s, width)
        np.take(src, local, axis=0, out=y)
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
