"""The known truth of a simulated field: stars, the true astrometric and photometric models.

The true astrometric model of ccdImage (visit v, chip c), pixels -> sky:

1. chip affine ``(u, v) = M_c @ (x, y, 1)``: the camera's pixel -> focal-plane map (deg) with a
   small per-chip perturbation (fixed over visits);
2. radial optical distortion ``(u', v') = (u, v) (1 + k2_v r^2 + k4 r^4)``, ``r^2 = u^2 + v^2``;
3. per-visit linear map ``(xi, eta) = L_v @ (u', v')`` (rotation, scale, shear), giving tangent-
   plane coordinates (deg) at the visit boresight;
4. gnomonic deprojection at the boresight.

Steps 2-3 are an exact 2-D polynomial of order 5 in (u, v), so jointcal's constrained model
(order-1 per chip composed with order-5 per visit) represents it exactly.

The true zero point (AB mag of one count) at pixel (x, y) of (v, c) is
``zp_global + zp_chip[c] + zp_visit[v] + illumination(u, v)`` with
``illumination = ptp (1/2 - |(u, v) - centre|^2 / R^2)`` over the focal plane (R: the largest
distance of a CCD corner from ``centre``), so its peak-to-peak over the camera is ``ptp``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .exceptions import InputError
from .projection import sky_to_tangent, tangent_to_sky

__all__ = ["SimulationTruth", "load_truth"]

_DAYS_PER_YEAR = 365.25
_MAS_PER_DEG = 3.6e6


@dataclass(frozen=True)
class SimulationTruth:
    """Known truth of a simulated field (arrays only, saved with :meth:`save`).

    Attributes
    ----------
    epoch_mjd : float
        Epoch of the star positions.
    star_ra_deg, star_dec_deg, star_pm_ra_masyr, star_pm_dec_masyr, star_mag : ndarray, shape (n_star,)
        Positions at ``epoch_mjd``, proper motions (``mu_alpha cos dec``), AB magnitudes.
    ref_star : ndarray of int64, shape (n_ref,)
        Star index of every reference-catalog row.
    meas_star : ndarray of int64, shape (n_meas,)
        Star of every measurement (-1 would mark spurious detections; none are simulated).
    meas_x_true, meas_y_true, meas_flux_true : ndarray, shape (n_meas,)
        Noise-free 0-based pixel position and instrumental flux (counts).
    is_outlier_astrometry, is_outlier_photometry : ndarray of bool, shape (n_meas,)
    visit, boresight_ra_deg, boresight_dec_deg, mjd : ndarray, shape (n_visit,)
    visit_linear : ndarray, shape (n_visit, 2, 2)
    visit_k2 : ndarray, shape (n_visit,)  [deg^-2]
    k4 : float  [deg^-4]
    chip_detector : ndarray, shape (n_chip,)
    chip_affine : ndarray, shape (n_chip, 2, 3)
        True pixel -> focal-plane (deg) affine of each chip.
    ccd_visit_row, ccd_chip_row : ndarray of int64, shape (n_ccd,)
        Row in the visit and chip arrays of every ccdImage.
    zp_global : float
    zp_chip : ndarray, shape (n_chip,)
    zp_visit : ndarray, shape (n_visit,)
    illumination_ptp_mag : float
    illumination_center_deg : ndarray, shape (2,)
    illumination_radius_deg : float
    """

    epoch_mjd: float
    star_ra_deg: np.ndarray
    star_dec_deg: np.ndarray
    star_pm_ra_masyr: np.ndarray
    star_pm_dec_masyr: np.ndarray
    star_mag: np.ndarray
    ref_star: np.ndarray
    meas_star: np.ndarray
    meas_x_true: np.ndarray
    meas_y_true: np.ndarray
    meas_flux_true: np.ndarray
    is_outlier_astrometry: np.ndarray
    is_outlier_photometry: np.ndarray
    visit: np.ndarray
    boresight_ra_deg: np.ndarray
    boresight_dec_deg: np.ndarray
    mjd: np.ndarray
    visit_linear: np.ndarray
    visit_k2: np.ndarray
    k4: float
    chip_detector: np.ndarray
    chip_affine: np.ndarray
    ccd_visit_row: np.ndarray
    ccd_chip_row: np.ndarray
    zp_global: float
    zp_chip: np.ndarray
    zp_visit: np.ndarray
    illumination_ptp_mag: float
    illumination_center_deg: np.ndarray
    illumination_radius_deg: float

    # --- stars ------------------------------------------------------------------------------
    def star_position_at(self, mjd: float | np.ndarray, star: np.ndarray | None = None):
        """True (ra, dec) in deg of stars at epoch ``mjd`` (linear motion on the sky)."""
        star = slice(None) if star is None else np.asarray(star)
        dt_yr = (np.asarray(mjd, float) - self.epoch_mjd) / _DAYS_PER_YEAR
        dec = self.star_dec_deg[star] + self.star_pm_dec_masyr[star] * dt_yr / _MAS_PER_DEG
        ra = self.star_ra_deg[star] + (self.star_pm_ra_masyr[star] * dt_yr / _MAS_PER_DEG
                                       / np.cos(np.radians(self.star_dec_deg[star])))
        return ra % 360.0, dec

    # --- astrometry ---------------------------------------------------------------------------
    def pixel_to_focal(self, ccd, x, y):
        """True focal-plane position (deg) of 0-based pixels on ccdImages ``ccd`` (broadcast)."""
        m = self.chip_affine[self.ccd_chip_row[np.asarray(ccd)]]
        return (m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2],
                m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2])

    def focal_to_tangent(self, visit_row, u, v):
        """Focal plane (deg) -> tangent plane at the boresight (deg), for visit rows (broadcast)."""
        visit_row = np.asarray(visit_row)
        r2 = u * u + v * v
        factor = 1.0 + self.visit_k2[visit_row] * r2 + self.k4 * r2 * r2
        up, vp = u * factor, v * factor
        lin = self.visit_linear[visit_row]
        return lin[..., 0, 0] * up + lin[..., 0, 1] * vp, lin[..., 1, 0] * up + lin[..., 1, 1] * vp

    def tangent_to_focal(self, visit_row, xi, eta):
        """Inverse of :meth:`focal_to_tangent` (Newton on the radial distortion, to 1e-15)."""
        visit_row = np.asarray(visit_row)
        inv = np.linalg.inv(self.visit_linear[visit_row])
        up = inv[..., 0, 0] * xi + inv[..., 0, 1] * eta
        vp = inv[..., 1, 0] * xi + inv[..., 1, 1] * eta
        rp = np.hypot(up, vp)
        k2 = self.visit_k2[visit_row]
        r = rp.copy()
        for _ in range(8):
            f = r * (1.0 + k2 * r ** 2 + self.k4 * r ** 4) - rp
            r = r - f / (1.0 + 3.0 * k2 * r ** 2 + 5.0 * self.k4 * r ** 4)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(rp > 0, r / rp, 1.0)
        return up * ratio, vp * ratio

    def pixel_to_sky(self, ccd, x, y):
        """True (ra, dec) in deg of 0-based pixels (x, y) on ccdImages ``ccd`` (arrays broadcast)."""
        ccd = np.asarray(ccd)
        u, v = self.pixel_to_focal(ccd, x, y)
        visit_row = self.ccd_visit_row[ccd]
        xi, eta = self.focal_to_tangent(visit_row, u, v)
        return tangent_to_sky(xi, eta, self.boresight_ra_deg[visit_row], self.boresight_dec_deg[visit_row])

    def sky_to_pixel(self, ccd, ra_deg, dec_deg):
        """Inverse of :meth:`pixel_to_sky`: 0-based pixels of sky positions on ccdImages ``ccd``."""
        ccd = np.asarray(ccd)
        visit_row = self.ccd_visit_row[ccd]
        xi, eta = sky_to_tangent(ra_deg, dec_deg, self.boresight_ra_deg[visit_row],
                                 self.boresight_dec_deg[visit_row])
        u, v = self.tangent_to_focal(visit_row, xi, eta)
        m = self.chip_affine[self.ccd_chip_row[ccd]]
        inv = np.linalg.inv(m[..., :2])
        du, dv = u - m[..., 0, 2], v - m[..., 1, 2]
        return inv[..., 0, 0] * du + inv[..., 0, 1] * dv, inv[..., 1, 0] * du + inv[..., 1, 1] * dv

    # --- photometry ---------------------------------------------------------------------------
    def illumination_mag(self, u, v):
        """Illumination term of the zero point (mag) at focal-plane (u, v) in deg."""
        d2 = (u - self.illumination_center_deg[0]) ** 2 + (v - self.illumination_center_deg[1]) ** 2
        return self.illumination_ptp_mag * (0.5 - d2 / self.illumination_radius_deg ** 2)

    def zp_mag(self, ccd, x, y):
        """True zero point (AB mag of one count) at 0-based pixels (x, y) of ccdImages ``ccd``."""
        ccd = np.asarray(ccd)
        u, v = self.pixel_to_focal(ccd, x, y)
        return (self.zp_global + self.zp_chip[self.ccd_chip_row[ccd]] + self.zp_visit[self.ccd_visit_row[ccd]]
                + self.illumination_mag(u, v))

    # --- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``truth.npz`` (every array) and ``truth.json`` (scalars, sizes) into ``directory``."""
        directory = Path(directory)
        arrays, scalars = {}, {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                scalars[f.name] = float(value)
        np.savez_compressed(directory / "truth.npz", **arrays)
        summary = dict(scalars, n_stars=int(self.star_mag.size), n_reference=int(self.ref_star.size),
                       n_measurements=int(self.meas_star.size), n_visits=int(self.visit.size),
                       n_chips=int(self.chip_detector.size),
                       n_outliers_astrometry=int(self.is_outlier_astrometry.sum()),
                       n_outliers_photometry=int(self.is_outlier_photometry.sum()),
                       model=" ".join(__doc__.split("\n\n", 1)[1].split()))
        (directory / "truth.json").write_text(json.dumps(summary, indent=1))


def load_truth(directory: str | Path) -> SimulationTruth:
    """Rebuild the :class:`SimulationTruth` written by ``write_simulated_field`` into ``directory``."""
    directory = Path(directory)
    npz, js = directory / "truth.npz", directory / "truth.json"
    if not npz.exists() or not js.exists():
        raise InputError("no truth.npz / truth.json here; is this a simulated field?", path=str(directory))
    summary = json.loads(js.read_text())
    with np.load(npz) as data:
        kwargs = {name: data[name] for name in data.files}
    for f in dataclasses.fields(SimulationTruth):
        if f.name not in kwargs:
            kwargs[f.name] = summary[f.name]
    return SimulationTruth(**kwargs)
