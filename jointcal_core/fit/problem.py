"""The contract between a model (astrometry or photometry) and the shared Fitter.

A :class:`FitProblem` owns its parameters, its residuals and their derivatives; the
:class:`~jointcal_core.fit.fitter.Fitter` owns the loop (stages, steps, outliers, rollback).
The fitter never looks inside a model: it only sees a :class:`Linearization`, i.e. whitened
residual rows and their sparse derivatives, split into the model part (few columns per row,
given as index/value pairs) and the star part (one star per row, a small dense block).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["FitGroup", "Stage", "Linearization", "FitProblem"]


class FitGroup(enum.Flag):
    """Which parameters a stage fits (jointcal's ``whatToFit``, as flags instead of a parsed string)."""

    NONE = 0
    #: per-visit part of a model (constrained astrometry 'DistortionsVisit', photometry 'ModelVisit')
    MODEL_VISIT = enum.auto()
    #: per-chip part (constrained models) or the per-ccdImage model (simple models)
    MODEL_CHIP = enum.auto()
    #: fitted-star positions (astrometry 'Positions') or fluxes (photometry 'Fluxes')
    STARS = enum.auto()
    #: fitted-star proper motions and parallaxes (astrometry only)
    MOTIONS = enum.auto()

    MODEL = MODEL_VISIT | MODEL_CHIP


@dataclass(frozen=True)
class Stage:
    """One stage of a staged fit: a jointcal name and the parameters it frees."""

    name: str
    groups: FitGroup


@dataclass(frozen=True)
class Linearization:
    """Whitened residuals and derivatives at the current parameters.

    ``chi2 = sum(residual**2)``; minimising ``|residual + J delta|^2`` gives the step.
    Rows are the active (non-outlier) measurement terms (``residual_dim`` rows each) and the
    reference terms (one or more rows per matched star).

    Attributes
    ----------
    residual : ndarray, shape (n_rows,)
        Residual divided by its error (whitened).
    model_cols : ndarray of int (int32 or int64), shape (n_rows, k)
        Columns (model parameter indices) each row depends on; unused slots have value 0.
    model_vals : ndarray, shape (n_rows, k)
        d residual / d model parameter, whitened.
    star : ndarray of int64, shape (n_rows,)
        The fitted star each row depends on (-1: none).
    star_vals : ndarray, shape (n_rows, s)
        d residual / d star parameters (s = FitProblem.star_dim), whitened.
    meas : ndarray of int64, shape (n_rows,)
        The measurement each row belongs to, -1 for reference rows.
    ref_star : ndarray of int64, shape (n_rows,)
        For reference rows, the fitted star whose reference term it is; -1 for measurement rows.
    slot_ranges : tuple of (int, int), optional
        Column ranges of ``model_cols`` that form parameter *slots* (e.g. ((0, 6), (6, 48)) for a
        chip part and a visit part). With ``slot_block`` it lets the solver assemble the normal
        equations by dense block products (fit/normal.py); without, it finds blocks itself.
    slot_block : ndarray of int64, shape (n_rows, n_slots), optional
        Block id of each row in each slot (e.g. chip index, visit index; -1: none). All rows with
        the same block id in a slot must have the same ``model_cols`` in that slot's range.
    dropped : ndarray of bool, shape (n_rows,), optional
        Rows of terms rejected since the arrays were built (:meth:`drop_rows`): their residual is
        zero and they count in no sum, but they stay in the derivative arrays until
        :meth:`compacted` removes them.
    """

    residual: np.ndarray
    model_cols: np.ndarray | None = None
    model_vals: np.ndarray | None = None
    star: np.ndarray | None = None
    star_vals: np.ndarray | None = None
    meas: np.ndarray | None = None
    ref_star: np.ndarray | None = None
    slot_ranges: tuple | None = None
    slot_block: np.ndarray | None = None
    dropped: np.ndarray | None = None

    @property
    def chi2(self) -> float:
        # einsum, not np.dot: a multithreaded BLAS dot was measured at 13 ms (not 0.1 ms) for 150k
        # rows on a busy 2-core machine
        return float(np.einsum("i,i->", self.residual, self.residual))

    def without_rows(self, removed: np.ndarray) -> "Linearization":
        """The same linearisation without the rows ``removed`` (bool mask, shape (n_rows,)).

        Every row depends only on its own measurement or reference term, so this equals a new
        linearisation after deactivating those terms, row for row, without evaluating the models.
        """
        keep = ~np.asarray(removed, bool)

        def take(a):
            return None if a is None else a[keep]

        dropped = take(self.dropped)
        return Linearization(residual=self.residual[keep], model_cols=take(self.model_cols),
                             model_vals=take(self.model_vals), star=take(self.star), star_vals=take(self.star_vals),
                             meas=take(self.meas), ref_star=take(self.ref_star), slot_ranges=self.slot_ranges,
                             slot_block=take(self.slot_block),
                             dropped=dropped if dropped is not None and dropped.any() else None)

    def drop_rows(self, removed: np.ndarray) -> "Linearization":
        """The rows ``removed`` (bool mask, shape (n_rows,)) rejected without copying the arrays.

        Only the residual is copied (with zeros at the dropped rows); the derivatives are shared
        and the rows stay in place, marked in ``dropped``. An outlier pass that rejects a handful
        of terms thus costs no copy of the Jacobian (1-2 GB at 200 visits); :meth:`compacted`
        removes the rows before the next solve.
        """
        removed = np.asarray(removed, bool)
        dropped = removed if self.dropped is None else (self.dropped | removed)
        residual = np.where(removed, 0.0, self.residual)
        return dataclasses.replace(self, residual=residual, dropped=dropped)

    def compacted(self) -> "Linearization":
        """This linearisation without its dropped rows (itself when there are none)."""
        return self if self.dropped is None else self.without_rows(self.dropped)

    @property
    def live(self) -> np.ndarray | slice:
        """Index of the rows not dropped (a full slice when none are)."""
        return slice(None) if self.dropped is None else ~self.dropped

    @property
    def n_live_rows(self) -> int:
        return self.residual.size - (0 if self.dropped is None else int(np.count_nonzero(self.dropped)))

    def chi2_per_measurement(self, n_meas: int) -> np.ndarray:
        """chi2 of each measurement (0 for inactive ones), shape (n_meas,)."""
        rows = self.meas >= 0
        return np.bincount(self.meas[rows], weights=self.residual[rows] ** 2, minlength=n_meas)

    def chi2_per_reference(self, n_stars: int) -> np.ndarray:
        """chi2 of the reference term of each fitted star (0 when none), shape (n_stars,)."""
        rows = self.ref_star >= 0
        return np.bincount(self.ref_star[rows], weights=self.residual[rows] ** 2, minlength=n_stars)


class FitProblem(abc.ABC):
    """A least-squares problem the Fitter can drive.

    Subclasses hold the model parameters (a flat vector of ``n_model_params``), the star
    parameters (``n_stars x star_dim``) and which measurement and reference terms are active.
    """

    #: 'astrometry' or 'photometry'
    kind: str = ""
    #: rows per measurement term
    residual_dim: int = 1

    # --- sizes ----------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def n_model_params(self) -> int: ...

    @property
    @abc.abstractmethod
    def n_stars(self) -> int: ...

    @property
    @abc.abstractmethod
    def star_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def n_measurements(self) -> int: ...

    # --- stages and parameters ----------------------------------------------------------------
    @abc.abstractmethod
    def stages(self) -> list[Stage]:
        """The stages in the order jointcal runs them; the last one frees everything fitted."""

    @abc.abstractmethod
    def model_param_mask(self, groups: FitGroup) -> np.ndarray:
        """Boolean mask (n_model_params,) of the model parameters free for ``groups``
        (parameters held fixed to remove degeneracies are never free)."""

    def star_param_mask(self, groups: FitGroup) -> np.ndarray:
        """Boolean mask (star_dim,) of the star parameters free for ``groups``."""
        return np.full(self.star_dim, bool(groups & FitGroup.STARS))

    def describe_model_param(self, index: int) -> str:
        """Human description of a model parameter (for errors): e.g. 'visit 12 detector 3'."""
        return f"model parameter {index}"

    def describe_measurement(self, index: np.ndarray) -> list[str]:
        """Human description of measurements (for divergence reports)."""
        return [f"measurement {i}" for i in np.atleast_1d(index)]

    def measurement_group(self) -> tuple[np.ndarray, list[str]]:
        """Group id (n_measurements,) and labels for chi2 breakdowns (e.g. per visit/CCD)."""
        return np.zeros(self.n_measurements, dtype=np.int64), ["all"]

    # --- evaluation ------------------------------------------------------------------------------
    @abc.abstractmethod
    def linearize(self, jacobian: bool = True) -> Linearization:
        """Whitened residuals (and derivatives when ``jacobian``) of all active terms."""

    @abc.abstractmethod
    def offset(self, delta_model: np.ndarray, delta_stars: np.ndarray) -> None:
        """Add a step: ``delta_model`` (n_model_params,), ``delta_stars`` (n_stars, star_dim)."""

    # --- state -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_state(self) -> dict:
        """A deep copy of everything a step or an outlier pass changes."""

    @abc.abstractmethod
    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state`."""

    # --- outliers --------------------------------------------------------------------------------
    @abc.abstractmethod
    def deactivate(self, measurements: np.ndarray, reference_stars: np.ndarray) -> None:
        """Mark measurement indices and reference terms (by fitted-star index) as outliers."""

    @abc.abstractmethod
    def measurement_star(self) -> np.ndarray:
        """Fitted-star index of every measurement (-1 when not used), shape (n_measurements,)."""
