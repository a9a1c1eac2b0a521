"""One Gauss-Newton solve with the star parameters eliminated by Schur complement.

The normal matrix of a joint calibration is mostly star blocks (2x2 positions, 1x1 fluxes)
coupled to comparatively few model parameters::

    [ A   B ] [dm]     [g_m]
    [ B^T C ] [ds] = - [g_s]        C block diagonal (one s x s block per star)

Eliminating the stars gives the reduced system ``(A - B C^-1 B^T) dm = -(g_m - B C^-1 g_s)``
over the model parameters only, solved by a dense Cholesky factorisation with Jacobi
(diagonal) scaling; the stars follow by back-substitution. jointcal instead factorises the
full system with CHOLMOD, which is what this is measured against (benchmarks/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..exceptions import ModelConstraintError, NonFiniteError
from . import refine
from .dense import DEGENERATE, cholesky_solve, factorize, solve_eliminating
from .normal import sum_by_index
from .problem import Linearization

__all__ = ["SolveResult", "forget_rows", "removed_rows", "resolve_gain", "solve_step"]



@dataclass(frozen=True)
class SolveResult:
    """Step of one solve; entries of parameters not free are 0.

    ``predicted_decrease`` is the chi2 decrease of the linearised problem for the full step,
    ``-g . delta`` (g = J^T r): the actual decrease when the residuals are linear.
    """

    delta_model: np.ndarray
    delta_stars: np.ndarray
    n_free: int
    predicted_decrease: float = float("nan")


def _model_matrix(lin: Linearization, free_index: np.ndarray, n_free: int) -> sp.csr_matrix:
    """Sparse whitened Jacobian over the free model parameters, shape (n_rows, n_free)."""
    n_rows = lin.residual.size
    if n_free == 0 or lin.model_cols is None or lin.model_cols.size == 0:
        return sp.csr_matrix((n_rows, n_free))
    cols = free_index[lin.model_cols]
    keep = (cols >= 0) & (lin.model_vals != 0)
    rows = np.broadcast_to(np.arange(n_rows)[:, None], cols.shape)[keep]
    return sp.csr_matrix((lin.model_vals[keep], (rows, cols[keep])), shape=(n_rows, n_free))


def _star_blocks(lin: Linearization, n_stars: int, star_free: np.ndarray):
    """Per-star normal blocks C (n_stars, s, s) and star Jacobian as a sparse matrix."""
    s_free = int(star_free.sum())
    rows_with_star = lin.star >= 0
    vals = lin.star_vals[:, star_free]
    v = vals[rows_with_star]
    stars = lin.star[rows_with_star]
    blocks = sum_by_index(stars, v[:, :, None] * v[:, None, :], n_stars)
    n_rows = lin.residual.size
    row_idx = np.repeat(np.flatnonzero(rows_with_star), s_free)
    col_idx = (stars[:, None] * s_free + np.arange(s_free)[None, :]).ravel()
    js = sp.csr_matrix((v.ravel(), (row_idx, col_idx)), shape=(n_rows, n_stars * s_free))
    return blocks, js, s_free


def _invert_blocks(blocks: np.ndarray) -> np.ndarray:
    """Inverse of each s x s block; blocks of stars without terms stay 0 (their step is 0)."""
    n, s, _ = blocks.shape
    inv = np.zeros_like(blocks)
    diag = np.einsum("nii->ni", blocks)
    used = np.all(diag > 0, axis=1)
    if np.any(used):
        b = blocks[used]
        # a tiny ridge relative to the block's own scale keeps nearly singular stars finite
        scale = np.einsum("nii->ni", b).max(axis=1)[:, None, None]
        inv[used] = np.linalg.inv(b + DEGENERATE * scale * np.eye(s))
    return inv


def _block_diag(blocks: np.ndarray) -> sp.csr_matrix:
    """Sparse block-diagonal matrix from (n, s, s) blocks, built without a Python loop."""
    n, s, _ = blocks.shape
    base = (np.arange(n) * s)[:, None, None]
    rows = np.broadcast_to(base + np.arange(s)[None, :, None], blocks.shape)
    cols = np.broadcast_to(base + np.arange(s)[None, None, :], blocks.shape)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(n * s, n * s))


def solve_step(lin: Linearization, n_model_params: int, n_stars: int, star_dim: int,
               model_free: np.ndarray, star_free: np.ndarray,
               describe=lambda i: f"parameter {i}", method: str = "blocks", cache: dict | None = None) -> SolveResult:
    """Gauss-Newton step for the free parameters.

    Parameters
    ----------
    lin : Linearization
    n_model_params, n_stars, star_dim : int
        Problem sizes.
    model_free : ndarray of bool, shape (n_model_params,)
    star_free : ndarray of bool, shape (star_dim,)
        Which star parameters are free (none: positions held).
    describe : callable
        Maps a model parameter index to a description for error messages.
    method : {'blocks', 'sparse'}
        'blocks' assembles the reduced system by dense block products (fit/normal.py);
        'sparse' by scipy.sparse products (simple, slow at scale; kept as a reference).
    cache : dict, optional
        Kept by the caller between steps of one problem: the row structure of the assembly
        (:class:`~jointcal_core.fit.normal.Plan`) is reused while the rows and the free
        parameters are the same, or after rows were removed (:func:`forget_rows`). Rows
        ``lin.dropped`` by outlier passes are zeroed on the way into the plan's layout instead
        of being cut out first (a copy of the Jacobian saved per re-solve); with a cache, the
        caller then calls :func:`forget_rows` with them after the step, for the next
        linearisation.

    Returns
    -------
    SolveResult
    """
    free_ids = np.flatnonzero(model_free)
    n_free = free_ids.size
    free_index = np.full(n_model_params + 1, -1, dtype=np.int64)
    free_index[free_ids] = np.arange(n_free)
    free_index = free_index[:-1] if n_model_params else free_index
    delta_model = np.zeros(n_model_params)
    delta_stars = np.zeros((n_stars, star_dim))

    def describe_free(i):
        return describe(int(free_ids[i]))

    any_star = bool(np.any(star_free))
    if method == "sparse":
        dm, ds, predicted = _solve_sparse(lin.compacted(), free_index, n_free, n_stars, star_free, describe_free)
    else:
        dm, ds, predicted = _solve_blocks(lin, free_index, n_free, n_stars, star_free, describe_free, cache)
    if n_free:
        delta_model[free_ids] = dm
    if any_star:
        delta_stars[:, star_free] = ds
    if not (np.all(np.isfinite(delta_model)) and np.all(np.isfinite(delta_stars))):
        raise NonFiniteError("the Gauss-Newton step is not finite; the fit stopped before applying it")
    return SolveResult(delta_model, delta_stars, n_free + (n_stars * int(star_free.sum()) if any_star else 0),
                       float(predicted))


def _solve_sparse(lin, free_index, n_free, n_stars, star_free, describe_free):
    r = lin.residual
    jm = _model_matrix(lin, free_index, n_free)
    if not np.any(star_free):
        g = jm.T @ r
        dm = -cholesky_solve((jm.T @ jm).toarray(), g, describe_free) if n_free else np.zeros(0)
        return dm, None, -float(g @ dm) if n_free else 0.0
    blocks, js, s_free = _star_blocks(lin, n_stars, star_free)
    cinv = _invert_blocks(blocks)
    g_s = js.T @ r
    cinv_sp = _block_diag(cinv)
    if n_free:
        b = (jm.T @ js).tocsr()
        b_cinv = b @ cinv_sp
        reduced = (jm.T @ jm).toarray() - (b_cinv @ b.T).toarray()
        rhs = jm.T @ r - b_cinv @ g_s
        dm = -cholesky_solve(reduced, rhs, describe_free)
        ds = -(cinv_sp @ (g_s + b.T @ dm))
    else:
        dm = np.zeros(0)
        ds = -(cinv_sp @ g_s)
    predicted = -float(g_s @ ds) - (float((jm.T @ r) @ dm) if n_free else 0.0)
    return dm, ds.reshape(n_stars, s_free), predicted


def forget_rows(cache: dict | None, removed: np.ndarray) -> None:
    """Tell the solver cache that the rows ``removed`` (mask over the last linearisation's rows)
    are gone: the next linearisation must be the last one without them, in the same order."""
    if cache is None or "plan" not in cache:
        return
    row_map = cache["row_map"]
    if removed.size != row_map.size:
        cache.clear()
        return
    cache["row_map"] = row_map[~removed]


def _cached_plan(lin, free_index, cache):
    """The assembly plan for ``lin`` and the rows of the plan's layout ``lin``'s rows sit at.

    Returns ``(plan, row_map)``; ``row_map`` is None when ``lin`` has the plan's rows exactly.
    """
    from .normal import Plan

    blocks = lin.slot_block if lin.slot_block is not None else lin.model_cols
    if cache is not None and "plan" in cache and np.array_equal(cache["free_index"], free_index) \
            and cache["slot_ranges"] == lin.slot_ranges:
        row_map = cache["row_map"]
        if row_map.size == lin.residual.size and np.array_equal(cache["star"][row_map], lin.star) \
                and np.array_equal(cache["blocks"][row_map], blocks):
            return cache["plan"], (None if row_map.size == cache["star"].size else row_map)
    plan = Plan(lin, free_index)
    if cache is not None:
        cache.clear()
        cache.update(plan=plan, free_index=free_index.copy(), slot_ranges=lin.slot_ranges, star=lin.star.copy(),
                     blocks=blocks.copy(), row_map=np.arange(lin.residual.size))
    return plan, None


def _expand(lin: Linearization, row_map: np.ndarray | None, star: np.ndarray,
            dropped: np.ndarray | None = None) -> Linearization:
    """``lin`` in the row layout of a cached plan (``row_map``: the plan row of each of ``lin``'s
    rows; None: the same rows). Rows removed since the plan was made, and ``lin``'s rows marked
    ``dropped`` (bool mask), are zero: they add nothing to the sums."""
    n = star.size

    def spread(a):
        if row_map is None:
            out = a.copy()
        else:
            out = np.zeros((n,) + a.shape[1:], a.dtype)
            out[row_map] = a
        if dropped is not None:
            out[dropped if row_map is None else row_map[dropped]] = 0
        return out

    return Linearization(residual=spread(lin.residual), model_vals=spread(lin.model_vals), star=star,
                         star_vals=spread(lin.star_vals))


def _solve_blocks(lin, free_index, n_free, n_stars, star_free, describe_free, cache=None):
    from . import normal, schur

    has_model = n_free > 0 and lin.model_cols is not None and lin.model_cols.size > 0
    plan = None
    if has_model:
        plan, row_map = _cached_plan(lin, free_index, cache)
        if row_map is not None or lin.dropped is not None:    # rows dropped by outlier passes are zeroed
            lin = _expand(lin, row_map, lin.star if cache is None else cache["star"], lin.dropped)
    elif lin.dropped is not None:
        lin = lin.compacted()       # the stars alone: no plan layout to zero them in
    r = lin.residual
    if not np.any(star_free):
        if not has_model:
            return np.zeros(n_free), None, 0.0
        a = normal.normal_matrix(lin, plan, n_free)
        g = normal.accumulate_gradient(lin, plan, n_free, r)
        dm = -solve_eliminating(a, g, _uncoupled_blocks(plan.bs, n_free), describe_free)
        return dm, None, -float(g @ dm)
    w = lin.star_vals[:, star_free]
    with_star = lin.star >= 0
    star = np.where(with_star, lin.star, 0)
    star_rows, w_rows = lin.star[with_star], w[with_star]
    blocks = sum_by_index(star_rows, w_rows[:, :, None] * w_rows[:, None, :], n_stars)
    cinv = _invert_blocks(blocks)
    g_s = sum_by_index(star_rows, w_rows * r[with_star, None], n_stars)
    q = np.einsum("nij,nj->ni", cinv, g_s)                     # C^-1 g_s per star
    star_decrease = float(np.einsum("ni,ni->", g_s, q))
    if not has_model:
        return np.zeros(n_free), -q, star_decrease
    # rhs = g_m - B C^-1 g_s = sum_rows V_row (r_row - w_row . q_star)
    wq = np.where(with_star, np.einsum("ni,ni->n", w, q[star]), 0.0)
    rhs = normal.accumulate_gradient(lin, plan, n_free, r - wq)
    def apply(x):
        """The reduced matrix times x, by passes over the rows (fit/refine.py)."""
        u = normal.rows_dot_model(lin, plan, x)
        bt_x = sum_by_index(star_rows, w_rows * u[with_star, None], n_stars)
        wt = np.einsum("ni,ni->n", w, np.einsum("nij,nj->ni", cinv, bt_x)[star])
        return normal.accumulate_gradient(lin, plan, n_free, u - np.where(with_star, wt, 0.0))

    def reduced_matrix(rows=None, weight=1.0):
        """``A - B C^-1 B^T`` from the rows ``rows`` (all when None), their terms times ``weight``."""
        sub, sub_plan = lin, plan
        if rows is not None:
            sub = Linearization(residual=r[rows], model_vals=lin.model_vals[rows] * np.sqrt(weight),
                                star=lin.star[rows], star_vals=lin.star_vals[rows])
            sub_plan = plan.subset(rows)
        has = sub.star >= 0
        # C^-1 = L L^T per star; z_row = L^T w_row. A sampled star keeps all its rows, so with its
        # terms times `weight` its C^-1 is C^-1 / weight and z is unchanged: only V is scaled
        used = np.einsum("nii->n", cinv) > 0
        chol = np.zeros_like(cinv)
        chol[used] = np.linalg.cholesky(cinv[used])
        w_sub = sub.star_vals[:, star_free]
        z = np.where(has[:, None], np.einsum("nij,ni->nj", chol[np.where(has, sub.star, 0)], w_sub), 0.0)
        a = normal.normal_matrix(sub, sub_plan, n_free)
        a -= schur.schur_term(sub, sub_plan, n_free, z)
        return a

    dm = None
    if cache is not None and "factor" not in cache:
        every = refine.sample_every(n_free, lin.star)
        if every > 1:
            # first step of the stage at scale: precondition CG by the reduced matrix of every
            # `every`-th star (fit/refine.py), a fraction of the cost of assembling all of them
            rows = np.flatnonzero(~with_star | (lin.star % every == 0))
            try:
                cache["factor"] = factorize(reduced_matrix(rows, float(every)), describe_free)
            except ModelConstraintError:
                pass        # the sample leaves a parameter free: assemble everything below
    if cache is not None and "factor" in cache:
        # later steps of the stage: the last factorisation preconditions CG
        solved, cache["cg_iterations"] = refine.preconditioned_cg(apply, rhs, cache["factor"])
        dm = None if solved is None else -solved
    if dm is None:
        dm = -cholesky_solve(reduced_matrix(), rhs, describe_free, keep=cache)
    # ds = -C^-1 (g_s + B^T dm); B^T dm per star = sum_rows w_row (V_row . dm)
    jdm = normal.rows_dot_model(lin, plan, dm)
    bt_dm = sum_by_index(star_rows, w_rows * jdm[with_star, None], n_stars)
    ds = -(q + np.einsum("nij,nj->ni", cinv, bt_dm))
    # -g . delta = -rhs . dm + g_s . q (the Schur form of the quadratic model's decrease)
    return dm, ds, -float(rhs @ dm) + star_decrease


# below this many free parameters a dense Cholesky of everything is as fast as any elimination
ELIMINATE_ABOVE = 1500


def _uncoupled_blocks(bs, n_free: int, above: int | None = None) -> list:
    """The free columns of every block of the slot with the most free parameters, when the stars
    are held: a row touches one block per slot, so the blocks of one slot share no row and their
    part of ``Jm^T Jm`` is block diagonal. [] for small problems, a single block, slots the model
    did not give, or columns shared between blocks (then nothing is known to be uncoupled)."""
    if n_free <= (ELIMINATE_ABOVE if above is None else above) or bs.n_blocks == 0 or not bs.explicit:
        return []
    sizes = np.bincount(bs.slot_of, weights=[c.size for c in bs.cols], minlength=len(bs.ranges))
    slot = int(np.argmax(sizes))
    blocks = [c for c, t in zip(bs.cols, bs.slot_of) if t == slot and c.size]
    owner = np.zeros(n_free, np.int64)
    for c in bs.cols:
        np.add.at(owner, c, 1)
    if len(blocks) < 2 or any(np.any(owner[c] != 1) for c in blocks):
        return []
    return blocks


def removed_rows(lin: Linearization, reject_meas: np.ndarray, reject_ref: np.ndarray) -> np.ndarray:
    """Mask (n_rows,) of the rows of rejected measurements and of rejected reference terms (by star)."""
    removed = (lin.meas >= 0) & np.isin(lin.meas, reject_meas)
    removed |= (lin.ref_star >= 0) & np.isin(lin.ref_star, reject_ref)
    if lin.dropped is not None:
        removed &= ~lin.dropped         # rejected by an earlier pass already
    return removed


def resolve_gain(lin: Linearization, removed: np.ndarray, star_free: np.ndarray, n_model_free: int = 0) -> float:
    """Estimated chi2 decrease of a new solve after rejecting terms at a converged solution.

    At a minimum the gradient of chi2 vanishes; without the rejected rows R it becomes
    ``-J_R^T r_R``. Re-fitting only the stars that lose a term (the model is constrained by many
    more terms, so it barely moves) gives per star ``g_j^T C_j'^-1 g_j`` with ``C_j'`` the star's
    normal block without R: a lower bound of the full Gauss-Newton decrease, tight when a
    rejection mostly moves its own star.

    Parameters
    ----------
    lin : Linearization
        With derivatives, at the solution, before the rejection.
    removed : ndarray of bool, shape (n_rows,)
        The rejected rows (:func:`removed_rows`).
    star_free : ndarray of bool, shape (star_dim,)
    n_model_free : int
        Free model parameters. When given, the model's share is added: removing a row of
        residual r and leverage h lowers the minimum by r^2 h / (1 - h), and the model's leverage
        of a row is n_model_free / n_rows on average.

    Returns
    -------
    float
        Estimated decrease (chi2 units, >= 0).
    """
    r_removed = lin.residual[removed]
    model_share = float(r_removed @ r_removed) * min(n_model_free / max(lin.n_live_rows, 1), 1.0)
    if not np.any(star_free) or lin.star_vals is None:
        return model_share
    stars = np.unique(lin.star[removed & (lin.star >= 0)])
    if stars.size == 0:
        return model_share
    rows = np.flatnonzero(np.isin(lin.star, stars))
    local = np.searchsorted(stars, lin.star[rows])
    w = lin.star_vals[rows][:, star_free]
    gone = removed[rows]
    # rows dropped by earlier passes are in no star's block any more
    kept_w = np.where((gone if lin.dropped is None else gone | lin.dropped[rows])[:, None], 0.0, w)
    blocks = sum_by_index(local, kept_w[:, :, None] * kept_w[:, None, :], stars.size)
    grad = -sum_by_index(local, np.where(gone[:, None], w * lin.residual[rows, None], 0.0), stars.size)
    cinv = _invert_blocks(blocks)
    return float(max(np.einsum("ni,nij,nj->", grad, cinv, grad), 0.0)) + model_share
