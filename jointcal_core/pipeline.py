"""From a loaded Field to fitted models: select -> associate -> astrometry fit -> photometry fit.

:func:`prepare` does the data steps once and returns an immutable :class:`Prepared`;
:class:`JointFit` holds one :class:`~jointcal_core.fit.Fitter` per enabled fit and steps them in
jointcal's order (astrometry, then photometry) behind a single ``step()``, so the CLI, the
``JointcalTask`` API and the app drive the whole calibration the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix, csgraph

from .association import Association, associate
from .config import JointcalConfig
from .data import Field
from .exceptions import InputError, JointcalWarning, ModelConstraintError
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
    _check_reference(field, association, config)
    lost, problems = _unconstrained_ccds(field, selection, association, config)
    if problems:
        if not config.excludeUnconstrained:
            message, visit, detector = problems[0]
            raise ModelConstraintError(message, visit=visit, detector=detector)
        for message, visit, detector in problems:
            where = ", ".join(f"{k} {v}" for k, v in (("visit", visit), ("detector", detector)) if v is not None)
            warnings.warn(f"{where}: excluded from the fit: {message.rsplit('; ', 1)[0]}", JointcalWarning, stacklevel=2)
        if np.all(lost):
            raise ModelConstraintError("every ccdImage was excluded as unconstrained")
        sub, meas_keep = _take_ccds(field, ~lost)
        return prepare(sub, config, _take_selection(selection, ~lost, meas_keep), associate_func)
    return Prepared(field=field, config=config, selection=selection, association=association)


def _check_reference(field: Field, association: Association, config: JointcalConfig) -> None:
    """A reference catalog was given but no fitted star matches it: wrong field or wrong units."""
    ref = field.reference if field.reference is not None else field.photometry_reference
    if ref is None or association.matched_fittedStars > 0:
        return
    if association.collected_refStars == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            center = (float(np.nanmedian(ref.ra_deg)), float(np.nanmedian(ref.dec_deg)))
        raise InputError(f"none of its {len(ref)} stars lies on the exposures (reference around ra, dec = "
                         f"{center[0]:.4f}, {center[1]:.4f} deg; exposures around {association.field_center_deg[0]:.4f}, "
                         f"{association.field_center_deg[1]:.4f} deg); give the reference of this field, with "
                         "ra/dec in degrees", path=ref.name)
    raise ModelConstraintError(f"{association.collected_refStars} reference stars lie on the exposures but none is "
                               f"within matchCut ({config.matchCut} arcsec) of a fitted star; check the initial WCS "
                               "or raise matchCut", path=ref.name)


def _unconstrained_ccds(field: Field, selection: SelectionResult, association: Association,
                        config: JointcalConfig):
    """ccdImages no fitted star constrains, found before any model is built: a visit none of whose
    detections is associated; with a per-ccdImage model (simple astrometry, simpleFlux /
    simpleMagnitude photometry) a ccdImage none of whose detections is associated, or with the
    constrained models a detector that has none in any visit; and visits that share no fitted star
    with the visits a reference star (or, without a reference, the largest group of visits) ties
    down. Returns (ccd mask, [(message, visit, detector), ...])."""
    from .selection import CUT_NAMES
    ccds = field.ccd_images
    problems = []
    empty = association.ccd_n_associated == 0
    per_ccd_model = ((config.doAstrometry and config.astrometryModel == "simple")
                     or (config.doPhotometry and config.photometryModel.startswith("simple")))
    if not per_ccd_model:   # the chip terms are shared by the visits: a chip needs stars in one visit
        det_n = np.bincount(np.searchsorted(np.unique(ccds.detector), ccds.detector), association.ccd_n_associated)
        empty &= det_n[np.searchsorted(np.unique(ccds.detector), ccds.detector)] == 0
        vrow = np.searchsorted(ccds.visits, ccds.visit)
        empty |= np.bincount(vrow, association.ccd_n_associated)[vrow] == 0
    lost = empty.copy()
    for v in ccds.visits:
        rows = np.flatnonzero(ccds.visit == v)
        bad = rows[empty[rows]]
        if bad.size == rows.size and (rows.size > 1 or not per_ccd_model):
            n_in = int(selection.n_input_per_ccd[rows].sum())
            n_kept = int(selection.n_kept_per_ccd[rows].sum())
            problems.append((f"none of its {rows.size} ccdImages has a measurement of a fitted star ({n_in} detections, "
                             f"{n_kept} selected; it shares no star with the other exposures); remove the visit or set "
                             "excludeUnconstrained to drop it", int(v), None))
            continue
        for c in bad:
            cuts = ", ".join(f"{name} {n}" for name, n in zip(CUT_NAMES, selection.removed_per_ccd[:, c]) if n)
            problems.append((f"no measurement of a fitted star ({selection.n_input_per_ccd[c]} detections, "
                             f"{selection.n_kept_per_ccd[c]} selected" + (f"; removed by {cuts}" if cuts else "")
                             + "); remove it or set excludeUnconstrained to drop it", int(v), int(ccds.detector[c])))
    # visit groups linked by shared fitted stars
    meas = np.flatnonzero(association.star >= 0)
    visits = ccds.visits
    vrow = np.searchsorted(visits, ccds.visit[field.measurements.ccd[meas]])
    n_v, n_s = visits.size, association.n_stars
    graph = coo_matrix((np.ones(meas.size), (vrow, n_v + association.star[meas])), shape=(n_v + n_s,) * 2)
    n_comp, label = csgraph.connected_components(graph, directed=False)
    used = np.bincount(vrow, minlength=n_v) > 0
    if n_comp > 1 and used.sum() > 1:
        star_label = label[n_v:]
        if field.reference is not None or field.photometry_reference is not None:
            anchored = np.unique(star_label[association.star_ref >= 0])
        else:
            anchored = [np.bincount(label[:n_v][used]).argmax()]
        cut = used & ~np.isin(label[:n_v], anchored)
        if np.any(cut):
            names = ", ".join(str(v) for v in visits[cut][:10])
            problems.append((f"visits {names} share no fitted star with the other visits nor a reference star "
                             "(the overlap graph is disconnected); fit them separately (--split-fields) or set "
                             "excludeUnconstrained to drop them",
                             None, None))
            lost |= np.isin(ccds.visit, visits[cut])
    return lost, problems


def _take_ccds(field: Field, keep_ccd: np.ndarray):
    """``field`` without the ccdImages where ``keep_ccd`` is False (measurements re-indexed)."""
    new_index = np.cumsum(keep_ccd) - 1
    meas_keep = keep_ccd[field.measurements.ccd]
    meas = field.measurements.take(meas_keep)
    meas = dataclasses.replace(meas, ccd=new_index[meas.ccd])
    return dataclasses.replace(field, ccd_images=field.ccd_images.take(keep_ccd), measurements=meas), meas_keep


def _take_selection(sel: SelectionResult, keep_ccd: np.ndarray, meas_keep: np.ndarray) -> SelectionResult:
    per_ccd = sel.removed_per_ccd[:, keep_ccd]
    return SelectionResult(keep=sel.keep[meas_keep], removed=dict(zip(sel.removed, (int(n) for n in per_ccd.sum(1)))),
                           removed_per_ccd=per_ccd, n_input_per_ccd=sel.n_input_per_ccd[keep_ccd],
                           n_kept_per_ccd=sel.n_kept_per_ccd[keep_ccd])


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
