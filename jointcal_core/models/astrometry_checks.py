"""Pre-solve checks of the astrometric problem: enough stars per model part, connected overlaps.

This module owns the decision whether the data constrain the model before any solve: every
part of the model (a ccdImage's polynomial for the simple model; a chip's and a visit's
polynomial for the constrained one) needs at least ``_MARGIN`` times as many residual rows as
free parameters, and every group of visits linked by shared fitted stars needs a reference star
(or, with no reference at all, there must be a single group, whose gauge the fixed reference
visit sets). Failures raise :class:`~jointcal_core.exceptions.ModelConstraintError` naming the
visit/detector and the fix, or, with ``excludeUnconstrained``, return what to exclude.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from ..data import CcdImages

__all__ = ["Shortfall", "count_shortfalls", "visit_components"]

#: residual rows (2 per measurement) required per free parameter
_MARGIN = 2.0


@dataclass(frozen=True)
class Shortfall:
    """A model part with too few measurements."""

    message: str
    ccd_mask: np.ndarray       # ccdImages to exclude to remove the part from the fit
    visit: int | None
    detector: int | None


def count_shortfalls(mapping, ccd_images: CcdImages, n_per_ccd: np.ndarray, free: np.ndarray,
                     option: str) -> list[Shortfall]:
    """Model parts whose free parameters outnumber ``2 * n_measurements / _MARGIN``.

    Parameters
    ----------
    mapping : SimpleMapping or ConstrainedMapping
    n_per_ccd : ndarray, shape (n_ccd,)
        Measurements in the fit on each ccdImage.
    free : ndarray of bool, shape (n_params,)
        Parameters that may be fitted (not held fixed, not excluded).
    option : str
        The config option to name in the fix (the order of the failing part).
    """
    out = []
    hint = f"lower {option} or set excludeUnconstrained to drop it"
    if mapping.name == "simple":
        per = 2 * mapping.nt
        n_free = free.reshape(-1, per).sum(axis=1)
        for c in np.flatnonzero((n_free > 0) & (2 * n_per_ccd < _MARGIN * n_free)):
            v, d = int(ccd_images.visit[c]), int(ccd_images.detector[c])
            out.append(Shortfall(f"only {int(n_per_ccd[c])} measurements of fitted stars for the {int(n_free[c])} "
                                 f"parameters of its order-{mapping.order} polynomial; {hint}",
                                 np.arange(len(ccd_images)) == c, v, d))
        return out
    n_chip = np.bincount(mapping.ccd_chip, n_per_ccd, minlength=mapping.chips.size)
    free_chip = free[:mapping.visit_offset].reshape(mapping.chips.size, -1).sum(axis=1)
    for d in np.flatnonzero((free_chip > 0) & (2 * n_chip < _MARGIN * free_chip)):
        out.append(Shortfall(f"only {int(n_chip[d])} measurements of fitted stars over all visits for the "
                             f"{int(free_chip[d])} parameters of its chip polynomial; lower astrometryChipOrder "
                             "or set excludeUnconstrained to drop the detector",
                             mapping.ccd_chip == d, None, int(mapping.chips[d])))
    n_visit = np.bincount(mapping.ccd_visit, n_per_ccd, minlength=mapping.visits.size)
    free_visit = free[mapping.visit_offset:].reshape(mapping.visits.size, -1).sum(axis=1)
    for v in np.flatnonzero((free_visit > 0) & (2 * n_visit < _MARGIN * free_visit)):
        out.append(Shortfall(f"only {int(n_visit[v])} measurements of fitted stars for the {int(free_visit[v])} "
                             f"parameters of its visit polynomial; lower astrometryVisitOrder or set "
                             "excludeUnconstrained to drop the visit",
                             mapping.ccd_visit == v, int(mapping.visits[v]), None))
    return out


def visit_components(ccd_visit: np.ndarray, n_visits: int, meas_ccd: np.ndarray, meas_star: np.ndarray,
                     n_stars: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Groups of visits linked through shared fitted stars.

    Parameters
    ----------
    ccd_visit : ndarray of int64, shape (n_ccd,)
        Visit row of each ccdImage.
    meas_ccd, meas_star : ndarray of int64, shape (n,)
        ccdImage and fitted star of the measurements in the fit.

    Returns
    -------
    n_components : int
    visit_label : ndarray of int, shape (n_visits,)
    star_label : ndarray of int, shape (n_stars,)
        Component of each star (stars without measurements get their own labels).
    """
    visit = ccd_visit[meas_ccd]
    # bipartite graph: nodes 0..n_visits-1 are visits, then stars
    graph = sp.coo_matrix((np.ones(visit.size), (visit, n_visits + meas_star)),
                          shape=(n_visits + n_stars, n_visits + n_stars))
    n, labels = csgraph.connected_components(graph, directed=False)
    return int(n), labels[:n_visits], labels[n_visits:]
