"""Matching primitives of the association, on tangent-plane coordinates (numpy + cKDTree).

This module owns the geometry-only algorithms :mod:`jointcal_core.association` composes: a
one-to-one closest-first matcher, the per-visit sequential matcher with per-CCD re-centring,
the within-visit duplicate finder for overlapping CCDs, and a point-in-CCD test. Nothing here
knows about WCS, configs or fields: inputs are arrays of tangent-plane positions (any unit,
the radius in the same unit).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["match_one_to_one", "sequential_match", "overlap_candidates", "cross_ccd_duplicates",
           "points_in_quads", "group_median"]


def match_one_to_one(tree: cKDTree, pos: np.ndarray, radius: float, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Match points to a tree's points one-to-one within ``radius``, closest pair first.

    Candidates are each point's ``k`` nearest tree points. Rounds of mutual nearest pairs
    (closest remaining for both sides) are accepted until none is left: the same answer as
    walking all candidate pairs sorted by distance, but vectorised.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
        Over the targets, shape (m, d).
    pos : ndarray, shape (n, d)
    radius : float
    k : int

    Returns
    -------
    match : ndarray of int64, shape (n,)
        Tree index matched to each point, -1 if none.
    distance : ndarray, shape (n,)
        inf if none.
    """
    n = pos.shape[0]
    match, dist_out = np.full(n, -1, np.int64), np.full(n, np.inf)
    if n == 0 or tree.n == 0:
        return match, dist_out
    k = min(k, tree.n)
    dist, idx = tree.query(pos, k=k, distance_upper_bound=radius)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    ok = np.isfinite(dist)
    a, b, d = np.nonzero(ok)[0], idx[ok], dist[ok]
    order = np.argsort(d, kind="stable")
    a, b, d = a[order], b[order], d[order]
    while a.size:
        # first (closest) remaining pair of each point and of each tree point
        _, first_a = np.unique(a, return_index=True)
        _, first_b = np.unique(b, return_index=True)
        mutual = np.intersect1d(first_a, first_b, assume_unique=True)
        match[a[mutual]], dist_out[a[mutual]] = b[mutual], d[mutual]
        alive = (match[a] < 0) & ~np.isin(b, b[mutual])
        a, b, d = a[alive], b[alive], d[alive]
    return match, dist_out


def overlap_candidates(xy: np.ndarray, ccd: np.ndarray, ccd_visit: np.ndarray, corners_tp: np.ndarray,
                       radius: float) -> np.ndarray:
    """Detections lying where two CCDs of one visit overlap (tangent-plane boxes grown by radius).

    Parameters
    ----------
    xy : ndarray, shape (n, 2)
        Detection positions on the tangent plane.
    ccd : ndarray of int, shape (n,)
        ccdImage of each detection.
    ccd_visit : ndarray of int, shape (n_ccd,)
        Visit of each ccdImage.
    corners_tp : ndarray, shape (n_ccd, 4, 2)
        ccdImage corners on the tangent plane.
    radius : float

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    lo, hi = corners_tp.min(axis=1) - radius, corners_tp.max(axis=1) + radius
    by_visit = np.argsort(ccd_visit, kind="stable")
    pairs = []
    for members in np.split(by_visit, np.flatnonzero(np.diff(ccd_visit[by_visit])) + 1):
        a, b = np.triu_indices(members.size, 1)
        a, b = members[a], members[b]
        hit = np.all(np.maximum(lo[a], lo[b]) <= np.minimum(hi[a], hi[b]), axis=1)
        pairs.append(np.column_stack([a[hit], b[hit]]))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    box_lo, box_hi = np.maximum(lo[pairs[:, 0]], lo[pairs[:, 1]]), np.minimum(hi[pairs[:, 0]], hi[pairs[:, 1]])
    by_ccd = np.argsort(ccd, kind="stable")
    start = np.searchsorted(ccd[by_ccd], np.arange(corners_tp.shape[0] + 1))
    candidate = np.zeros(xy.shape[0], bool)
    for p, (c1, c2) in enumerate(pairs):  # loop over overlapping CCD pairs, vectorised over detections
        for c in (c1, c2):
            r = by_ccd[start[c]:start[c + 1]]
            candidate[r[np.all((xy[r] >= box_lo[p]) & (xy[r] <= box_hi[p]), axis=1)]] = True
    return candidate


def cross_ccd_duplicates(xy: np.ndarray, visit_rank: np.ndarray, ccd: np.ndarray, center_dist: np.ndarray,
                         radius: float, candidate: np.ndarray) -> np.ndarray:
    """Detections within ``radius`` of a detection on another CCD of the same visit.

    Of each such pair the detection farther from its CCD centre (``center_dist``, shape (n,))
    is flagged; only ``candidate`` detections (from :func:`overlap_candidates`) are searched.

    Returns
    -------
    ndarray of bool, shape (n,)
        True for the duplicates to drop.
    """
    dup = np.zeros(xy.shape[0], bool)
    rows = np.flatnonzero(candidate)
    if rows.size < 2:
        return dup
    pts = np.column_stack([xy[rows], visit_rank[rows] * (10.0 * radius + 1.0)])
    pairs = rows[cKDTree(pts).query_pairs(radius, output_type="ndarray")]
    pairs = pairs[ccd[pairs[:, 0]] != ccd[pairs[:, 1]]]
    dup[np.where(center_dist[pairs[:, 0]] <= center_dist[pairs[:, 1]], pairs[:, 1], pairs[:, 0])] = True
    return dup


def group_median(groups: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``values`` (n, d) per group id in [0, n_groups), and the group sizes."""
    size = np.bincount(groups, minlength=n_groups)
    med = np.zeros((n_groups, values.shape[1]))
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    has = size > 0
    for j in range(values.shape[1]):
        v = values[np.lexsort((values[:, j], groups)), j]
        lo, hi = start[has] + (size[has] - 1) // 2, start[has] + size[has] // 2
        med[has, j] = 0.5 * (v[lo] + v[hi])
    return med, size


def sequential_match(xy: np.ndarray, visit_rank: np.ndarray, ccd: np.ndarray, radius: float,
                     min_offset_matches: int = 10) -> np.ndarray:
    """Group detections into stars, visit by visit, against running-mean star positions.

    Each visit is matched twice with :func:`match_one_to_one`: the first match measures every
    CCD's median offset to the current stars (its initial-WCS error), which is removed (CCDs with
    at least ``min_offset_matches`` matches) before the second, final match. Unmatched detections
    start new stars.

    Parameters
    ----------
    xy : ndarray, shape (n, 2)
        Tangent-plane positions.
    visit_rank : ndarray of int, shape (n,)
        Processing order of each detection's visit.
    ccd : ndarray of int, shape (n,)
        ccdImage of each detection (the unit of the offset correction).
    radius : float
        Match radius, unit of ``xy``.
    min_offset_matches : int

    Returns
    -------
    ndarray of int64, shape (n,)
        Star index 0 .. n_stars-1 of every detection; a star has at most one detection per visit.
    """
    star = np.full(xy.shape[0], -1, np.int64)
    sums, counts = np.zeros((xy.shape[0], 2)), np.zeros(xy.shape[0])
    n_stars = 0
    order = np.argsort(visit_rank, kind="stable")
    bounds = np.flatnonzero(np.diff(visit_rank[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        pos = xy[rows]
        tree = cKDTree(sums[:n_stars] / counts[:n_stars, None])
        match, _ = match_one_to_one(tree, pos, radius)
        ok = match >= 0
        if np.count_nonzero(ok) >= min_offset_matches:
            local = np.unique(ccd[rows], return_inverse=True)[1]
            offset, n_match = group_median(local[ok], tree.data[match[ok]] - pos[ok], local.max() + 1)
            offset[n_match < min_offset_matches] = 0.0
            pos = pos + offset[local]
            match, _ = match_one_to_one(tree, pos, radius)
        new = match < 0
        match[new] = n_stars + np.arange(np.count_nonzero(new))
        n_stars += int(np.count_nonzero(new))
        star[rows] = match
        sums[match] += pos  # one detection per star per visit: no repeated indices
        counts[match] += 1
    return star


def points_in_quads(xy: np.ndarray, corners_tp: np.ndarray) -> np.ndarray:
    """Points (n, 2) lying inside any CCD quadrilateral (n_ccd, 4, 2), all on the tangent plane."""
    inside = np.zeros(xy.shape[0], bool)
    if xy.shape[0] == 0 or corners_tp.shape[0] == 0:
        return inside
    center = corners_tp.mean(axis=1)
    reach = np.linalg.norm(corners_tp - center[:, None], axis=2).max(axis=1)
    hits = cKDTree(xy).query_ball_point(center, reach)
    n_hits = np.array([len(h) for h in hits])
    if n_hits.sum() == 0:
        return inside
    pt = np.concatenate([np.asarray(h, np.int64) for h in hits])
    quad = corners_tp[np.repeat(np.arange(len(hits)), n_hits)]  # (n_pairs, 4, 2)
    edge = np.roll(quad, -1, axis=1) - quad
    rel = xy[pt][:, None, :] - quad
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]
    ok = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    inside[pt[ok]] = True
    return inside
