"""Stellar motion: moving reference positions from the catalog epoch to an observation epoch.

This module owns the proper-motion and parallax arithmetic for reference stars.

A catalog gives each star's barycentric direction ``u0`` at ``epoch_mjd``, its proper motion
``(mu_alpha*, mu_delta)`` and parallax ``plx``. With zero radial velocity the star moves on a
straight line in space, and an observer at the Earth's barycentric position ``E`` (AU) sees it in
the direction

    u(t) = normalise(u0 + dt * (mu_alpha* e_east + mu_delta e_north) - plx * E(t))

with angles in radians and ``dt`` in Julian years. Dividing the space position by the distance
(1 / plx AU) makes this exact for the straight-line motion, with no small-angle expansion, and
valid for ``plx = 0``. It agrees with astropy's ``SkyCoord.apply_space_motion`` (ERFA ``pmsafe``
with zero radial velocity) to micro-arcseconds for ordinary stars (see the tests); the parallax
term is the same displacement ERFA applies when moving from barycentric to geocentric places
(``E`` from ``astropy.coordinates.get_body_barycentric``).
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import get_body_barycentric
from astropy.time import Time

from .data import ReferenceCatalog

__all__ = ["propagate_reference", "propagate_errors", "earth_barycentric_au", "JULIAN_YEAR_DAYS"]

JULIAN_YEAR_DAYS = 365.25
_MAS_TO_RAD = np.pi / (180.0 * 3600.0 * 1000.0)


def earth_barycentric_au(mjd) -> np.ndarray:
    """Barycentric position of the Earth, ICRS axes, in AU.

    Parameters
    ----------
    mjd : float or array_like, shape (n,)
        Epochs (MJD, UTC). Each distinct epoch is evaluated once (one vectorised ephemeris call).

    Returns
    -------
    ndarray, shape (n, 3) (or (3,) for a scalar epoch)
    """
    mjd = np.asarray(mjd, dtype=float)
    distinct, inverse = np.unique(mjd.ravel(), return_inverse=True)
    pos = get_body_barycentric("earth", Time(distinct, format="mjd"))
    xyz = pos.xyz.to_value("AU").T  # (n_distinct, 3)
    return xyz[inverse].reshape(mjd.shape + (3,))


def _unit_vectors(ra_deg, dec_deg):
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cr, sr, cd, sd = np.cos(ra), np.sin(ra), np.cos(dec), np.sin(dec)
    u = np.stack([cd * cr, cd * sr, sd], axis=-1)
    east = np.stack([-sr, cr, np.zeros_like(ra)], axis=-1)
    north = np.stack([-sd * cr, -sd * sr, cd], axis=-1)
    return u, east, north


def propagate_reference(ref: ReferenceCatalog, mjd, *, parallax: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reference positions seen from the Earth at epoch ``mjd``.

    Parameters
    ----------
    ref : ReferenceCatalog
        Positions at ``ref.epoch_mjd`` with proper motions (``pm_ra_masyr = mu_alpha cos(dec)``)
        and parallaxes in mas; unknown motions are 0.
    mjd : float or array_like, shape (n_ref,)
        Target epoch (MJD), one for all stars or one per star.
    parallax : bool
        Apply the annual parallax (needs the Earth's position); False gives the barycentric
        direction at ``mjd`` (proper motion only).

    Returns
    -------
    ra_deg, dec_deg : ndarray, shape (n_ref,)
        RA in [0, 360).
    """
    n = len(ref)
    mjd = np.broadcast_to(np.asarray(mjd, dtype=float), (n,))
    u0, east, north = _unit_vectors(ref.ra_deg, ref.dec_deg)
    dt_yr = (mjd - ref.epoch_mjd) / JULIAN_YEAR_DAYS
    pm_ra = np.nan_to_num(ref.pm_ra_masyr) * _MAS_TO_RAD
    pm_dec = np.nan_to_num(ref.pm_dec_masyr) * _MAS_TO_RAD
    v = u0 + (dt_yr * pm_ra)[:, None] * east + (dt_yr * pm_dec)[:, None] * north
    plx = np.nan_to_num(ref.parallax_mas) * _MAS_TO_RAD
    if parallax and n and np.any(plx != 0):
        v = v - plx[:, None] * earth_barycentric_au(mjd)
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
    dec = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    return ra, dec


def propagate_errors(ref: ReferenceCatalog, mjd) -> tuple[np.ndarray, np.ndarray]:
    """Position variances at epoch ``mjd`` from the catalog position and motion errors.

    ``var = err_pos**2 + (dt * err_pm)**2 + (f * err_plx)**2`` per coordinate, with ``f`` the
    parallax factor; correlations are ignored (catalogs rarely give them). Unknown (NaN) motion
    or parallax errors add nothing; an unknown position error stays NaN.

    Parameters
    ----------
    ref : ReferenceCatalog
    mjd : float or array_like, shape (n_ref,)

    Returns
    -------
    var_ra_mas2, var_dec_mas2 : ndarray, shape (n_ref,)
        Variances in mas^2, the RA one as a true angle (``alpha * cos(dec)``).
    """
    n = len(ref)
    mjd = np.broadcast_to(np.asarray(mjd, dtype=float), (n,))
    dt_yr = (mjd - ref.epoch_mjd) / JULIAN_YEAR_DAYS
    var_ra = ref.ra_err_mas ** 2 + np.nan_to_num((dt_yr * ref.pm_ra_err_masyr) ** 2)
    var_dec = ref.dec_err_mas ** 2 + np.nan_to_num((dt_yr * ref.pm_dec_err_masyr) ** 2)
    if n and np.any(np.isfinite(ref.parallax_err_mas) & (ref.parallax_err_mas > 0)):
        _, east, north = _unit_vectors(ref.ra_deg, ref.dec_deg)
        earth = earth_barycentric_au(mjd)
        f_ra = -np.sum(earth * east, axis=1)
        f_dec = -np.sum(earth * north, axis=1)
        var_ra = var_ra + np.nan_to_num((f_ra * ref.parallax_err_mas) ** 2)
        var_dec = var_dec + np.nan_to_num((f_dec * ref.parallax_err_mas) ** 2)
    return var_ra, var_dec
