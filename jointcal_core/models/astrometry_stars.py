"""Fitted-star motion and reference terms of the astrometric fit.

This module owns what the astrometric problem needs about stars, apart from the mapping:

- the epoch offset and the parallax factor of every measurement (:func:`epoch_terms`);
- the reference terms of the stars matched to the reference catalog, the proper-motion and
  parallax priors, and the weak priors that keep poorly measured motions determined
  (:func:`reference_terms`).

Star parameters live on the common tangent plane at the field centre, in degrees:
``(xi, eta)`` at the reference epoch t0, then ``(mu_xi, mu_eta)`` in deg/yr, then the parallax
in degrees. The parallax displacement at an epoch is ``parallax * f`` with ``f`` the parallax
factor along (east, north) (Earth's barycentric position in AU projected on the local east and
north directions, as :mod:`jointcal_core.motion`); it is applied along the tangent-plane axes,
which differ from east/north by less than 1e-4 relative within a degree of the tangent point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import CcdImages, Field
from ..exceptions import InputError
from ..motion import JULIAN_YEAR_DAYS, earth_barycentric_au, propagate_reference
from ..projection import sky_to_tangent

__all__ = ["MAS_PER_DEG", "WEAK_PM_PRIOR_MASYR", "WEAK_PARALLAX_PRIOR_MAS", "epoch_terms", "ReferenceTerms",
           "reference_terms", "needs_weak_prior"]

MAS_PER_DEG = 3.6e6
#: sigma of the prior on the proper motion of stars whose own measurements do not determine it
#: (100 mas/yr: 20 times the motion of typical field stars, so it never biases a measured motion,
#: yet bounds motions a short epoch baseline leaves free)
WEAK_PM_PRIOR_MASYR = 100.0
#: sigma of the prior on the parallax of stars whose measurements do not determine it (mas)
WEAK_PARALLAX_PRIOR_MAS = 100.0


def epoch_terms(ccd_images: CcdImages, meas_ccd: np.ndarray, t0_mjd: float, star_ra_deg: np.ndarray,
                star_dec_deg: np.ndarray, parallax: bool) -> tuple[np.ndarray, np.ndarray]:
    """Epoch offset and parallax factor of each measurement.

    Parameters
    ----------
    meas_ccd : ndarray of int64, shape (n,)
    t0_mjd : float
    star_ra_deg, star_dec_deg : ndarray, shape (n,)
        Position of each measurement's star (where the parallax factor is evaluated).
    parallax : bool
        Compute the parallax factor (else zeros).

    Returns
    -------
    dt_yr : ndarray, shape (n,)
        ``(mjd - t0) / 365.25`` (0 where the ccdImage has no epoch).
    factor : ndarray, shape (n, 2)
        Displacement along (east, north) per unit parallax.
    """
    mjd = ccd_images.mjd
    dt_ccd = np.where(np.isfinite(mjd), (mjd - t0_mjd) / JULIAN_YEAR_DAYS, 0.0)
    dt = dt_ccd[meas_ccd]
    factor = np.zeros((meas_ccd.size, 2))
    if parallax and meas_ccd.size:
        earth = earth_barycentric_au(np.where(np.isfinite(mjd), mjd, t0_mjd))[meas_ccd]   # (n, 3)
        ra, dec = np.radians(star_ra_deg), np.radians(star_dec_deg)
        east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=1)
        north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=1)
        factor[:, 0] = -np.sum(earth * east, axis=1)
        factor[:, 1] = -np.sum(earth * north, axis=1)
    return dt, factor


@dataclass(frozen=True)
class ReferenceTerms:
    """Reference and prior rows, per fitted star (each array has one row per term).

    Attributes
    ----------
    star : ndarray of int64, shape (n_ref,)
        Fitted star of each reference position term.
    xy_deg : ndarray, shape (n_ref, 2)
        Reference position on the common tangent plane at epoch t0 + ``dt_yr``.
    sigma_deg : ndarray, shape (n_ref, 2)
    dt_yr : ndarray, shape (n_ref,)
        Epoch of the comparison relative to t0 (0 without fitted motions: the reference was
        moved to t0).
    pm_star, pm_target_degyr, pm_sigma_degyr : arrays (n_pm,), (n_pm, 2), (n_pm, 2)
        Proper-motion priors from the catalog.
    plx_star, plx_target_deg, plx_sigma_deg : arrays (n_plx,)
        Parallax priors from the catalog.
    """

    star: np.ndarray
    xy_deg: np.ndarray
    sigma_deg: np.ndarray
    dt_yr: np.ndarray
    pm_star: np.ndarray
    pm_target_degyr: np.ndarray
    pm_sigma_degyr: np.ndarray
    plx_star: np.ndarray
    plx_target_deg: np.ndarray
    plx_sigma_deg: np.ndarray


def _empty_terms() -> ReferenceTerms:
    z, z2 = np.zeros(0), np.zeros((0, 2))
    zi = np.zeros(0, np.int64)
    return ReferenceTerms(zi, z2, z2, z, zi, z2, z2, zi, z, z)


def reference_terms(field: Field, star_ref: np.ndarray, use_star: np.ndarray, t0_mjd: float,
                    center_deg: tuple[float, float], reference_err_mas: float | None,
                    fit_motion: bool, fit_parallax: bool) -> ReferenceTerms:
    """Reference position terms and catalog motion priors of the matched stars.

    Parameters
    ----------
    field : Field
        ``field.reference`` is the catalog ``star_ref`` indexes.
    star_ref : ndarray of int64, shape (n_stars,)
        Reference row of each fitted star (-1: none).
    use_star : ndarray of bool, shape (n_stars,)
        Stars allowed a reference term (not reserved).
    t0_mjd : float
    center_deg : (ra, dec) of the common tangent plane.
    reference_err_mas : float or None
        Position error used where the catalog gives none.
    fit_motion, fit_parallax : bool

    Without fitted motions, the reference is moved to t0 with its proper motion (barycentric,
    no parallax) and its error grows as ``hypot(err_pos, err_pm * |t0 - t_ref|)``; with fitted
    motions the comparison is at the catalog epoch and the motions get their own priors.
    """
    ref = field.reference
    stars = np.flatnonzero((star_ref >= 0) & use_star)
    if ref is None or stars.size == 0:
        return _empty_terms()
    rows = star_ref[stars]
    sub = ref.take(rows)
    err = np.column_stack([sub.ra_err_mas, sub.dec_err_mas])
    missing = ~(np.isfinite(err) & (err > 0))
    if np.any(missing):
        if reference_err_mas is None:
            raise InputError(f"{int(np.any(missing, axis=1).sum())} matched reference stars have no position "
                             "error; set astrometryReferenceErr (mas) to use a fixed error",
                             path=ref.name or None)
        err = np.where(missing, float(reference_err_mas), err)
    dt_ref = (sub.epoch_mjd - t0_mjd) / JULIAN_YEAR_DAYS
    if fit_motion:
        ra, dec, dt = sub.ra_deg, sub.dec_deg, dt_ref
    else:
        ra, dec = propagate_reference(sub, t0_mjd, parallax=False)
        pm_err = np.nan_to_num(np.column_stack([sub.pm_ra_err_masyr, sub.pm_dec_err_masyr]))
        err = np.hypot(err, pm_err * np.abs(dt_ref)[:, None])
        dt = np.zeros(stars.size)
    xy = np.column_stack(sky_to_tangent(ra, dec, *center_deg))
    pm_err = np.column_stack([sub.pm_ra_err_masyr, sub.pm_dec_err_masyr])
    has_pm = fit_motion & np.all(np.isfinite(pm_err) & (pm_err > 0), axis=1)
    plx_err = sub.parallax_err_mas
    has_plx = fit_parallax & np.isfinite(plx_err) & (plx_err > 0)
    return ReferenceTerms(
        star=stars, xy_deg=xy, sigma_deg=err / MAS_PER_DEG, dt_yr=dt,
        pm_star=stars[has_pm],
        pm_target_degyr=np.column_stack([sub.pm_ra_masyr, sub.pm_dec_masyr])[has_pm] / MAS_PER_DEG,
        pm_sigma_degyr=pm_err[has_pm] / MAS_PER_DEG,
        plx_star=stars[has_plx], plx_target_deg=np.nan_to_num(sub.parallax_mas[has_plx]) / MAS_PER_DEG,
        plx_sigma_deg=plx_err[has_plx] / MAS_PER_DEG)


def needs_weak_prior(star: np.ndarray, leverage: np.ndarray, sigma_deg: np.ndarray, n_stars: int,
                     prior_sigma_deg: float) -> np.ndarray:
    """Stars whose measurements alone determine a motion term worse than the weak prior would.

    The data-only error of a linear term with regressor ``leverage`` (epoch offset for proper
    motion, parallax factor for parallax) is ``1 / sqrt(sum((l - l_mean)^2 / sigma^2))``. A prior
    is added only where that exceeds ``prior_sigma_deg``: elsewhere it would carry no information
    but still add rows to the degrees of freedom, biasing chi2/ndof low.

    Parameters
    ----------
    star : ndarray of int64, shape (n,)
        Star of each measurement in the fit.
    leverage : ndarray, shape (n,) or (n, 2)
    sigma_deg : ndarray, shape (n,)
        Position error of each measurement.

    Returns
    -------
    ndarray of bool, shape (n_stars,)
    """
    w = 1.0 / sigma_deg ** 2
    lev = leverage.reshape(leverage.shape[0], -1)
    wsum = np.bincount(star, w, minlength=n_stars)
    info = np.zeros(n_stars)
    for j in range(lev.shape[1]):
        mean = np.bincount(star, w * lev[:, j], minlength=n_stars) / np.maximum(wsum, 1e-300)
        info += np.bincount(star, w * (lev[:, j] - mean[star]) ** 2, minlength=n_stars) / lev.shape[1]
    return info * prior_sigma_deg ** 2 < 1.0
