"""The photometric models and their least-squares problem (jointcal's four photometryModels).

Owns :class:`PhotometryProblem`, the :class:`~jointcal_core.fit.FitProblem` of the photometric
fit, and :func:`make_photometry_problem`, which picks the model from ``config.photometryModel``:

``simpleFlux``
    One calibration ``c`` (nJy per count) per ccdImage, starting at the input zero point
    (``c = 10**(-0.4 (zp_mag - 31.4))``, i.e. the PhotoCalib mean). Star parameter: fitted flux
    ``F`` (nJy). Measurement term ``(c f - F) / (c sigma_f)``.
``simpleMagnitude``
    One zero point ``z`` (AB mag of one count) per ccdImage; star parameter: fitted magnitude
    ``M``; term ``(-2.5 log10 f + z - M) / sigma_m`` with ``sigma_m = 1.0857 sigma_f / f``.
``constrainedFlux`` / ``constrainedMagnitude``
    Per chip (detector) a constant, times (flux) or plus (magnitude) a per-visit 2-D Chebyshev
    of total degree ``photometryVisitOrder`` over the focal-plane box
    (:class:`~jointcal_core.models.photometry_geometry.FocalPlane`). The chip nearest the
    focal-plane origin is held fixed (the chip/visit scale degeneracy). The input zero points
    are split into chip + visit constants to start from the input calibration.

Reference terms ``(F - F_ref) / sigma_ref`` (magnitudes: ``(M - m_ref) / sigma_mref``) use the
photometric reference in ``photometryRefBand`` (default: the band of the data), with optional
colour terms. Without any reference term the global offset is degenerate with the star
magnitudes, and more parameters are held: the first ccdImage's (simple models), or the first
visit's whole polynomial (constrained models: under translation dithers, a polynomial sky pattern
``F`` added to the star magnitudes is absorbed exactly by visit polynomials ``F(u + b_v)``, so
only an absolute reference pins the focal-plane pattern).

As jointcal, the flux error of a measurement is its instrumental error times the *current*
calibration; Gauss-Newton treats it as a constant within a step (the Jacobian ignores its
derivative), so the fit converges to the fixed point jointcal reaches (cfht_minimal: chi2
2.336915, ndof 1). Initial star fluxes are the mean calibrated flux of their measurements
(jointcal's ``normalizeFittedStars``); magnitudes are the AB magnitude of that mean.

``photometryErrorPedestal`` is a *fractional flux* error added in quadrature to every
measurement and reference flux, in all four models: in the magnitude models it becomes
``1.0857 * pedestal`` mag. jointcal adds it to the flux models as a flux fraction but to the
magnitude models as a magnitude (``hypot(sigma_m, pedestal)``), so the same value means 5 % in
flux and 50 mmag in magnitude there, and it never pads reference errors; we use one meaning.
"""

from __future__ import annotations

import numpy as np

from ..data import AB_NJY_ZP, Field, ReferenceCatalog, njy_to_mag
from ..exceptions import InputError
from ..fit.problem import FitGroup, FitProblem, Linearization, Stage
from .chebyshev import chebyshev_basis, chebyshev_terms
from .photometry_api import PhotometryOutputs
from .photometry_geometry import (MAG_PER_LN, FocalPlane, initial_zero_points, reference_mags,
                                  split_chip_visit)

__all__ = ["PhotometryProblem", "make_photometry_problem", "PHOTOMETRY_MODELS"]

PHOTOMETRY_MODELS = ("simpleFlux", "simpleMagnitude", "constrainedFlux", "constrainedMagnitude")


def _zp_to_calib(zp_mag):
    return 10.0 ** (-0.4 * (np.asarray(zp_mag, float) - AB_NJY_ZP))


class PhotometryProblem(PhotometryOutputs, FitProblem):
    """Photometric fit of one field (see the module docstring for the models).

    Measurement indices are rows of ``field.measurements``; star indices those of the
    :class:`~jointcal_core.association.Association`. Use :func:`make_photometry_problem`.
    The results API (``zp_mag``, ``calibrate_njy``, ``residuals``, ...) is
    :class:`~jointcal_core.models.photometry_api.PhotometryOutputs`.
    """

    kind = "photometry"
    residual_dim = 1

    def __init__(self, field: Field, assoc, config, model: str, reference: ReferenceCatalog | None = None):
        if model not in PHOTOMETRY_MODELS:
            raise InputError(f"unknown photometryModel '{model}'; use one of {', '.join(PHOTOMETRY_MODELS)}")
        self.field, self.assoc, self.config, self.model = field, assoc, config, model
        self.is_flux = model.endswith("Flux")
        self.is_constrained = model.startswith("constrained")
        m = field.measurements
        self._n_meas, self._n_stars = len(m), int(assoc.n_stars)
        star = np.asarray(assoc.star, np.int64)
        reserved = np.asarray(assoc.star_reserved, bool)
        assoc_rows = np.flatnonzero(star >= 0)
        self._reserved_rows = assoc_rows[reserved[star[assoc_rows]]]
        self._meas = assoc_rows[~reserved[star[assoc_rows]]]           # the fitted measurements
        self._ccd, self._star_of = m.ccd[self._meas], star[self._meas]
        self._f = m.flux[self._meas]
        ped = float(config.photometryErrorPedestal)
        self._e = np.hypot(m.flux_err[self._meas], ped * self._f)       # instrumental flux error
        if np.any(~(self._f > 0)) or np.any(~(self._e > 0)):
            raise InputError("photometric fit: associated measurements need positive flux and flux error; "
                             "run the source selection (minSnr > 0) first")
        self._inst_mag = -2.5 * np.log10(self._f)
        self._row_of_meas = np.full(self._n_meas, -1, np.int64)
        self._row_of_meas[self._meas] = np.arange(self._meas.size)
        self._setup_reference(field, assoc, config, reference, star, reserved, ped)
        self._setup_model(field, config)
        self._init_stars()
        self._active = np.ones(self._meas.size, bool)

    # --- construction -----------------------------------------------------------------------
    def _setup_reference(self, field, assoc, config, reference, star, reserved, ped):
        ref = reference
        if ref is None:
            ref = field.photometry_reference if field.photometry_reference is not None else field.reference
        band = config.photometryRefBand or field.band
        self._ref_star = np.zeros(0, np.int64)
        self._ref_mag = self._ref_mag_err = self._ref_flux = self._ref_flux_err = np.zeros(0)
        self._ref_active = np.zeros(0, bool)
        self.band = band
        if ref is None or len(ref) == 0:
            return
        if not band and len(ref.flux_njy) == 1:
            band = self.band = next(iter(ref.flux_njy))
        star_ref = np.asarray(assoc.star_ref, np.int64)
        if star_ref.size and star_ref.max() >= len(ref):
            raise InputError("the association's reference rows do not index the photometric reference; "
                             "associate against the same catalog", path=ref.name or None)
        mag, mag_err = reference_mags(ref, band, config)
        # reference terms only for fitted (not reserved) stars with a measurement in the fit
        has_meas = np.bincount(self._star_of, minlength=self._n_stars) > 0
        cand = np.flatnonzero((star_ref >= 0) & ~reserved & has_meas)
        rows = star_ref[cand]
        ok = np.isfinite(mag[rows])
        self._ref_star, rows = cand[ok], rows[ok]
        frac = np.hypot(mag_err[rows] / MAG_PER_LN, ped)                 # fractional flux error
        self._ref_mag, self._ref_mag_err = mag[rows], MAG_PER_LN * frac
        self._ref_flux = 10 ** (-0.4 * (self._ref_mag - AB_NJY_ZP))
        self._ref_flux_err = self._ref_flux * frac
        self._ref_active = np.ones(self._ref_star.size, bool)

    def _setup_model(self, field, config):
        ccds = field.ccd_images
        n_ccd = len(ccds)
        ref_mag_of_meas = np.full(self._meas.size, np.nan)
        lookup = np.full(self._n_stars, np.nan)
        lookup[self._ref_star] = self._ref_mag
        ref_mag_of_meas[:] = lookup[self._star_of]
        zp = initial_zero_points(field, self._inst_mag, self._ccd, ref_mag_of_meas)
        self.has_reference = self._ref_star.size > 0
        if not self.is_constrained:
            self._n_chip = n_ccd
            self._params = _zp_to_calib(zp) if self.is_flux else zp.copy()
            self._fixed = np.zeros(n_ccd, bool)
            if not self.has_reference:
                self._fixed[0] = True
            self._gauge_first_visit = False
            return
        self.focal = FocalPlane(field)
        self.visit_ids, self._visit_of_ccd = np.unique(ccds.visit, return_inverse=True)
        self.chip_ids, self._chip_of_ccd = np.unique(ccds.detector, return_inverse=True)
        self._n_chip, n_visit = self.chip_ids.size, self.visit_ids.size
        self.order = int(config.photometryVisitOrder)
        self.terms = chebyshev_terms(self.order)
        self._n_terms = self.terms.shape[0]
        radius = np.full(self._n_chip, np.inf)
        np.minimum.at(radius, self._chip_of_ccd, self.focal.ccd_center_radius)
        self.fixed_chip = int(np.argmin(radius))
        chip_zp, visit_zp = split_chip_visit(zp, self._chip_of_ccd, self._visit_of_ccd, self._n_chip, n_visit)
        coeffs = np.zeros((n_visit, self._n_terms))
        if self.is_flux:
            chip, coeffs[:, 0] = _zp_to_calib(chip_zp), 10.0 ** (-0.4 * visit_zp)
        else:
            chip, coeffs[:, 0] = chip_zp, visit_zp
        self._params = np.concatenate([chip, coeffs.ravel()])
        self._fixed = np.zeros(self._params.size, bool)
        self._fixed[self.fixed_chip] = True
        if not self.has_reference:
            # Without an absolute reference, under translation dithers any polynomial sky pattern
            # F of the visit order is invisible: star mags + F(s), visit polynomials + F(u + b_v).
            # Hold the first visit's whole polynomial at its starting value (also fixes the offset).
            self._fixed[self._n_chip:self._n_chip + self._n_terms] = True
        u, v = self.focal.to_focal(self._ccd, field.measurements.x[self._meas], field.measurements.y[self._meas])
        # the basis is stored with the rows grouped by visit: a visit's polynomial is then one
        # product over a contiguous slice (no coefficient row gathered per measurement: 0.5 GB
        # at 200 visits), and _visit_at maps a row to its place
        visit_of_row = self._visit_of_ccd[self._ccd]
        by_visit = np.argsort(visit_of_row, kind="stable")
        self._visit_bounds = np.searchsorted(visit_of_row[by_visit], np.arange(n_visit + 1))
        self._visit_at = np.empty_like(by_visit)
        self._visit_at[by_visit] = np.arange(by_visit.size)
        self._basis_by_visit = chebyshev_basis(u[by_visit], v[by_visit], self.order, self.focal.box)

    def _init_stars(self):
        calibrated = self._f * self._calib(np.arange(self._meas.size))
        total = np.bincount(self._star_of, weights=calibrated, minlength=self._n_stars)
        count = np.bincount(self._star_of, minlength=self._n_stars)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / count, np.nan)
        self._stars = (mean if self.is_flux else njy_to_mag(mean))[:, None].copy()

    # --- the model ------------------------------------------------------------------------------
    def _visit_poly(self) -> np.ndarray:
        """The visit polynomial (Chebyshev sum) of every fitted measurement row, shape (n_rows,)."""
        coeffs = self._params[self._n_chip:].reshape(-1, self._n_terms)
        by_visit = np.empty(self._visit_at.size)
        bounds = self._visit_bounds
        for v in range(coeffs.shape[0]):
            a, b = bounds[v], bounds[v + 1]
            np.matmul(self._basis_by_visit[a:b], coeffs[v], out=by_visit[a:b])
        return by_visit[self._visit_at]

    def _model_parts(self, rows: np.ndarray):
        """Model value at used rows (calibration nJy/count, or zp mag), with the constrained models'
        chip term and visit polynomial there (None for the simple models)."""
        ccd = self._ccd[rows]
        if not self.is_constrained:
            return self._params[ccd], None, None
        chip = self._params[self._chip_of_ccd[ccd]]
        poly = self._visit_poly()[rows]
        return (chip * poly if self.is_flux else chip + poly), chip, poly

    def _calib(self, rows: np.ndarray) -> np.ndarray:
        """Calibration (nJy per count) at used rows."""
        value = self._model_parts(rows)[0]
        return value if self.is_flux else _zp_to_calib(value)

    def _jacobian(self, rows: np.ndarray, scale: np.ndarray, chip, poly, n_extra: int = 0):
        """Columns and derivatives of the model value at ``rows`` times ``scale`` (per row),
        followed by ``n_extra`` zero rows (the reference terms): (cols, vals), shape
        (rows.size + n_extra, 1 + n_terms) (constrained; the chip term first) or (.., 1)."""
        n, ccd = rows.size, self._ccd[rows]
        k = 1 + self._n_terms if self.is_constrained else 1
        # at 200 visits these are 1.8M x 37 arrays, built at every evaluation: each is written
        # once (no concatenation), the reference rows zeroed apart
        cols, vals = np.empty((n + n_extra, k), np.int64), np.empty((n + n_extra, k))
        cols[n:], vals[n:] = 0, 0.0
        if not self.is_constrained:
            cols[:n, 0], vals[:n, 0] = ccd, scale
            return cols, vals
        visit = self._visit_of_ccd[ccd]
        cols[:n, 0] = self._chip_of_ccd[ccd]
        np.add((self._n_chip + visit * self._n_terms)[:, None], np.arange(self._n_terms), out=cols[:n, 1:])
        basis = self._basis_by_visit[self._visit_at[rows]]
        if self.is_flux:        # d(chip poly) = poly d(chip) + chip d(poly)
            vals[:n, 0] = poly * scale
            np.multiply(basis, (chip * scale)[:, None], out=vals[:n, 1:])
        else:                   # d(chip + poly)
            vals[:n, 0] = scale
            np.multiply(basis, scale[:, None], out=vals[:n, 1:])
        return cols, vals

    def _measurement_rows(self, rows: np.ndarray, jacobian: bool, n_extra: int = 0):
        """Residuals, (columns, derivatives with ``n_extra`` zero rows appended; None without
        ``jacobian``) and star derivatives of the measurement terms at ``rows``."""
        value, chip, poly = self._model_parts(rows)
        star = self._star_of[rows]
        if self.is_flux:
            sigma = value * self._e[rows]
            resid = (value * self._f[rows] - self._stars[star, 0]) / sigma
            scale = self._f[rows] / sigma
        else:
            sigma = MAG_PER_LN * self._e[rows] / self._f[rows]
            resid = (self._inst_mag[rows] + value - self._stars[star, 0]) / sigma
            scale = 1.0 / sigma
        jac = self._jacobian(rows, scale, chip, poly, n_extra) if jacobian else (None, None)
        return resid, jac, -1.0 / sigma

    # --- FitProblem contract --------------------------------------------------------------------
    @property
    def n_model_params(self) -> int:
        return int(self._params.size)

    @property
    def n_stars(self) -> int:
        return self._n_stars

    @property
    def star_dim(self) -> int:
        return 1

    @property
    def n_measurements(self) -> int:
        return self._n_meas

    def stages(self) -> list[Stage]:
        tail = [Stage("Fluxes", FitGroup.STARS), Stage("Model Fluxes", FitGroup.MODEL | FitGroup.STARS)]
        if self.is_constrained:
            return [Stage("ModelVisit", FitGroup.MODEL_VISIT), Stage("Model", FitGroup.MODEL)] + tail
        return [Stage("Model", FitGroup.MODEL_CHIP)] + tail

    def model_param_mask(self, groups: FitGroup) -> np.ndarray:
        mask = np.zeros(self._params.size, bool)
        if self.is_constrained:
            mask[:self._n_chip] = bool(groups & FitGroup.MODEL_CHIP)
            mask[self._n_chip:] = bool(groups & FitGroup.MODEL_VISIT)
        else:
            mask[:] = bool(groups & FitGroup.MODEL_CHIP)
        return mask & ~self._fixed

    def linearize(self, jacobian: bool = True) -> Linearization:
        rows = np.flatnonzero(self._active)
        refs = np.flatnonzero(self._ref_active)
        r_m, (cols, vals), star_m = self._measurement_rows(rows, jacobian, n_extra=refs.size)
        rs = self._ref_star[refs]
        if self.is_flux:
            sig = self._ref_flux_err[refs]
            r_r = (self._stars[rs, 0] - self._ref_flux[refs]) / sig
        else:
            sig = self._ref_mag_err[refs]
            r_r = (self._stars[rs, 0] - self._ref_mag[refs]) / sig
        n_ref = refs.size
        return Linearization(
            residual=np.concatenate([r_m, r_r]), model_cols=cols, model_vals=vals,
            star=np.concatenate([self._star_of[rows], rs]),
            star_vals=np.concatenate([star_m, 1.0 / sig])[:, None],
            meas=np.concatenate([self._meas[rows], np.full(n_ref, -1, np.int64)]),
            ref_star=np.concatenate([np.full(rows.size, -1, np.int64), rs]),
            **(self._slots(rows, n_ref) if jacobian else {}))

    def _slots(self, rows: np.ndarray, n_ref: int) -> dict:
        """Parameter blocks of each row for the solver: (chip, visit) or the ccdImage."""
        ccd = self._ccd[rows]
        if self.is_constrained:
            blocks = np.column_stack([self._chip_of_ccd[ccd], self._visit_of_ccd[ccd]])
            ranges = ((0, 1), (1, 1 + self._n_terms))
        else:
            blocks, ranges = ccd[:, None], ((0, 1),)
        blocks = np.vstack([blocks, np.full((n_ref, blocks.shape[1]), -1, np.int64)])
        return {"slot_ranges": ranges, "slot_block": blocks}

    def offset(self, delta_model: np.ndarray, delta_stars: np.ndarray) -> None:
        self._params = self._params + delta_model
        self._stars = self._stars + delta_stars

    def get_state(self) -> dict:
        return dict(params=self._params.copy(), stars=self._stars.copy(), active=self._active.copy(),
                    ref_active=self._ref_active.copy())

    def set_state(self, state: dict) -> None:
        self._params, self._stars = state["params"].copy(), state["stars"].copy()
        self._active, self._ref_active = state["active"].copy(), state["ref_active"].copy()

    def deactivate(self, measurements: np.ndarray, reference_stars: np.ndarray) -> None:
        rows = self._row_of_meas[np.asarray(measurements, np.int64)]
        self._active[rows[rows >= 0]] = False
        self._ref_active[np.isin(self._ref_star, np.asarray(reference_stars, np.int64))] = False

    def measurement_star(self) -> np.ndarray:
        out = np.full(self._n_meas, -1, np.int64)
        out[self._meas[self._active]] = self._star_of[self._active]
        return out

    def metrics(self) -> dict:
        """jointcal's counts for this fit: prepared_refStars (reference terms), prepared_fittedStars
        (stars with a measurement in the fit), prepared_ccdImages (ccdImages with one)."""
        return {"prepared_refStars": int(np.count_nonzero(self._ref_active)),
                "prepared_fittedStars": int(np.unique(self._star_of[self._active]).size),
                "prepared_ccdImages": int(np.unique(self._ccd[self._active]).size)}

    # --- descriptions ---------------------------------------------------------------------------
    def describe_model_param(self, index: int) -> str:
        ccds = self.field.ccd_images
        if not self.is_constrained:
            return f"zero point of visit {int(ccds.visit[index])} detector {int(ccds.detector[index])}"
        if index < self._n_chip:
            return f"chip term of detector {int(self.chip_ids[index])}"
        v, t = divmod(index - self._n_chip, self._n_terms)
        i, j = self.terms[t]
        return f"visit {int(self.visit_ids[v])} Chebyshev term T{i}(u)T{j}(v)"

    def describe_measurement(self, index: np.ndarray) -> list[str]:
        m, ccds = self.field.measurements, self.field.ccd_images
        out = []
        for i in np.atleast_1d(index):
            c = int(m.ccd[i])
            out.append(f"visit {int(ccds.visit[c])} detector {int(ccds.detector[c])} source "
                       f"{int(m.source_id[i])} at ({m.x[i]:.1f}, {m.y[i]:.1f})")
        return out

    def measurement_group(self) -> tuple[np.ndarray, list[str]]:
        ccds = self.field.ccd_images
        labels = [f"visit {int(v)} detector {int(d)}" for v, d in zip(ccds.visit, ccds.detector)]
        return self.field.measurements.ccd.astype(np.int64), labels



def make_photometry_problem(field: Field, assoc, config, reference: ReferenceCatalog | None = None
                            ) -> PhotometryProblem:
    """Build the photometric problem of ``config.photometryModel``.

    Parameters
    ----------
    field : Field
    assoc : Association
        From :func:`jointcal_core.association.associate`; its ``star_ref`` must index the
        photometric reference.
    config : JointcalConfig
    reference : ReferenceCatalog, optional
        Default ``field.photometry_reference``, else ``field.reference``.
    """
    return PhotometryProblem(field, assoc, config, config.photometryModel, reference=reference)
