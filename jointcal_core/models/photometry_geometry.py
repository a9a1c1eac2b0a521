"""Geometry and starting values of the photometric models.

Owns: focal-plane coordinates of pixels (from the camera when known, else from each CCD's input
WCS projected on its visit's tangent plane), the focal-plane box the visit Chebyshev lives on,
the chip held fixed, the reference magnitudes (band, colour terms, pedestal), and the split
of the input zero points into chip + visit parts that starts the constrained models.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..data import Field, ReferenceCatalog
from ..exceptions import InputError, JointcalWarning
from ..projection import sky_to_tangent

__all__ = ["FocalPlane", "reference_mags", "initial_zero_points", "split_chip_visit"]

#: 2.5 / ln(10): d(mag) = MAG_PER_LN * d(flux) / flux
MAG_PER_LN = 2.5 / np.log(10.0)


class FocalPlane:
    """Pixel -> focal-plane coordinates for the ccdImages of a field.

    With ``field.camera``: the camera's affine pixel -> focal map (degrees at nominal scale).
    Without: for each CCD, the affine map that best fits its input WCS projected on its visit's
    tangent plane (:meth:`CcdImages.visit_centers_deg`), in degrees. Affine either way, so the
    photometric model stays a polynomial in pixels and ``calibration.json`` records it exactly;
    the optical distortion left out (arcseconds at the field edge) is irrelevant for a smooth
    illumination pattern.

    Attributes
    ----------
    box : tuple of 4 floats
        ``(u_min, v_min, u_max, v_max)`` enclosing every CCD corner of every visit (the Chebyshev
        domain).
    """

    def __init__(self, field: Field):
        self._ccds = field.ccd_images
        self._camera = field.camera
        self._affine = None if self._camera is not None else self._fit_affines()
        if self._camera is not None:
            missing = np.setdiff1d(np.unique(self._ccds.detector), self._camera.detector)
            if missing.size:
                raise InputError(f"camera '{self._camera.name}' has no detector {int(missing[0])}; pass the "
                                 "right camera or none", detector=int(missing[0]))
        b = self._ccds.bbox
        n = len(self._ccds)
        cx = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], axis=1).ravel()
        cy = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], axis=1).ravel()
        u, v = self.to_focal(np.repeat(np.arange(n), 4), cx, cy)
        if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
            raise InputError("some CCD corners do not project on the focal plane; check the input WCSs")
        self.box = (float(u.min()), float(v.min()), float(u.max()), float(v.max()))
        cu, cv = self.to_focal(np.arange(n), (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
        self.ccd_center_radius = np.hypot(cu, cv)

    def to_focal(self, ccd: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane (u, v) of 0-based pixels (x, y) on ccdImages ``ccd`` (arrays of one length)."""
        ccd = np.asarray(ccd, np.int64)
        x, y = np.asarray(x, float), np.asarray(y, float)
        if self._camera is not None:
            return self._camera.to_focal(self._ccds.detector[ccd], x, y)
        m = self._affine[ccd]
        return (m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2], m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2])

    def _fit_affines(self) -> np.ndarray:
        """Per ccdImage, the affine (2, 3) pixel -> visit tangent plane fitted to its input WCS."""
        ccds = self._ccds
        n = len(ccds)
        centers = ccds.visit_centers_deg()
        g = np.linspace(0.0, 1.0, 5)
        gx, gy = np.empty((n, g.size ** 2)), np.empty((n, g.size ** 2))
        ra, dec = np.empty_like(gx), np.empty_like(gx)
        for i, wcs in enumerate(ccds.wcs):
            x0, y0, x1, y1 = ccds.bbox[i]
            xx, yy = np.meshgrid(x0 + g * (x1 - x0), y0 + g * (y1 - y0))
            gx[i], gy[i] = xx.ravel(), yy.ravel()
            ra[i], dec[i] = wcs.all_pix2world(gx[i], gy[i], 0)
        center = np.array([centers[int(v)] for v in ccds.visit], float).reshape(n, 2)
        u, v = sky_to_tangent(ra, dec, center[:, 0, None], center[:, 1, None])
        # one least-squares solve per CCD size: the grids (hence the designs) of equal bboxes are equal
        out = np.full((n, 2, 3), np.nan)
        _, group = np.unique(ccds.bbox, axis=0, return_inverse=True)
        for k in np.unique(group):
            rows = np.flatnonzero(group.ravel() == k)
            design = np.column_stack([gx[rows[0]], gy[rows[0]], np.ones(g.size ** 2)])
            rhs = np.concatenate([u[rows].T, v[rows].T], axis=1)       # (25, 2 m): u columns then v
            coef, *_ = np.linalg.lstsq(design, rhs, rcond=None)
            out[rows, 0] = coef[:, :rows.size].T
            out[rows, 1] = coef[:, rows.size:].T
        return out


def reference_mags(ref: ReferenceCatalog, band: str, config) -> tuple[np.ndarray, np.ndarray]:
    """Reference AB magnitudes and errors in ``band``, colour terms applied when configured.

    The colour term adds ``sum_k c_k col^k`` with ``col = m_b1 - m_b2`` (``colorTermBands``,
    ``colorTermCoefficients``). The error is the catalog's (the colour term's own error is not
    modelled). Rows without a finite positive flux and error get NaN.
    """
    mag, mag_err = ref.mag(band)
    if config.applyColorTerms:
        bands, coeffs = list(config.colorTermBands), list(config.colorTermCoefficients)
        if len(bands) != 2 or not coeffs:
            raise InputError("applyColorTerms needs colorTermBands (two reference bands) and "
                             "colorTermCoefficients (c0, c1, ...)")
        colour = ref.mag(bands[0])[0] - ref.mag(bands[1])[0]
        mag = mag + np.polynomial.polynomial.polyval(colour, np.asarray(coeffs, float))
    bad = ~(np.isfinite(mag) & np.isfinite(mag_err) & (mag_err > 0))
    return np.where(bad, np.nan, mag), np.where(bad, np.nan, mag_err)


def initial_zero_points(field: Field, inst_mag: np.ndarray, ccd: np.ndarray, ref_mag: np.ndarray) -> np.ndarray:
    """Input zero point of every ccdImage, filling missing ones.

    A ccdImage without a finite input ``zp_mag`` gets the median of the others; when none has
    one, the median of ``ref_mag - inst_mag`` over reference-matched measurements (``ref_mag``
    NaN elsewhere), else 25. Either case is warned about.
    """
    zp = np.asarray(field.ccd_images.zp_mag, float).copy()
    bad = ~np.isfinite(zp)
    if not np.any(bad):
        return zp
    if np.any(~bad):
        fill = float(np.median(zp[~bad]))
    else:
        diff = ref_mag - inst_mag
        diff = diff[np.isfinite(diff)]
        fill = float(np.median(diff)) if diff.size else 25.0
    warnings.warn(f"{int(bad.sum())} ccdImage(s) have no input zero point; starting them at {fill:.3f}",
                  JointcalWarning, stacklevel=3)
    zp[bad] = fill
    return zp


def split_chip_visit(zp: np.ndarray, chip: np.ndarray, visit: np.ndarray, n_chip: int,
                     n_visit: int) -> tuple[np.ndarray, np.ndarray]:
    """Split per-ccdImage zero points into chip + visit offsets (magnitudes).

    ``chip_zp[c]`` is the mean zp of chip c's ccdImages; the visit offsets take the rest,
    ``visit_zp[v] = mean over v's ccdImages of (zp - chip_zp)``, so ``chip_zp + visit_zp``
    reproduces the inputs up to their non-separable part.
    """
    count_c = np.bincount(chip, minlength=n_chip)
    chip_zp = np.bincount(chip, weights=zp, minlength=n_chip) / np.maximum(count_c, 1)
    count_v = np.bincount(visit, minlength=n_visit)
    visit_zp = np.bincount(visit, weights=zp - chip_zp[chip], minlength=n_visit) / np.maximum(count_v, 1)
    return chip_zp, visit_zp
