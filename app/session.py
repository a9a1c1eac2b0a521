"""FitSession: the state of one person's fit in the app, with no UI in it.

One ``FitSession`` per browser session (or notebook): the configuration, the loaded field, the
visits chosen for the fit, the :class:`~jointcal_core.pipeline.JointFit` and its history, and the
messages the views show. The views watch its parameters and call its methods; nothing here
imports panel, so the tests drive it directly.

Fit actions (``associate``, ``step``, ``run``, ``reject_outliers``, ``reset``) run where they are
called and return their result; errors land in :attr:`FitSession.error` (one line) and the
session stays usable. ``start(action)`` runs the same action in a worker thread instead: every
parameter change is then handed to :attr:`FitSession.dispatch` (the app passes a function that
schedules it on the page's event loop), so the page never waits for a fit and parameters only
change on the thread that owns the page. The JointFit is stepped under :attr:`fit_lock`;
``fit_version`` is bumped only while that lock is held by the bumping thread, so a view reading
``session.joint`` in a ``fit_version`` watcher never sees it half-stepped.
"""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import param

from jointcal_core.config import JointcalConfig
from jointcal_core.data import Field
from jointcal_core.exceptions import InputError, JointcalError
from jointcal_core.fit import FitStep
from jointcal_core.pipeline import JointFit, prepare

from .files import field_inputs, sha256_file, zip_folder
from .paths import default_data_root, resolve_under_root

__all__ = ["FitSession", "field_inputs", "fit_progress", "FIT_ACTIONS"]

log = logging.getLogger(__name__)

#: the actions :meth:`FitSession.start` accepts
FIT_ACTIONS = ("associate", "step", "run", "reject_outliers", "reset", "export")
#: how long a worker waits for the page to show one step before stepping on (s)
_PUBLISH_WAIT_S = 2.0


class FitSession(param.Parameterized):
    """State of one fit: config, field, visit selection, the JointFit, its history and messages.

    Parameters
    ----------
    config : JointcalConfig
        The options of the fit (a fresh default config per session).
    field : Field or None
        The loaded field, all visits; ``None`` until something is loaded.
    selected_visits : list of int
        Visits that go into the fit, sorted; all visits of a newly loaded field.
    """

    config = param.ClassSelector(class_=JointcalConfig, instantiate=True, doc="Options of the fit.")
    field = param.ClassSelector(class_=Field, default=None, allow_None=True, doc="The loaded field.")
    field_path = param.String(default="", doc="Path the field was read from.")
    data_root = param.String(default="", doc="Directory typed paths must lie under.")
    selected_visits = param.List(default=[], item_type=int, doc="Visits going into the fit (sorted).")
    status = param.String(default="No field loaded.", doc="Last thing that happened, for people.")
    error = param.String(default="", doc="Last error message, one line ('' after a success).")
    stage = param.String(default="", doc="Current fit stage (JointFit.stage_label()).")
    progress = param.Number(default=0.0, bounds=(0, 1), doc="Fraction of the fit done (0..1).")
    busy = param.Boolean(default=False, doc="True while a fit action runs in the worker thread.")
    history = param.List(default=[], doc="FitStep records of the fit so far, oldest first.")
    fit_version = param.Integer(default=0, doc="Bumped after every associate/step/reset (views refresh).")
    stale = param.Boolean(default=False, doc="Visits or options changed since Associate.")
    fit_summary = param.String(default="", doc="What went into the fit (visits, ccdImages, stars).")
    n_fit_ccd_images = param.Integer(default=0, doc="ccdImages in the associated fit (0: none).")
    selected_star = param.Integer(default=None, allow_None=True, doc="Fitted star picked in a plot.")
    last_export = param.String(default="", doc="Folder or zip file the last export wrote.")

    def __init__(self, **params: Any):
        params.setdefault("config", JointcalConfig())
        params.setdefault("data_root", str(default_data_root()))
        super().__init__(**params)
        #: ``dispatch(fn)`` runs ``fn()`` on the thread owning the views (None: call it at once)
        self.dispatch: Callable[[Callable[[], None]], None] | None = None
        #: held while the JointFit changes; hold it to read ``joint`` outside a fit_version watcher
        self.fit_lock = threading.RLock()
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._joint: JointFit | None = None
        self._watched_config: JointcalConfig | None = None
        self._watch_config()

    # --- loading -------------------------------------------------------------------------------
    @property
    def visits(self) -> list[int]:
        """Every visit of the loaded field, sorted (empty when nothing is loaded)."""
        return [] if self.field is None else [int(v) for v in self.field.ccd_images.visits]

    @property
    def joint(self) -> JointFit | None:
        """The associated fit (None before Associate, or after loading another field)."""
        return self._joint

    def open(self, text: str) -> bool:
        """Load a path a person typed, refusing anything outside :attr:`data_root`."""
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
            from jointcal_core.io import load_field
            inputs, refcat = field_inputs(path)
            kwargs = {"config": self.config} if "config" in inspect.signature(load_field).parameters else {}
            if refcat is not None:
                kwargs["refcat"] = refcat
            field = load_field(inputs, **kwargs)
        except (JointcalError, OSError) as exc:
            self.error = _one_line(exc)
            return False
        self.set_field(field, path=str(path))
        return True

    def set_field(self, field: Field | None, path: str = "") -> None:
        """Use an in-memory field (``None`` unloads); selects all its visits and drops the fit."""
        visits = [] if field is None else [int(v) for v in field.ccd_images.visits]
        if field is None:
            status = "No field loaded."
        else:
            where = f" from {path}" if path else ""
            status = (f"Loaded {len(visits)} visits, {len(field.ccd_images)} CCD images and "
                      f"{len(field.measurements)} sources{where}.")
        self._joint = None
        self.param.update(field=field, field_path=path, selected_visits=visits, error="", status=status,
                          **self._no_fit())

    # --- visit selection -----------------------------------------------------------------------
    def select_visits(self, visits: Iterable[int]) -> None:
        """Fit exactly ``visits`` (any order, duplicates ignored); unknown visits raise InputError.

        After Associate, a changed selection marks the fit stale until the next Associate.
        """
        chosen = sorted({int(v) for v in visits})
        unknown = sorted(set(chosen) - set(self.visits))
        if unknown:
            raise InputError(f"visits {unknown} are not in the loaded field "
                             f"(it has {len(self.visits)} visits)")
        if chosen != self.selected_visits:
            self.selected_visits = chosen
            self._mark_stale()
        self.status = f"{len(chosen)} of {len(self.visits)} visits selected."

    def exclude_visit(self, visit: int) -> None:
        """Leave ``visit`` out of the fit."""
        self.select_visits([v for v in self.selected_visits if v != int(visit)])

    def include_visit(self, visit: int) -> None:
        """Put ``visit`` back into the fit."""
        self.select_visits([*self.selected_visits, int(visit)])

    def toggle_visit(self, visit: int) -> None:
        """Include ``visit`` when it is left out, exclude it otherwise."""
        (self.exclude_visit if int(visit) in self.selected_visits else self.include_visit)(visit)

    def selected_field(self) -> Field | None:
        """The loaded field restricted to the selected visits (None when nothing is loaded)."""
        if self.field is None:
            return None
        return self.field.select_visits(np.asarray(self.selected_visits, dtype=np.int64))

    # --- fit actions ---------------------------------------------------------------------------
    def associate(self) -> JointFit | None:
        """Select sources of the selected visits, associate them and build the JointFit."""
        if not self._can("associate", need_fit=False):
            return None
        field, config = self.selected_field(), self.config.copy()
        self._publish(status=f"Associating {len(self.selected_visits)} visits...", error="")
        try:
            joint = JointFit(prepare(field, config))
        except Exception as exc:  # noqa: BLE001  (any failure must leave the session usable)
            return self._fail("associate", exc)
        with self.fit_lock:
            self._joint = joint
        assoc = joint.prepared.association
        n_ccd = len(joint.prepared.field.ccd_images)
        summary = (f"In the fit: {len(self.selected_visits)} visits, {n_ccd} ccdImages, {assoc.n_stars} fitted "
                   f"stars ({assoc.matched_fittedStars} matched to the reference); fits: {', '.join(joint.kinds)}")
        self._publish_fit(status="Associated. " + summary + ".", fit_summary=summary, n_fit_ccd_images=n_ccd,
                          stale=False)
        return joint

    def step(self) -> FitStep | None:
        """One step of the current fit (a Gauss-Newton iteration or an outlier pass)."""
        return self._stepping("step", lambda joint: joint.step())

    def reject_outliers(self) -> FitStep | None:
        """Step the current fit up to and including its next outlier-rejection pass."""
        return self._stepping("reject outliers", lambda joint: joint.reject_outliers())

    def run(self) -> FitStep | None:
        """Step every fit until converged or :meth:`cancel`; returns the last FitStep."""
        if not self._in_worker():  # start("run") cleared it already: a quick Cancel must count
            self._cancel.clear()
        if not self._can("run"):
            return None
        joint, last = self._joint, None
        limit = sum(10 * f.max_steps * (len(f.stages) + 5) for f in joint.fitters.values())
        try:
            for _ in range(limit):
                if joint.done or self._cancel.is_set():
                    break
                with self.fit_lock:
                    last = joint.step()
                self._publish_step(last)
        except Exception as exc:  # noqa: BLE001
            return self._fail("run", exc)
        if self._cancel.is_set() and not joint.done:
            self._publish(status=f"Cancelled at {joint.stage_label()} after {len(joint.history)} steps.")
        return last

    def reset(self) -> None:
        """Back to the input calibration: every fitter reset, history cleared."""
        if self._joint is None:
            self._publish(**self._no_fit(), status="Nothing to reset: press Associate first.")
            return
        with self.fit_lock:
            self._joint.reset()
        self._publish_fit(status="Fit reset to the input calibration.")

    def export(self, out_dir: str | Path, *, clobber: bool = False, extra_writers=(),
               zip_to: str | Path | None = None) -> Path | None:
        """Write the fit's output folder (DESIGN section 4) with the CLI's writer, atomically.

        ``extra_writers`` as for :func:`~jointcal_core.io.outputs.write_outputs` (the app passes
        the HTML report); with ``zip_to`` the folder is also zipped to that ``.zip`` path.
        Returns what was written (the zip when asked), also kept in :attr:`last_export`.
        """
        from jointcal_core.io.outputs import write_outputs
        if not self._can("export"):
            return None
        try:
            with self.fit_lock:
                written = write_outputs(out_dir, self._joint, provenance=self.provenance(), clobber=clobber,
                                        extra_writers=extra_writers)
            if zip_to is not None:
                written = zip_folder(Path(written), Path(zip_to))
        except Exception as exc:  # noqa: BLE001
            return self._fail("export", exc)
        self._publish(last_export=str(written), status=f"Wrote {written}.", error="")
        return Path(written)

    def provenance(self) -> dict:
        """Package versions, the field's input files (sha256), the visits fitted, the fit's steps."""
        from jointcal_core.task import package_versions
        joint = self._joint
        inputs = [{"path": str(p), "sha256": sha256_file(Path(p))} for p in (self.field.inputs if self.field else [])
                  if Path(p).is_file()]
        return {"written_by": "jointcal app", "packages": package_versions(), "field_path": self.field_path,
                "inputs": inputs, "selected_visits": list(self.selected_visits),
                "stage": joint.stage_label() if joint else "", "n_steps": len(joint.history) if joint else 0}

    def cancel(self) -> None:
        """Ask a running :meth:`run` to stop after its current step."""
        self._cancel.set()
        if self.busy:
            self.status = "Cancelling after the current step..."

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called during the current run."""
        return self._cancel.is_set()

    # --- running off the caller's thread ---------------------------------------------------------
    def start(self, action: str, **kwargs) -> bool:
        """Run ``action(**kwargs)`` (one of :data:`FIT_ACTIONS`) in a worker thread; False when busy.

        Parameter changes reach the views through :attr:`dispatch`; :meth:`wait` joins the worker.
        """
        if action not in FIT_ACTIONS:
            raise ValueError(f"unknown fit action {action!r}; known: {', '.join(FIT_ACTIONS)}")
        if self.busy:
            self.error = f"Cannot {action.replace('_', ' ')}: a fit action is still running (Cancel stops it)."
            return False
        if action == "run":
            self._cancel.clear()
        self.param.update(busy=True, error="")
        self._worker = threading.Thread(target=self._work, args=(action, kwargs), daemon=True,
                                        name=f"jointcal-{action}")
        self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker started by :meth:`start`; True when it has finished."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return worker is None or not worker.is_alive()

    def _work(self, action: str, kwargs: dict) -> None:
        try:
            getattr(self, action)(**kwargs)
        except Exception as exc:  # noqa: BLE001  (never let a worker die silently)
            self._fail(action, exc)
        finally:
            def done():
                with self.fit_lock:  # the fit is still now: views may read it (not for an export)
                    bump = {} if action == "export" else {"fit_version": self.fit_version + 1}
                    self.param.update(busy=False, **bump)
            self._on_ui(done)

    # --- publishing ------------------------------------------------------------------------------
    def _in_worker(self) -> bool:
        return self._worker is not None and threading.current_thread() is self._worker

    def _on_ui(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` where the views live: through :attr:`dispatch` from the worker, else now."""
        if self._in_worker() and self.dispatch is not None:
            try:
                self.dispatch(fn)
            except Exception:  # noqa: BLE001  (the page is gone: stop working for it)
                log.warning("the page of this session is gone; cancelling its fit", exc_info=True)
                self._cancel.set()
        else:
            fn()

    def _publish(self, **values) -> None:
        self._on_ui(lambda: self.param.update(**values))

    def _fit_state(self) -> dict:
        joint = self._joint
        return {"history": list(joint.history), "stage": joint.stage_label(), "progress": fit_progress(joint)}

    def _publish_fit(self, **values) -> None:
        """Publish the fit's state and bump fit_version (under the lock: the fit holds still)."""
        with self.fit_lock:
            state = {**self._fit_state(), **values}

        def update():
            with self.fit_lock:
                self.param.update(**state, fit_version=self.fit_version + 1)
        self._on_ui(update)

    def _publish_step(self, step: FitStep) -> None:
        """Show one step; a worker waits (briefly) until the page has shown it, then steps on."""
        with self.fit_lock:
            state = {**self._fit_state(), "status": _step_line(step), "error": ""}
        shown = threading.Event()

        def update():
            try:
                # never block the page: when the worker is mid-step, skip this version bump
                if self.fit_lock.acquire(blocking=False):
                    try:
                        self.param.update(**state, fit_version=self.fit_version + 1)
                    finally:
                        self.fit_lock.release()
                else:
                    self.param.update(**state)
            finally:
                shown.set()
        self._on_ui(update)
        if self._in_worker():
            shown.wait(_PUBLISH_WAIT_S)

    def _stepping(self, action: str, do: Callable[[JointFit], FitStep]) -> FitStep | None:
        if not self._can(action):
            return None
        try:
            with self.fit_lock:
                step = do(self._joint)
        except Exception as exc:  # noqa: BLE001
            return self._fail(action, exc)
        self._publish_step(step)
        return step

    def _can(self, action: str, need_fit: bool = True) -> bool:
        reason = None
        if self.field is None:
            reason = "no field is loaded"
        elif not self.selected_visits:
            reason = "no visit is selected"
        elif need_fit and self._joint is None:
            reason = "press Associate first"
        elif need_fit and self.stale:
            reason = "the visits or options changed since Associate; press Associate again"
        if reason:
            self._publish(error=f"Cannot {action.replace('_', ' ')}: {reason}.")
        return reason is None

    def _fail(self, action: str, exc: Exception) -> None:
        if not isinstance(exc, JointcalError):
            log.error("%s failed", action, exc_info=exc)
        text = _one_line(exc) if isinstance(exc, JointcalError) else f"{type(exc).__name__}: {_one_line(exc)}"
        self._publish(error=f"{action.replace('_', ' ').capitalize()} failed: {text}")
        return None

    def _no_fit(self) -> dict:
        return {"history": [], "stage": "", "progress": 0.0, "stale": False, "fit_summary": "",
                "n_fit_ccd_images": 0, "selected_star": None, "fit_version": self.fit_version + 1}

    def _mark_stale(self, *_) -> None:
        if self._joint is not None and not self.stale:
            self.param.update(stale=True, status="The visits or options changed: press Associate to refit.")

    @param.depends("config", watch=True)
    def _watch_config(self) -> None:
        if self._watched_config is not None:
            self._watched_config.param.unwatch(self._config_watcher)
        names = [n for n in self.config.param if n != "name"]
        self._config_watcher = self.config.param.watch(self._mark_stale, names)
        self._watched_config = self.config
        self._mark_stale()


def fit_progress(joint: JointFit) -> float:
    """Rough fraction of a JointFit done: fits done plus the current fit's stage index (0..1)."""
    if joint.done:
        return 1.0
    kinds = joint.kinds
    current = joint.current
    fitter = joint.fitters[current]
    names = [s.name for s in fitter.stages]
    index = names.index(fitter.stage.name) if fitter.stage.name in names else 0
    within = (index + (0.5 if fitter.history else 0.0)) / (len(names) + 1)
    return min(0.99, (kinds.index(current) + within) / len(kinds))


def _step_line(step: FitStep) -> str:
    rejected = f", rejected {step.n_outliers}" if step.n_outliers else ""
    return (f"{step.kind} {step.stage} step {step.iteration}: chi2/ndof = {step.chi2_per_ndof:.4g} "
            f"({step.status.value}{rejected})")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
