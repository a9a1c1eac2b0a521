"""The shared least-squares machinery: problem contract, Schur-complement solver, stepwise Fitter."""

from .fitter import Fitter
from .problem import FitGroup, FitProblem, Linearization, Stage
from .solver import SolveResult, solve_step
from .steps import FitStatus, FitStep

__all__ = ["Fitter", "FitStatus", "FitStep", "FitGroup", "FitProblem", "Linearization", "Stage",
           "SolveResult", "solve_step"]
