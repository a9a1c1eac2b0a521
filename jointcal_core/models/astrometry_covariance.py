"""Predicted accuracy of a fitted astrometric model: the Cramer-Rao bound from its normal matrix.

The model covariance is the inverse of the reduced (star-marginalised) normal matrix of the final
stage at the current state; propagated through the model's derivatives to a pixel grid over each
CCD it gives the expected rms error of the fitted WCS. A fit whose error against a known truth
matches this prediction is noise-limited and correctly weighted.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .astrometry_mappings import expand_pieces

_MAS_PER_DEG = 3.6e6


def predicted_wcs_rms_mas(problem, bbox: np.ndarray, *, ref_weight: float = 1.0, chips_known: bool = False,
                          n: int = 5) -> float:
    """Expected 2-D rms error (mas) of the fitted WCS on an n x n pixel grid over every CCD.

    Parameters
    ----------
    problem : AstrometryProblem
        A fitted problem (its current state and active measurements are used).
    bbox : ndarray, shape (n_ccd, 4)
        Each ccdImage's (x0, y0, x1, y1) in pixels (``CcdImages.bbox``).
    ref_weight : float
        Scales the reference rows' weights (large: an exact reference catalog).
    chips_known : bool
        Condition on the chip parameters of the constrained model (visit parameters only).
    n : int
        Grid points per axis and CCD.
    """
    groups = problem.stages()[-1].groups
    model_free, star_free = problem.model_param_mask(groups), problem.star_param_mask(groups)
    lin = problem.linearize(True)
    n_rows = lin.residual.size
    free = np.flatnonzero(model_free)
    free_index = np.full(problem.n_model_params, -1)
    free_index[free] = np.arange(free.size)
    cols = free_index[lin.model_cols]
    keep = (cols >= 0) & (lin.model_vals != 0)
    rows = np.broadcast_to(np.arange(n_rows)[:, None], cols.shape)[keep]
    jm = sp.csr_matrix((lin.model_vals[keep], (rows, cols[keep])), shape=(n_rows, free.size))
    has_star = lin.star >= 0
    sd = int(star_free.sum())
    ref_row = ((lin.meas < 0) & (lin.ref_star >= 0))[has_star]
    v = lin.star_vals[has_star][:, star_free] * np.where(ref_row, ref_weight, 1.0)[:, None]
    star = lin.star[has_star]
    js = sp.csr_matrix((v.ravel(), (np.repeat(np.flatnonzero(has_star), sd),
                                    (star[:, None] * sd + np.arange(sd)).ravel())), shape=(n_rows, problem.n_stars * sd))
    blocks = np.zeros((problem.n_stars, sd, sd))
    np.add.at(blocks, star, v[:, :, None] * v[:, None, :])
    measured = np.einsum("nii->n", blocks) > 0
    inv = np.zeros_like(blocks)
    inv[measured] = np.linalg.inv(blocks[measured])
    base = (np.arange(problem.n_stars) * sd)[:, None, None]
    cinv = sp.csr_matrix((inv.ravel(), (np.broadcast_to(base + np.arange(sd)[:, None], inv.shape).ravel(),
                                        np.broadcast_to(base + np.arange(sd), inv.shape).ravel())),
                         shape=(js.shape[1], js.shape[1]))
    b = (jm.T @ js).tocsr()
    reduced = (jm.T @ jm).toarray() - (b @ cinv @ b.T).toarray()
    cov = np.zeros_like(reduced)
    sub = np.ones(free.size, bool)
    if chips_known:
        sub = free >= problem.mapping.visit_offset
    cov[np.ix_(sub, sub)] = np.linalg.inv(reduced[np.ix_(sub, sub)])
    var = []
    for ccd, (x0, y0, x1, y1) in enumerate(np.asarray(bbox)):
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n)))
        _, _, _, pcols, pieces = problem.mapping.evaluate(problem.params, np.full(x.size, ccd), x, y, True)
        d = expand_pieces(pieces, x.size, pcols.shape[1])
        fc = free_index[pcols]
        d[np.broadcast_to((fc < 0)[:, None, :], d.shape)] = 0.0
        c = cov[np.maximum(fc, 0)[:, :, None], np.maximum(fc, 0)[:, None, :]]
        var.append(np.einsum("nik,nkl,nil->n", d, c, d))
    return float(np.sqrt(np.mean(np.concatenate(var))) * _MAS_PER_DEG)
