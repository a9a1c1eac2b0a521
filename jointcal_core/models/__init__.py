"""Models fitted by jointcal: polynomial bases and the astrometric problem."""

from .astrometry import AstrometryProblem, make_astrometry_problem
from .polynomial import PolyBasis2D, poly_terms

__all__ = ["AstrometryProblem", "make_astrometry_problem", "PolyBasis2D", "poly_terms"]
