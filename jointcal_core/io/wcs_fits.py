"""Export any pixel -> sky mapping of one CCD as a FITS TAN-SIP WCS, with measured fidelity.

The exporter knows nothing of the fitted models: it takes a callable ``pixel_to_sky(x, y)``
(0-based pixels -> degrees), the CCD's bbox and the tangent point, samples the mapping on a grid
and fits the FITS representation of the lowest polynomial order that reproduces the callable
within the requested rms and maximum error, measured through astropy.wcs itself.

Why TAN-SIP is exact for polynomial models
------------------------------------------
Let ``(xi, eta) = P(u, v)`` be the gnomonic tangent-plane coordinates (deg) at the tangent point,
``P`` a polynomial of order N in the pixel offsets ``(u, v)`` from CRPIX. TAN-SIP computes
``(xi, eta) = CD @ ((u, v) + (A(u, v), B(u, v)))`` and then de-projects at CRVAL. Taking CD = the
linear part of ``P`` and ``(A, B) = CD^-1 @ (P - linear part)`` reproduces ``P`` exactly, so a
jointcal-like polynomial model is exported to rounding error. CRPIX is the bbox centre and
CRVAL the tangent point; when the tangent point does not project onto the bbox centre (a visit
tangent point, say) the constant term goes to ``A_0_0``/``B_0_0``, which astropy.wcs (and
wcslib-based tools) apply. Other mappings (a real TPV or SIP header, an AST WCS) are
approximated by the least-squares polynomial on the grid; the :class:`FidelityReport` says how
well.

Inverse coefficients ``AP``/``BP`` are fitted too (focal-plane -> pixel, the convention of the SIP
paper), so tools that use them for world -> pixel agree with the forward mapping; the report
gives their worst error in pixels.

Header-only files (:func:`write_wcs_fits`)
------------------------------------------
Investigated with astropy 8.0: a primary HDU with ``NAXIS = 0`` and ``NAXIS1``/``NAXIS2``
keywords is invalid FITS (astropy refuses to write it: "NAXISj keyword out of range");
``NAXIS = 3`` with ``NAXIS3 = 0`` is valid FITS without data but turns the WCS three-dimensional;
a real ``NAXIS = 2`` image costs the whole pixel array (9.4 MB for a 2048 x 4612 CCD at
BITPIX 8) and a tile-compressed empty image 118 kB plus a move of the WCS to HDU 1. So the file
is a valid, data-less primary header (``NAXIS = 0``, 2880 bytes) carrying the WCS and the CCD
size as ``IMAGEW``/``IMAGEH``, the convention of astrometry.net's header-only ``.wcs`` files.
``astropy.wcs.WCS(fits.getheader(path))`` reads the transformation; :func:`read_wcs_fits` also
sets ``pixel_shape`` from ``IMAGEW``/``IMAGEH`` so that ``calc_footprint()`` works.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..exceptions import InputError, JointcalWarning, OutputError
from ..projection import angular_separation_arcsec, sky_to_tangent

__all__ = ["FidelityReport", "fit_tan_sip", "write_wcs_fits", "read_wcs_fits", "wcs_to_header", "tan_sip_header",
           "pixel_grid", "fit_tangent_polynomial", "measure_fidelity"]

PixelToSky = Callable[[np.ndarray, np.ndarray], tuple]


@dataclass(frozen=True)
class FidelityReport:
    """How well an exported header reproduces the mapping it was fitted to.

    Attributes
    ----------
    order : int
        Polynomial order of the exported distortion (1 = pure TAN / linear TPV).
    rms_mas, max_mas : float
        RMS and maximum angular distance (mas) between the header (evaluated by astropy.wcs)
        and the callable over the check grid, which includes the bbox edges and corners.
    meets_limits : bool
        Whether ``rms_mas`` and ``max_mas`` are within the requested limits.
    n_points : int
        Size of the check grid.
    inverse_max_pix : float
        Worst error (pixels) of the inverse SIP polynomials (``AP``/``BP``) on the check grid;
        NaN when the header has none.
    """

    order: int
    rms_mas: float
    max_mas: float
    meets_limits: bool
    n_points: int
    inverse_max_pix: float = math.nan


def pixel_grid(bbox, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A regular ``n x n`` grid over ``bbox`` including its edges.

    Parameters
    ----------
    bbox : sequence of 4 float
        ``(x_min, y_min, x_max, y_max)``, 0-based outer pixel edges.
    n : int
        Points per axis (>= 2).

    Returns
    -------
    x, y : ndarray, shape (n * n,)
    """
    x_min, y_min, x_max, y_max = (float(v) for v in bbox)
    gx, gy = np.meshgrid(np.linspace(x_min, x_max, n), np.linspace(y_min, y_max, n))
    return gx.ravel(), gy.ravel()


def _check_bbox(bbox) -> np.ndarray:
    bbox = np.asarray(bbox, dtype=float)
    if bbox.shape != (4,) or not np.all(np.isfinite(bbox)) or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise InputError(f"bbox must be (x_min, y_min, x_max, y_max) with x_max > x_min and "
                         f"y_max > y_min, got {bbox.tolist()}")
    return bbox


def _terms(order: int, min_order: int = 0) -> list[tuple[int, int]]:
    """Exponents (i, j) of ``u**i * v**j`` with ``min_order <= i + j <= order``."""
    return [(n - j, j) for n in range(min_order, order + 1) for j in range(n + 1)]


def monomial_design(u, v, terms) -> np.ndarray:
    """Columns ``u**i * v**j`` for the ``(i, j)`` in ``terms``, shape (n, len(terms)), from one
    table of powers per coordinate."""
    u, v = np.asarray(u, dtype=float).ravel(), np.asarray(v, dtype=float).ravel()
    index = np.asarray(terms, dtype=np.int64).reshape(-1, 2)
    top = int(index.max())
    pu, pv = np.empty((top + 1, u.size)), np.empty((top + 1, v.size))
    pu[0] = pv[0] = 1.0
    for k in range(1, top + 1):
        np.multiply(pu[k - 1], u, out=pu[k])
        np.multiply(pv[k - 1], v, out=pv[k])
    return (pu[index[:, 0]] * pv[index[:, 1]]).T


def poly2d(matrix: np.ndarray, u, v) -> np.ndarray:
    """``sum M[p, q] u**p v**q`` over the non-zero entries (``polyval2d`` for sparse SIP matrices)."""
    p, q = np.nonzero(matrix)
    if p.size == 0:
        return np.zeros(np.shape(u))
    return monomial_design(u, v, list(zip(p.tolist(), q.tolist()))) @ matrix[p, q]


def fit_tangent_polynomial(u, v, xi, eta, order: int, min_order: int = 0):
    """Least-squares polynomial ``(xi, eta) = sum c_ij u**i v**j`` over ``min_order <= i+j <= order``.

    The fit is done in coordinates scaled to about [-1, 1] (for conditioning) and converted back,
    so the returned coefficients apply to ``u, v`` as given.

    Parameters
    ----------
    u, v : ndarray, shape (n,)
        Offsets from the polynomial's origin (pixels or degrees).
    xi, eta : ndarray, shape (n,)
        Values to fit.
    order, min_order : int

    Returns
    -------
    terms : list of (int, int), length m
    c_xi, c_eta : ndarray, shape (m,)
    """
    terms = _terms(order, min_order)
    su = max(float(np.max(np.abs(u))), 1e-300)
    sv = max(float(np.max(np.abs(v))), 1e-300)
    un, vn = np.asarray(u) / su, np.asarray(v) / sv
    design = monomial_design(un, vn, terms)
    coef, *_ = np.linalg.lstsq(design, np.stack([xi, eta], axis=1), rcond=None)
    scale = np.array([su**i * sv**j for i, j in terms])
    return terms, coef[:, 0] / scale, coef[:, 1] / scale


def first_candidate_order(u, v, xi, eta, u_chk, v_chk, xi_chk, eta_chk, max_order: int,
                          rms_mas: float, max_mas: float) -> int:
    """Lowest order whose polynomial fit meets the limits on the check grid, in plain numpy.

    The exported header represents this same tangent-plane polynomial, so an order that fails
    here cannot pass through astropy; only the first order that passes here (or ``max_order``)
    needs the (slower) header round trip. Errors are measured in the tangent plane (deg -> mas),
    which equals the sky distance to < 1e-4 relative within a degree of the tangent point.
    """
    for order in range(1, max_order + 1):
        terms, c_xi, c_eta = fit_tangent_polynomial(u, v, xi, eta, order)
        design = np.stack([u_chk**i * v_chk**j for i, j in terms], axis=1)
        err_mas = np.hypot(design @ c_xi - xi_chk, design @ c_eta - eta_chk) * 3.6e6
        # 0.9: keep a margin for card rounding and the sky-vs-plane difference
        if np.sqrt(np.mean(err_mas**2)) <= 0.9 * rms_mas and np.max(err_mas) <= 0.9 * max_mas:
            return order
    return max_order


def measure_fidelity(wcs: WCS, pixel_to_sky: PixelToSky, x, y, ra_deg=None, dec_deg=None):
    """RMS and max distance (mas) between ``wcs.all_pix2world(x, y, 0)`` and ``pixel_to_sky(x, y)``."""
    if ra_deg is None:
        ra_deg, dec_deg = pixel_to_sky(x, y)
    ra_w, dec_w = wcs.all_pix2world(x, y, 0)
    sep_mas = angular_separation_arcsec(ra_w, dec_w, ra_deg, dec_deg) * 1e3
    if not np.all(np.isfinite(sep_mas)):
        return math.inf, math.inf
    return float(np.sqrt(np.mean(sep_mas**2))), float(np.max(sep_mas))


def _tangent_point(pixel_to_sky: PixelToSky, centre, tangent_point_deg) -> tuple[float, float]:
    """The given tangent point, or the sky position of the bbox centre when it is None."""
    if tangent_point_deg is None:
        ra, dec = pixel_to_sky(np.array([centre[0]]), np.array([centre[1]]))
        tangent_point_deg = (np.ravel(ra)[0], np.ravel(dec)[0])
    return float(tangent_point_deg[0]), float(tangent_point_deg[1])


def _sample(pixel_to_sky: PixelToSky, x, y, tangent_point_deg):
    ra, dec = (np.asarray(a, dtype=float) for a in pixel_to_sky(x, y))
    xi, eta = sky_to_tangent(ra, dec, *tangent_point_deg)
    if not (np.all(np.isfinite(xi)) and np.all(np.isfinite(eta))):
        raise InputError("pixel_to_sky gave non-finite sky positions on the CCD or positions 90 deg or "
                         "more from the tangent point; check the mapping and tangent_point_deg")
    return ra, dec, xi, eta


def _sip_coefficients(terms, c_xi, c_eta, u, v):
    """CD and SIP matrices (A, B, AP, BP; ``M[p, q]`` multiplies ``u**p v**q``) from the polynomial."""
    coef = {t: np.array([cx, ce]) for t, cx, ce in zip(terms, c_xi, c_eta)}
    cd = np.stack([coef[(1, 0)], coef[(0, 1)]], axis=1)
    order = max(sum(t) for t in terms)
    if order < 2:
        return cd, None
    cd_inv = np.linalg.inv(cd)
    a, b = np.zeros((order + 1, order + 1)), np.zeros((order + 1, order + 1))
    for t in terms:
        if sum(t) != 1:
            a[t], b[t] = cd_inv @ coef[t]
    # inverse: pixel offset (u, v) = (U, V) + (AP, BP)(U, V) with (U, V) = (u, v) + (A, B)(u, v)
    big_u = u + poly2d(a, u, v)
    big_v = v + poly2d(b, u, v)
    inv_order, inv_terms, c_ap, c_bp = _fit_inverse(big_u, big_v, u - big_u, v - big_v, order)
    ap, bp = np.zeros((inv_order + 1, inv_order + 1)), np.zeros((inv_order + 1, inv_order + 1))
    for t, c1, c2 in zip(inv_terms, c_ap, c_bp):
        ap[t], bp[t] = c1, c2
    return cd, (a, b, ap, bp)


def tan_sip_header(crval_deg, crpix_1based, cd, sip=None) -> fits.Header:
    """TAN or TAN-SIP header cards, every number at full double precision.

    Parameters
    ----------
    crval_deg : (float, float)
        Tangent point (RA, Dec).
    crpix_1based : (float, float)
        FITS (1-based) reference pixel.
    cd : ndarray, shape (2, 2)
        Linear part, deg/pixel.
    sip : tuple of 4 ndarray or None
        ``(A, B, AP, BP)``, square matrices with ``M[p, q]`` the coefficient of ``u**p v**q``;
        zero entries are not written.
    """
    suffix = "" if sip is None else "-SIP"
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"] = ("RA---TAN" + suffix, "gnomonic projection" + (" + SIP distortion" if sip else ""))
    header["CTYPE2"] = ("DEC--TAN" + suffix, "gnomonic projection" + (" + SIP distortion" if sip else ""))
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRVAL1"] = (float(crval_deg[0]), "[deg] tangent point RA")
    header["CRVAL2"] = (float(crval_deg[1]), "[deg] tangent point Dec")
    header["CRPIX1"] = (float(crpix_1based[0]), "[pix] reference pixel (1-based)")
    header["CRPIX2"] = (float(crpix_1based[1]), "[pix] reference pixel (1-based)")
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = (float(cd[i, j]), "[deg/pix] linear transformation")
    header["RADESYS"] = "ICRS"
    if sip is None:
        return header
    for name, matrix in zip(("A", "B", "AP", "BP"), sip):
        header[f"{name}_ORDER"] = matrix.shape[0] - 1
        for p, q in zip(*np.nonzero(matrix)):
            header[f"{name}_{p}_{q}"] = float(matrix[p, q])
    return header


def _fit_inverse(big_u, big_v, du, dv, order: int, tol_pix: float = 1e-3):
    """Lowest inverse order in [order, order + 3] whose worst error is below ``tol_pix``."""
    best = None
    for inv_order in range(order, order + 4):
        terms, c_u, c_v = fit_tangent_polynomial(big_u, big_v, du, dv, inv_order)
        design = monomial_design(big_u, big_v, terms)
        err = float(np.max(np.hypot(design @ c_u - du, design @ c_v - dv)))
        if best is None or err < best[0]:
            best = (err, inv_order, terms, c_u, c_v)
        if err < tol_pix:
            break
    return best[1:]


def _header_to_wcs(header: fits.Header) -> WCS:
    """The WCS exactly as a reader of the written cards gets it (card formatting included)."""
    text = header.tostring(sep="\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(fits.Header.fromstring(text, sep="\n"))


def _inverse_error_pix(wcs: WCS, x, y) -> float:
    if wcs.sip is None or wcs.sip.ap is None:
        return math.nan
    foc = wcs.sip_pix2foc(np.stack([x, y], axis=1), 0)
    back = wcs.sip_foc2pix(foc, 0)
    return float(np.max(np.hypot(back[:, 0] - x, back[:, 1] - y)))


def fit_tan_sip(pixel_to_sky: PixelToSky, bbox, tangent_point_deg=None, max_order: int = 7,
                rms_mas: float = 1.0, max_mas: float = 3.0, grid: int = 40) -> tuple[WCS, FidelityReport]:
    """Fit the lowest-order TAN-SIP WCS that reproduces ``pixel_to_sky`` over the CCD.

    Parameters
    ----------
    pixel_to_sky : callable
        ``pixel_to_sky(x, y) -> (ra_deg, dec_deg)`` on 0-based pixel arrays of shape (n,).
    bbox : sequence of 4 float
        ``(x_min, y_min, x_max, y_max)``, 0-based outer pixel edges.
    tangent_point_deg : (float, float) or None
        ``(ra, dec)`` of the gnomonic tangent point, written as CRVAL. Give the tangent plane in
        which the model is polynomial for an exact export; None uses the sky position of the
        bbox centre (then ``A_0_0``, ``B_0_0`` are ~0 and the gnomonic re-projection makes
        the export an approximation).
    max_order : int
        Highest SIP order tried (1 = plain TAN).
    rms_mas, max_mas : float
        Limits on the RMS and maximum distance (mas) between header and callable.
    grid : int
        Points per axis of the fitting grid; the check grid has ``grid + 1`` (both include the
        bbox edges), so the check is not done on the points fitted.

    Returns
    -------
    wcs : astropy.wcs.WCS
        Read back from the header cards; ``pixel_shape`` set to the bbox size.
        ``wcs.to_header(relax=True)`` or :func:`write_wcs_fits` export it.
    report : FidelityReport
        Of the chosen order. If no order up to ``max_order`` meets the limits, the best one is
        returned with ``meets_limits=False`` and a :class:`JointcalWarning`.
    """
    bbox = _check_bbox(bbox)
    centre = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2])
    crval = _tangent_point(pixel_to_sky, centre, tangent_point_deg)
    x_fit, y_fit = pixel_grid(bbox, max(grid, max_order + 2))
    _, _, xi, eta = _sample(pixel_to_sky, x_fit, y_fit, crval)
    x_chk, y_chk = pixel_grid(bbox, max(grid, max_order + 2) + 1)
    ra_chk, dec_chk, xi_chk, eta_chk = _sample(pixel_to_sky, x_chk, y_chk, crval)
    u, v = x_fit - centre[0], y_fit - centre[1]
    start = first_candidate_order(u, v, xi, eta, x_chk - centre[0], y_chk - centre[1], xi_chk, eta_chk,
                                  max_order, rms_mas, max_mas)
    best = None
    for order in range(start, max_order + 1):
        terms, c_xi, c_eta = fit_tangent_polynomial(u, v, xi, eta, order)
        cd, sip = _sip_coefficients(terms, c_xi, c_eta, u, v)
        wcs = _header_to_wcs(tan_sip_header(crval, centre + 1.0, cd, sip))
        rms, worst = measure_fidelity(wcs, pixel_to_sky, x_chk, y_chk, ra_chk, dec_chk)
        report = FidelityReport(order, rms, worst, rms <= rms_mas and worst <= max_mas, len(x_chk),
                                _inverse_error_pix(wcs, x_chk, y_chk))
        if best is None or (rms, worst) < (best[1].rms_mas, best[1].max_mas):
            best = (wcs, report)
        if report.meets_limits:
            best = (wcs, report)
            break
    wcs, report = best
    if not report.meets_limits:
        warnings.warn(f"no TAN-SIP up to order {max_order} reproduces the mapping within {rms_mas} mas rms / "
                      f"{max_mas} mas max; best order {report.order}: {report.rms_mas:.3g} mas rms, "
                      f"{report.max_mas:.3g} mas max", JointcalWarning, stacklevel=2)
    wcs.pixel_shape = (int(round(bbox[2] - bbox[0])), int(round(bbox[3] - bbox[1])))
    return wcs, report


def write_wcs_fits(path: str | Path, wcs: WCS, naxis1: int, naxis2: int,
                   extra_cards: dict | list | None = None) -> Path:
    """Write a header-only FITS file: the WCS plus the CCD size in ``IMAGEW``/``IMAGEH``.

    Parameters
    ----------
    path : str or Path
    wcs : astropy.wcs.WCS
        Typically from :func:`fit_tan_sip`; SIP coefficients are kept (``relax=True``).
    naxis1, naxis2 : int
        CCD width and height in pixels.
    extra_cards : dict or list of (key, value[, comment]), optional
        Further keywords (e.g. ``VISIT``, ``DETECTOR``, the fidelity numbers).

    Returns
    -------
    Path
        The file written (see the module docstring for why ``NAXIS = 0``).
    """
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = 8
    header["NAXIS"] = 0
    header["IMAGEW"] = (int(naxis1), "[pix] CCD width (NAXIS1 of the image)")
    header["IMAGEH"] = (int(naxis2), "[pix] CCD height (NAXIS2 of the image)")
    header.extend(wcs_to_header(wcs), update=True)
    items = extra_cards.items() if isinstance(extra_cards, dict) else (extra_cards or [])
    for item in items:
        key, *rest = item
        header[key] = tuple(rest) if len(rest) > 1 else rest[0]
    path = Path(path)
    try:
        fits.PrimaryHDU(header=header).writeto(path, overwrite=True)
    except OSError as err:
        raise OutputError(f"cannot write the WCS file: {err}", path=str(path)) from err
    return path


def wcs_to_header(wcs: WCS) -> fits.Header:
    """The cards of a celestial TAN or TAN-SIP WCS at full precision, linear part as a CD matrix.

    ``wcs.to_header()`` rounds CRVAL to 14 significant digits (wcslib's formatting); this does not.
    """
    if not all(c.upper()[4:8] == "-TAN" for c in wcs.wcs.ctype):
        return wcs.to_header(relax=True)
    sip = None
    if wcs.sip is not None:
        s = wcs.sip
        empty = np.zeros((1, 1))
        sip = (s.a, s.b, empty if s.ap is None else s.ap, empty if s.bp is None else s.bp)
        sip = tuple(np.asarray(m, dtype=float) for m in sip)
    header = tan_sip_header(wcs.wcs.crval, wcs.wcs.crpix, wcs.pixel_scale_matrix, sip)
    if sip is not None and wcs.sip.ap is None:
        for key in ("AP_ORDER", "BP_ORDER", "AP_0_0", "BP_0_0"):
            header.remove(key, ignore_missing=True)
    return header


def read_wcs_fits(path: str | Path) -> WCS:
    """Read a file of :func:`write_wcs_fits`: the WCS with ``pixel_shape`` from ``IMAGEW``/``IMAGEH``."""
    try:
        header = fits.getheader(path, 0)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the WCS file: {err}", path=str(path)) from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(header)
    if "IMAGEW" in header and "IMAGEH" in header:
        wcs.pixel_shape = (int(header["IMAGEW"]), int(header["IMAGEH"]))
    return wcs
