"""What :meth:`JointcalTask.run` returns: fitted WCS and photometric calibration per ccdImage,
metrics and the fit history.

The WCS are TAN-SIP fits (:func:`~jointcal_core.io.wcs_fits.fit_tan_sip`) to the astrometric
model's ``pixel_to_sky``, computed the first time each one is asked for; the photometric
calibration is the model's zero point, evaluated at the CCD centre and as a callable.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cached_property

import numpy as np

from .pipeline import JointFit, Prepared

__all__ = ["CcdPhotometry", "JointcalResult"]


@dataclass(frozen=True)
class CcdPhotometry:
    """Fitted photometric calibration of one ccdImage.

    Attributes
    ----------
    visit, detector : int
    zp_mag_center : float
        AB magnitude of one count at the CCD centre.
    zp_mag : callable
        ``zp_mag(x, y) -> ndarray (n,)``: the zero point (AB mag of one count) at 0-based pixels.
    """

    visit: int
    detector: int
    zp_mag_center: float
    zp_mag: Callable

    def calibrate_njy(self, x, y, inst_flux) -> np.ndarray:
        """Calibrated flux (nJy) of instrumental fluxes at pixels (x, y); arrays of shape (n,)."""
        from .data import AB_NJY_ZP

        return np.asarray(inst_flux, float) * 10.0 ** (-0.4 * (np.asarray(self.zp_mag(x, y)) - AB_NJY_ZP))

    def magnitude(self, x, y, inst_flux) -> np.ndarray:
        """AB magnitude of instrumental fluxes at pixels (x, y)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self.zp_mag(x, y)) - 2.5 * np.log10(np.asarray(inst_flux, float))


class _LazyCcdMap(Mapping):
    """Read-only mapping (visit, detector) -> value, each value built on first access and cached."""

    def __init__(self, keys, build, missing: str = ""):
        self._rows = {k: i for k, i in keys}
        self._build = build
        self._cache: dict = {}
        self._missing = missing

    def __getitem__(self, key):
        key = (int(key[0]), int(key[1]))
        if key not in self._rows:
            raise KeyError(self._missing or f"no fitted ccdImage visit {key[0]} detector {key[1]}")
        if key not in self._cache:
            self._cache[key] = self._build(self._rows[key])
        return self._cache[key]

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass
class JointcalResult:
    """The outcome of one fit.

    Attributes
    ----------
    prepared : Prepared
        The field, config, selection and association.
    joint : JointFit
        The fitters (and their problems) after the run.
    metadata : dict
        The task's :meth:`~JointcalTask.full_metadata` at the end of the run.
    """

    prepared: Prepared
    joint: JointFit
    metadata: dict = dc_field(default_factory=dict)

    @property
    def config(self):
        return self.prepared.config

    @property
    def history(self):
        """Every :class:`~jointcal_core.fit.FitStep` of every fit, in order."""
        return self.joint.history

    @cached_property
    def metrics(self) -> dict:
        """jointcal's metrics plus rms figures (:func:`~jointcal_core.metrics.compute_metrics`)."""
        from .metrics import compute_metrics

        return compute_metrics(self.joint)

    @cached_property
    def fitted_ccds(self) -> list[tuple[int, int]]:
        """(visit, detector) of every ccdImage that took part in a fit."""
        from .io.export_models import fitted_ccds

        ccd = self.prepared.field.ccd_images
        return [(int(ccd.visit[i]), int(ccd.detector[i])) for i in fitted_ccds(self.joint)]

    def _keys(self):
        ccd = self.prepared.field.ccd_images
        rows = {(int(v), int(d)): i for i, (v, d) in enumerate(zip(ccd.visit, ccd.detector))}
        return [(k, rows[k]) for k in self.fitted_ccds]

    @cached_property
    def wcs(self) -> Mapping:
        """(visit, detector) -> fitted ``astropy.wcs.WCS`` (TAN-SIP), computed on first access.

        Empty (with a KeyError explaining why) when the astrometry was not fitted.
        """
        problem = self.joint.problems.get("astrometry")
        if problem is None:
            return _LazyCcdMap([], None, "the astrometry was not fitted (doAstrometry=False)")
        bbox = self.prepared.field.ccd_images.bbox

        def build(row):
            from .exceptions import JointcalWarning
            from .io.wcs_fits import fit_tan_sip

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JointcalWarning)
                wcs, report = fit_tan_sip(
                    lambda x, y: problem.pixel_to_sky(row, x, y), bbox[row], problem.tangent_point_deg(row)
                )
            self.wcs_fidelity[row] = report
            return wcs

        return _LazyCcdMap(self._keys(), build)

    @cached_property
    def wcs_fidelity(self) -> dict:
        """ccdImage row -> :class:`~jointcal_core.io.wcs_fits.FidelityReport` of the WCS built so far."""
        return {}

    @cached_property
    def photometry(self) -> Mapping:
        """(visit, detector) -> :class:`CcdPhotometry`; empty when the photometry was not fitted."""
        problem = self.joint.problems.get("photometry")
        if problem is None:
            return _LazyCcdMap([], None, "the photometry was not fitted (doPhotometry=False)")
        ccd = self.prepared.field.ccd_images
        centers = ccd.centers_pix()

        def build(row):
            zp0 = float(
                np.ravel(problem.zp_mag(row, centers[row : row + 1, 0], centers[row : row + 1, 1]))[0]
            )
            return CcdPhotometry(
                int(ccd.visit[row]), int(ccd.detector[row]), zp0, lambda x, y: problem.zp_mag(row, x, y)
            )

        return _LazyCcdMap(self._keys(), build)
