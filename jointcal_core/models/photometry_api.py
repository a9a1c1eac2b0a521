"""Results of the photometric fit for exporters, metrics and the app.

Owns :class:`PhotometryOutputs`, the read-only half of
:class:`~jointcal_core.models.photometry.PhotometryProblem`: zero points anywhere on a CCD,
calibrated fluxes, star magnitudes, per-measurement residuals, repeatability and a plain-dict
description of the fitted model (for ``calibration.json``).
"""

from __future__ import annotations

import numpy as np

from ..data import AB_NJY_ZP, njy_to_mag
from .chebyshev import chebyshev_sum_by_group
from .photometry_geometry import MAG_PER_LN

__all__ = ["PhotometryOutputs"]


class PhotometryOutputs:
    """Mixin: evaluation of the fitted photometric model (needs the PhotometryProblem state)."""

    def zp_mag(self, ccd, x, y) -> np.ndarray:
        """Zero point (AB magnitude of one count) at 0-based pixels.

        Parameters
        ----------
        ccd : int or ndarray of int, shape (n,)
            Row(s) in ``field.ccd_images``.
        x, y : ndarray, shape (n,)

        Returns
        -------
        ndarray, shape (n,)
        """
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        ccd = np.broadcast_to(np.asarray(ccd, np.int64), x.shape).ravel()
        x, y = x.ravel(), y.ravel()
        if not self.is_constrained:
            value = self._params[ccd]
        else:
            u, v = self.focal.to_focal(ccd, x, y)
            coeffs = self._params[self._n_chip:].reshape(-1, self._n_terms)
            poly = chebyshev_sum_by_group(u, v, self.order, self.focal.box, coeffs, self._visit_of_ccd[ccd])
            chip = self._params[self._chip_of_ccd[ccd]]
            value = chip * poly if self.is_flux else chip + poly
        if self.is_flux:
            with np.errstate(divide="ignore", invalid="ignore"):
                return AB_NJY_ZP - 2.5 * np.log10(value)
        return value

    def calibrate_njy(self, ccd, x, y, inst_flux) -> np.ndarray:
        """Calibrated flux (nJy) of instrumental fluxes measured at pixels (x, y) of ``ccd``."""
        return np.asarray(inst_flux, float) * 10.0 ** (-0.4 * (self.zp_mag(ccd, x, y) - AB_NJY_ZP))

    def pixel_order(self, ccd: int) -> int:
        """Polynomial order of the calibration over the pixels of ``ccd`` (0: constant).

        The constrained models' chip map is affine, so their order in pixels is the visit order.
        """
        return int(self.order) if self.is_constrained else 0

    def _calibrated_mags(self, rows_meas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated AB mag and its error of ``field.measurements`` rows."""
        m = self.field.measurements
        flux, err = m.flux[rows_meas], m.flux_err[rows_meas]
        err = np.hypot(err, float(self.config.photometryErrorPedestal) * flux)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = self.zp_mag(m.ccd[rows_meas], m.x[rows_meas], m.y[rows_meas]) - 2.5 * np.log10(flux)
            return mag, MAG_PER_LN * err / flux

    def star_mags(self) -> np.ndarray:
        """AB magnitude of every star, shape (n_stars,).

        Fitted stars: their fitted flux or magnitude. Stars without a fitted value (reserved, or
        every measurement rejected): the weighted mean calibrated magnitude of their measurements.
        """
        fitted = njy_to_mag(self._stars[:, 0]) if self.is_flux else self._stars[:, 0].copy()
        in_fit = np.bincount(self._star_of[self._active], minlength=self._n_stars) > 0
        rows = np.flatnonzero(np.asarray(self.assoc.star) >= 0)
        mag, err = self._calibrated_mags(rows)
        star = np.asarray(self.assoc.star)[rows]
        w = 1.0 / err ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (np.bincount(star, weights=w * mag, minlength=self._n_stars)
                    / np.bincount(star, weights=w, minlength=self._n_stars))
        return np.where(in_fit, fitted, mean)

    def residuals(self) -> dict:
        """Per-measurement residuals of every associated measurement (fitted and reserved).

        Returns
        -------
        dict of str -> ndarray, each shape (n,)
            ``meas`` (row in field.measurements), ``ccd``, ``visit``, ``detector``, ``star``,
            ``x``, ``y``, ``mag`` (calibrated AB), ``mag_err``, ``residual_mmag`` (calibrated minus
            star magnitude), ``chi2`` (the fit's term for fitted measurements; magnitude-space for
            reserved ones), ``used`` (in the fit now), ``outlier`` (rejected), ``reserved``.
        """
        m, ccds = self.field.measurements, self.field.ccd_images
        rows = np.concatenate([self._meas, self._reserved_rows])
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        star = np.asarray(self.assoc.star)[rows]
        mag, mag_err = self._calibrated_mags(rows)
        star_mag = self.star_mags()[star]
        chi2 = ((mag - star_mag) / mag_err) ** 2
        n_fit = self._meas.size
        fit_chi2 = self._measurement_rows(np.arange(n_fit), jacobian=False)[0] ** 2
        is_fit = order < n_fit
        chi2[is_fit] = fit_chi2[order[is_fit]]
        active = np.zeros(rows.size, bool)
        active[is_fit] = self._active[order[is_fit]]
        ccd = m.ccd[rows]
        return {"meas": rows, "ccd": ccd, "visit": ccds.visit[ccd], "detector": ccds.detector[ccd],
                "star": star, "x": m.x[rows], "y": m.y[rows], "mag": mag, "mag_err": mag_err,
                "residual_mmag": 1000.0 * (mag - star_mag), "chi2": chi2, "used": active,
                "outlier": is_fit & ~active, "reserved": ~is_fit}

    def repeatability_mmag(self, mag_max: float = np.inf, *, residuals: dict | None = None,
                           star_mags: np.ndarray | None = None) -> dict:
        """Scatter (mmag) of the calibrated magnitudes of a star about their weighted mean.

        Over stars brighter than ``mag_max`` with two or more measurements (outliers excluded):
        ``sqrt(sum dev^2 / sum (n - 1))``, separately for the fitted and the reserved stars.
        ``residuals`` and ``star_mags`` (from :meth:`residuals` and :meth:`star_mags` of the
        current state) are computed here unless given: the exporters compute them once.

        Returns
        -------
        dict
            ``fitted``, ``reserved`` (mmag, NaN when no star qualifies), ``n_fitted``, ``n_reserved``
            (stars used).
        """
        res = self.residuals() if residuals is None else residuals
        bright = (self.star_mags() if star_mags is None else star_mags) < mag_max
        out = {}
        for key, sel in (("fitted", res["used"]), ("reserved", res["reserved"])):
            star, mag, w = res["star"][sel], res["mag"][sel], 1.0 / res["mag_err"][sel] ** 2
            n = np.bincount(star, minlength=self._n_stars)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (np.bincount(star, weights=w * mag, minlength=self._n_stars)
                        / np.bincount(star, weights=w, minlength=self._n_stars))
            good = (n >= 2) & bright
            keep = good[star]
            dev = mag[keep] - mean[star[keep]]
            dof = float(np.sum(n[good] - 1))
            out[key] = float(1000.0 * np.sqrt(np.sum(dev ** 2) / dof)) if dof > 0 else float("nan")
            out[f"n_{key}"] = int(np.count_nonzero(good))
        return out

    def to_dict(self) -> dict:
        """The fitted model as plain data (JSON serialisable), enough to re-evaluate it.

        Simple models: one value per (visit, detector). Constrained: the chip values, each
        visit's Chebyshev coefficients, the term degrees and the focal-plane domain.
        Flux models give calibrations in nJy/count, magnitude models zero points in AB mag.
        """
        ccds = self.field.ccd_images
        unit = "nJy/count" if self.is_flux else "mag"
        out = {"model": self.model, "band": self.band, "unit": unit}
        if not self.is_constrained:
            out["ccd"] = [{"visit": int(v), "detector": int(d), "value": float(p)}
                          for v, d, p in zip(ccds.visit, ccds.detector, self._params)]
            return out
        coeffs = self._params[self._n_chip:].reshape(-1, self._n_terms)
        out.update(order=int(self.order), terms=self.terms.tolist(), domain=list(self.focal.box),
                   focal_plane="camera" if self.field.camera is not None else "visit tangent plane (deg)",
                   fixed_chip=int(self.chip_ids[self.fixed_chip]),
                   chips=[{"detector": int(d), "value": float(p)} for d, p in zip(self.chip_ids, self._params)],
                   visits=[{"visit": int(v), "coefficients": c.tolist()} for v, c in zip(self.visit_ids, coeffs)])
        return out
