"""The stepwise Fitter: a state machine the CLI, the Python API and the app drive alike.

``step()`` does one thing - one Gauss-Newton iteration of the current stage, or one
outlier-rejection pass in the last stage - and returns a frozen :class:`FitStep`. ``run()``
steps until converged; ``reset()`` returns to the initial model.

Stages follow jointcal (e.g. astrometry ``DistortionsVisit -> Distortions -> Positions ->
Distortions Positions``). As in jointcal, every stage before the last takes one Gauss-Newton
step (it only brings the parameters near the solution for the last stage). The last stage
alternates Gauss-Newton steps and outlier passes: after each step comes a pass; a pass that
finds nothing either ends the fit (when chi2 has settled) or is skipped for another step.

Settled chi2: after a step, chi2 has settled when the step lowered it by less than
``tolerance`` (relative) or when its decrease matched the decrease the linearised problem
predicted to within ``tolerance`` (the problem is then locally quadratic and the step landed on
the minimum: a confirmation step would not move chi2). After a pass at a settled state, a new
step is skipped when the pass moved chi2 by less than ``tolerance`` (relative), both by the
rejected terms' own chi2 and by what re-fitting their stars without them would bring; the next
pass follows directly.

Outliers: a term is an outlier when its chi2 exceeds ``outlierRejectSigma^2`` times the
current chi2/ndof (when above 1). Per pass, at most one term per fitted star is rejected
(the worst), because one bad measurement drags its star and inflates the others; unlike
jointcal, any number of ccdImages may lose a measurement in the same pass.

Rollback: a step that raises chi2 is undone (the best state is kept); with line search on,
the step is halved first. A step raising chi2 by more than ``chi2IncreaseLimit`` times stops
with :class:`~jointcal_core.exceptions.DivergenceError` after the rollback.

The linearisation (residuals and derivatives) made after a step serves both the chi2 check of
that step and the next step; the solver caches what depends only on which terms are active.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..exceptions import DivergenceError, NonFiniteError
from ..threads import blas_threads
from .outliers import find_outliers
from .problem import FitProblem, Linearization, Stage
from .solver import forget_rows, removed_rows, resolve_gain, solve_step
from .steps import FitStatus, FitStep

__all__ = ["FitStatus", "FitStep", "Fitter"]

log = logging.getLogger(__name__)

#: a new solve after an outlier pass is skipped only when it would lower chi2 by less than this
#: fraction of the number of free model parameters (and by less than the relative tolerance).
#: Not re-solving leaves the model off by a shift d with d^T S d = gain, while its statistical
#: error e has e^T S e ~ n_model on average: the model's error variance grows by at most
#: gain / n_model, here 1 % (0.5 % in rms). Skipping by the relative tolerance alone (a gain of
#: ~640 for 2,712 parameters at tract size) left the model 5 % further from the truth.
RESOLVE_GAIN_PER_PARAMETER = 0.01


class Fitter:
    """Drive a :class:`FitProblem` stage by stage.

    Parameters
    ----------
    problem : FitProblem
    outlier_sigma : float
        n-sigma cut (0 disables rejection).
    tolerance : float
        Relative chi2 change below which the last stage has settled (module docstring).
    max_steps : int
        Gauss-Newton steps allowed in the last stage between outlier passes (the preliminary
        stages take one step each).
    chi2_increase_limit : float
        Factor of chi2 increase that stops the fit with an error.
    line_search : bool
        Halve a step that raises chi2 (up to 5 times) before rolling it back.
    """

    def __init__(self, problem: FitProblem, *, outlier_sigma: float = 5.0, tolerance: float = 1e-3,
                 max_steps: int = 20, chi2_increase_limit: float = 10.0, line_search: bool = False):
        self.problem = problem
        self.outlier_sigma = float(outlier_sigma)
        self.tolerance = float(tolerance)
        self.max_steps = int(max_steps)
        self.chi2_increase_limit = float(chi2_increase_limit)
        self.line_search = bool(line_search)
        self._stages = problem.stages()
        self._initial_state = problem.get_state()
        self._reset_counters()

    # --- public state ----------------------------------------------------------------------
    @property
    def stages(self) -> list[Stage]:
        return list(self._stages)

    @property
    def stage(self) -> Stage:
        return self._stages[self._stage_index]

    @property
    def done(self) -> bool:
        return self._done

    @property
    def history(self) -> list[FitStep]:
        return list(self._history)

    @property
    def chi2(self) -> float:
        return self._lin.chi2

    @property
    def ndof(self) -> int:
        return self._ndof(self._lin)

    @property
    def n_outliers(self) -> int:
        return self._n_outliers_total

    def linearization(self) -> Linearization:
        """The current linearisation: residuals, and derivatives when a step or pass will use them
        (the active terms' rows only, as a new evaluation would give them)."""
        return self._compact()

    # --- control --------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial model, no outliers, empty history."""
        self.problem.set_state(self._initial_state)
        self._reset_counters()

    def run(self, max_steps: int | None = None, callback=None, should_stop=None) -> list[FitStep]:
        """Step until converged (or ``max_steps`` steps, or ``should_stop()`` returns True).

        ``callback(step)`` is called after every step (progress reporting).
        """
        steps = []
        limit = max_steps if max_steps is not None else 10 * self.max_steps * (len(self._stages) + 5)
        while not self._done and len(steps) < limit:
            if should_stop is not None and should_stop():
                break
            step = self.step()
            steps.append(step)
            if callback is not None:
                callback(step)
        return steps

    def step(self) -> FitStep:
        """One Gauss-Newton iteration of the current stage, or one outlier pass at the end."""
        if self._done:
            return self._record(FitStatus.CONVERGED, 0, 0.0, 0.0, "already converged")
        t0 = time.perf_counter()
        if self._rejecting:
            return self._outlier_pass(t0)
        return self._gauss_newton(t0)

    # --- internals ------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._stage_index = 0
        self._stage_steps = 0
        self._rejecting = False
        self._settled = False
        self._done = False
        self._n_outliers_total = 0
        self._history: list[FitStep] = []
        self._solver_cache: dict = {}
        self._lin = self._evaluate(jacobian=False)
        self._has_jacobian = False
        self._final_groups = self._stages[-1].groups

    @property
    def _in_final_stage(self) -> bool:
        return self._stage_index == len(self._stages) - 1

    def _evaluate(self, jacobian: bool) -> Linearization:
        # one BLAS thread, as for the solve: many small products, on worker threads already
        with blas_threads(1):
            lin = self.problem.linearize(jacobian=jacobian)
        if not np.all(np.isfinite(lin.residual)):
            n_bad = int(np.sum(~np.isfinite(lin.residual)))
            meas = lin.meas[~np.isfinite(lin.residual)] if lin.meas is not None else np.array([])
            where = self.problem.describe_measurement(meas[meas >= 0][:1]) if np.any(meas >= 0) else []
            raise NonFiniteError(f"{n_bad} residual(s) are not finite"
                                 + (f", first at {where[0]}" if where else "")
                                 + "; check that input errors are positive and finite")
        return lin

    def _set_lin(self, lin: Linearization, jacobian: bool) -> None:
        self._lin, self._has_jacobian = lin, jacobian

    def _compact(self) -> Linearization:
        """The current linearisation without the rows the outlier passes dropped (see
        ``Linearization.drop_rows``); the solver cache is told which rows went."""
        if self._lin.dropped is not None:
            forget_rows(self._solver_cache, self._lin.dropped)
            self._lin = self._lin.compacted()
        return self._lin

    def _drop_jacobian(self) -> None:
        """Keep the residuals of the current linearisation, free its model derivatives."""
        if self._has_jacobian:
            self._lin = dataclasses.replace(self._lin, model_cols=None, model_vals=None, slot_block=None)
            self._has_jacobian = False

    def _finish(self) -> None:
        """Done: keep the residuals, drop the derivatives and the solver cache (memory)."""
        self._done = True
        self._drop_jacobian()
        self._compact()
        self._solver_cache.clear()

    def _ndof(self, lin: Linearization) -> int:
        groups = self._final_groups
        n_model = int(self.problem.model_param_mask(groups).sum())
        # bincount, not np.unique: this runs at every step on every row (60 ms at tract size)
        star = None if lin.star is None else lin.star[lin.live]
        stars_used = int(np.count_nonzero(np.bincount(star[star >= 0], minlength=1))) if star is not None else 0
        n_star = stars_used * int(self.problem.star_param_mask(groups).sum())
        return int(lin.n_live_rows - n_model - n_star)

    def _record(self, status: FitStatus, n_outliers: int, step_norm: float, seconds: float,
                message: str = "", stage: str | None = None) -> FitStep:
        step = FitStep(kind=self.problem.kind, stage=stage or self.stage.name, iteration=len(self._history) + 1,
                       chi2=self._lin.chi2, ndof=self._ndof(self._lin), n_outliers=n_outliers,
                       n_outliers_total=self._n_outliers_total, step_norm=step_norm, status=status,
                       seconds=seconds, message=message)
        self._history.append(step)
        log.info("%s %s step %d: chi2=%.6g ndof=%d chi2/ndof=%.4f %s", step.kind, step.stage, step.iteration,
                 step.chi2, step.ndof, step.chi2_per_ndof, status.value)
        return step

    def _advance_stage(self) -> None:
        """Next stage after a preliminary stage; in the last stage, on to the outlier passes."""
        self._stage_steps = 0
        if not self._in_final_stage:
            self._stage_index += 1
        elif self.outlier_sigma > 0:
            self._rejecting = True
        else:
            self._finish()

    def _gauss_newton(self, t0: float) -> FitStep:
        problem = self.problem
        groups = self.stage.groups
        name = self.stage.name
        if not self._has_jacobian:
            self._compact()
            self._set_lin(self._evaluate(jacobian=True), True)
        lin = self._lin
        # rows that outlier passes dropped since the evaluation: the solver zeroes them (no copy
        # of the Jacobian without them), then its cache forgets them for the next evaluation
        dropped = lin.dropped
        chi2_before = lin.chi2
        best = problem.get_state()
        # one BLAS thread: the solve is many small products plus one modest Cholesky, and a
        # multithreaded BLAS on a shared 2-core machine was measured 10-30x slower on them
        with blas_threads(1):
            sol = solve_step(lin, problem.n_model_params, problem.n_stars, problem.star_dim,
                             problem.model_param_mask(groups), problem.star_param_mask(groups),
                             describe=problem.describe_model_param, cache=self._solver_cache)
        if dropped is not None:
            forget_rows(self._solver_cache, dropped)
        del lin
        self._drop_jacobian()       # the derivatives at the old point are not needed any more (memory)
        fraction = 1.0
        problem.offset(sol.delta_model, sol.delta_stars)
        # the derivatives at the new point serve the next step, unless the step is rolled back
        new = self._evaluate(jacobian=not self.line_search)
        new_has_jacobian = not self.line_search
        halvings = 5 if self.line_search else 0
        while new.chi2 > chi2_before and halvings > 0:
            fraction *= 0.5
            problem.set_state(best)
            problem.offset(fraction * sol.delta_model, fraction * sol.delta_stars)
            new = self._evaluate(jacobian=False)
            halvings -= 1
        self._stage_steps += 1
        step_norm = float(np.linalg.norm(fraction * sol.delta_model))
        if new.chi2 > chi2_before * (1 + 1e-12):
            problem.set_state(best)
            self._set_lin(self._evaluate(jacobian=False), False)
            if new.chi2 > self.chi2_increase_limit * chi2_before:
                raise DivergenceError(
                    f"{problem.kind} stage {self.stage.name}: chi2 jumped from {chi2_before:.6g} to "
                    f"{new.chi2:.6g}; rolled back to the best state. {self._worst_contributors(new)}",
                    chi2_before=chi2_before, chi2_after=new.chi2)
            self._settled = True        # no step from here lowers chi2
            self._advance_stage()
            return self._record(FitStatus.CHI2_INCREASED, 0, 0.0, time.perf_counter() - t0,
                                f"step raised chi2 to {new.chi2:.6g}; rolled back", stage=name)
        self._set_lin(new, new_has_jacobian)
        decrease = chi2_before - new.chi2
        predicted = fraction * (2 - fraction) * sol.predicted_decrease
        limit = self.tolerance * max(new.chi2, 1e-300)
        settled = decrease < limit or abs(decrease - predicted) < limit
        detail = f"chi2 decrease {decrease:.6g} (linear prediction {predicted:.6g})"
        if not self._in_final_stage:
            # jointcal: one Gauss-Newton step per preliminary stage
            self._advance_stage()
            return self._record(FitStatus.STAGE_CONVERGED, 0, step_norm, time.perf_counter() - t0,
                                f"preliminary stage: one step; {detail}", stage=name)
        self._settled = settled
        if settled or self._stage_steps >= self.max_steps:
            status = FitStatus.STAGE_CONVERGED if settled else FitStatus.MAX_STEPS
            message = detail if settled else f"stage {name} reached {self.max_steps} steps; {detail}"
            self._settled = True
            self._advance_stage()
            return self._record(status, 0, step_norm, time.perf_counter() - t0, message, stage=name)
        if self.outlier_sigma > 0:
            self._rejecting = True      # reject outliers after every step of the last stage
        return self._record(FitStatus.STEPPED, 0, step_norm, time.perf_counter() - t0, detail)

    def _find_outliers(self, lin: Linearization):
        """Measurements and reference terms (by star) to reject, and the chi2 cut."""
        return find_outliers(lin, self.problem, self._ndof(lin), self.outlier_sigma)

    def _outlier_pass(self, t0: float) -> FitStep:
        problem = self.problem
        lin = self._lin
        reject_meas, reject_ref, cut = self._find_outliers(lin)
        n = reject_meas.size + reject_ref.size
        if n == 0:
            if self._settled:
                self._finish()
                return self._record(FitStatus.CONVERGED, 0, 0.0, time.perf_counter() - t0,
                                    f"no outliers above {self.outlier_sigma:g} sigma")
            # nothing to reject but chi2 still moving: this step is a Gauss-Newton step instead
            self._rejecting = False
            return self._gauss_newton(t0)
        # what a new solve would gain (valid when the fit had settled before the pass): re-fitting
        # the stars that lost a term (a lower bound, close when the model barely moves), plus the
        # model's share: removing a term of residual r and leverage h moves the minimum by
        # r^2 h / (1 - h), and the model's leverage of a term is on average n_model / n_rows. (The
        # pass's own chi2 drop, r^2, only bounds this; taken as the gain it made a new step follow
        # every pass that removed a few large outliers from a big field, each gaining ~1e-5.)
        removed = removed_rows(lin, reject_meas, reject_ref)
        chi2_after = lin.chi2 - float(np.dot(lin.residual[removed], lin.residual[removed]))
        n_model_free = int(problem.model_param_mask(self._final_groups).sum())
        gain = (resolve_gain(lin, removed, problem.star_param_mask(self._final_groups), n_model_free=n_model_free)
                if self._settled and self._has_jacobian else np.inf)
        self._settled = gain < min(self.tolerance * max(chi2_after, 1e-300),
                                   RESOLVE_GAIN_PER_PARAMETER * max(n_model_free, 1))
        problem.deactivate(reject_meas, reject_ref)
        self._n_outliers_total += n
        # nothing moved but the terms: the linearisation is the old one without their rows (no new
        # evaluation; the derivatives stay, so the next pass can estimate its gain as this one did).
        # The rows are only marked: the long tail of passes that reject one or two terms each
        # (~60 at 200 visits) would otherwise copy the whole Jacobian every time
        self._set_lin(lin.drop_rows(removed), self._has_jacobian)
        del lin
        self._stage_steps = 0
        # a pass that moves the solution calls for a new step; otherwise the next pass follows
        self._rejecting = self._settled
        note = (f"; chi2 moved by {gain:.3g} only (below the tolerance): no new step needed" if self._settled
                else "")
        return self._record(FitStatus.OUTLIERS_REJECTED, n, 0.0, time.perf_counter() - t0,
                            f"rejected {reject_meas.size} measurement(s) and {reject_ref.size} reference term(s) "
                            f"above chi2 {cut:.3g}{note}")

    def _worst_contributors(self, lin: Linearization) -> str:
        """Which groups (visit/CCD) carry most of the chi2 of a rejected step."""
        group, labels = self.problem.measurement_group()
        per_meas = lin.chi2_per_measurement(self.problem.n_measurements)
        per_group = np.bincount(group, weights=per_meas, minlength=len(labels))
        worst = np.argsort(-per_group)[:3]
        total = max(per_group.sum(), 1e-300)
        parts = [f"{labels[i]} ({100 * per_group[i] / total:.0f}%)" for i in worst if per_group[i] > 0]
        return "Largest chi2 contributions: " + ", ".join(parts) if parts else ""
