"""Batched fitting of :class:`~jointcal_core.calibration.Calibration` records (many CCDs per call).

:meth:`Calibration.from_batch` fits every CCD of one polynomial order by one least-squares solve:
the Chebyshev-Lobatto nodes, in normalised coordinates, are the same for every CCD, so one design
matrix serves them all, and the model is evaluated for many CCDs per call. Each fit is then
checked against the model on fixed points (:data:`CHECK_U`, :data:`CHECK_V`), as
:meth:`Calibration.from_callables` always did.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .calibration import (
    _DEG_TO_MAS,
    ASTROMETRY_TOLERANCE_MAS,
    PHOTOMETRY_TOLERANCE_MAG,
    ChebyshevField,
    _design,
    _from_unit,
    _to_unit,
)
from .data import AB_NJY_ZP
from .exceptions import InputError

__all__ = ["CHECK_U", "CHECK_V", "batched", "check_astrometry", "check_photometry", "fit_all", "njy_of_zp"]


def batched(funcs: list) -> Callable:
    """``func(k, x, y)`` over many CCDs from one callable per CCD (``funcs[k](x, y)``)."""
    def func(k, x, y):
        k = np.asarray(k)
        order = np.argsort(k, kind="stable")
        starts = np.flatnonzero(np.r_[True, k[order][1:] != k[order][:-1]]) if k.size else np.zeros(0, int)
        out = None
        for rows in np.split(order, starts[1:]):
            value = np.atleast_2d(np.asarray(funcs[int(k[rows[0]])](x[rows], y[rows]), dtype=float))
            if out is None:
                out = np.empty((value.shape[0], k.size))
            out[:, rows] = value
        return out
    return func


def njy_of_zp(zp_mag: np.ndarray) -> np.ndarray:
    return 10.0 ** (-0.4 * (zp_mag - AB_NJY_ZP))


#: the check points of every CCD in normalised coordinates: a 9 x 9 grid with edges plus seeded
#: random points (not the fitting nodes)
CHECK_U = np.concatenate([np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))[0].ravel(),
                           np.random.default_rng(0).uniform(-1, 1, (2, 50))[0]])
CHECK_V = np.concatenate([np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))[1].ravel(),
                           np.random.default_rng(0).uniform(-1, 1, (2, 50))[1]])


def fit_all(func, bbox: np.ndarray, orders: list, target, chunk: int, check):
    """Yield ``(k, ChebyshevField)`` for every row ``k`` of ``bbox`` (shape (n, 4)).

    ``func(k, x, y) -> values (n_outputs, n_points)`` evaluates the model; ``target`` maps its
    values to the fitted quantity; ``check(rows, fitted, truth)`` (arrays (n_outputs, m, n_check))
    raises when the fit does not reproduce the model on :data:`CHECK_U`, :data:`CHECK_V`.
    """
    orders = np.asarray(orders, dtype=int)
    for order in np.unique(orders):
        n = order + 3
        nodes = np.cos(np.pi * np.arange(n) / (n - 1))
        gu, gv = (a.ravel() for a in np.meshgrid(nodes, nodes))
        terms = ChebyshevField.terms_of(int(order))
        design = _design(gu, gv, terms, order)
        n_nodes, n_check = gu.size, CHECK_U.size
        same = np.flatnonzero(orders == order)
        for start in range(0, same.size, chunk):
            rows = same[start:start + chunk]
            box = tuple(c[:, None] for c in bbox[rows].T)
            x, y = _from_unit(box, gu, gv)
            xc, yc = _from_unit(box, CHECK_U, CHECK_V)
            k = np.concatenate([np.repeat(rows, n_nodes), np.repeat(rows, n_check)])
            values = np.atleast_2d(np.asarray(func(k, np.concatenate([x.ravel(), xc.ravel()]),
                                                   np.concatenate([y.ravel(), yc.ravel()])), dtype=float))
            n_out, m = values.shape[0], rows.size
            fit_values = target(values[:, :m * n_nodes]).reshape(n_out, m, n_nodes)
            rhs = fit_values.transpose(2, 1, 0).reshape(n_nodes, m * n_out)
            coef = np.linalg.lstsq(design, rhs, rcond=None)[0].reshape(len(terms), m, n_out)
            u, v = _to_unit(box, xc, yc)
            at_check = _design(u.ravel(), v.ravel(), terms, order).reshape(m, n_check, len(terms))
            fitted = np.einsum("jct,tjo->ojc", at_check, coef)
            check(rows, order, fitted, values[:, m * n_nodes:].reshape(n_out, m, n_check))
            for j, r in enumerate(rows):
                yield int(r), ChebyshevField(tuple(float(b) for b in bbox[r]), terms, coef[:, j, :].copy())


def check_astrometry(visit, detector):
    def check(rows, order, fitted, truth):
        worst = np.max(np.abs(fitted - truth), axis=(0, 2)) * _DEG_TO_MAS
        bad = np.flatnonzero(~(worst <= ASTROMETRY_TOLERANCE_MAS))
        if bad.size:
            k = rows[bad[0]]
            raise InputError(f"pixel_to_tangent is not a polynomial of order {order}: the re-fit deviates by "
                             f"{worst[bad[0]]:.3g} mas (limit {ASTROMETRY_TOLERANCE_MAS:g}); pass the model's "
                             "true order", visit=int(visit[k]), detector=int(detector[k]))
    return check


def check_photometry(visit, detector, space: str):
    def check(rows, order, fitted, truth):
        value = fitted[0]
        if space == "flux":
            with np.errstate(divide="ignore", invalid="ignore"):
                value = AB_NJY_ZP - 2.5 * np.log10(np.where(value > 0, value, np.nan))
        worst = np.max(np.abs(value - truth[0]), axis=1)
        bad = np.flatnonzero(~(worst <= PHOTOMETRY_TOLERANCE_MAG))
        if bad.size:
            k = rows[bad[0]]
            raise InputError(f"zp_mag is not a polynomial of order {order} in {space} space: the re-fit deviates "
                             f"by {worst[bad[0]]:.3g} mag (limit {PHOTOMETRY_TOLERANCE_MAG:g}); pass the model's "
                             "true order or space", visit=int(visit[k]), detector=int(detector[k]))
    return check
