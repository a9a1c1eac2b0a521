"""FitSession: the state of one person's fit in the app, with no UI in it.

One ``FitSession`` per browser session (or notebook): the configuration, the loaded field, the
visits chosen for the fit, the fit history and the messages the views show. The views watch its
parameters and call its methods; nothing here imports panel, so the tests drive it directly.

The fit actions (``associate``, ``step``, ``run``, ``reject_outliers``, ``reset``, ``cancel``) are
placeholders until ``jointcal_core.fit.Fitter`` lands; they say so in ``error`` and return ``None``.
The Fitter contract they will wrap: ``step() -> FitStep`` (a frozen record with ``kind, stage,
iteration, chi2, ndof, n_outliers, status, seconds, message``), ``run()``, ``reset()``.
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import param

from jointcal_core.config import JointcalConfig
from jointcal_core.data import Field
from jointcal_core.exceptions import InputError, JointcalError

from .paths import default_data_root, resolve_under_root

__all__ = ["FitSession", "field_inputs"]


class FitSession(param.Parameterized):
    """State of one fit: config, field, visit selection, fit history and messages.

    Parameters
    ----------
    config : JointcalConfig
        The options of the fit (a fresh default config per session).
    field : Field or None
        The loaded field, all visits; ``None`` until something is loaded.
    field_path : str
        Where ``field`` was read from ('' when none or built in memory).
    data_root : str
        The directory :meth:`open` accepts typed paths under.
    selected_visits : list of int
        Visits that go into the fit, sorted; all visits of a newly loaded field.
    """

    config = param.ClassSelector(class_=JointcalConfig, instantiate=True, doc="Options of the fit.")
    field = param.ClassSelector(class_=Field, default=None, allow_None=True, doc="The loaded field.")
    field_path = param.String(default="", doc="Path the field was read from.")
    data_root = param.String(default="", doc="Directory typed paths must lie under.")
    selected_visits = param.List(default=[], item_type=int, doc="Visits going into the fit (sorted).")
    status = param.String(default="No field loaded.", doc="Last thing that happened, for people.")
    error = param.String(default="", doc="Last error message ('' when the last action succeeded).")
    stage = param.String(default="", doc="Current fit stage (e.g. 'astrometry: Distortions').")
    progress = param.Number(default=0.0, bounds=(0, 1), doc="Fraction of the fit done (0..1).")
    busy = param.Boolean(default=False, doc="True while a fit action runs.")
    history = param.List(default=[], doc="FitStep records of the fit so far, oldest first.")

    def __init__(self, **params: Any):
        params.setdefault("config", JointcalConfig())
        params.setdefault("data_root", str(default_data_root()))
        super().__init__(**params)
        self._cancel = threading.Event()
        self._fitter = None

    # --- loading -------------------------------------------------------------------------------
    @property
    def visits(self) -> list[int]:
        """Every visit of the loaded field, sorted (empty when nothing is loaded)."""
        if self.field is None:
            return []
        return [int(v) for v in self.field.ccd_images.visits]

    def open(self, text: str) -> bool:
        """Load a path a person typed, refusing anything outside :attr:`data_root`.

        Returns True when the field was loaded; otherwise :attr:`error` says why.
        """
        try:
            path = resolve_under_root(text, self.data_root)
        except InputError as exc:
            self.error = str(exc)
            return False
        return self.load(path)

    def load(self, path: str | Path) -> bool:
        """Read a field from ``path`` (a directory or a catalog file) and select all its visits.

        A trusted call (the server operator or a notebook): no data-root check. On failure the
        previous field stays loaded and :attr:`error` holds the reason; returns False.
        """
        path = Path(path)
        try:
            load_field = _field_loader()
            inputs, refcat = field_inputs(path)
            kwargs = {"config": self.config} if "config" in inspect.signature(load_field).parameters else {}
            if refcat is not None:
                kwargs["refcat"] = refcat
            field = load_field(inputs, **kwargs)
        except (JointcalError, OSError) as exc:
            self.error = str(exc)
            return False
        self.set_field(field, path=str(path))
        return True

    def set_field(self, field: Field | None, path: str = "") -> None:
        """Use an in-memory field (``None`` unloads); selects all its visits and clears the fit."""
        visits = [] if field is None else [int(v) for v in field.ccd_images.visits]
        if field is None:
            status = "No field loaded."
        else:
            where = f" from {path}" if path else ""
            status = (f"Loaded {len(visits)} visits, {len(field.ccd_images)} CCD images and "
                      f"{len(field.measurements)} sources{where}.")
        self._fitter = None
        self.param.update(field=field, field_path=path, selected_visits=visits, error="", status=status,
                          history=[], stage="", progress=0.0)

    # --- visit selection -----------------------------------------------------------------------
    def select_visits(self, visits: Iterable[int]) -> None:
        """Fit exactly ``visits`` (any order, duplicates ignored); unknown visits raise InputError."""
        chosen = sorted({int(v) for v in visits})
        unknown = sorted(set(chosen) - set(self.visits))
        if unknown:
            raise InputError(f"visits {unknown} are not in the loaded field "
                             f"(it has {len(self.visits)} visits)")
        if chosen != self.selected_visits:
            self.selected_visits = chosen
            self._clear_fit()
        self.status = f"{len(chosen)} of {len(self.visits)} visits selected."

    def exclude_visit(self, visit: int) -> None:
        """Leave ``visit`` out of the fit."""
        self.select_visits([v for v in self.selected_visits if v != int(visit)])

    def include_visit(self, visit: int) -> None:
        """Put ``visit`` back into the fit."""
        self.select_visits([*self.selected_visits, int(visit)])

    def toggle_visit(self, visit: int) -> None:
        """Include ``visit`` when it is left out, exclude it otherwise."""
        if int(visit) in self.selected_visits:
            self.exclude_visit(visit)
        else:
            self.include_visit(visit)

    def selected_field(self) -> Field | None:
        """The loaded field restricted to the selected visits (None when nothing is loaded)."""
        if self.field is None:
            return None
        return self.field.select_visits(np.asarray(self.selected_visits, dtype=np.int64))

    # --- fit actions (wired to jointcal_core.fit.Fitter by the lead) ----------------------------
    def associate(self):
        """Select sources and associate them into fitted and reference stars."""
        return self._fit_action("associate")

    def step(self):
        """One Gauss-Newton iteration or outlier pass of the current stage; returns its FitStep."""
        return self._fit_action("step")

    def run(self):
        """Step until the fit converges (or :meth:`cancel`); returns the last FitStep."""
        self._cancel.clear()
        return self._fit_action("run")

    def reject_outliers(self):
        """One n-sigma outlier-rejection pass; returns its FitStep."""
        return self._fit_action("reject outliers")

    def reset(self) -> None:
        """Forget the fit: back to the input calibration, history cleared."""
        self._clear_fit()
        self.status = "Fit reset to the input calibration."

    def cancel(self) -> None:
        """Ask a running :meth:`run` to stop after its current step."""
        self._cancel.set()
        if self.busy:
            self.status = "Cancelling after the current step..."

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called during the current run."""
        return self._cancel.is_set()

    def _fit_action(self, action: str):
        if self.field is None:
            self.error = f"Cannot {action}: no field is loaded."
            return None
        if not self.selected_visits:
            self.error = f"Cannot {action}: no visit is selected."
            return None
        # TODO(lead): build the Fitter from self.selected_field() and self.config, run the action
        # (in a thread for run()), append each FitStep to history via self._record(step).
        self.error = f"Cannot {action} yet: the fitter (jointcal_core.fit) is not built."
        return None

    def _record(self, step) -> None:
        """Append a FitStep to :attr:`history` and show its stage and message."""
        self.history = [*self.history, step]
        self.stage = str(getattr(step, "stage", ""))
        self.status = str(getattr(step, "message", "")) or self.status

    def _clear_fit(self) -> None:
        self._fitter = None
        self.history = []
        self.stage = ""
        self.progress = 0.0


#: catalog suffixes a field directory may hold (sidecars such as .ahead are not inputs)
_CATALOG_SUFFIXES = {".cat", ".fits", ".fit", ".ldac", ".ecsv", ".csv", ".parq", ".parquet", ".psx"}
#: file stems taken as the field's reference catalog
_REFERENCE_STEMS = ("reference", "refcat")


def field_inputs(path: Path) -> tuple[Path | list[Path], Path | None]:
    """Split a field directory into its exposure catalogs and its reference catalog.

    A directory holding ``reference.*`` or ``refcat.*`` (the demo's layout, as for
    ``jointcal run DIR/*.cat --refcat DIR/reference.cat``) gives (other catalogs, that file);
    anything else (a file, an LSST repository, a directory without reference) is passed as is.
    """
    if not path.is_dir():
        return path, None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _CATALOG_SUFFIXES)
    refs = [p for p in files if p.stem.lower() in _REFERENCE_STEMS]
    if not refs:
        return path, None
    return [p for p in files if p not in refs], refs[0]


def _field_loader():
    """``jointcal_core.io.load_field``, or an InputError saying it is not available."""
    try:
        from jointcal_core.io import load_field
    except ImportError:
        raise InputError("reading fields is not available in this build "
                         "(jointcal_core.io.load_field is missing)") from None
    return load_field
