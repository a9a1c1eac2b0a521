"""Dense solves of the reduced normal equations, with the degeneracy diagnostics.

:func:`cholesky_solve` factorises the Jacobi-scaled matrix; a tiny pivot names the parameter
the data do not constrain. :func:`solve_eliminating` first eliminates *uncoupled blocks*:
parameter blocks no row shares, such as the visits' polynomials of a constrained model while
the stars are held (a row touches one visit). Their part of the matrix is block diagonal, so
the Cholesky factorisation in the order (those blocks, the rest) costs a small factorisation
per block and one of the rest, instead of a dense factorisation of everything: at 200 visits
x 103 CCDs (9,018 parameters) about 1 s instead of about 10 s. The pivots are those of the
full factorisation in that order, so a degenerate problem is detected just the same; the
message then comes from the full matrix.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.linalg

from ..exceptions import ModelConstraintError, NonFiniteError
from ..threads import blas_threads
from .refine import Factor

__all__ = ["DEGENERATE", "PIVOT", "cholesky_solve", "factorize", "solve_eliminating"]

# relative size of the pivot below which a parameter counts as unconstrained
DEGENERATE = 1e-12
# smallest Cholesky pivot of the Jacobi-scaled reduced matrix accepted as non-singular
PIVOT = 1e-5


def _scale(matrix: np.ndarray, rhs: np.ndarray, describe) -> np.ndarray:
    """Jacobi scale ``1/sqrt(diag)``, after the finiteness and unconstrained-parameter checks."""
    diag = np.diag(matrix).copy()
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(rhs)):
        raise NonFiniteError("the normal equations contain NaN or infinite values; check the input "
                             "errors (zero or non-finite uncertainties) and the starting calibration")
    bad = np.flatnonzero(diag <= DEGENERATE * max(diag.max(initial=0.0), 1e-300))
    if bad.size:
        raise ModelConstraintError(
            f"{bad.size} model parameter(s) are not constrained by any measurement, first: "
            f"{describe(int(bad[0]))}; exclude that item or lower the model order")
    return 1.0 / np.sqrt(diag)


def _factor(scaled: np.ndarray, overwrite: bool):
    """Lower Cholesky factor of a unit-diagonal matrix, or None when it is (numerically) singular."""
    try:
        if scaled.shape[0] > 2000:
            # a large dense factorisation is worth every core (the Fitter runs BLAS on one thread)
            with blas_threads(os.cpu_count()):
                factor = scipy.linalg.cho_factor(scaled, lower=True, check_finite=False, overwrite_a=overwrite)
        else:       # with the caller's BLAS threads (hundreds of small blocks)
            factor = scipy.linalg.cho_factor(scaled, lower=True, check_finite=False, overwrite_a=overwrite)
    except np.linalg.LinAlgError:
        return None
    # the scaled matrix has a unit diagonal: a tiny pivot means a (numerically) singular
    # direction, i.e. a gauge freedom the model does not fix (condition number > 1e10)
    return factor if scaled.shape[0] == 0 or np.min(np.diag(factor[0])) >= PIVOT else None


def _degenerate(matrix: np.ndarray, scale: np.ndarray, describe) -> ModelConstraintError:
    _, vec = np.linalg.eigh(matrix * scale[:, None] * scale[None, :])
    worst = int(np.argmax(np.abs(vec[:, 0])))
    return ModelConstraintError(
        "the model is degenerate (the normal matrix is singular); the parameter most involved is "
        f"{describe(worst)}: the data do not constrain it (too few stars, no overlap, or no "
        "reference to fix the gauge)")


def factorize(matrix: np.ndarray, describe, rhs: np.ndarray | None = None) -> Factor:
    """:class:`~jointcal_core.fit.refine.Factor` of the Jacobi-scaled symmetric positive definite
    ``matrix``, after the finiteness (of ``rhs`` too, when given), unconstrained-parameter and
    degeneracy checks. ``describe(i)`` names parameter i in the errors.
    """
    scale = _scale(matrix, np.zeros(0) if rhs is None else rhs, describe)
    # factorised in place: one copy less of a matrix that reaches 0.7 GB for 9000 parameters
    factor = _factor(matrix * scale[:, None] * scale[None, :], overwrite=True)
    if factor is None:
        raise _degenerate(matrix, scale, describe) from None
    return Factor(factor, scale)


def cholesky_solve(matrix: np.ndarray, rhs: np.ndarray, describe, keep: dict | None = None) -> np.ndarray:
    """Solve the symmetric positive definite ``matrix x = rhs`` with Jacobi scaling.

    ``describe(i)`` names parameter i in the errors. ``keep``, when given, receives the
    factorisation under ``"factor"`` (a :class:`~jointcal_core.fit.refine.Factor`, to
    precondition later solves).
    """
    kept = factorize(matrix, describe, rhs)
    if keep is not None:
        keep["factor"] = kept
    return kept.solve(rhs)


def solve_eliminating(matrix: np.ndarray, rhs: np.ndarray, blocks: list, describe) -> np.ndarray:
    """Solve ``matrix x = rhs`` eliminating ``blocks`` first (their mutual entries must be zero).

    Parameters
    ----------
    matrix : ndarray, shape (n, n)
        Symmetric positive definite.
    rhs : ndarray, shape (n,)
    blocks : list of ndarray of int
        Disjoint index sets with ``matrix[b1, b2] == 0`` for any two of them (not checked).
    describe : callable
        Names parameter i in the errors.

    Returns
    -------
    ndarray, shape (n,)
    """
    scale = _scale(matrix, rhs, describe)
    n = matrix.shape[0]
    eliminated = np.zeros(n, bool)
    for b in blocks:
        eliminated[b] = True
    rest = np.flatnonzero(~eliminated)
    s_rest = scale[rest]
    reduced = matrix[np.ix_(rest, rest)] * s_rest[:, None] * s_rest[None, :]
    r = rhs * scale
    r_rest = r[rest].copy()
    solved = []
    for b in blocks:
        s_b = scale[b]
        factor = _factor(matrix[np.ix_(b, b)] * s_b[:, None] * s_b[None, :], overwrite=True)
        if factor is None:
            raise _degenerate(matrix, scale, describe) from None
        coupling = matrix[np.ix_(b, rest)] * s_b[:, None] * s_rest[None, :]        # (|b|, |rest|)
        x_coupling = scipy.linalg.cho_solve(factor, coupling, check_finite=False)
        x_rhs = scipy.linalg.cho_solve(factor, r[b], check_finite=False)
        reduced -= coupling.T @ x_coupling
        r_rest -= coupling.T @ x_rhs
        solved.append((b, x_rhs, x_coupling))
    x = np.zeros(n)
    if rest.size:
        factor = _factor(reduced, overwrite=True)
        if factor is None:
            raise _degenerate(matrix, scale, describe) from None
        x[rest] = scipy.linalg.cho_solve(factor, r_rest, check_finite=False)
    for b, x_rhs, x_coupling in solved:
        x[b] = x_rhs - x_coupling @ x[rest]
    return x * scale
