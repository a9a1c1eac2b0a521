"""Pixel -> visit tangent-plane mappings of the astrometric models and their initialisation.

This module owns the two parametrisations jointcal offers and their slice of the parameter
vector (all angles in degrees):

- :class:`SimpleMapping`: one polynomial per ccdImage, pixels -> tangent plane of its visit.
- :class:`ConstrainedMapping`: a polynomial per chip (pixels -> focal plane, shared by all
  visits) composed with a polynomial per visit (focal plane -> visit tangent plane).

Both evaluate every measurement at once (one matrix product per ccdImage, chip or visit
block) and return, with the mapped position, the 2 x 2 derivative with respect to the pixel
position (to propagate pixel errors) and the derivatives with respect to the parameters as
``(cols, pieces)``: the parameter indices each measurement depends on, ``(n, k)``, and the
derivative of (xi, eta) with respect to them in factored form, a list of
``(start, basis, M)``: ``d(xi, eta)_i / d p[cols[start + j * m + t]] = M[:, i, j] * basis[:, t]``
(``basis`` shape (n, m), ``M`` shape (n, 2, 2) or None for the identity). The factored form
lets the caller whiten ``M`` (2 x 2) before expanding to ``(n, 2, k)`` once
(:func:`expand_pieces`).

Initialisation reproduces the input WCS of every ccdImage on a grid of pixels, projected on
its visit's tangent plane (:func:`init_simple`, :func:`init_constrained`).
"""

from __future__ import annotations

import numpy as np

from ..data import Camera, CcdImages
from ..fit.problem import FitGroup
from ..projection import sky_to_tangent
from ..threads import blas_threads
from .polynomial import PolyBasis2D, derivative_matrices, monomials, poly_terms

__all__ = ["SimpleMapping", "ConstrainedMapping", "init_simple", "init_constrained", "wcs_tangent_grid",
           "expand_pieces", "mul22"]

#: grid points per side used to sample the input WCS of a CCD for the initialisation
_GRID = 15


def _domains(bbox: np.ndarray) -> np.ndarray:
    """(x_min, y_min, x_max, y_max) -> (x_min, x_max, y_min, y_max), shape (n, 4)."""
    return np.asarray(bbox, float)[:, [0, 2, 1, 3]]


def _normalise(x, y, dom):
    """Raw -> [-1, 1] with one domain per point (dom shape (n, 4)); returns xn, yn, sx, sy."""
    sx, sy = 2.0 / (dom[:, 1] - dom[:, 0]), 2.0 / (dom[:, 3] - dom[:, 2])
    return (x - (dom[:, 0] + dom[:, 1]) / 2) * sx, (y - (dom[:, 2] + dom[:, 3]) / 2) * sy, sx, sy


def _grouped_apply(basis: np.ndarray, group: np.ndarray, coef: np.ndarray, order: np.ndarray,
                   starts: np.ndarray) -> np.ndarray:
    """``out[r] = coef[group[r]] @ basis[r]`` for every row, one BLAS product per group.

    Parameters
    ----------
    basis : ndarray, shape (n, m)
    group : ndarray of int, shape (n,)
    coef : ndarray, shape (n_groups, q, m)
    order, starts : from :func:`_group_order`

    Returns
    -------
    ndarray, shape (n, q)
    """
    out = np.empty((basis.shape[0], coef.shape[1]))
    ends = np.r_[starts[1:], order.size]
    for a, b in zip(starts.tolist(), ends.tolist()):
        first, last = int(order[a]), int(order[b - 1])
        # a group of consecutive rows (a visit's measurements are): views, no gather or scatter
        rows = slice(first, last + 1) if last - first == b - a - 1 else order[a:b]
        out[rows] = basis[rows] @ coef[group[first]].T
    return out


def _group_order(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by group and the start of each group's run."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else np.zeros(0, np.int64)
    return order, starts


def _apply(basis, sx, sy, group, coef, order_):
    """Values (n, 2) and raw-coordinate derivatives (n, 2, 2) of the polynomials ``coef[group]``.

    ``basis`` is the design matrix (n, n_terms) at the normalised coordinates, ``sx, sy`` the
    normalisation scales (scalars or (n,)); derivatives use :func:`derivative_matrices`.
    """
    order, starts = _group_order(group)
    d_u, d_v = derivative_matrices(order_)
    # value, d/du and d/dv in one product per group (one pass over the design matrix)
    out = _grouped_apply(basis, group, np.concatenate([coef, coef @ d_u.T, coef @ d_v.T], axis=1), order, starts)
    deriv = np.empty((basis.shape[0], 2, 2))
    deriv[:, :, 0] = out[:, 2:4] * np.reshape(sx, (-1, 1))
    deriv[:, :, 1] = out[:, 4:6] * np.reshape(sy, (-1, 1))
    return out[:, :2], deriv


def mul22(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Products of stacks of 2 x 2 matrices, (n, 2, 2) @ (n, 2, 2) (faster than einsum/matmul here)."""
    return a[:, :, 0, None] * b[:, None, 0, :] + a[:, :, 1, None] * b[:, None, 1, :]


def expand_pieces(pieces: list, n: int, k: int, w: np.ndarray | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Derivatives ``(n, 2, k)`` from the factored pieces, premultiplied by ``w`` (n, 2, 2) if given.

    ``out`` (n, 2, k), zero where no piece writes, receives the result when given.
    """
    if out is None:
        out = np.zeros((n, 2, k))
    for start, basis, m in pieces:
        mat = m if w is None or m is None else mul22(w, m)
        if mat is None:
            mat = np.broadcast_to(np.eye(2), (n, 2, 2)) if w is None else w
        width = basis.shape[1]
        for j in range(2):
            for i in range(2):
                np.multiply(mat[:, i, j, None], basis, out=out[:, i, start + j * width:start + (j + 1) * width])
    return out


def _term_name(terms: np.ndarray, k: int, a: str, b: str) -> str:
    i, j = terms[k]
    parts = [f"{a}^{i}" if i > 1 else a if i == 1 else "", f"{b}^{j}" if j > 1 else b if j == 1 else ""]
    return " ".join(p for p in parts if p) or "1"


def wcs_tangent_grid(ccd_images: CcdImages, index: int, center_deg: tuple[float, float], n: int = _GRID):
    """Grid of pixels over a CCD and their input-WCS position on the tangent plane at ``center_deg``.

    Returns
    -------
    x, y, xi_deg, eta_deg : ndarray, shape (n * n,)
    """
    basis = PolyBasis2D(1, tuple(_domains(ccd_images.bbox[index:index + 1])[0]))
    x, y = basis.grid(n)
    ra, dec = ccd_images.wcs[index].all_pix2world(x, y, 0)
    xi, eta = sky_to_tangent(ra, dec, *center_deg)
    return x, y, xi, eta


class SimpleMapping:
    """One polynomial of order ``order`` per ccdImage, on the CCD's bbox normalised to [-1, 1].

    Parameters (per ccdImage ``c``, from ``c * 2 * n_terms``): the xi coefficients then the eta
    coefficients, in the order of :func:`~jointcal_core.models.polynomial.poly_terms`.
    """

    name = "simple"

    def __init__(self, ccd_images: CcdImages, order: int):
        self.ccd_images = ccd_images
        self.order = int(order)
        self.terms = poly_terms(self.order)
        self.nt = len(self.terms)
        self.n_ccd = len(ccd_images)
        self.domains = _domains(ccd_images.bbox)
        self.n_params = self.n_ccd * 2 * self.nt
        self.k = 2 * self.nt

    def param_mask(self, groups: FitGroup) -> np.ndarray:
        return np.full(self.n_params, bool(groups & FitGroup.MODEL_CHIP))

    def params_of_ccds(self, ccd_mask: np.ndarray) -> np.ndarray:
        """Mask (n_params,) of the parameters owned by the ccdImages in ``ccd_mask``."""
        return np.repeat(np.asarray(ccd_mask, bool), 2 * self.nt)

    def pixel_order(self, ccd: int) -> int:
        return self.order

    def evaluate(self, params: np.ndarray, ccd: np.ndarray, x: np.ndarray, y: np.ndarray, jacobian: bool = True,
                 columns: bool = True):
        """Map pixels of ccdImages ``ccd`` to their visit tangent planes.

        ``columns=False`` skips ``cols`` (they depend only on ``ccd``: callers may keep them).

        Returns
        -------
        xi, eta : ndarray, shape (n,)  [deg]
        dxy : ndarray, shape (n, 2, 2)
            d(xi, eta) / d(x, y)  [deg / px].
        cols : ndarray of int64, shape (n, k) or None
        pieces : list of (start, basis, M) or None
            Factored derivatives (module docstring, :func:`expand_pieces`).
        """
        coef = params.reshape(self.n_ccd, 2, self.nt)
        xn, yn, sx, sy = _normalise(x, y, self.domains[ccd])
        b = monomials(xn, yn, self.order)
        value, dxy = _apply(b, sx, sy, ccd, coef, self.order)
        if not jacobian:
            return value[:, 0], value[:, 1], dxy, None, None
        cols = ccd[:, None] * self.k + np.arange(self.k)[None, :] if columns else None
        return value[:, 0], value[:, 1], dxy, cols, [(0, b, None)]

    def slots(self, ccd: np.ndarray) -> tuple[tuple, np.ndarray]:
        """Column slots of ``cols`` and the parameter block of each measurement in each slot.

        Returns ``(slot_ranges, slot_block)`` as :class:`~jointcal_core.fit.Linearization` wants
        them: one slot (the ccdImage's polynomial), block = ccdImage index, shape (n, 1).
        """
        return ((0, self.k),), np.asarray(ccd, np.int64)[:, None]

    def describe(self, index: int) -> str:
        c, rest = divmod(int(index), 2 * self.nt)
        axis, k = divmod(rest, self.nt)
        return (f"visit {self.ccd_images.visit[c]} detector {self.ccd_images.detector[c]}: "
                f"{'xi' if axis == 0 else 'eta'} coefficient of {_term_name(self.terms, k, 'x', 'y')}")


class ConstrainedMapping:
    """Per-chip polynomial (pixels -> focal plane) composed with a per-visit polynomial.

    Parameters: all chips first (chip ``d`` from ``d * 2 * n_chip_terms``: u then v
    coefficients), then all visits (from ``n_chips * 2 * n_chip_terms + v * 2 * n_visit_terms``:
    xi then eta coefficients). The visit polynomial lives on ``focal_domain`` normalised to
    [-1, 1]; each chip polynomial on its detector's bbox.
    """

    name = "constrained"

    def __init__(self, ccd_images: CcdImages, chip_order: int, visit_order: int, focal_domain):
        self.ccd_images = ccd_images
        self.chip_order, self.visit_order = int(chip_order), int(visit_order)
        self.chip_terms, self.visit_terms = poly_terms(self.chip_order), poly_terms(self.visit_order)
        self.nc, self.nv = len(self.chip_terms), len(self.visit_terms)
        self.chips, self.ccd_chip = np.unique(ccd_images.detector, return_inverse=True)
        self.visits, self.ccd_visit = np.unique(ccd_images.visit, return_inverse=True)
        first = np.searchsorted(self.ccd_chip, np.arange(self.chips.size), sorter=np.argsort(self.ccd_chip,
                                                                                              kind="stable"))
        self.chip_domains = _domains(ccd_images.bbox[np.argsort(self.ccd_chip, kind="stable")[first]])
        self.focal_domain = tuple(float(v) for v in focal_domain)
        self.visit_offset = self.chips.size * 2 * self.nc
        self.n_params = self.visit_offset + self.visits.size * 2 * self.nv
        self.k = 2 * self.nc + 2 * self.nv

    def param_mask(self, groups: FitGroup) -> np.ndarray:
        mask = np.zeros(self.n_params, bool)
        mask[:self.visit_offset] = bool(groups & FitGroup.MODEL_CHIP)
        mask[self.visit_offset:] = bool(groups & FitGroup.MODEL_VISIT)
        return mask

    def chip_params(self, chip_mask: np.ndarray) -> np.ndarray:
        """Mask (n_params,) of the parameters of the chips in ``chip_mask`` (n_chips,)."""
        out = np.zeros(self.n_params, bool)
        out[:self.visit_offset] = np.repeat(np.asarray(chip_mask, bool), 2 * self.nc)
        return out

    def visit_params(self, visit_mask: np.ndarray) -> np.ndarray:
        """Mask (n_params,) of the parameters of the visits in ``visit_mask`` (n_visits,)."""
        out = np.zeros(self.n_params, bool)
        out[self.visit_offset:] = np.repeat(np.asarray(visit_mask, bool), 2 * self.nv)
        return out

    def pixel_order(self, ccd: int) -> int:
        return self.chip_order * self.visit_order

    def chip_to_focal(self, params: np.ndarray, chip: np.ndarray, x: np.ndarray, y: np.ndarray):
        """Focal-plane position (u, v) and its pixel derivative (n, 2, 2) plus the chip design matrix."""
        coef = params[:self.visit_offset].reshape(self.chips.size, 2, self.nc)
        xn, yn, sx, sy = _normalise(x, y, self.chip_domains[chip])
        b = monomials(xn, yn, self.chip_order)
        uv, duv = _apply(b, sx, sy, chip, coef, self.chip_order)
        return uv, duv, b

    def focal_basis(self) -> PolyBasis2D:
        return PolyBasis2D(self.visit_order, self.focal_domain)

    def evaluate(self, params: np.ndarray, ccd: np.ndarray, x: np.ndarray, y: np.ndarray, jacobian: bool = True,
                 columns: bool = True):
        """Same contract as :meth:`SimpleMapping.evaluate`."""
        chip, visit = self.ccd_chip[ccd], self.ccd_visit[ccd]
        uv, duv, bc = self.chip_to_focal(params, chip, x, y)
        coef = params[self.visit_offset:].reshape(self.visits.size, 2, self.nv)
        basis = self.focal_basis()
        un, vn = basis.normalise(uv[:, 0], uv[:, 1])
        b = monomials(un, vn, self.visit_order)
        value, dv_duv = _apply(b, *basis.scale, visit, coef, self.visit_order)       # dv_duv (n, 2, 2)
        dxy = mul22(dv_duv, duv)
        if not jacobian:
            return value[:, 0], value[:, 1], dxy, None, None
        nc, nv = self.nc, self.nv
        k = np.arange(self.k)[None, :]
        cols = np.where(k < 2 * nc, chip[:, None] * 2 * nc + k,
                        self.visit_offset + visit[:, None] * 2 * nv + (k - 2 * nc)) if columns else None
        return value[:, 0], value[:, 1], dxy, cols, [(0, bc, dv_duv), (2 * nc, b, None)]

    def slots(self, ccd: np.ndarray) -> tuple[tuple, np.ndarray]:
        """Two slots (chip part, visit part); blocks = (chip row, visit row), shape (n, 2)."""
        ccd = np.asarray(ccd, np.int64)
        return ((0, 2 * self.nc), (2 * self.nc, self.k)), np.column_stack([self.ccd_chip[ccd], self.ccd_visit[ccd]])

    def describe(self, index: int) -> str:
        index = int(index)
        if index < self.visit_offset:
            d, rest = divmod(index, 2 * self.nc)
            axis, k = divmod(rest, self.nc)
            return (f"detector {self.chips[d]} (chip polynomial, all visits): {'uv'[axis]} coefficient of "
                    f"{_term_name(self.chip_terms, k, 'x', 'y')}")
        v, rest = divmod(index - self.visit_offset, 2 * self.nv)
        axis, k = divmod(rest, self.nv)
        return (f"visit {self.visits[v]} (visit polynomial): {'xi' if axis == 0 else 'eta'} coefficient of "
                f"{_term_name(self.visit_terms, k, 'u', 'v')}")


def init_simple(ccd_images: CcdImages, centers: np.ndarray, order: int) -> tuple[SimpleMapping, np.ndarray]:
    """A :class:`SimpleMapping` reproducing each CCD's input WCS on its visit tangent plane.

    Parameters
    ----------
    centers : ndarray, shape (n_ccd, 2)
        Tangent point (ra, dec) in degrees of each ccdImage's visit.
    """
    mapping = SimpleMapping(ccd_images, order)
    params = np.zeros((mapping.n_ccd, 2, mapping.nt))
    x, y, xi, eta = _input_wcs_grids(ccd_images, centers, max(_GRID, order + 3))
    with blas_threads(1):
        for c in range(mapping.n_ccd):
            basis = PolyBasis2D(order, tuple(mapping.domains[c]))
            params[c] = basis.fit(x[c], y[c], np.column_stack([xi[c], eta[c]])).T
    return mapping, params.ravel()


def _initial_chips(ccd_images: CcdImages, camera: Camera | None, grids, chips: np.ndarray,
                   ccd_chip: np.ndarray, chip_order: int, reference_visit: int):
    """Chip polynomials (n_chips, 2, nc) from the camera, else from the input WCS (see init_constrained).

    ``grids`` = (x, y, xi, eta), each (n_ccd, n_points): every ccdImage's input WCS on its grid
    (:func:`_input_wcs_grids`)."""
    nc = len(poly_terms(chip_order))
    coef = np.zeros((chips.size, 2, nc))
    n_ccd_of_visit = {v: int(np.sum(ccd_images.visit == v)) for v in np.unique(ccd_images.visit)}
    for d, det in enumerate(chips):
        rows = np.flatnonzero(ccd_chip == d)
        row = rows[0]
        basis = PolyBasis2D(chip_order, tuple(_domains(ccd_images.bbox[row:row + 1])[0]))
        x, y = basis.grid(max(_GRID, chip_order + 3))
        if camera is not None and np.any(camera.detector == det):
            u, v = camera.to_focal(np.full(x.size, det), x, y)
        else:
            # the reference visit when it has this chip, else the visit with most CCDs that has it
            visits = ccd_images.visit[rows]
            if reference_visit in visits:
                row = rows[visits == reference_visit][0]
            else:
                row = rows[np.argmax([n_ccd_of_visit[v] for v in visits])]
            x, y, u, v = (a[row] for a in grids)
        coef[d] = basis.fit(x, y, np.column_stack([u, v])).T
    return coef


def _input_wcs_grids(ccd_images: CcdImages, centers: np.ndarray, n: int):
    """:func:`wcs_tangent_grid` of every ccdImage: x, y, xi_deg, eta_deg, each shape (n_ccd, n * n).

    The grid of each bbox is built once; the input WCSs are evaluated one call per ccdImage and
    projected in one call."""
    n_ccd = len(ccd_images)
    x, y = np.empty((n_ccd, n * n)), np.empty((n_ccd, n * n))
    ra, dec = np.empty((n_ccd, n * n)), np.empty((n_ccd, n * n))
    domains, grids = _domains(ccd_images.bbox), {}
    for c in range(n_ccd):
        key = tuple(domains[c])
        if key not in grids:
            grids[key] = PolyBasis2D(1, key).grid(n)
        x[c], y[c] = grids[key]
        ra[c], dec[c] = ccd_images.wcs[c].all_pix2world(x[c], y[c], 0)
    centers = np.asarray(centers, float)
    xi, eta = sky_to_tangent(ra, dec, centers[:, 0, None], centers[:, 1, None])
    return x, y, xi, eta


def init_constrained(ccd_images: CcdImages, camera: Camera | None, centers: np.ndarray, chip_order: int,
                     visit_order: int, reference_visit: int) -> tuple[ConstrainedMapping, np.ndarray]:
    """A :class:`ConstrainedMapping` whose composition reproduces each CCD's input WCS.

    The chips come from the camera geometry (``camera.pixel_to_focal``) when given, else from the
    input WCS of ``reference_visit`` projected on its tangent plane (the focal plane is then that
    visit's tangent plane). Then each visit polynomial is the least-squares fit, over a grid on
    every CCD of the visit, of the input WCS on the visit's tangent plane as a function of the
    chips' focal-plane positions: the starting model is the input calibration, not the identity.
    """
    chips, ccd_chip = np.unique(ccd_images.detector, return_inverse=True)
    n_grid = max(_GRID, chip_order + 3)
    grids = _input_wcs_grids(ccd_images, centers, n_grid)
    chip_coef = _initial_chips(ccd_images, camera, grids, chips, ccd_chip, chip_order, reference_visit)
    # focal-plane domain: the extent of every chip's corners, padded by 2 % so points stay inside
    corners = []
    for d in range(chips.size):
        row = np.flatnonzero(ccd_chip == d)[0]
        x0, y0, x1, y1 = ccd_images.bbox[row]
        basis = PolyBasis2D(chip_order, (x0, x1, y0, y1))
        gx, gy = basis.grid(5)
        corners.append(basis.evaluate(gx, gy) @ chip_coef[d].T)
    corners = np.concatenate(corners)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    pad = 0.02 * (hi - lo)
    domain = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    mapping = ConstrainedMapping(ccd_images, chip_order, visit_order, domain)
    params = np.zeros(mapping.n_params)
    params[:mapping.visit_offset] = chip_coef.ravel()
    visit_coef = np.zeros((mapping.visits.size, 2, mapping.nv))
    basis = mapping.focal_basis()
    x, y, xi, eta = grids
    n_points = x.shape[1]
    uv = mapping.chip_to_focal(params, np.repeat(mapping.ccd_chip, n_points), x.ravel(), y.ravel())[0]
    uv = uv.reshape(len(ccd_images), n_points, 2)
    target = np.stack([xi, eta], axis=2)
    # ~50 small least-squares fits: one BLAS thread avoids oversubscribing a shared machine
    with blas_threads(1):
        for v in range(mapping.visits.size):
            rows = np.flatnonzero(mapping.ccd_visit == v)
            uv_v = uv[rows].reshape(-1, 2)
            visit_coef[v] = basis.fit(uv_v[:, 0], uv_v[:, 1], target[rows].reshape(-1, 2)).T
    params[mapping.visit_offset:] = visit_coef.ravel()
    return mapping, params
