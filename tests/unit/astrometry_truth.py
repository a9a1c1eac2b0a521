"""Comparisons of a fitted astrometric problem with a simulation's true WCS (test helpers).

Shared by the astrometry test modules that fit ``jointcal_core.simulate`` fields.
"""

from __future__ import annotations

import numpy as np

from jointcal_core.projection import sky_to_tangent


def fitted_and_true_tangent(problem, sim, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Fitted and true positions of an n x n pixel grid over every CCD on the problem's tangent plane.

    Returns two arrays of shape (n_ccd * n * n, 2), in degrees.
    """
    fitted, true = [], []
    for c, (x0, y0, x1, y1) in enumerate(sim.field.ccd_images.bbox):
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n)))
        fitted.append(np.column_stack(sky_to_tangent(*problem.pixel_to_sky(c, x, y), *problem.center_deg)))
        true.append(np.column_stack(sky_to_tangent(*sim.truth.pixel_to_sky(np.full(x.size, c), x, y),
                                                   *problem.center_deg)))
    return np.concatenate(fitted), np.concatenate(true)


def rms_mas(d_deg: np.ndarray) -> float:
    """2-D rms (mas) of offsets of shape (n, 2) in degrees."""
    return float(np.sqrt(np.mean(np.sum(d_deg ** 2, axis=1))) * 3.6e6)
