"""Source selection: which measurements are good enough to enter the association and the fit.

This module owns the measurement cuts. :func:`select_sources` applies them in a fixed order and
counts what each one removes among the measurements that survived the earlier ones, in total
and per ccdImage, so ``jointcal inspect`` and the app can say why a CCD lost its stars.

The cuts, in order (names are the keys of :attr:`SelectionResult.removed`):

``finite``
    x, y, flux, flux_err, var_x, var_y and cov_xy are all finite.
``positive_errors``
    ``var_x > 0``, ``var_y > 0`` and ``flux_err > 0`` (a zero error gives an infinite chi2).
``positive_definite_covariance``
    ``var_x * var_y - cov_xy**2 > 0``: the position error ellipse exists.
``min_snr``
    ``flux / flux_err >= minSnr`` (negative fluxes fail).
``flags``
    ``flags & flagMask == 0``.
``max_position_error``
    ``sqrt(max(var_x, var_y)) <= maxPositionErrorPix``.
``inside_bbox``
    the position lies inside its CCD's bbox (outer pixel edges, inclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import JointcalConfig
from .data import Field

__all__ = ["SelectionResult", "select_sources", "CUT_NAMES"]

#: the cuts in the order they are applied
CUT_NAMES = ("finite", "positive_errors", "positive_definite_covariance", "min_snr", "flags",
             "max_position_error", "inside_bbox")


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :func:`select_sources`.

    Attributes
    ----------
    keep : ndarray of bool, shape (n_measurements,)
        True for measurements that pass every cut.
    removed : dict of str -> int
        Ordered as :data:`CUT_NAMES`: how many measurements each cut removed among those that
        survived the earlier cuts.
    removed_per_ccd : ndarray of int64, shape (n_cuts, n_ccd_images)
        The same counts split by ccdImage (row ``k`` is cut ``CUT_NAMES[k]``).
    n_input_per_ccd, n_kept_per_ccd : ndarray of int64, shape (n_ccd_images,)
        Measurements read and kept on each ccdImage.
    """

    keep: np.ndarray
    removed: dict
    removed_per_ccd: np.ndarray
    n_input_per_ccd: np.ndarray
    n_kept_per_ccd: np.ndarray

    @property
    def n_input(self) -> int:
        return int(self.keep.size)

    @property
    def n_kept(self) -> int:
        return int(np.count_nonzero(self.keep))

    def report_line(self) -> str:
        """One line: kept of input and the non-zero cut counts, e.g. ``kept 80 of 100; min_snr 15, flags 5``."""
        cuts = ", ".join(f"{name} {count}" for name, count in self.removed.items() if count)
        return f"kept {self.n_kept} of {self.n_input}" + (f"; removed by {cuts}" if cuts else "")

    def report(self) -> str:
        """A small text table: each cut, the number it removed, and the fraction of the input."""
        n = max(self.n_input, 1)
        width = max(len(c) for c in CUT_NAMES)
        lines = [f"{'cut':<{width}}  {'removed':>10}  {'fraction':>8}",
                 f"{'input':<{width}}  {self.n_input:>10d}  {1.0 if self.n_input else 0.0:>8.2%}"]
        lines += [f"{name:<{width}}  {count:>10d}  {count / n:>8.2%}" for name, count in self.removed.items()]
        lines.append(f"{'kept':<{width}}  {self.n_kept:>10d}  {self.n_kept / n:>8.2%}")
        return "\n".join(lines)


def _cut_masks(field: Field, config: JointcalConfig):
    """Yield (name, pass_mask) in order; each mask is evaluated on the whole table (vectorised)."""
    m = field.measurements
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        yield "finite", (np.isfinite(m.x) & np.isfinite(m.y) & np.isfinite(m.flux) & np.isfinite(m.flux_err)
                         & np.isfinite(m.var_x) & np.isfinite(m.var_y) & np.isfinite(m.cov_xy))
        yield "positive_errors", (m.var_x > 0) & (m.var_y > 0) & (m.flux_err > 0)
        yield "positive_definite_covariance", m.var_x * m.var_y - m.cov_xy ** 2 > 0
        yield "min_snr", m.flux / m.flux_err >= config.minSnr
        yield "flags", (m.flags & np.int64(config.flagMask)) == 0
        yield "max_position_error", np.sqrt(np.maximum(m.var_x, m.var_y)) <= config.maxPositionErrorPix
        bbox = field.ccd_images.bbox[m.ccd]
        yield "inside_bbox", ((m.x >= bbox[:, 0]) & (m.x <= bbox[:, 2])
                              & (m.y >= bbox[:, 1]) & (m.y <= bbox[:, 3]))


def select_sources(field: Field, config: JointcalConfig) -> SelectionResult:
    """Apply the measurement cuts of this module to ``field.measurements``.

    Parameters
    ----------
    field : Field
    config : JointcalConfig
        Uses ``minSnr``, ``flagMask`` and ``maxPositionErrorPix``.

    Returns
    -------
    SelectionResult
        The keep mask, shape (n_measurements,), and the per-cut (and per-ccdImage) counts.
    """
    ccd = field.measurements.ccd
    n_ccd = len(field.ccd_images)
    keep = np.ones(len(field.measurements), dtype=bool)
    removed = {}
    per_ccd = np.zeros((len(CUT_NAMES), n_ccd), dtype=np.int64)
    for k, (name, passed) in enumerate(_cut_masks(field, config)):
        lost = keep & ~passed
        removed[name] = int(np.count_nonzero(lost))
        per_ccd[k] = np.bincount(ccd[lost], minlength=n_ccd)
        keep &= passed
    return SelectionResult(keep=keep, removed=removed, removed_per_ccd=per_ccd,
                           n_input_per_ccd=np.bincount(ccd, minlength=n_ccd).astype(np.int64),
                           n_kept_per_ccd=np.bincount(ccd[keep], minlength=n_ccd).astype(np.int64))
