"""Reduced-system solves by conjugate gradients, preconditioned by an earlier factorisation.

Between two Gauss-Newton steps of one stage the reduced normal matrix ``S = A - B C^-1 B^T``
barely changes: the parameters moved a little and a few outlier rows went. Forming ``S`` again
costs a sum over stars of (blocks x params)^2 (fit/schur.py); applying it to a vector costs
one pass over the rows::

    S x = Jm^T (u - W C^-1 W^T u),    u = Jm x

(W: the rows' star derivatives). The Cholesky factor of the previous step's ``S`` is then an
excellent preconditioner: conjugate gradients reach the direct solution's accuracy in a few
such passes (measured: 3 to 6 at tract scale) instead of a new assembly and factorisation.
When they do not (the matrix changed too much), the caller falls back to the direct solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

__all__ = ["Factor", "preconditioned_cg", "sample_every"]

# relative accuracy of the solution in the energy norm. A Gauss-Newton step need not be exact
# (the next one corrects it): this leaves chi2 above the step's exact minimum by 1e-12 of the
# step's decrease, and moves the fitted model by 1e-6 of the step
TOLERANCE = 1e-6
# ... or when the chi2 decrease the step still misses is below this (chi2 units): the small
# corrections after an outlier pass need no relative accuracy beyond a hundredth of a unit
ABSOLUTE_TOLERANCE = 1e-2
# passes over the rows allowed before giving up (a new assembly costs about 15-30 of them)
MAX_ITERATIONS = 20


# the first step of a stage preconditions by a sample of the stars when assembling all of them
# costs much more than CG's extra passes: the Schur term costs ~ rows x (rows per star), a pass
# ~ rows, so only when stars have many rows (measured: assembly = 55 passes at 22 rows per
# star, 140 passes at 68). The sample keeps ~ROWS_PER_PARAMETER rows per free parameter: its
# relative error is then ~sqrt(parameters / sampled rows) <= 0.1
SAMPLE_ABOVE_ROWS_PER_STAR = 40
ROWS_PER_PARAMETER = 100


def sample_every(n_free: int, star: np.ndarray) -> int:
    """Keep every k-th star for the first preconditioner (1: assemble them all).

    Parameters
    ----------
    n_free : int
        Free model parameters.
    star : ndarray of int, shape (n_rows,)
        Star of every row (-1: none).
    """
    counts = np.bincount(star[star >= 0])
    total = int(counts.sum())
    if total == 0 or float(counts @ counts) / total < SAMPLE_ABOVE_ROWS_PER_STAR:
        return 1
    return max(1, int(total // (ROWS_PER_PARAMETER * max(n_free, 1))))


@dataclass(frozen=True)
class Factor:
    """Cholesky factor of a Jacobi-scaled reduced matrix: ``S ~ D^-1 L L^T D^-1``, D = ``scale``."""

    cho: tuple
    scale: np.ndarray

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``S^-1 rhs`` with the factored matrix."""
        return scipy.linalg.cho_solve(self.cho, rhs * self.scale, check_finite=False) * self.scale


def preconditioned_cg(apply, rhs: np.ndarray, factor: Factor, tolerance: float = TOLERANCE,
                      max_iterations: int | None = None):
    """Solve ``S x = rhs`` (S symmetric positive definite, given by ``apply``) from x = 0.

    Parameters
    ----------
    apply : callable
        ``apply(x) -> S x`` for x of shape (n,).
    rhs : ndarray, shape (n,)
    factor : Factor
        Preconditioner (a factorisation of a matrix close to S).
    tolerance : float
        Stop when ``sqrt(r^T M^-1 r / rhs^T M^-1 rhs)`` falls below it (M: the preconditioner):
        with M close to S this is the relative error of x in the S-norm. Also stop when
        ``r^T M^-1 r`` (the chi2 decrease still missed) is below ``ABSOLUTE_TOLERANCE``.
    max_iterations : int, optional
        Default ``MAX_ITERATIONS``.

    Returns
    -------
    x : ndarray of shape (n,), or None
        None when the iterations did not converge (or S did not look positive definite).
    iterations : int
        Applications of S used.
    """
    max_iterations = MAX_ITERATIONS if max_iterations is None else max_iterations
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = factor.solve(r)
    rz = float(r @ z)
    if not np.isfinite(rz) or rz < 0:
        return None, 0
    if rz == 0:
        return x, 0
    # r^T M^-1 r ~ r^T S^-1 r: the chi2 decrease the current x still misses
    target = max(tolerance ** 2 * rz, ABSOLUTE_TOLERANCE)
    p = z.copy()
    for k in range(1, max_iterations + 1):
        sp = apply(p)
        curvature = float(p @ sp)
        if not np.isfinite(curvature) or curvature <= 0:
            return None, k
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * sp
        z = factor.solve(r)
        rz_new = float(r @ z)
        if not np.isfinite(rz_new):
            return None, k
        if rz_new <= target:
            return x, k
        p = z + (rz_new / rz) * p
        rz = rz_new
    return None, max_iterations

