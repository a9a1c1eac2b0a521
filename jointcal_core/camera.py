"""Real camera layouts (CFHT MegaCam, Subaru HSC) as :class:`jointcal_core.data.Camera`.

Both layouts are read from real files shipped with upstream projects, never typed in:

- MegaCam: SCAMP's ``megacam.ahead`` (36 header blocks, one per CCD, each giving CRPIX and CD of
  a first-order focal-plane model). The focal plane is FITS intermediate world coordinates
  ``CD @ (pixel - CRPIX)`` in degrees at the nominal plate scale.
- HSC: the ``raCorners``/``decCorners`` of one LSST ``visitSummary`` (corners of each detector's
  bbox on the sky from the calibrated WCS), projected on the tangent plane at the visit boresight
  and rotated by the boresight rotation angle into the camera frame. An affine map per detector
  is fitted to its 4 corners; the fit residual (the part of the optical distortion that is not
  linear over one CCD) is kept in :data:`HSC_CORNER_RESIDUAL_ARCSEC` after the first call.

Focal-plane coordinates are degrees (``focal_unit='deg'``) with u along the tangent-plane xi
(east at position angle 0) and v along eta (north), so both layouts have the sky parity
(``det(M[:, :2]) < 0``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from .data import Camera
from .exceptions import InputError
from .projection import sky_to_tangent

__all__ = ["megacam_camera", "hsc_camera", "camera_by_name", "MEGACAM_AHEAD", "HSC_VISIT_SUMMARY_DIR",
           "corner_residual_arcsec"]

_DATA = Path("/work/shared/data")
#: SCAMP's MegaCam focal-plane header (astromatic/scamp tests/extra/megacam.ahead)
MEGACAM_AHEAD = _DATA / "scamp_tests_extra/tests/extra/megacam.ahead"
#: LSST drp_tasks HSC visitSummary files (one per visit, 103 detectors each)
HSC_VISIT_SUMMARY_DIR = _DATA / "lsst_drp_tasks_hsc_visitsummary/tests/data"

MEGACAM_SHAPE = (2112, 4644)   # (nx, ny) pixels
HSC_SHAPE = (2048, 4176)


def _bbox(nx: int, ny: int, n: int) -> np.ndarray:
    return np.tile([-0.5, -0.5, nx - 0.5, ny - 0.5], (n, 1)).astype(float)


@lru_cache(maxsize=4)
def megacam_camera(ahead_path: str | Path = MEGACAM_AHEAD) -> Camera:
    """CFHT MegaCam: 36 CCDs of 2112 x 4644 pixels from SCAMP's ``megacam.ahead``.

    Parameters
    ----------
    ahead_path : path
        ASCII file of FITS header blocks (one per CCD, each ending with ``END``) giving CRPIX1/2
        and CD1_1..CD2_2.

    Returns
    -------
    Camera
        Detector ids 0..35 in file order (the order of the header blocks, which is also the
        extension order of MegaCam MEF images). ``pixel_to_focal`` maps 0-based pixels to
        ``CD @ (p + 1 - CRPIX)`` in degrees: FITS pixels are 1-based, hence the +1.
    """
    path = Path(ahead_path)
    if not path.exists():
        raise InputError("MegaCam focal-plane header not found; pass ahead_path=", path=str(path))
    blocks = [b for b in path.read_text().split("\nEND") if "CRPIX1" in b]
    matrices = []
    for block in blocks:
        header = fits.Header.fromstring(block.strip("\n"), sep="\n")
        cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
        crpix = np.array([header["CRPIX1"], header["CRPIX2"]])
        offset = cd @ (1.0 - crpix)          # 0-based pixel p -> CD @ (p + 1 - CRPIX)
        matrices.append(np.column_stack([cd, offset]))
    if len(matrices) != 36:
        raise InputError(f"expected 36 CCD header blocks, found {len(matrices)}", path=str(path))
    n = len(matrices)
    return Camera(name="megacam", detector=np.arange(n, dtype=np.int64), bbox=_bbox(*MEGACAM_SHAPE, n),
                  pixel_to_focal=np.array(matrices), focal_unit="deg")


def _fit_affine(x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine maps for many detectors at once.

    Parameters
    ----------
    x, y, u, v : ndarray, shape (n_det, n_pts)

    Returns
    -------
    matrix : ndarray, shape (n_det, 2, 3)
    residual : ndarray, shape (n_det, n_pts)
        Distance between fitted and given (u, v), same unit as u, v.
    """
    design = np.stack([x, y, np.ones_like(x)], axis=-1)                    # (n_det, n_pts, 3)
    pinv = np.linalg.pinv(design)                                          # (n_det, 3, n_pts)
    cu = np.einsum("dkp,dp->dk", pinv, u)
    cv = np.einsum("dkp,dp->dk", pinv, v)
    matrix = np.stack([cu, cv], axis=1)
    fit_u = np.einsum("dpk,dk->dp", design, cu)
    fit_v = np.einsum("dpk,dk->dp", design, cv)
    return matrix, np.hypot(fit_u - u, fit_v - v)


def _read_visit_summary(path: Path) -> dict:
    with fits.open(path) as hdus:
        table, info = hdus[1].data, hdus[7].data
        return dict(detector=np.asarray(table["id"], np.int64),
                    x0=np.asarray(table["bbox_min_x"], float), y0=np.asarray(table["bbox_min_y"], float),
                    x1=np.asarray(table["bbox_max_x"], float), y1=np.asarray(table["bbox_max_y"], float),
                    ra=np.asarray(table["raCorners"], float), dec=np.asarray(table["decCorners"], float),
                    ra0=float(np.degrees(info["boresightradec_ra"][0])),
                    dec0=float(np.degrees(info["boresightradec_dec"][0])),
                    rot=float(info["boresightrotangle"][0]))


@lru_cache(maxsize=8)
def _hsc(path: str) -> tuple[Camera, np.ndarray]:
    s = _read_visit_summary(Path(path))
    xi, eta = sky_to_tangent(s["ra"], s["dec"], s["ra0"], s["dec0"])        # (n_det, 4) deg
    # De-rotate by the boresight rotation angle: the camera frame is the sky frame turned by -rot.
    c, sn = np.cos(s["rot"]), np.sin(s["rot"])
    u, v = c * xi + sn * eta, -sn * xi + c * eta
    # Corner order of LSST's Box2D.getCorners(): (min, min), (max, min), (max, max), (min, max), at the
    # outer pixel edges (README: the AST WCS at x0 - 0.5 ... reproduces the corners to 0.1 mas).
    xl, xh, yl, yh = s["x0"] - 0.5, s["x1"] + 0.5, s["y0"] - 0.5, s["y1"] + 0.5
    px = np.stack([xl, xh, xh, xl], axis=1)
    py = np.stack([yl, yl, yh, yh], axis=1)
    matrix, residual = _fit_affine(px, py, u, v)
    order = np.argsort(s["detector"])
    bbox = np.column_stack([xl, yl, xh, yh])[order]
    camera = Camera(name="hsc", detector=s["detector"][order], bbox=bbox, pixel_to_focal=matrix[order],
                    focal_unit="deg")
    return camera, residual[order] * 3600.0


def hsc_camera(visit_summary: str | Path | None = None) -> Camera:
    """Subaru Hyper Suprime-Cam: 103 science CCDs of 2048 x 4176 pixels.

    Parameters
    ----------
    visit_summary : path, optional
        An LSST ``visitSummary_<visit>.fits``; default visit 1176 of the shipped set.

    Returns
    -------
    Camera
        Detector ids as in LSST (0..103 without 9). The affine ``pixel_to_focal`` of each CCD
        is the least-squares fit to its 4 corners, projected on the tangent plane at the
        boresight and de-rotated by the boresight rotation angle; the corner residual of that
        fit is :func:`corner_residual_arcsec`.

    Notes
    -----
    The rotation direction is a convention (the camera frame is defined up to a half turn by a
    single rotator angle of 270 deg); layouts from different visits agree to the HSC distortion
    variation.
    """
    if visit_summary is None:
        visit_summary = HSC_VISIT_SUMMARY_DIR / "visitSummary_1176.fits"
    if not Path(visit_summary).exists():
        raise InputError("HSC visitSummary not found", path=str(visit_summary))
    return _hsc(str(visit_summary))[0]


def corner_residual_arcsec(visit_summary: str | Path | None = None) -> np.ndarray:
    """Residual (arcsec) of the HSC per-detector affine fit at the 4 corners, shape (103, 4)."""
    if visit_summary is None:
        visit_summary = HSC_VISIT_SUMMARY_DIR / "visitSummary_1176.fits"
    return _hsc(str(visit_summary))[1]


def camera_by_name(name: str) -> Camera:
    """``'megacam'`` or ``'hsc'`` -> the :class:`Camera`."""
    key = name.lower()
    if key == "megacam":
        return megacam_camera()
    if key == "hsc":
        return hsc_camera()
    raise InputError(f"unknown camera '{name}'; use 'megacam' or 'hsc' or pass a Camera")
