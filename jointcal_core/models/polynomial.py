"""2-D polynomial bases on a normalised domain, with analytic derivatives.

This module owns the polynomial arithmetic of the astrometric models: the ordering of the
terms, the design matrix, its derivatives with respect to the raw coordinates, and a small
least-squares helper used to initialise a polynomial from another transform sampled on a grid.

Why monomials and not Chebyshev polynomials: on the domain mapped to [-1, 1] the monomials up to
order ~7 stay well enough conditioned for double precision (the Gram matrix condition number of
order-5 monomials on the square is ~1e5), and the fitter scales the normal equations by their
diagonal (Jacobi scaling) before the Cholesky factorisation, which removes the remaining
column-scale disparity. Monomials also translate directly into the SIP and TPV polynomials the
WCS exporters write, without a change of basis.
"""

from __future__ import annotations

import numpy as np

__all__ = ["poly_terms", "monomials", "monomials_and_derivatives", "derivative_matrices", "PolyBasis2D"]


def poly_terms(order: int) -> np.ndarray:
    """Exponent pairs of the 2-D monomials up to total degree ``order``.

    Ordered by total degree, then by decreasing power of x: ``1, x, y, x^2, x y, y^2, x^3, ...``.

    Returns
    -------
    ndarray of int64, shape (n_terms, 2)
        ``(i, j)`` for ``x^i y^j``; ``n_terms = (order + 1)(order + 2) / 2``.
    """
    if order < 0:
        raise ValueError(f"polynomial order must be >= 0, got {order}")
    return np.array([(d - j, j) for d in range(order + 1) for j in range(d + 1)], dtype=np.int64)


def _powers(t: np.ndarray, order: int) -> np.ndarray:
    """t^k for k = 0..order, one contiguous row per power, shape (order + 1, n)."""
    out = np.empty((order + 1, t.size))
    out[0] = 1.0
    for k in range(1, order + 1):
        np.multiply(out[k - 1], t, out=out[k])
    return out


def monomials(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    """Design matrix of the monomials of :func:`poly_terms` at normalised (u, v), shape (n, n_terms)."""
    # built term by term in contiguous rows, then transposed once: 2.5x faster than gathering
    # the power columns (two (n, n_terms) temporaries) at order 5
    pu, pv = _powers(np.ravel(u).astype(float), order), _powers(np.ravel(v).astype(float), order)
    terms = poly_terms(order)
    out = np.empty((terms.shape[0], pu.shape[1]))
    for k, (i, j) in enumerate(terms.tolist()):
        np.multiply(pu[i], pv[j], out=out[k])
    return np.ascontiguousarray(out.T)


def monomials_and_derivatives(u: np.ndarray, v: np.ndarray, order: int):
    """Monomials and their derivatives with respect to the normalised u and v.

    Returns
    -------
    value, d_du, d_dv : ndarray, shape (n, n_terms)
    """
    terms = poly_terms(order)
    i, j = terms[:, 0], terms[:, 1]
    pu, pv = _powers(np.ravel(u).astype(float), order).T, _powers(np.ravel(v).astype(float), order).T
    value = pu[:, i] * pv[:, j]
    d_du = i * pu[:, np.maximum(i - 1, 0)] * pv[:, j]
    d_dv = j * pu[:, i] * pv[:, np.maximum(j - 1, 0)]
    return value, d_du, d_dv


def derivative_matrices(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrices taking coefficients to the coefficients of the u- and v-derivatives.

    For ``p = sum_t c_t u^i_t v^j_t``, ``dp/du`` has coefficients ``d_u @ c`` in the same basis
    (its top-degree terms are 0), so derivatives cost one more coefficient product instead of
    evaluating the derivative design matrices.

    Returns
    -------
    d_u, d_v : ndarray, shape (n_terms, n_terms)
    """
    terms = poly_terms(order)
    index = {tuple(t): k for k, t in enumerate(terms.tolist())}
    n = len(terms)
    d_u, d_v = np.zeros((n, n)), np.zeros((n, n))
    for k, (i, j) in enumerate(terms.tolist()):
        if i > 0:
            d_u[index[(i - 1, j)], k] = i
        if j > 0:
            d_v[index[(i, j - 1)], k] = j
    return d_u, d_v


class PolyBasis2D:
    """Monomials up to total degree ``order`` in coordinates normalised to [-1, 1].

    Parameters
    ----------
    order : int
    domain : tuple of float
        ``(x_min, x_max, y_min, y_max)`` mapped to [-1, 1] x [-1, 1]
        (``x_n = (2 x - x_min - x_max) / (x_max - x_min)``).

    Attributes
    ----------
    terms : ndarray of int64, shape (n_terms, 2)
        Exponents ``(i, j)`` of ``x_n^i y_n^j``, by total degree then decreasing power of x.
    """

    def __init__(self, order: int, domain: tuple[float, float, float, float] = (-1.0, 1.0, -1.0, 1.0)):
        x_min, x_max, y_min, y_max = map(float, domain)
        if not (x_max > x_min and y_max > y_min):
            raise ValueError(f"empty polynomial domain {domain}")
        self.order = int(order)
        self.domain = (x_min, x_max, y_min, y_max)
        self.terms = poly_terms(self.order)
        self._sx, self._sy = 2.0 / (x_max - x_min), 2.0 / (y_max - y_min)
        self._cx, self._cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0

    @property
    def scale(self) -> tuple[float, float]:
        """d(x_n, y_n) / d(x, y): normalised units per raw unit."""
        return self._sx, self._sy

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    def normalise(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Raw (x, y) -> normalised coordinates (the domain maps to [-1, 1])."""
        return (np.ravel(x) - self._cx) * self._sx, (np.ravel(y) - self._cy) * self._sy

    def evaluate(self, x, y) -> np.ndarray:
        """Design matrix at raw (x, y), shape (n, n_terms)."""
        return monomials(*self.normalise(x, y), self.order)

    def derivatives(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Derivatives of the design matrix with respect to the raw x and y, each (n, n_terms)."""
        _, du, dv = monomials_and_derivatives(*self.normalise(x, y), self.order)
        return du * self._sx, dv * self._sy

    def grid(self, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
        """An n x n grid of raw points spanning the domain (edges included), each shape (n * n,)."""
        gx = np.linspace(self.domain[0], self.domain[1], n)
        gy = np.linspace(self.domain[2], self.domain[3], n)
        xx, yy = np.meshgrid(gx, gy)
        return xx.ravel(), yy.ravel()

    def fit(self, x, y, values) -> np.ndarray:
        """Least-squares coefficients reproducing ``values`` at raw (x, y).

        Parameters
        ----------
        x, y : array_like, shape (n,)
        values : array_like, shape (n,) or (n, m)

        Returns
        -------
        ndarray, shape (n_terms,) or (n_terms, m)
        """
        design = self.evaluate(x, y)
        if design.shape[0] < self.n_terms:
            raise ValueError(f"{design.shape[0]} points cannot fit {self.n_terms} polynomial terms")
        coeffs, *_ = np.linalg.lstsq(design, np.asarray(values, float), rcond=None)
        return coeffs

    def __repr__(self) -> str:
        return f"PolyBasis2D(order={self.order}, domain={self.domain})"
