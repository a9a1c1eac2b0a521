"""The astrometric fit as a :class:`~jointcal_core.fit.FitProblem` (jointcal's AstrometryFit).

Frames (all in degrees):

- pixels of a ccdImage -> (model) -> the tangent plane at its visit's boresight
  (``CcdImages.visit_centers_deg``);
- fitted stars live on the common tangent plane at ``Association.field_center_deg``, at the
  reference epoch t0 = mean epoch of the ccdImages (optionally with proper motion and parallax).

Measurement residual (2 rows): ``model(x, y) - star position at the ccdImage's epoch projected
on that visit's tangent plane`` (common plane -> sky -> visit plane, derivatives by the chain
rule through :func:`~jointcal_core.projection.sky_to_tangent_jacobian` of both planes). Its
covariance is the pixel covariance (plus ``positionErrorPedestal`` squared on the diagonal)
propagated through the model's pixel derivative at the current parameters, recomputed at every
linearisation as jointcal does; rows are whitened with the inverse Cholesky factor of each 2x2
covariance.

Gauge: with reference stars the reference terms define the frame. Without any matched reference
star, the model of the reference visit (the visit with most CCDs) is held fixed, so the stars and
every other visit are fitted in its frame. The constrained model also holds fixed the chip
nearest the focal-plane centre: with chip order 1 that removes exactly the affine degeneracy
between chips and visits (any affine map A gives ``visit o A^-1`` and ``A o chip`` the same
composition); the fixed chip defines the focal-plane frame.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..association import Association
from ..config import JointcalConfig
from ..data import Field
from ..exceptions import ConfigError, InputError, JointcalWarning, ModelConstraintError
from ..fit.problem import FitGroup, FitProblem, Linearization, Stage
from ..projection import sky_to_tangent, tangent_to_sky
from .astrometry_checks import count_shortfalls, visit_components
from .astrometry_mappings import init_constrained, init_simple
from .astrometry_rows import all_residuals, measurement_rows, reference_rows, whitening
from .astrometry_stars import (MAS_PER_DEG, WEAK_PARALLAX_PRIOR_MAS, WEAK_PM_PRIOR_MASYR, epoch_terms,
                               needs_weak_prior, reference_terms)

__all__ = ["AstrometryProblem", "make_astrometry_problem"]

log = logging.getLogger(__name__)


def make_astrometry_problem(field: Field, assoc: Association, config: JointcalConfig) -> "AstrometryProblem":
    """The astrometric problem for ``field`` with the model chosen by ``config.astrometryModel``."""
    return AstrometryProblem(field, assoc, config)


class AstrometryProblem(FitProblem):
    """Joint astrometric fit of a field: a mapping per ccdImage and fitted-star positions.

    Parameters
    ----------
    field : Field
    assoc : Association
        Fitted stars, reference matches, reserved stars, common tangent point.
    config : JointcalConfig
        ``astrometryModel``, the orders, ``positionErrorPedestal``, ``astrometryReferenceErr``,
        ``fitProperMotion``, ``fitParallax``, ``excludeUnconstrained``.

    Attributes
    ----------
    params : ndarray, shape (n_model_params,)
        Mapping coefficients (degrees on the visit tangent plane; see the mapping classes).
    stars : ndarray, shape (n_stars, star_dim)
        Common tangent-plane position at t0 (deg), then proper motion (deg/yr), then parallax (deg).
    freeze_weights : bool
        Hold the measurement weights at their values when set (for derivative checks).
    """

    kind = "astrometry"
    residual_dim = 2

    def __init__(self, field: Field, assoc: Association, config: JointcalConfig):
        self.field, self.assoc, self.config = field, assoc, config
        ccds, meas = field.ccd_images, field.measurements
        if assoc.n_stars == 0:
            raise InputError("no fitted star (no star measured on two or more exposures): nothing to fit")
        self.fit_motion, self.fit_parallax = bool(config.fitProperMotion), bool(config.fitParallax)
        if self.fit_parallax and not self.fit_motion:
            raise ConfigError("fitting parallaxes needs proper motions too; set fitProperMotion", field="fitParallax")
        if self.fit_motion and not np.all(np.isfinite(ccds.mjd)):
            bad = int(np.flatnonzero(~np.isfinite(ccds.mjd))[0])
            raise InputError("no epoch (MJD-OBS) for this ccdImage; fitting proper motions needs every epoch",
                             visit=int(ccds.visit[bad]), detector=int(ccds.detector[bad]))
        self._star_dim = 2 + 2 * self.fit_motion + self.fit_parallax
        self.center_deg = tuple(float(c) for c in assoc.field_center_deg)
        self.t0_mjd = float(np.nanmean(ccds.mjd)) if np.any(np.isfinite(ccds.mjd)) else 0.0
        centers = ccds.visit_centers_deg()
        self.ccd_centers = np.array([centers[int(v)] for v in ccds.visit])
        self.visits, self.ccd_visit = np.unique(ccds.visit, return_inverse=True)
        self.meas_star = np.asarray(assoc.star, np.int64)
        reserved = np.asarray(assoc.star_reserved, bool)
        self._reserved_meas = (self.meas_star >= 0) & reserved[np.maximum(self.meas_star, 0)]
        # reference visit: most CCDs, then most associated measurements, then the lowest id
        n_meas_visit = np.bincount(self.ccd_visit[meas.ccd[self.meas_star >= 0]], minlength=self.visits.size)
        score = np.bincount(self.ccd_visit) * (n_meas_visit.max() + 1.0) + n_meas_visit
        self.reference_visit = int(self.visits[np.argmax(score)])
        if config.astrometryModel == "simple":
            self.mapping, self.params = init_simple(ccds, self.ccd_centers, config.astrometrySimpleOrder)
        else:
            self.mapping, self.params = init_constrained(ccds, field.camera, self.ccd_centers,
                                                         config.astrometryChipOrder, config.astrometryVisitOrder,
                                                         self.reference_visit)
        self.stars = self._initial_stars()
        self.has_reference = bool(field.reference is not None and np.any((assoc.star_ref >= 0) & ~reserved))
        self.excluded_ccd = np.zeros(len(ccds), bool)
        self.active = self._in_fit()
        self.ref_active = np.ones(self.n_stars, bool)
        self.freeze_weights = False
        self._frozen: dict = {}
        self._kept_cols = None      # (key, columns) of the last Jacobian: models/astrometry_rows.py
        s = np.maximum(self.meas_star, 0)
        self.dt_yr, self.parallax_factor = epoch_terms(ccds, meas.ccd, self.t0_mjd, assoc.star_ra_deg[s],
                                                       assoc.star_dec_deg[s], self.fit_parallax)
        self.ref = reference_terms(field, assoc.star_ref, ~reserved, self.t0_mjd, self.center_deg,
                                   config.astrometryReferenceErr, self.fit_motion, self.fit_parallax)
        self.check_constraints()
        self._weak_priors()

    # --- sizes ---------------------------------------------------------------------------------
    n_model_params = property(lambda self: self.mapping.n_params)
    n_stars = property(lambda self: int(self.assoc.n_stars))
    star_dim = property(lambda self: self._star_dim)
    n_measurements = property(lambda self: len(self.field.measurements))

    # --- set-up ------------------------------------------------------------------------------------
    def _initial_stars(self) -> np.ndarray:
        a = self.assoc
        stars = np.zeros((a.n_stars, self._star_dim))
        stars[:, 0], stars[:, 1] = sky_to_tangent(a.star_ra_deg, a.star_dec_deg, *self.center_deg)
        ref = self.field.reference
        if self.fit_motion and ref is not None:
            m = np.flatnonzero(a.star_ref >= 0)
            stars[m, 2] = np.nan_to_num(ref.pm_ra_masyr[a.star_ref[m]]) / MAS_PER_DEG
            stars[m, 3] = np.nan_to_num(ref.pm_dec_masyr[a.star_ref[m]]) / MAS_PER_DEG
        return stars

    def _in_fit(self) -> np.ndarray:
        """Measurements the fit may use: associated, not reserved, on a ccdImage not excluded."""
        return (self.meas_star >= 0) & ~self._reserved_meas & ~self.excluded_ccd[self.field.measurements.ccd]

    def _fixed(self) -> np.ndarray:
        """Parameters never free: gauge, degeneracy and those of excluded items."""
        m, fixed = self.mapping, np.zeros(self.mapping.n_params, bool)
        ref_visit_row = int(np.searchsorted(self.visits, self.reference_visit))
        if m.name == "simple":
            fixed |= m.params_of_ccds(self.excluded_ccd)
            if not self.has_reference:
                fixed |= m.params_of_ccds(self.ccd_visit == ref_visit_row)
            return fixed
        used = ~self.excluded_ccd
        chip_used = np.bincount(m.ccd_chip, used, minlength=m.chips.size) > 0
        visit_used = np.bincount(m.ccd_visit, used, minlength=m.visits.size) > 0
        fixed |= m.chip_params(~chip_used) | m.visit_params(~visit_used)
        # the chip nearest the focal-plane centre defines the focal-plane frame
        dom = m.chip_domains
        cx, cy = dom[:, :2].mean(axis=1), dom[:, 2:].mean(axis=1)
        uv = m.chip_to_focal(self.params, np.arange(m.chips.size), cx, cy)[0]
        dist = np.where(chip_used, np.hypot(uv[:, 0], uv[:, 1]), np.inf)
        fixed |= m.chip_params(np.arange(m.chips.size) == int(np.argmin(dist)))
        if not self.has_reference:
            fixed |= m.visit_params(np.arange(m.visits.size) == ref_visit_row)
        return fixed

    def check_constraints(self) -> None:
        """Raise ModelConstraintError (or exclude, with excludeUnconstrained) for unconstrained parts."""
        ccds, cfg = self.field.ccd_images, self.config
        option = "astrometrySimpleOrder" if self.mapping.name == "simple" else "astrometryVisitOrder"
        while True:
            in_fit = self._in_fit()
            n_per_ccd = np.bincount(self.field.measurements.ccd[in_fit], minlength=len(ccds))
            shortfalls = count_shortfalls(self.mapping, ccds, n_per_ccd, ~self._fixed(), option)
            if not shortfalls:
                break
            first = shortfalls[0]
            if not cfg.excludeUnconstrained:
                raise ModelConstraintError(first.message, visit=first.visit, detector=first.detector)
            for sf in shortfalls:
                where = " ".join(f"{k} {v}" for k, v in (("visit", sf.visit), ("detector", sf.detector)) if v is not None)
                warnings.warn(f"{where}: excluded from the astrometric fit: {sf.message}", JointcalWarning, stacklevel=2)
                self.excluded_ccd |= sf.ccd_mask
        self._check_overlaps()
        self.active = self._in_fit()
        self._fixed_mask = self._fixed()

    def _check_overlaps(self) -> None:
        in_fit = self._in_fit()
        meas = self.field.measurements
        used_visits = np.bincount(self.ccd_visit[meas.ccd[in_fit]], minlength=self.visits.size) > 0
        n, visit_label, star_label = visit_components(self.ccd_visit, self.visits.size, meas.ccd[in_fit],
                                                      self.meas_star[in_fit], self.n_stars)
        if self.has_reference:
            anchored = np.unique(star_label[self.ref.star])
        else:
            anchored = visit_label[self.visits == self.reference_visit]
        lost = used_visits & ~np.isin(visit_label, anchored)
        if not np.any(lost):
            return
        names = ", ".join(str(v) for v in self.visits[lost][:10])
        why = ("share no fitted star with the other visits and have no reference star" if self.has_reference
               else f"share no fitted star with reference visit {self.reference_visit} (no reference catalog)")
        message = (f"visits {names} {why}; remove them, check the input WCS / associationRadius, "
                   "or set excludeUnconstrained")
        if not self.config.excludeUnconstrained:
            raise ModelConstraintError(message)
        warnings.warn(f"excluded from the astrometric fit: {message}", JointcalWarning, stacklevel=3)
        self.excluded_ccd |= lost[self.ccd_visit]

    def _weak_priors(self) -> None:
        """Which stars get the weak motion priors (see astrometry_stars.needs_weak_prior)."""
        self.weak_pm = np.zeros(self.n_stars, bool)
        self.weak_plx = np.zeros(self.n_stars, bool)
        if not self.fit_motion:
            return
        idx = np.flatnonzero(self.active)
        meas = self.field.measurements
        _, _, dxy, _, _ = self.mapping.evaluate(self.params, meas.ccd[idx], meas.x[idx], meas.y[idx], False)
        scale = np.sqrt(np.abs(np.linalg.det(dxy)))
        sigma = scale * np.sqrt((meas.var_x[idx] + meas.var_y[idx]) / 2 + self.config.positionErrorPedestal ** 2)
        star = self.meas_star[idx]
        measured = np.bincount(star, minlength=self.n_stars) > 0
        # without any reference the common motion of all stars is a gauge freedom: prior on all
        self.weak_pm = measured & (needs_weak_prior(star, self.dt_yr[idx], sigma, self.n_stars,
                                                    WEAK_PM_PRIOR_MASYR / MAS_PER_DEG) | (not self.has_reference))
        if self.fit_parallax:
            self.weak_plx = measured & (needs_weak_prior(star, self.parallax_factor[idx], sigma, self.n_stars,
                                                         WEAK_PARALLAX_PRIOR_MAS / MAS_PER_DEG)
                                        | (not self.has_reference))

    # --- stages ------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        final = FitGroup.MODEL | FitGroup.STARS | (FitGroup.MOTIONS if self.fit_motion else FitGroup.NONE)
        if self.mapping.name == "simple":
            first = [Stage("Distortions", FitGroup.MODEL_CHIP)]
        else:
            first = [Stage("DistortionsVisit", FitGroup.MODEL_VISIT), Stage("Distortions", FitGroup.MODEL)]
        return first + [Stage("Positions", FitGroup.STARS), Stage("Distortions Positions", final)]

    def model_param_mask(self, groups: FitGroup) -> np.ndarray:
        return self.mapping.param_mask(groups) & ~self._fixed_mask

    def star_param_mask(self, groups: FitGroup) -> np.ndarray:
        pos, mot = bool(groups & FitGroup.STARS), bool(groups & FitGroup.MOTIONS)
        return np.array([pos, pos, mot, mot, mot][:self._star_dim])

    # --- evaluation --------------------------------------------------------------------------------
    def _weights(self, idx: np.ndarray, dxy: np.ndarray) -> np.ndarray:
        if not self.freeze_weights:
            self._frozen = {}
            return whitening(self.field.measurements, idx, dxy, self.config.positionErrorPedestal)
        key = idx.tobytes()
        if key not in self._frozen:
            self._frozen[key] = whitening(self.field.measurements, idx, dxy, self.config.positionErrorPedestal)
        return self._frozen[key]

    def linearize(self, jacobian: bool = True) -> Linearization:
        idx = np.flatnonzero(self.active)
        extra = reference_rows(self, jacobian)
        n_extra = sum(p["residual"].size for p in extra)
        first = measurement_rows(self, idx, jacobian, n_extra)
        parts = [first] + extra
        residual = np.concatenate([p["residual"] for p in parts])
        meas = np.concatenate([p["meas"] for p in parts])
        ref_star = np.concatenate([p["ref_star"] for p in parts])
        star = np.concatenate([p["star"] for p in parts])
        if not jacobian:
            return Linearization(residual=residual, star=star, meas=meas, ref_star=ref_star)
        ranges, block = self.mapping.slots(self.field.measurements.ccd[idx])
        slot_block = np.full((residual.size, block.shape[1]), -1, np.int64)
        slot_block[:2 * idx.size].reshape(idx.size, 2, -1)[:] = block[:, None, :]
        return Linearization(residual=residual, model_cols=first["cols"], model_vals=first["vals"], star=star,
                             star_vals=np.concatenate([p["star_vals"] for p in parts]), meas=meas,
                             ref_star=ref_star, slot_ranges=ranges, slot_block=slot_block)

    def offset(self, delta_model: np.ndarray, delta_stars: np.ndarray) -> None:
        self.params = self.params + delta_model
        self.stars = self.stars + delta_stars

    def get_state(self) -> dict:
        return dict(params=self.params.copy(), stars=self.stars.copy(), active=self.active.copy(),
                    ref_active=self.ref_active.copy())

    def set_state(self, state: dict) -> None:
        self.params, self.stars = state["params"].copy(), state["stars"].copy()
        self.active, self.ref_active = state["active"].copy(), state["ref_active"].copy()

    def deactivate(self, measurements: np.ndarray, reference_stars: np.ndarray) -> None:
        self.active[np.asarray(measurements, np.int64)] = False
        self.ref_active[np.asarray(reference_stars, np.int64)] = False

    def measurement_star(self) -> np.ndarray:
        return np.where(self.active, self.meas_star, -1)

    # --- descriptions ------------------------------------------------------------------------------
    def describe_model_param(self, index: int) -> str:
        return self.mapping.describe(index)

    def describe_measurement(self, index) -> list[str]:
        m, ccds = self.field.measurements, self.field.ccd_images
        out = []
        for i in np.atleast_1d(index):
            c = int(m.ccd[i])
            out.append(f"visit {ccds.visit[c]} detector {ccds.detector[c]} measurement {int(i)} "
                       f"(x={m.x[i]:.1f}, y={m.y[i]:.1f}, star {int(self.meas_star[i])})")
        return out

    def measurement_group(self) -> tuple[np.ndarray, list[str]]:
        ccds = self.field.ccd_images
        return (self.field.measurements.ccd.copy(),
                [f"visit {v} detector {d}" for v, d in zip(ccds.visit, ccds.detector)])

    # --- public results ----------------------------------------------------------------------------
    def pixel_to_tangent(self, ccd, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of ccdImage ``ccd`` (an int, or one per pixel, shape (n,)) -> its visit tangent
        plane (deg), see :meth:`tangent_point_deg`."""
        x, y = np.atleast_1d(np.asarray(x, float)).ravel(), np.atleast_1d(np.asarray(y, float)).ravel()
        ccd = np.broadcast_to(np.asarray(ccd, np.int64), x.shape).ravel()
        xi, eta, *_ = self.mapping.evaluate(self.params, ccd, x, y, jacobian=False)
        return xi, eta

    def pixel_to_sky(self, ccd, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of ccdImage ``ccd`` (an int, or one per pixel) -> (ra, dec) in degrees with the fitted model."""
        if np.ndim(ccd) == 0:
            return tangent_to_sky(*self.pixel_to_tangent(ccd, x, y), *self.tangent_point_deg(ccd))
        xi, eta = self.pixel_to_tangent(ccd, x, y)
        centers = self.ccd_centers[np.asarray(ccd, np.int64).ravel()]
        return tangent_to_sky(xi, eta, centers[:, 0], centers[:, 1])

    def tangent_point_deg(self, ccd: int) -> tuple[float, float]:
        """(ra, dec) of the tangent point of ccdImage ``ccd``'s visit (its boresight)."""
        return float(self.ccd_centers[ccd, 0]), float(self.ccd_centers[ccd, 1])

    def pixel_order(self, ccd: int) -> int:
        """Total polynomial order in pixels of the mapping of ccdImage ``ccd``."""
        return self.mapping.pixel_order(ccd)

    def star_positions_deg(self) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) of every fitted star at the reference epoch ``t0_mjd``."""
        return tangent_to_sky(self.stars[:, 0], self.stars[:, 1], *self.center_deg)

    def star_motions_masyr(self) -> np.ndarray | None:
        """Fitted proper motions (mu_xi, mu_eta) in mas/yr, shape (n_stars, 2); None when not fitted."""
        return self.stars[:, 2:4] * MAS_PER_DEG if self.fit_motion else None

    def star_parallax_mas(self) -> np.ndarray | None:
        """Fitted parallaxes (mas), shape (n_stars,); None when not fitted."""
        return self.stars[:, 4] * MAS_PER_DEG if self.fit_parallax else None

    def residuals(self) -> dict:
        """Per-measurement residuals on the visit tangent plane (model minus star).

        Returns
        -------
        dict of ndarray, shape (n_measurements,)
            ``ccd, visit, detector, star, x, y, dx_mas, dy_mas, chi2, used, outlier, reserved``
            (see :func:`~jointcal_core.models.astrometry_rows.all_residuals`).
        """
        return all_residuals(self)
