"""Gnomonic (TAN) tangent-plane projections, vectorised, in degrees.

The tangent plane at (ra0, dec0) has xi towards increasing RA (east) and eta towards the
north pole, in degrees, the same convention as FITS TAN intermediate world coordinates
(``CD @ (pixel - CRPIX)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sky_to_tangent", "tangent_to_sky", "sky_to_tangent_jacobian", "angular_separation_arcsec",
           "tangent_basis", "change_tangent_point"]


def sky_to_tangent(ra_deg, dec_deg, ra0_deg: float, dec0_deg: float):
    """Project sky positions on the tangent plane at (ra0, dec0).

    Parameters
    ----------
    ra_deg, dec_deg : array_like, shape (n,)
    ra0_deg, dec0_deg : float or array_like broadcastable to (n,)
        Tangent point.

    Returns
    -------
    xi_deg, eta_deg : ndarray, shape (n,)
        NaN for points 90 degrees or more from the tangent point.
    """
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    dra = ra - ra0
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(dra)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_c = np.where(cos_c > 0, cos_c, np.nan)
        xi = np.cos(dec) * np.sin(dra) / cos_c
        eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(dra)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def tangent_to_sky(xi_deg, eta_deg, ra0_deg: float, dec0_deg: float):
    """Inverse of :func:`sky_to_tangent`: tangent-plane (deg) -> (ra, dec) in degrees, RA in [0, 360)."""
    xi, eta = np.radians(xi_deg), np.radians(eta_deg)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sky_to_tangent_jacobian(ra_deg, dec_deg, ra0_deg: float, dec0_deg: float):
    """Derivatives of the projection with respect to (ra * cos(dec), dec), both in degrees.

    Returns
    -------
    jac : ndarray, shape (n, 2, 2)
        ``jac[:, i, j] = d(xi, eta)_i / d(alpha*, delta)_j`` where ``alpha* = ra cos(dec)``
        is the local east offset: a shift on the sky by (d_alpha*, d_delta) moves the projected
        point by ``jac @ (d_alpha*, d_delta)``.
    """
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    dra = ra - ra0
    sd, cd, sd0, cd0 = np.sin(dec), np.cos(dec), np.sin(dec0), np.cos(dec0)
    cos_c = sd0 * sd + cd0 * cd * np.cos(dra)
    xi_num = cd * np.sin(dra)
    eta_num = cd0 * sd - sd0 * cd * np.cos(dra)
    # derivatives of numerators and cos_c with respect to ra and dec (radians)
    d_cos_dra = -cd0 * cd * np.sin(dra)
    d_cos_ddec = sd0 * cd - cd0 * sd * np.cos(dra)
    dxi_dra = (cd * np.cos(dra) * cos_c - xi_num * d_cos_dra) / cos_c**2
    dxi_ddec = (-sd * np.sin(dra) * cos_c - xi_num * d_cos_ddec) / cos_c**2
    deta_dra = (sd0 * cd * np.sin(dra) * cos_c - eta_num * d_cos_dra) / cos_c**2
    deta_ddec = ((cd0 * cd + sd0 * sd * np.cos(dra)) * cos_c - eta_num * d_cos_ddec) / cos_c**2
    jac = np.empty(np.shape(ra) + (2, 2))
    # d/d(alpha*) = (1/cos dec) d/d(ra)
    jac[..., 0, 0] = dxi_dra / cd
    jac[..., 0, 1] = dxi_ddec
    jac[..., 1, 0] = deta_dra / cd
    jac[..., 1, 1] = deta_ddec
    return jac


def angular_separation_arcsec(ra1_deg, dec1_deg, ra2_deg, dec2_deg):
    """Great-circle distance in arcsec (Vincenty formula, stable at all separations)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1_deg, dec1_deg, ra2_deg, dec2_deg))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


def tangent_basis(ra0_deg, dec0_deg) -> np.ndarray:
    """Unit vectors (east, north, tangent point) of the tangent plane at (ra0, dec0), as rows.

    A sky direction ``s`` (unit vector, equatorial) projects to ``xi = s.east / s.centre`` and
    ``eta = s.north / s.centre`` (radians), so ``(xi, eta, 1)`` is proportional to ``basis @ s``.

    Returns
    -------
    ndarray, shape (..., 3, 3)
    """
    ra0, dec0 = np.radians(np.asarray(ra0_deg, float)), np.radians(np.asarray(dec0_deg, float))
    sr, cr, sd, cd = np.sin(ra0), np.cos(ra0), np.sin(dec0), np.cos(dec0)
    zero = np.zeros_like(sr)
    rows = [[-sr, cr, zero], [-sd * cr, -sd * sr, cd], [cd * cr, cd * sr, sd]]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def change_tangent_point(xi_deg, eta_deg, rotation: np.ndarray, jacobian: bool = False):
    """Tangent-plane coordinates moved to another tangent point, without trigonometry.

    Between two gnomonic projections of the sphere the map is a homography: with
    ``rotation = basis_B @ basis_A.T`` (:func:`tangent_basis`), ``(a, b, c) = rotation @ (xi, eta, 1)``
    gives ``xi_B = a / c`` and ``eta_B = b / c`` (radians). The same as ``tangent_to_sky`` on A
    then ``sky_to_tangent`` on B, to rounding, at a fraction of the cost.

    Parameters
    ----------
    xi_deg, eta_deg : ndarray, shape (n,)
        Positions on tangent plane A, degrees.
    rotation : ndarray, shape (3, 3) or (n, 3, 3)
    jacobian : bool
        Also return d(xi_B, eta_B) / d(xi_A, eta_A), shape (n, 2, 2).

    Returns
    -------
    xi_deg, eta_deg : ndarray, shape (n,)
        On plane B; NaN 90 degrees or more from B's tangent point (as :func:`sky_to_tangent`).
    jac : ndarray, shape (n, 2, 2) or None
    """
    x, y = np.radians(xi_deg), np.radians(eta_deg)
    r = np.asarray(rotation, float)
    a = r[..., 0, 0] * x + r[..., 0, 1] * y + r[..., 0, 2]
    b = r[..., 1, 0] * x + r[..., 1, 1] * y + r[..., 1, 2]
    c = r[..., 2, 0] * x + r[..., 2, 1] * y + r[..., 2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_c = np.where(c > 0, 1.0 / c, np.nan)
    xi_b, eta_b = a * inv_c, b * inv_c
    jac = None
    if jacobian:
        jac = np.empty(np.shape(xi_b) + (2, 2))
        jac[..., 0, 0] = (r[..., 0, 0] - xi_b * r[..., 2, 0]) * inv_c
        jac[..., 0, 1] = (r[..., 0, 1] - xi_b * r[..., 2, 1]) * inv_c
        jac[..., 1, 0] = (r[..., 1, 0] - eta_b * r[..., 2, 0]) * inv_c
        jac[..., 1, 1] = (r[..., 1, 1] - eta_b * r[..., 2, 1]) * inv_c
    return np.degrees(xi_b), np.degrees(eta_b), jac
