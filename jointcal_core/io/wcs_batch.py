"""Batched TAN-SIP and TPV export: all CCDs sampled on one grid fitted, rounded, measured and
formatted together (the tract path of :mod:`jointcal_core.io.export_models`).

:func:`~jointcal_core.io.wcs_cards.tan_sip_export` and :func:`~jointcal_core.io.wcs_cards.tpv_export`
do one CCD at a time (~1.6 ms per CCD and format, 16 s for a tract of 5000 CCDs). Here the same
steps run on a :class:`SampleBatch` of CCDs that share one sampling grid (one bbox):

- the forward fit is one product ``pinv @ samples`` for all CCDs (the design matrix depends only
  on the grid and the order);
- the inverse SIP fit, whose design depends on each CCD, is a loop of small SVD least squares
  (the per-CCD solver; see :func:`_lstsq_rows` for why not a stacked solve);
- rounding to the card text, the numpy evaluation of the headers and the fidelity figures are
  array operations over (CCDs, points);
- the cards are written with one template per header layout (:mod:`.wcs_text`).

The orders tried, the stopping rule and the "best so far" rule are those of the per-CCD functions,
so the same orders are chosen and the cards hold the same numbers, except the inverse SIP
coefficients (``AP``/``BP``): their fit in coordinates far from the origin (``A_0_0`` of 1e4 pixels
for a visit tangent point) is ill-conditioned (condition ~2e7), so the last-bit differences of
the batched forward products move them by up to ~1e-5 relative; as polynomials they agree to
< 1e-9 pixel on the CCD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..projection import angular_separation_arcsec, tangent_to_sky
from ..threads import parallel_map
from .wcs_cards import CcdSamples, _grid_operators
from .wcs_fits import FidelityReport, _terms, monomial_design
from .wcs_text import rounded_floats, sip_texts, tpv_texts

__all__ = ["SampleBatch", "batch_start_orders", "tan_sip_batch", "tpv_batch"]

#: rows (CCDs) handled per array step: keeps the (rows, points, terms) arrays at ~10-30 MB
_ROWS = 128


@dataclass(frozen=True)
class SampleBatch:
    """The model sampled on the fitting and check grids of K CCDs of one bbox (see ``CcdSamples``).

    Attributes
    ----------
    centre : ndarray, shape (2,)
        bbox centre (0-based pixels), shared.
    u, v : ndarray, shape (n,)
        Fitting grid, offsets from ``centre`` (pixels), shared.
    x_chk, y_chk : ndarray, shape (n_chk,)
        Check grid (0-based pixels), shared.
    crval : ndarray, shape (K, 2)
        Tangent point of each CCD (deg).
    xi, eta : ndarray, shape (K, n)
        Tangent-plane positions (deg) on the fitting grid.
    xi_chk, eta_chk : ndarray, shape (K, n_chk)
        Tangent-plane positions (deg) on the check grid (:meth:`sky_chk` gives them on the sky).
    """

    centre: np.ndarray
    u: np.ndarray
    v: np.ndarray
    x_chk: np.ndarray
    y_chk: np.ndarray
    crval: np.ndarray
    xi: np.ndarray
    eta: np.ndarray
    xi_chk: np.ndarray
    eta_chk: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crval.shape[0])

    def sky_chk(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of the check grid of ``rows``, shape (len(rows), n_chk): computed on
        demand (only the verification sample and a tangent point changed by rounding need them)."""
        rows = np.atleast_1d(rows)
        return tangent_to_sky(self.xi_chk[rows], self.eta_chk[rows], self.crval[rows, :1], self.crval[rows, 1:])

    def ccd(self, k: int) -> CcdSamples:
        """The :class:`CcdSamples` of row ``k`` (views; the grid arrays are shared)."""
        ra, dec = self.sky_chk(k)
        return CcdSamples(self.centre, (float(self.crval[k, 0]), float(self.crval[k, 1])), self.u, self.v,
                          self.xi[k], self.eta[k], self.x_chk, self.y_chk, ra[0], dec[0],
                          self.xi_chk[k], self.eta_chk[k])

    def grid(self) -> CcdSamples:
        """Row 0's samples without its sky positions: the key of the shared grid operators."""
        nan = np.full(1, np.nan)
        return CcdSamples(self.centre, (float(self.crval[0, 0]), float(self.crval[0, 1])), self.u, self.v,
                          self.xi[0], self.eta[0], self.x_chk, self.y_chk, nan, nan, self.xi_chk[0], self.eta_chk[0])


def _fit(b: SampleBatch, rows: np.ndarray, order: int):
    """Forward least squares of ``rows`` at ``order``: (terms, c_xi (R, m), c_eta (R, m))."""
    terms, pinv, scale, _ = _grid_operators(b.grid(), order)
    c_xi = (pinv @ b.xi[rows].T) / scale[:, None]
    c_eta = (pinv @ b.eta[rows].T) / scale[:, None]
    return terms, c_xi.T, c_eta.T


def batch_start_orders(b: SampleBatch, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0) -> np.ndarray:
    """``wcs_cards.start_order`` of every row: lowest order whose plain polynomial meets 0.9 x the
    limits on the check grid (errors in the tangent plane)."""
    out = np.full(b.size, max_order)
    pending = np.arange(b.size)
    for order in range(1, max_order + 1):
        if pending.size == 0:
            break
        _, c_xi, c_eta = _fit(b, pending, order)
        check = _grid_operators(b.grid(), order)[3]
        err_mas = np.hypot(c_xi @ check.T - b.xi_chk[pending], c_eta @ check.T - b.eta_chk[pending]) * 3.6e6
        ok = (np.sqrt(np.mean(err_mas ** 2, axis=1)) <= 0.9 * rms_mas) & (np.max(err_mas, axis=1) <= 0.9 * max_mas)
        out[pending[ok]] = order
        pending = pending[~ok]
    return out


def _fidelity(b: SampleBatch, rows, xi_h, eta_h, crval) -> tuple[np.ndarray, np.ndarray]:
    """``wcs_cards._fidelity`` of rows (header positions (R, n_chk) at ``crval`` (R, 2)): rms, max (mas)."""
    xi, eta = np.radians(b.xi_chk[rows]), np.radians(b.eta_chk[rows])
    dxi, deta = np.radians(xi_h - b.xi_chk[rows]), np.radians(eta_h - b.eta_chk[rows])
    r2 = 1.0 + xi * xi + eta * eta
    d2 = ((1.0 + eta * eta) * dxi * dxi - 2.0 * xi * eta * dxi * deta + (1.0 + xi * xi) * deta * deta) / (r2 * r2)
    sep = np.degrees(np.sqrt(np.maximum(d2, 0.0))) * 3.6e6
    other = np.flatnonzero(np.any(crval != b.crval[rows], axis=1))
    if other.size:     # a tangent point changed by its card rounding: compare on the sky
        ra, dec = tangent_to_sky(xi_h[other], eta_h[other], crval[other, :1], crval[other, 1:])
        sep[other] = angular_separation_arcsec(ra, dec, *b.sky_chk(rows[other])) * 1e3
    finite = np.all(np.isfinite(sep), axis=1)
    rms = np.where(finite, np.sqrt(np.mean(sep ** 2, axis=1)), np.inf)
    return rms, np.where(finite, np.max(sep, axis=1), np.inf)


def _poly_rows(coef: np.ndarray, terms, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sum_t coef[:, t, :] u**i v**j`` per row: coef (R, m, p), u and v (R, n) -> (R, p, n)."""
    top = max(max(t) for t in terms)
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(top):
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    design = np.empty((u.shape[0], len(terms), u.shape[1]))
    for k, (i, j) in enumerate(terms):
        np.multiply(pu[i], pv[j], out=design[:, k])
    return np.swapaxes(coef, 1, 2) @ design


def _lstsq_rows(design: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least squares per row, design (R, n, m), rhs (R, n, p) -> (R, m, p), by the SVD solver of the
    per-CCD path (``np.linalg.lstsq``). Measured on 1600 x 15 designs with one BLAS thread: 0.29 ms
    per row, against 0.7 ms for numpy's stacked QR and 0.07 ms for the normal equations, which
    lose 14 digits here (condition ~2e7: an inverse polynomial around ``A_0_0`` ~ 1e4 pixels)."""
    return np.stack([np.linalg.lstsq(d, r, rcond=None)[0] for d, r in zip(design, rhs)])


def _row_design(u: np.ndarray, v: np.ndarray, terms) -> np.ndarray:
    """Monomials per row: u, v (R, n) -> (R, n, m)."""
    top = max(max(t) for t in terms)
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(top):
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    out = np.empty(u.shape + (len(terms),))
    for k, (i, j) in enumerate(terms):
        np.multiply(pu[i], pv[j], out=out[..., k])
    return out


def _fit_inverse_rows(big_u, big_v, du, dv, order: int, tol_pix: float = 1e-3):
    """``wcs_fits._fit_inverse`` per row: (inverse order (R,), coefficients (R, m_max, 2)) with
    ``m_max = len(_terms(order + 3))`` (terms above a row's order are 0)."""
    n_rows = big_u.shape[0]
    m_max = len(_terms(order + 3))
    coef = np.zeros((n_rows, m_max, 2))
    inv_order = np.full(n_rows, order)
    best = np.full(n_rows, np.inf)
    pending = np.arange(n_rows)
    for k in range(order, order + 4):
        if pending.size == 0:
            break
        terms = _terms(k)
        bu, bv = big_u[pending], big_v[pending]
        su = np.maximum(np.max(np.abs(bu), axis=1), 1e-300)[:, None]
        sv = np.maximum(np.max(np.abs(bv), axis=1), 1e-300)[:, None]
        design = _row_design(bu / su, bv / sv, terms)
        rhs = np.stack([du[pending], dv[pending]], axis=-1)
        c = _lstsq_rows(design, rhs)
        resid = design @ c - rhs
        err = np.max(np.hypot(resid[..., 0], resid[..., 1]), axis=1)
        scale = np.stack([su[:, 0] ** i * sv[:, 0] ** j for i, j in terms], axis=1)
        better = err < best[pending]
        rows = pending[better]
        best[rows], inv_order[rows] = err[better], k
        coef[rows] = 0.0
        coef[rows, :len(terms)] = c[better] / scale[better][:, :, None]
        pending = pending[~(err < tol_pix)]
    return inv_order, coef


def _linear_part(terms, c_xi, c_eta) -> np.ndarray:
    """CD (R, 2, 2) from the order-1 coefficients, as ``wcs_fits._sip_coefficients``."""
    i10, i01 = terms.index((1, 0)), terms.index((0, 1))
    return np.stack([np.stack([c_xi[:, i10], c_xi[:, i01]], axis=1),
                     np.stack([c_eta[:, i10], c_eta[:, i01]], axis=1)], axis=1)


def _better(report_rms, report_max, meets, best_rms, best_max) -> np.ndarray:
    """The per-CCD rule: replace the best when none yet, when this one meets the limits, or when it
    is smaller in (rms, max) order."""
    return ~np.isfinite(best_rms) | meets | (report_rms < best_rms) | ((report_rms == best_rms) & (report_max < best_max))


def _search_orders(b: SampleBatch, starts, max_order: int, rms_mas: float, max_mas: float, step):
    """Per row of ``b``, the lowest order from its start that meets the aims, else the best tried.

    ``step(rows, order)`` fits ``order`` to ``rows`` (chunks of at most ``_ROWS``) and returns
    ``(payload, rms, worst, inverse)``: ``payload(k)`` is what to keep of the chunk's row ``k``,
    rms and worst (mas) shape (R,), ``inverse`` (pix, shape (R,)) or None when not applicable.

    Returns the kept payloads and the :class:`FidelityReport` of every row, in row order.
    """
    starts = np.asarray(starts, dtype=int)
    n = b.size
    best_rms, best_max = np.full(n, np.inf), np.full(n, np.inf)
    chosen: dict = {}
    pending = np.arange(n)
    for order in range(int(starts.min()) if n else 1, max_order + 1):
        active = pending[starts[pending] <= order]
        done = np.zeros(0, int)
        chunks = [active[a:a + _ROWS] for a in range(0, active.size, _ROWS)]
        # independent chunks: numpy releases the GIL in their products and SVDs
        results = parallel_map(lambda rows, order=order: step(rows, order), chunks)
        for rows, (payload, rms, worst, inverse) in zip(chunks, results):
            meets = (rms <= rms_mas) & (worst <= max_mas)
            better = _better(rms, worst, meets, best_rms[rows], best_max[rows])
            for k in np.flatnonzero(better):
                r = int(rows[k])
                best_rms[r], best_max[r] = rms[k], worst[k]
                extra = () if inverse is None else (float(inverse[k]),)
                chosen[r] = (payload(k), FidelityReport(order, float(rms[k]), float(worst[k]), bool(meets[k]),
                                                        b.x_chk.size, *extra))
            done = np.r_[done, rows[meets]]
        pending = np.setdiff1d(pending, done)
        if pending.size == 0:
            break
    return [chosen[k][0] for k in range(n)], [chosen[k][1] for k in range(n)]


def tan_sip_batch(b: SampleBatch, starts, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0):
    """:func:`~jointcal_core.io.wcs_cards.tan_sip_export` of every row of ``b``.

    Parameters
    ----------
    b : SampleBatch
    starts : array_like of int, shape (K,)
        First order tried per row (``batch_start_orders``).

    Returns
    -------
    texts : list of str, length K
        Each header's card images joined (80 characters each), in ``tan_sip_header``'s order.
    reports : list of FidelityReport
    """
    crpix = rounded_floats(b.centre + 1.0)
    crval = rounded_floats(b.crval)
    u, v = b.x_chk + 1.0 - crpix[0], b.y_chk + 1.0 - crpix[1]

    def step(rows, order):
        values, rms, worst, inverse = _sip_step(b, rows, order, crval[rows], u, v)
        return (lambda k: {key: val[k] for key, val in values.items()}), rms, worst, inverse

    chosen, reports = _search_orders(b, starts, max_order, rms_mas, max_mas, step)
    return sip_texts(chosen, crpix), reports


def _sip_step(b: SampleBatch, rows, order: int, crval, u, v):
    """One order for ``rows``: the rounded header values, rms, max (mas) and inverse error (pix)."""
    terms, c_xi, c_eta = _fit(b, rows, order)
    cd = _linear_part(terms, c_xi, c_eta)
    cd_r = rounded_floats(cd)
    values = {"crval": crval, "cd": cd_r.reshape(-1, 4), "order": np.full(rows.size, order)}
    if order < 2:
        xi = cd_r[:, 0, :1] * u + cd_r[:, 0, 1:] * v
        eta = cd_r[:, 1, :1] * u + cd_r[:, 1, 1:] * v
        rms, worst = _fidelity(b, rows, xi, eta, crval)
        return values, rms, worst, np.full(rows.size, math.nan)
    nl = [t for t in terms if sum(t) != 1]
    cols = [terms.index(t) for t in nl]
    cd_inv = np.linalg.inv(cd)
    a = cd_inv[:, 0, :1] * c_xi[:, cols] + cd_inv[:, 0, 1:] * c_eta[:, cols]
    bb = cd_inv[:, 1, :1] * c_xi[:, cols] + cd_inv[:, 1, 1:] * c_eta[:, cols]
    design_fit = monomial_design(b.u, b.v, nl)
    big_u, big_v = b.u + a @ design_fit.T, b.v + bb @ design_fit.T
    inv_order, inv = _fit_inverse_rows(big_u, big_v, b.u - big_u, b.v - big_v, order)
    a_r, b_r = rounded_floats(a), rounded_floats(bb)
    inv_r = rounded_floats(inv[:, :len(_terms(int(inv_order.max())))])
    design_chk = monomial_design(u, v, nl)
    cu, cv = u + a_r @ design_chk.T, v + b_r @ design_chk.T
    xi = cd_r[:, 0, :1] * cu + cd_r[:, 0, 1:] * cv
    eta = cd_r[:, 1, :1] * cu + cd_r[:, 1, 1:] * cv
    rms, worst = _fidelity(b, rows, xi, eta, crval)
    inv_terms = _terms(int(inv_order.max()))     # the terms above every row's inverse order are 0
    inv_r = inv_r[:, :len(inv_terms)]
    back = _poly_rows(inv_r, inv_terms, cu, cv)
    back_u, back_v = cu + back[:, 0], cv + back[:, 1]
    inverse = np.max(np.hypot(back_u - u, back_v - v), axis=1)
    ap = np.zeros((rows.size, len(_terms(order + 3))))
    bp = ap.copy()
    ap[:, :len(inv_terms)], bp[:, :len(inv_terms)] = inv_r[..., 0], inv_r[..., 1]
    values.update(a=a_r, b=b_r, inv_order=inv_order, ap=ap, bp=bp)
    return values, rms, worst, inverse


def _substitute_rows(terms, c_xi, c_eta, inv: np.ndarray):
    """``wcs_cards._substitute_linear`` per row: inv (R, 2, 2); c_xi, c_eta (R, m)."""
    index = {t: k for k, t in enumerate(terms)}
    out_xi, out_eta = np.zeros_like(c_xi), np.zeros_like(c_eta)
    a, b, c, d = inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 0], inv[:, 1, 1]
    for col, (i, j) in enumerate(terms):
        cx, ce = c_xi[:, col], c_eta[:, col]
        for p in range(i + 1):
            wu = math.comb(i, p) * a ** p * b ** (i - p)
            for q in range(j + 1):
                w = wu * math.comb(j, q) * c ** q * d ** (j - q)
                k = index[(p + q, i + j - p - q)]
                out_xi[:, k] += w * cx
                out_eta[:, k] += w * ce
    return out_xi, out_eta


def tpv_batch(b: SampleBatch, starts, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0):
    """:func:`~jointcal_core.io.wcs_cards.tpv_export` of every row of ``b``.

    Returns
    -------
    images : list of list of str, length K
        Each CCD's card images in ``scamp_head.tpv_header``'s order (no photometry cards).
    reports : list of FidelityReport
    """
    crpix = rounded_floats(b.centre + 1.0)
    crval = rounded_floats(b.crval)
    u, v = b.x_chk + 1.0 - crpix[0], b.y_chk + 1.0 - crpix[1]

    def step(rows, order):
        terms, c_xi, c_eta = _fit(b, rows, order)
        cd = _linear_part(terms, c_xi, c_eta)
        cd_r = rounded_floats(cd)
        d_xi, d_eta = _substitute_rows(terms, c_xi, c_eta, np.linalg.inv(cd_r))
        xq = cd_r[:, 0, :1] * u + cd_r[:, 0, 1:] * v
        yq = cd_r[:, 1, :1] * u + cd_r[:, 1, 1:] * v
        xi, eta = np.moveaxis(_poly_rows(rounded_floats(np.stack([d_xi, d_eta], axis=-1)), terms, xq, yq), 1, 0)
        rms, worst = _fidelity(b, rows, xi, eta, crval[rows])
        return (lambda k: (order, (cd[k], d_xi[k], d_eta[k]))), rms, worst, None

    chosen, reports = _search_orders(b, starts, max_order, rms_mas, max_mas, step)
    images = tpv_texts(b.crval, b.centre + 1.0, [c[0] for c in chosen], [c[1] for c in chosen])
    return images, reports

