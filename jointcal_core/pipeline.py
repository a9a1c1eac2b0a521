"""From a loaded Field to fitted models: select -> associate -> astrometry fit -> photometry fit.

:func:`prepare` does the data steps once and returns an immutable :class:`Prepared`;
:class:`JointFit` holds one :class:`~jointcal_core.fit.Fitter` per enabled fit and steps them in
jointcal's order (astrometry, then photometry) behind a single ``step()``, so the CLI, the
``JointcalTask`` API and the app drive the whole calibration the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .association import Association, associate
from .config import JointcalConfig
from .data import Field
from .exceptions import InputError
from .fit import Fitter, FitStatus, FitStep
from .selection import SelectionResult, select_sources

__all__ = ["Prepared", "prepare", "JointFit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The data side of a fit: the field, the config, what selection kept and the association."""

    field: Field
    config: JointcalConfig
    selection: SelectionResult
    association: Association


def prepare(field: Field, config: JointcalConfig, selection: SelectionResult | None = None,
            associate_func=associate) -> Prepared:
    """Select sources (unless ``selection`` is given) and associate them into fitted stars and
    reference matches (with ``associate_func``, by default :func:`~jointcal_core.association.associate`)."""
    if len(field.ccd_images) == 0:
        raise InputError("the field has no ccdImages (no exposure was read)")
    if len(field.measurements) == 0:
        raise InputError("the field has no detections; check the inputs' catalogs")
    if selection is None:
        selection = select_sources(field, config)
    n_kept = int(np.count_nonzero(selection.keep))
    if n_kept == 0:
        raise InputError(f"every detection was removed by the source selection ({selection.report_line()}); "
                         "relax minSnr or flagMask")
    association = associate_func(field, selection.keep, config)
    if association.n_stars == 0:
        raise InputError("no star is measured on two or more exposures; check that the exposures overlap "
                         f"and that associationRadius ({config.associationRadius} arcsec) exceeds the initial "
                         "WCS errors")
    return Prepared(field=field, config=config, selection=selection, association=association)


class JointFit:
    """Astrometry and photometry fitters stepped in order under one interface.

    Parameters
    ----------
    prepared : Prepared
    kinds : sequence of str, optional
        Which fits to run; default from ``config.doAstrometry`` / ``config.doPhotometry``.
    """

    def __init__(self, prepared: Prepared, kinds=None):
        self.prepared = prepared
        config = prepared.config
        if kinds is None:
            kinds = [k for k, on in (("astrometry", config.doAstrometry), ("photometry", config.doPhotometry)) if on]
        self.problems = {}
        self.associations: dict[str, Association] = {}
        self.fitters: dict[str, Fitter] = {}
        for kind in kinds:
            self.associations[kind] = _association_for(kind, prepared)
            problem = _make_problem(kind, prepared, self.associations[kind])
            self.problems[kind] = problem
            max_steps = config.maxAstrometrySteps if kind == "astrometry" else config.maxPhotometrySteps
            self.fitters[kind] = Fitter(problem, outlier_sigma=config.outlierRejectSigma,
                                        tolerance=config.convergenceTolerance, max_steps=max_steps,
                                        chi2_increase_limit=config.chi2IncreaseLimit,
                                        line_search=config.allowLineSearch)
        # jointcal logs the initial chi2 against the number of terms (nothing fitted yet)
        self.initial_chi2 = {k: (f.chi2, int(f.linearization().residual.size)) for k, f in self.fitters.items()}

    @property
    def kinds(self) -> list[str]:
        return list(self.fitters)

    @property
    def current(self) -> str | None:
        """The fit being stepped now (None when all are done)."""
        for kind, fitter in self.fitters.items():
            if not fitter.done:
                return kind
        return None

    @property
    def done(self) -> bool:
        return self.current is None

    @property
    def history(self) -> list[FitStep]:
        return [s for f in self.fitters.values() for s in f.history]

    def stage_label(self) -> str:
        kind = self.current
        if kind is None:
            return "converged"
        return f"{kind}: {self.fitters[kind].stage.name}"

    def step(self) -> FitStep:
        """One step of the current fit; after the last fit converged, repeats its last record."""
        kind = self.current
        if kind is None:
            last = list(self.fitters.values())[-1]
            return last.step()
        return self.fitters[kind].step()

    def reject_outliers(self) -> FitStep:
        """Run the current fit until its next outlier pass, and return that pass's record."""
        kind = self.current
        if kind is None:
            return self.step()
        fitter = self.fitters[kind]
        while True:
            step = fitter.step()
            if step.status in (FitStatus.OUTLIERS_REJECTED, FitStatus.CONVERGED) or fitter.done:
                return step

    def run(self, callback=None, should_stop=None) -> list[FitStep]:
        """Step every fit to convergence; ``callback(step)`` after each step."""
        steps = []
        for fitter in self.fitters.values():
            steps += fitter.run(callback=callback, should_stop=should_stop)
            if should_stop is not None and should_stop():
                break
        return steps

    def reset(self) -> None:
        for fitter in self.fitters.values():
            fitter.reset()


def _association_for(kind: str, prepared: Prepared) -> Association:
    """The photometry matches its own reference when one is given apart from the astrometric one."""
    field = prepared.field
    if kind == "photometry" and field.photometry_reference is not None \
            and field.photometry_reference is not field.reference:
        return associate(field, prepared.selection.keep, prepared.config, reference=field.photometry_reference)
    return prepared.association


def _make_problem(kind: str, prepared: Prepared, association: Association):
    if kind == "astrometry":
        from .models.astrometry import make_astrometry_problem
        return make_astrometry_problem(prepared.field, association, prepared.config)
    if kind == "photometry":
        from .models.photometry import make_photometry_problem
        reference = prepared.field.photometry_reference or prepared.field.reference
        return make_photometry_problem(prepared.field, association, prepared.config, reference=reference)
    raise ValueError(f"unknown fit kind {kind!r}")
