"""Gnomonic (TAN) tangent-plane projections, vectorised, in degrees.

The tangent plane at (ra0, dec0) has xi towards increasing RA (east) and eta towards the
north pole, in degrees, the same convention as FITS TAN intermediate world coordinates
(``CD @ (pixel - CRPIX)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sky_to_tangent", "tangent_to_sky", "sky_to_tangent_jacobian", "angular_separation_arcsec"]


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
