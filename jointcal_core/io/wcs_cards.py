"""Fast export of many CCDs: header cards as text and TAN-SIP / TPV evaluated exactly in numpy.

:func:`~jointcal_core.io.wcs_fits.fit_tan_sip` and :func:`~jointcal_core.io.scamp_head.fit_tpv`
measure every candidate header through ``astropy.wcs``, which costs ~15-25 ms per CCD and
header (building an astropy ``Header`` card by card, formatting it, parsing it back, building a
``WCS``): minutes for a tract of 5000 CCDs. This module does the same fits for the exporter with

- one evaluation of the model per CCD, shared by both formats (:func:`sample_ccd`);
- the cards formatted as text exactly as astropy formats them (``astropy.io.fits.card``'s value
  formatter, so floats keep astropy's 20-character rounding), and the *rounded* values parsed
  back from that text, so what is measured is what a reader of the file gets;
- the header evaluated in numpy with wcslib's equations: TAN-SIP ``CD @ (u + A(u, v), v +
  B(u, v))`` with ``(u, v) = pixel + 1 - CRPIX``, TPV ``xi = sum PV1_k T_k(x', y')``,
  ``eta = sum PV2_k T_k(y', x')`` with ``(x', y') = CD @ (pixel + 1 - CRPIX)``, then the gnomonic
  de-projection at CRVAL (wcslib's TAN with its default LONPOLE = 180 deg for a tangent point
  off the pole), and the distance to the model measured as in
  :func:`~jointcal_core.io.wcs_fits.measure_fidelity`.

The exporter (:mod:`jointcal_core.io.export_models`) re-reads a deterministic sample of the written
headers through ``astropy.wcs`` and checks that astropy agrees with this evaluation.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
from astropy.io.fits.card import _format_value

from ..projection import angular_separation_arcsec, tangent_to_sky
from .wcs_fits import (
    FidelityReport,
    PixelToSky,
    _check_bbox,
    _sample,
    _sip_coefficients,
    _tangent_point,
    _terms,
    monomial_design,
    pixel_grid,
    poly2d,
)

__all__ = [
    "CcdSamples",
    "card",
    "fast_celestial_wcs",
    "header_only_fits_bytes",
    "header_text",
    "sample_ccd",
    "start_order",
    "start_orders",
    "tan_sip_export",
    "tpv_export",
]

_BLOCK = 2880


def _format(value) -> str:
    """astropy's card value formatting (``astropy.io.fits.card._format_value``), with a fast path
    for Python floats, ints and strings (the exporter formats ~80 cards per CCD)."""
    kind = type(value)
    if kind is float:
        text = repr(value).replace("e", "E")
        if len(text) > 20:     # astropy's _format_float: cut the mantissa to fit 20 characters
            at = text.find("E")
            text = text[:20] if at < 0 else text[:20 - (len(text) - at)] + text[at:]
        return f"{text:>20}"
    if kind is int:
        return f"{value:>20d}"
    if kind is str and value:
        return f"{chr(39) + value.replace(chr(39), chr(39) * 2).ljust(8) + chr(39):20}"
    return _format_value(value)


def card(key: str, value, comment: str = "") -> str:
    """One 80-character card image; the value formatted as astropy formats it (floats within
    20 characters), the comment cut at the card's end."""
    text = f"{key:<8}= {_format(value)}"
    if comment:
        text += f" / {comment}"
    return text[:80].ljust(80)


def _rounded(value: float) -> float:
    """The float a reader gets back from the card text of ``value``."""
    value = float(value)
    text = repr(value)
    if len(text) <= 20:     # written in full: read back exactly
        return value
    return float(_format(value))


def header_text(cards: list[tuple]) -> list[str]:
    """Card images of ``(key, value[, comment])`` items."""
    return [card(*item) for item in cards]


_PRIMARY = (card("SIMPLE", True, "conforms to FITS standard") + card("BITPIX", 8, "array data type")
            + card("NAXIS", 0, "number of array dimensions"))


def header_only_fits_bytes(images: list[str] | str) -> bytes:
    """A data-less primary HDU (``NAXIS = 0``): ``images`` (without SIMPLE/BITPIX/NAXIS; a list of
    card images or their concatenation) then END, padded to 2880-byte blocks, byte for byte what
    ``fits.PrimaryHDU(header).writeto`` writes."""
    text = _PRIMARY + (images if isinstance(images, str) else "".join(images)) + "END".ljust(80)
    text += " " * (-len(text) % _BLOCK)
    return text.encode("ascii")


@dataclass(frozen=True)
class CcdSamples:
    """The model sampled once on the fitting and check grids of one CCD (see ``fit_tan_sip``)."""

    centre: np.ndarray
    crval: tuple
    u: np.ndarray
    v: np.ndarray
    xi: np.ndarray
    eta: np.ndarray
    x_chk: np.ndarray
    y_chk: np.ndarray
    ra_chk: np.ndarray
    dec_chk: np.ndarray
    xi_chk: np.ndarray
    eta_chk: np.ndarray


def sample_ccd(pixel_to_sky: PixelToSky, bbox, tangent_point_deg=None, max_order: int = 7,
               grid: int = 40) -> CcdSamples:
    """Evaluate ``pixel_to_sky`` once on the grids ``fit_tan_sip``/``fit_tpv`` use (same points)."""
    bbox = _check_bbox(bbox)
    centre = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2])
    crval = _tangent_point(pixel_to_sky, centre, tangent_point_deg)
    n_grid = max(grid, max_order + 2)
    x_fit, y_fit = pixel_grid(bbox, n_grid)
    x_chk, y_chk = pixel_grid(bbox, n_grid + 1)
    n = x_fit.size
    ra, dec, xi, eta = _sample(pixel_to_sky, np.r_[x_fit, x_chk], np.r_[y_fit, y_chk], crval)
    return CcdSamples(centre, crval, x_fit - centre[0], y_fit - centre[1], xi[:n], eta[:n], x_chk, y_chk,
                      ra[n:], dec[n:], xi[n:], eta[n:])


def _fidelity(s: CcdSamples, xi_h, eta_h, crval) -> tuple[float, float]:
    """RMS and max sky distance (mas) between the header's tangent-plane positions (at ``crval``)
    and the model's. With the model's own tangent point, the distance follows from the plane
    offsets through the gnomonic metric ``[(1 + eta^2) dxi^2 - 2 xi eta dxi deta + (1 + xi^2)
    deta^2] / (1 + xi^2 + eta^2)^2`` (exact to second order in the offset, < 1e-9 relative here);
    otherwise both are de-projected and compared on the sky."""
    if tuple(crval) == tuple(s.crval):
        xi, eta = np.radians(s.xi_chk), np.radians(s.eta_chk)
        dxi, deta = np.radians(xi_h - s.xi_chk), np.radians(eta_h - s.eta_chk)
        r2 = 1.0 + xi * xi + eta * eta
        d2 = ((1.0 + eta * eta) * dxi * dxi - 2.0 * xi * eta * dxi * deta + (1.0 + xi * xi) * deta * deta) / (r2 * r2)
        sep = np.degrees(np.sqrt(np.maximum(d2, 0.0))) * 3.6e6
    else:
        ra, dec = tangent_to_sky(xi_h, eta_h, *crval)
        sep = angular_separation_arcsec(ra, dec, s.ra_chk, s.dec_chk) * 1e3
    if not np.all(np.isfinite(sep)):
        return math.inf, math.inf
    return float(np.sqrt(np.mean(sep ** 2))), float(np.max(sep))


def _poly(matrix: np.ndarray, u, v):
    return poly2d(matrix, u, v)


# --- least squares on the fixed grids: the fitting and check grids depend only on the bbox, so
# the pseudo-inverse of each order's design matrix is computed once per bbox (a tract has one or
# two CCD sizes) and every CCD's fit is one small matrix product
_GRID_CACHE: dict = {}


_KEY_OF_ARRAYS: dict = {}


def _grid_key(s: CcdSamples) -> tuple:
    """Key of the sampling grids of ``s``: hashes of their values, memoised on the arrays' identity
    (samples of one bbox made by ``export_models.all_samples`` share their grid arrays)."""
    ident = (id(s.u), id(s.v), id(s.x_chk))
    hit = _KEY_OF_ARRAYS.get(ident)
    if hit is not None and hit[0] is s.u and hit[1] is s.v and hit[2] is s.x_chk:
        return hit[3]
    key = (hash(s.u.tobytes()), hash(s.v.tobytes()), hash(s.x_chk.tobytes()), float(s.centre[0]),
           float(s.centre[1]))
    if len(_KEY_OF_ARRAYS) > 256:
        _KEY_OF_ARRAYS.clear()
    _KEY_OF_ARRAYS[ident] = (s.u, s.v, s.x_chk, key)    # holding the arrays keeps their ids unique
    return key


def _grid_operators(s: CcdSamples, order: int):
    """(terms, pinv (m, n) in scaled coordinates, term scales (m,), check design (n_chk, m))."""
    key = (_grid_key(s), order)
    ops = _GRID_CACHE.get(key)
    if ops is None:
        terms = _terms(order)
        su, sv = max(float(np.max(np.abs(s.u))), 1e-300), max(float(np.max(np.abs(s.v))), 1e-300)
        un, vn = s.u / su, s.v / sv
        pinv = np.linalg.pinv(np.stack([un ** i * vn ** j for i, j in terms], axis=1))
        scale = np.array([su ** i * sv ** j for i, j in terms])
        uc, vc = s.x_chk - s.centre[0], s.y_chk - s.centre[1]
        check = np.stack([uc ** i * vc ** j for i, j in terms], axis=1)
        ops = (terms, pinv, scale, check)
        if len(_GRID_CACHE) > 256:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = ops
    return ops


def _fit_grid(s: CcdSamples, order: int):
    """``fit_tangent_polynomial(s.u, s.v, s.xi, s.eta, order)`` by the cached pseudo-inverse."""
    terms, pinv, scale, _ = _grid_operators(s, order)
    coef = pinv @ np.stack([s.xi, s.eta], axis=1)
    return terms, coef[:, 0] / scale, coef[:, 1] / scale


def start_order(s: CcdSamples, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0) -> int:
    """``wcs_fits.first_candidate_order`` on the samples, with the cached operators."""
    for order in range(1, max_order + 1):
        _, c_xi, c_eta = _fit_grid(s, order)
        check = _grid_operators(s, order)[3]
        err_mas = np.hypot(check @ c_xi - s.xi_chk, check @ c_eta - s.eta_chk) * 3.6e6
        if np.sqrt(np.mean(err_mas ** 2)) <= 0.9 * rms_mas and np.max(err_mas) <= 0.9 * max_mas:
            return order
    return max_order


def start_orders(samples: list, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0) -> list[int]:
    """:func:`start_order` of every sample; the CCDs sampled on one grid are fitted and checked
    together (one matrix product per grid and order)."""
    out = [max_order] * len(samples)
    groups: dict = {}
    for k, s in enumerate(samples):
        groups.setdefault(_grid_key(s), []).append(k)
    # CCDs of one grid in chunks, so that the arrays of a chunk stay small (~10 MB)
    chunks = [ks[a:a + 256] for ks in groups.values() for a in range(0, len(ks), 256)]
    for ks in chunks:
        first = samples[ks[0]]
        fit = np.stack([a for k in ks for a in (samples[k].xi, samples[k].eta)], axis=1)     # (n, 2 K)
        chk_xi = np.stack([samples[k].xi_chk for k in ks], axis=1)
        chk_eta = np.stack([samples[k].eta_chk for k in ks], axis=1)
        pending = np.arange(len(ks))
        for order in range(1, max_order + 1):
            _, pinv, scale, check = _grid_operators(first, order)
            cols = np.stack([2 * pending, 2 * pending + 1], axis=1).ravel()
            coef = (pinv @ fit[:, cols]) / scale[:, None]
            err_mas = np.hypot(check @ coef[:, 0::2] - chk_xi[:, pending],
                               check @ coef[:, 1::2] - chk_eta[:, pending]) * 3.6e6
            ok = (np.sqrt(np.mean(err_mas ** 2, axis=0)) <= 0.9 * rms_mas) & (np.max(err_mas, axis=0) <= 0.9 * max_mas)
            for j in pending[ok]:
                out[ks[j]] = order
            pending = pending[~ok]
            if pending.size == 0:
                break
    return out


def _substitute_linear(terms, c_xi, c_eta, inv: np.ndarray):
    """Coefficients in ``(x', y')`` of the polynomials in ``(u, v) = inv @ (x', y')`` (exact
    change of variables; same terms, as a linear map keeps each order)."""
    index = {t: k for k, t in enumerate(terms)}
    out_xi, out_eta = np.zeros(len(terms)), np.zeros(len(terms))
    (a, b), (c, d) = inv
    for (i, j), cx, ce in zip(terms, c_xi, c_eta):
        # u^i = sum_p C(i,p) a^p b^(i-p) x'^p y'^(i-p); v^j = sum_q C(j,q) c^q d^(j-q) x'^q y'^(j-q)
        for p in range(i + 1):
            wu = math.comb(i, p) * a ** p * b ** (i - p)
            for q in range(j + 1):
                w = wu * math.comb(j, q) * c ** q * d ** (j - q)
                k = index[(p + q, i + j - p - q)]
                out_xi[k] += w * cx
                out_eta[k] += w * ce
    return out_xi, out_eta


def _sip_items(crval, crpix, cd, sip) -> list[tuple]:
    """The cards of ``wcs_fits.tan_sip_header`` (same keys, order and comments)."""
    suffix = "" if sip is None else "-SIP"
    note = "gnomonic projection" + (" + SIP distortion" if sip is not None else "")
    items = [("WCSAXES", 2), ("CTYPE1", "RA---TAN" + suffix, note), ("CTYPE2", "DEC--TAN" + suffix, note),
             ("CUNIT1", "deg"), ("CUNIT2", "deg"),
             ("CRVAL1", float(crval[0]), "[deg] tangent point RA"), ("CRVAL2", float(crval[1]), "[deg] tangent point Dec"),
             ("CRPIX1", float(crpix[0]), "[pix] reference pixel (1-based)"),
             ("CRPIX2", float(crpix[1]), "[pix] reference pixel (1-based)")]
    items += [(f"CD{i + 1}_{j + 1}", float(cd[i, j]), "[deg/pix] linear transformation") for i in range(2) for j in range(2)]
    items.append(("RADESYS", "ICRS"))
    if sip is not None:
        for name, matrix in zip(("A", "B", "AP", "BP"), sip):
            items.append((f"{name}_ORDER", matrix.shape[0] - 1))
            items += [(f"{name}_{p}_{q}", float(matrix[p, q])) for p, q in zip(*np.nonzero(matrix))]
    return items


def tan_sip_export(s: CcdSamples, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0,
                   start: int | None = None):
    """Lowest TAN-SIP order meeting the limits, measured in numpy on the written (rounded) values.

    Returns
    -------
    images : list of str
        Card images in the order of ``wcs_fits.tan_sip_header``.
    report : FidelityReport
    """
    start = start_order(s, max_order, rms_mas, max_mas) if start is None else start
    crpix = _round_array(s.centre + 1.0)
    crval = tuple(_rounded(c) for c in s.crval)
    u, v = s.x_chk + 1.0 - crpix[0], s.y_chk + 1.0 - crpix[1]
    best = None
    for order in range(start, max_order + 1):
        terms, c_xi, c_eta = _fit_grid(s, order)
        cd, sip = _sip_coefficients(terms, c_xi, c_eta, s.u, s.v)
        cd = _round_array(cd)
        sip = None if sip is None else tuple(_round_array(m) for m in sip)
        big_u, big_v = (u, v) if sip is None else (u + _poly(sip[0], u, v), v + _poly(sip[1], u, v))
        xi, eta = cd[0, 0] * big_u + cd[0, 1] * big_v, cd[1, 0] * big_u + cd[1, 1] * big_v
        rms, worst = _fidelity(s, xi, eta, crval)
        inverse = math.nan
        if sip is not None:
            back_u = big_u + _poly(sip[2], big_u, big_v)
            back_v = big_v + _poly(sip[3], big_u, big_v)
            inverse = float(np.max(np.hypot(back_u - u, back_v - v)))
        report = FidelityReport(order, rms, worst, rms <= rms_mas and worst <= max_mas, s.x_chk.size, inverse)
        if best is None or report.meets_limits or (rms, worst) < (best[1].rms_mas, best[1].max_mas):
            best = ((crval, crpix, cd, sip), report)
        if report.meets_limits:
            break
    return header_text(_sip_items(*best[0])), best[1]


def _round_array(values: np.ndarray) -> np.ndarray:
    """Every entry as read back from its card (zeros, which are not written, stay 0)."""
    flat = [_rounded(v) if v != 0 else 0.0 for v in np.ravel(values).tolist()]
    return np.array(flat, dtype=float).reshape(np.shape(values))


def _tpv_items(crval, crpix, cd, pv1: dict, pv2: dict) -> list[tuple]:
    """The cards of ``scamp_head.tpv_header`` (same keys, order and comments)."""
    items = [("EQUINOX", 2000.0, "Mean equinox"), ("RADESYS", "ICRS", "Astrometric system"),
             ("CTYPE1", "RA---TPV", "WCS projection type for this axis"),
             ("CTYPE2", "DEC--TPV", "WCS projection type for this axis"),
             ("CUNIT1", "deg", "Axis unit"), ("CUNIT2", "deg", "Axis unit"),
             ("CRVAL1", float(crval[0]), "World coordinate on this axis"),
             ("CRVAL2", float(crval[1]), "World coordinate on this axis"),
             ("CRPIX1", float(crpix[0]), "Reference pixel on this axis"),
             ("CRPIX2", float(crpix[1]), "Reference pixel on this axis")]
    items += [(f"CD{i + 1}_{j + 1}", float(cd[i, j]), "Linear projection matrix") for i in range(2) for j in range(2)]
    for axis, pv in ((1, pv1), (2, pv2)):
        items += [(f"PV{axis}_{k}", pv[k], "Projection distortion parameter") for k in sorted(pv)]
    return items


def tpv_export(s: CcdSamples, max_order: int = 7, rms_mas: float = 1.0, max_mas: float = 3.0,
               start: int | None = None):
    """Lowest TPV order meeting the limits (as ``scamp_head.fit_tpv``), measured in numpy.

    Returns
    -------
    images : list of str
        Card images in the order of ``scamp_head.tpv_header`` (no photometry cards).
    report : FidelityReport
    """
    from .scamp_head import TPV_TERM_START

    start = start_order(s, max_order, rms_mas, max_mas) if start is None else start
    crpix = _round_array(s.centre + 1.0)
    crval = tuple(_rounded(c) for c in s.crval)
    best = None
    for order in range(start, max_order + 1):
        terms, c_xi, c_eta = _fit_grid(s, order)
        lin = {t: (cx, ce) for t, cx, ce in zip(terms, c_xi, c_eta)}
        cd_exact = np.array([[lin[(1, 0)][0], lin[(0, 1)][0]], [lin[(1, 0)][1], lin[(0, 1)][1]]])
        cd = _round_array(cd_exact)
        # the same least-squares polynomial written in (x', y') = CD (u, v) (as written: rounded CD)
        d_xi, d_eta = _substitute_linear(terms, c_xi, c_eta, np.linalg.inv(cd))
        pv1, pv2, text1, text2 = {}, {}, {}, {}
        for (i, j), cx, ce in zip(terms, d_xi, d_eta):
            pv1[TPV_TERM_START[i + j] + j], text1[TPV_TERM_START[i + j] + j] = _rounded(cx), float(cx)
            pv2[TPV_TERM_START[i + j] + i], text2[TPV_TERM_START[i + j] + i] = _rounded(ce), float(ce)
        u, v = s.x_chk + 1.0 - crpix[0], s.y_chk + 1.0 - crpix[1]
        xq, yq = cd[0, 0] * u + cd[0, 1] * v, cd[1, 0] * u + cd[1, 1] * v
        design = monomial_design(xq, yq, terms)
        xi = design @ np.array([pv1[TPV_TERM_START[i + j] + j] for i, j in terms])
        eta = design @ np.array([pv2[TPV_TERM_START[i + j] + i] for i, j in terms])
        rms, worst = _fidelity(s, xi, eta, crval)
        report = FidelityReport(order, rms, worst, rms <= rms_mas and worst <= max_mas, s.x_chk.size)
        if best is None or report.meets_limits or (rms, worst) < (best[1].rms_mas, best[1].max_mas):
            best = ((s.crval, s.centre + 1.0, cd_exact, text1, text2), report)
        if report.meets_limits:
            break
    return header_text(_tpv_items(*best[0])), best[1]


# --- reading: build the astropy WCS of a plain TAN / TAN-SIP / TPV header without WCS(header) ---
_FAST_CTYPES = {"RA---TAN": "", "RA---TAN-SIP": "-SIP", "RA---TPV": "TPV"}
_WCS_KEYS = re.compile(r"^(WCSAXES|CTYPE[12]|CUNIT[12]|CRVAL[12]|CRPIX[12]|CD[12]_[12]|RADESYS|EQUINOX|"
                       r"(A|B|AP|BP)_(\d+_\d+|ORDER)|PV[12]_\d+)$")
_OTHER_WCS = re.compile(r"^(PC\d_\d|CDELT\d|CROTA\d|LONPOLE|LATPOLE|WCSNAME|CTYPE[3-9]|PROJP\d|RESTFRQ|SPECSYS|"
                        r"(CTYPE|CUNIT|CRVAL|CRPIX|CD|PC|CDELT|PV)[\d_]+[A-Z])")


def fast_celestial_wcs(header):
    """The ``astropy.wcs.WCS`` of a plain 2-axis TAN, TAN-SIP or TPV header with a CD matrix,
    set up parameter by parameter (~0.9 ms instead of ~9 ms for ``WCS(header)``).

    Returns None for anything else (PC/CDELT, LONPOLE, alternate WCS, other projections, a TAN
    header with PV terms...), so that the caller falls back to the full ``WCS(header)`` path; the
    result transforms as ``WCS(header)`` does (same wcslib parameters; measured identical for
    TAN-SIP, within 1e-13 deg for TPV). ``pixel_shape``
    comes from NAXIS1/NAXIS2, ``dateobs``/``mjdobs`` from DATE-OBS/MJD-OBS, as in ``WCS(header)``.
    """
    from astropy.wcs import WCS, Sip

    c1, c2 = str(header.get("CTYPE1", "")).strip(), str(header.get("CTYPE2", "")).strip()
    kind = _FAST_CTYPES.get(c1)
    if kind is None or c2 != "DEC--" + c1[5:] or header.get("WCSAXES", 2) != 2:
        return None
    other, has_pv, wanted = _keyword_classes(tuple(header.keys()))
    if other:
        return None
    has_sip = "A_ORDER" in header or "B_ORDER" in header
    if (kind == "" and (has_pv or has_sip)) or (kind == "-SIP" and (has_pv or not has_sip)) \
            or (kind == "TPV" and has_sip):
        return None
    num = _numeric_values(header, wanted)
    try:
        cd = np.array([[num["CD1_1"], num.get("CD1_2", 0.0)], [num.get("CD2_1", 0.0), num["CD2_2"]]])
        if not np.all(np.isfinite(cd)) or np.linalg.det(cd) == 0:
            return None
        w = WCS(naxis=2)
        w.wcs.ctype = [c1, c2]
        w.wcs.cunit = [str(header.get("CUNIT1", "deg")).strip() or "deg", str(header.get("CUNIT2", "deg")).strip() or "deg"]
        w.wcs.crval = [num["CRVAL1"], num["CRVAL2"]]
        w.wcs.crpix = [num["CRPIX1"], num["CRPIX2"]]
        w.wcs.cd = cd
        if "RADESYS" in header:
            w.wcs.radesys = str(header["RADESYS"]).strip()
        if "EQUINOX" in num:
            w.wcs.equinox = num["EQUINOX"]
        if "DATE-OBS" in header:
            w.wcs.dateobs = str(header["DATE-OBS"]).strip()
        if "MJD-OBS" in num:
            w.wcs.mjdobs = num["MJD-OBS"]
        if kind == "TPV":
            w.wcs.set_pv([(int(k[2]), int(k[4:]), v) for k, v in num.items() if k.startswith("PV")])
        if has_sip:
            w.sip = Sip(*(_sip_matrix(num, name) for name in ("A", "B", "AP", "BP")), w.wcs.crpix)
        w.wcs.set()
        if "NAXIS1" in num and "NAXIS2" in num and num.get("NAXIS", 2) == 2:
            w.pixel_shape = (int(num["NAXIS1"]), int(num["NAXIS2"]))
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    except Exception:  # noqa: BLE001 - wcslib rejects the parameters: the full path reports it
        return None
    return w


@functools.lru_cache(maxsize=256)
def _keyword_classes(keys: tuple) -> tuple[bool, bool, frozenset]:
    """Of a header's keywords: (any WCS keyword this fast path does not handle, any PV keyword,
    the keywords whose numeric values it reads). The CCDs of one camera share their keyword
    list, so the regular expressions run once per layout, not 75 times per CCD (20,600 CCDs at
    200 HSC visits: ~4 s)."""
    wcs_keys = [k for k in keys if _WCS_KEYS.match(k)]
    return (any(_OTHER_WCS.match(k) for k in keys), any(k.startswith("PV") for k in wcs_keys),
            frozenset(wcs_keys) | frozenset(_NUMERIC_EXTRA))


def _numeric_values(header, wanted: frozenset) -> dict:
    """Numeric values of the keywords ``wanted`` parsed from the card images (much faster than
    Header lookups)."""
    if hasattr(header, "numbers"):    # a CardHeader: its numeric cards are parsed already
        return {k: v for k, v in header.numbers.items() if k in wanted}
    out = {}
    for c in header.cards:
        image = c.image
        key = image[:8].strip()
        if image[8:10] != "= " or key not in wanted:
            continue
        text = image[10:].split("/", 1)[0].strip()
        if text[:1] in ("'", "T", "F", ""):
            continue
        out[key] = float(text.replace("D", "E"))
    return out


_NUMERIC_EXTRA = ("NAXIS", "NAXIS1", "NAXIS2", "MJD-OBS")


def _sip_matrix(num: dict, name: str):
    """SIP matrix ``M[p, q]`` of ``name`` (A, B, AP, BP) from ``<name>_ORDER`` and ``<name>_p_q``."""
    if f"{name}_ORDER" not in num:
        return None
    order = int(num[f"{name}_ORDER"])
    m = np.zeros((order + 1, order + 1))
    for p in range(order + 1):
        for q in range(order + 1 - p):
            m[p, q] = num.get(f"{name}_{p}_{q}", 0.0)
    return m
