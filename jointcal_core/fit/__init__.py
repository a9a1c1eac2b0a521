"""The shared least-squares machinery: problem contract, Schur-complement solver, stepwise Fitter."""

from .fitter import Fitter, FitStatus, FitStep
from .problem import FitGroup, FitProblem, Linearization, Stage
from .solver import SolveResult, solve_step

__all__ = ["Fitter", "FitStatus", "FitStep", "FitGroup", "FitProblem", "Linearization", "Stage",
           "SolveResult", "solve_step"]
