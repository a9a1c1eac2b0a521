"""What one Fitter step did: :class:`FitStatus` and the frozen :class:`FitStep` record."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["FitStatus", "FitStep"]


class FitStatus(enum.Enum):
    """What a step did."""

    STEPPED = "stepped"                    # a Gauss-Newton iteration lowered chi2
    STAGE_CONVERGED = "stage converged"    # a preliminary stage's step, or chi2 settled in the last stage
    OUTLIERS_REJECTED = "outliers rejected"
    CHI2_INCREASED = "chi2 increased"      # the step was rolled back
    MAX_STEPS = "max steps"                # the stage hit its step limit
    CONVERGED = "converged"                # the whole fit is done


@dataclass(frozen=True)
class FitStep:
    """Record of one Fitter step.

    Attributes
    ----------
    kind : str
        'astrometry' or 'photometry'.
    stage : str
        jointcal's stage name.
    iteration : int
        Step number since the last reset, from 1.
    chi2 : float
        chi2 after the step.
    ndof : int
        Degrees of freedom for all fitted parameters of the final stage.
    n_outliers : int
        Terms rejected by this step.
    n_outliers_total : int
    step_norm : float
        Euclidean norm of the applied model parameter change.
    status : FitStatus
    seconds : float
        Wall time of the step.
    message : str
    """

    kind: str
    stage: str
    iteration: int
    chi2: float
    ndof: int
    n_outliers: int
    n_outliers_total: int
    step_norm: float
    status: FitStatus
    seconds: float
    message: str = ""

    @property
    def chi2_per_ndof(self) -> float:
        return self.chi2 / self.ndof if self.ndof > 0 else float("nan")
