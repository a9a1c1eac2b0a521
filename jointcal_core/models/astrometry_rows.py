"""Residual rows of the astrometric problem: measurements, reference terms, priors, results.

This module owns the arithmetic of :class:`~jointcal_core.models.astrometry.AstrometryProblem`'s
rows, vectorised over all measurements (no loop over stars or measurements):

- :func:`whitening`: inverse Cholesky factors of the 2x2 tangent-plane covariances;
- :func:`measurement_rows`: model(x, y) minus the star at the ccdImage's epoch on the visit
  tangent plane, whitened, with derivatives;
- :func:`reference_rows`: reference positions, catalog motion priors and the weak priors;
- :func:`all_residuals`: per-measurement residuals for outputs, reserved stars included.
"""

from __future__ import annotations

import numpy as np

from ..data import Measurements
from ..projection import change_tangent_point, sky_to_tangent, tangent_basis, tangent_to_sky
from ..threads import parallel_map
from .astrometry_mappings import expand_pieces, mul22
from .astrometry_stars import MAS_PER_DEG, WEAK_PARALLAX_PRIOR_MAS, WEAK_PM_PRIOR_MASYR

__all__ = ["whitening", "measurement_rows", "reference_rows", "all_residuals"]


def whitening(meas: Measurements, idx: np.ndarray, dxy: np.ndarray, pedestal_px: float) -> np.ndarray:
    """Inverse Cholesky factor W of each measurement's tangent-plane covariance.

    ``C = A P A^T`` with ``A = d(xi, eta)/d(x, y)`` (deg/px) and ``P`` the pixel covariance
    plus ``pedestal_px**2`` on its diagonal; ``W C W^T = I``, so ``W r`` has unit covariance.

    Returns
    -------
    ndarray, shape (n, 2, 2)
        Lower triangular.
    """
    ped2 = float(pedestal_px) ** 2
    pxx, pyy, pxy = meas.var_x[idx] + ped2, meas.var_y[idx] + ped2, meas.cov_xy[idx]
    a00, a01, a10, a11 = dxy[:, 0, 0], dxy[:, 0, 1], dxy[:, 1, 0], dxy[:, 1, 1]
    c00 = a00 * a00 * pxx + 2 * a00 * a01 * pxy + a01 * a01 * pyy
    c10 = a10 * a00 * pxx + (a10 * a01 + a11 * a00) * pxy + a11 * a01 * pyy
    c11 = a10 * a10 * pxx + 2 * a10 * a11 * pxy + a11 * a11 * pyy
    with np.errstate(invalid="ignore", divide="ignore"):
        l11 = np.sqrt(c00)
        l21 = c10 / l11
        l22 = np.sqrt(c11 - l21 ** 2)
        w = np.zeros((idx.size, 2, 2))
        w[:, 0, 0] = 1.0 / l11
        w[:, 1, 0] = -l21 / (l11 * l22)
        w[:, 1, 1] = 1.0 / l22
    return w


def _star_at_epoch(problem, star: np.ndarray, meas_idx: np.ndarray) -> np.ndarray:
    """Common tangent-plane position (n, 2) of each star at its measurement's epoch."""
    s = problem.stars[star]
    pos = s[:, :2].copy()
    if problem.fit_motion:
        pos += s[:, 2:4] * problem.dt_yr[meas_idx, None]
    if problem.fit_parallax:
        pos += s[:, 4:5] * problem.parallax_factor[meas_idx]
    return pos


def _common_to_visit(problem, pos: np.ndarray, ccd: np.ndarray, jacobian: bool):
    """Common tangent plane -> visit tangent plane of each ccdImage; 2x2 derivative when asked.

    A homography per ccdImage (:func:`~jointcal_core.projection.change_tangent_point`): the same
    as going through (ra, dec), without the trigonometry (measured 4x faster).
    """
    rotation = tangent_basis(problem.ccd_centers[:, 0], problem.ccd_centers[:, 1]) @ \
        tangent_basis(*problem.center_deg).T
    return change_tangent_point(pos[:, 0], pos[:, 1], rotation[ccd], jacobian)


#: measurements per chunk of :func:`measurement_rows`: chunks run on the worker threads (numpy
#: releases the GIL in their arithmetic: 1.5x faster on 2 cores at 64k measurements) and bound
#: the temporaries to ~100 MB whatever the field's size
CHUNK_MEASUREMENTS = 65_536


def measurement_rows(problem, idx: np.ndarray, jacobian: bool, n_extra: int = 0) -> dict:
    """Whitened measurement rows (2 per measurement, xi row then eta row) of measurements ``idx``.

    With ``jacobian``, ``cols`` and ``vals`` have ``n_extra`` more all-zero rows at the end (for
    the reference rows), so the caller gets the full model Jacobian without another copy.
    """
    n = idx.size
    star = problem.meas_star[idx]
    # the columns depend only on which terms are active: kept between linearisations (read-only),
    # they are ~1/3 of the derivatives' memory traffic (0.65 GB at 1.7M measurements)
    key = (idx.tobytes(), n_extra)
    kept = getattr(problem, "_kept_cols", None)
    kept = kept[1] if jacobian and kept is not None and kept[0] == key else None
    r = np.empty((n, 2))
    out = dict(residual=r.reshape(-1), meas=np.repeat(idx, 2), ref_star=np.full(2 * n, -1, np.int64),
               star=np.repeat(star, 2))
    sv = vals = new_cols = None
    if jacobian:
        sd, k = problem.star_dim, problem.mapping.k
        sv = np.empty((n, 2, sd))
        vals = np.empty((2 * n + n_extra, k))
        vals[2 * n:] = 0.0
        if kept is None:
            # int32 columns: half the memory of the largest array after the derivatives themselves
            new_cols = np.zeros((2 * n + n_extra, k), np.int32 if problem.n_model_params < 2 ** 31 else np.int64)

    def chunk(bounds):
        a, b = bounds
        _chunk_rows(problem, idx[a:b], jacobian, r[a:b], None if sv is None else sv[a:b],
                    None if vals is None else vals[2 * a:2 * b].reshape(b - a, 2, -1),
                    None if new_cols is None else new_cols[2 * a:2 * b].reshape(b - a, 2, -1))

    bounds = _chunks(n)
    parallel_map(chunk, bounds)
    if jacobian:
        out["star_vals"] = sv.reshape(2 * n, problem.star_dim)
        if new_cols is not None:
            new_cols.flags.writeable = False
            problem._kept_cols = (key, new_cols)
            kept = new_cols
        out["vals"], out["cols"] = vals, kept
    return out


def _chunks(n: int) -> list[tuple[int, int]]:
    """Equal (start, stop) ranges of ``n`` measurements: at most CHUNK_MEASUREMENTS each, and at
    least 4 when there are 4 x 8192 measurements or more (work for up to 4 threads; below 8192 a
    thread costs more than it saves). They do not depend on the number of threads, nor do the
    results."""
    count = max(-(-n // CHUNK_MEASUREMENTS), min(4, n // 8192), 1)
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _chunk_rows(problem, idx, jacobian, r, sv, vals, cols_out) -> None:
    """Rows of the measurements ``idx`` written into ``r`` (n, 2), ``sv`` (n, 2, star_dim),
    ``vals`` (n, 2, k) and, when given, ``cols_out`` (n, 2, k)."""
    m = problem.field.measurements
    ccd, star = m.ccd[idx], problem.meas_star[idx]
    xi_m, eta_m, dxy, cols, pieces = problem.mapping.evaluate(problem.params, ccd, m.x[idx], m.y[idx], jacobian,
                                                              columns=cols_out is not None)
    xi_s, eta_s, d = _common_to_visit(problem, _star_at_epoch(problem, star, idx), ccd, jacobian)
    w = problem._weights(idx, dxy)
    r0, r1 = xi_m - xi_s, eta_m - eta_s
    r[:, 0] = w[:, 0, 0] * r0
    r[:, 1] = w[:, 1, 0] * r0 + w[:, 1, 1] * r1
    if not jacobian:
        return
    wd = -mul22(w, d)
    sv[:, :, :2] = wd
    if problem.fit_motion:
        sv[:, :, 2:4] = wd * problem.dt_yr[idx, None, None]
    if problem.fit_parallax:
        sv[:, :, 4] = np.einsum("nij,nj->ni", wd, problem.parallax_factor[idx])
    # the pieces cover every column (SimpleMapping: one piece; constrained: chip and visit)
    if sum(2 * basis.shape[1] for _, basis, _ in pieces) != vals.shape[2]:
        vals[:] = 0.0
    expand_pieces(pieces, idx.size, vals.shape[2], w, out=vals)
    if cols_out is not None:
        cols_out[:] = cols[:, None, :]


def _rows(residual, star, star_vals, ref_star) -> dict:
    n = residual.size
    return dict(residual=residual, star=star, star_vals=star_vals, meas=np.full(n, -1, np.int64), ref_star=ref_star)


def reference_rows(problem, jacobian: bool) -> list[dict]:
    """Reference-position rows (2 per active matched star), catalog motion priors, weak priors.

    Reference rows and catalog priors carry ``ref_star`` (the outlier pass may reject them, per
    star); the weak priors carry ``ref_star = -1`` (never rejected).
    """
    t, sd, stars = problem.ref, problem.star_dim, problem.stars
    out = []
    act = problem.ref_active[t.star]
    s, sig, dt = t.star[act], t.sigma_deg[act], t.dt_yr[act]
    pos = stars[s, :2] + (stars[s, 2:4] * dt[:, None] if problem.fit_motion else 0.0)
    sv = np.zeros((s.size, 2, sd))
    sv[:, 0, 0], sv[:, 1, 1] = 1 / sig[:, 0], 1 / sig[:, 1]
    if problem.fit_motion:
        sv[:, 0, 2], sv[:, 1, 3] = dt / sig[:, 0], dt / sig[:, 1]
    out.append(_rows(((pos - t.xy_deg[act]) / sig).ravel(), np.repeat(s, 2), sv.reshape(-1, sd), np.repeat(s, 2)))
    if not problem.fit_motion:
        return out
    prior_on = np.zeros(problem.n_stars, bool)
    act = problem.ref_active[t.pm_star]
    s, sig = t.pm_star[act], t.pm_sigma_degyr[act]
    prior_on[s] = True
    sv = np.zeros((s.size, 2, sd))
    sv[:, 0, 2], sv[:, 1, 3] = 1 / sig[:, 0], 1 / sig[:, 1]
    out.append(_rows(((stars[s, 2:4] - t.pm_target_degyr[act]) / sig).ravel(), np.repeat(s, 2),
                     sv.reshape(-1, sd), np.repeat(s, 2)))
    weak = np.flatnonzero(problem.weak_pm & ~prior_on)
    sv = np.zeros((weak.size, 2, sd))
    sigma = WEAK_PM_PRIOR_MASYR / MAS_PER_DEG
    sv[:, 0, 2] = sv[:, 1, 3] = 1 / sigma
    out.append(_rows((stars[weak, 2:4] / sigma).ravel(), np.repeat(weak, 2), sv.reshape(-1, sd),
                     np.full(2 * weak.size, -1, np.int64)))
    if problem.fit_parallax:
        prior_on[:] = False
        act = problem.ref_active[t.plx_star]
        s, sig = t.plx_star[act], t.plx_sigma_deg[act]
        prior_on[s] = True
        sv = np.zeros((s.size, sd))
        sv[:, 4] = 1 / sig
        out.append(_rows((stars[s, 4] - t.plx_target_deg[act]) / sig, s, sv, s))
        weak = np.flatnonzero(problem.weak_plx & ~prior_on)
        sigma = WEAK_PARALLAX_PRIOR_MAS / MAS_PER_DEG
        sv = np.zeros((weak.size, sd))
        sv[:, 4] = 1 / sigma
        out.append(_rows(stars[weak, 4] / sigma, weak, sv, np.full(weak.size, -1, np.int64)))
    return out


def all_residuals(problem) -> dict:
    """Residual of every measurement on its visit tangent plane (model minus star).

    Stars in the fit are taken at the measurement's epoch; a reserved star's position is the
    weighted mean of its measurements mapped by the model onto the common tangent plane.

    Returns
    -------
    dict of ndarray, shape (n_measurements,)
        ``ccd, visit, detector, star, x, y, dx_mas, dy_mas, chi2`` (NaN where there is no star
        or the ccdImage is excluded), ``used`` (in the fit now), ``outlier`` (rejected),
        ``reserved``.
    """
    m, ccds = problem.field.measurements, problem.field.ccd_images
    n = len(m)
    star = problem.meas_star
    in_fit = problem._in_fit()
    out = dict(ccd=m.ccd.copy(), visit=ccds.visit[m.ccd], detector=ccds.detector[m.ccd], star=star.copy(),
               x=m.x.copy(), y=m.y.copy(), dx_mas=np.full(n, np.nan), dy_mas=np.full(n, np.nan),
               chi2=np.full(n, np.nan), used=problem.active.copy(), outlier=in_fit & ~problem.active,
               reserved=problem._reserved_meas.copy())
    idx = np.flatnonzero((star >= 0) & ~problem.excluded_ccd[m.ccd])
    if idx.size == 0:
        return out
    ccd = m.ccd[idx]
    xi_m, eta_m, dxy, _, _ = problem.mapping.evaluate(problem.params, ccd, m.x[idx], m.y[idx], False)
    w = whitening(m, idx, dxy, problem.config.positionErrorPedestal)
    pos = _star_at_epoch(problem, star[idx], idx)
    res = problem._reserved_meas[idx]
    if np.any(res):
        c = problem.ccd_centers[ccd[res]]
        ra, dec = tangent_to_sky(xi_m[res], eta_m[res], c[:, 0], c[:, 1])
        xy = np.column_stack(sky_to_tangent(ra, dec, *problem.center_deg))
        weight = np.einsum("nij,nij->n", w[res], w[res])     # trace of the inverse covariance
        s = star[idx][res]
        wsum = np.bincount(s, weight, minlength=problem.n_stars)
        mean = np.column_stack([np.bincount(s, weight * xy[:, j], minlength=problem.n_stars) for j in (0, 1)])
        pos[res] = mean[s] / wsum[s, None]
    xi_s, eta_s, _ = _common_to_visit(problem, pos, ccd, False)
    r = np.column_stack([xi_m - xi_s, eta_m - eta_s])
    out["dx_mas"][idx], out["dy_mas"][idx] = r[:, 0] * MAS_PER_DEG, r[:, 1] * MAS_PER_DEG
    out["chi2"][idx] = np.sum(np.einsum("nij,nj->ni", w, r) ** 2, axis=1)
    return out
