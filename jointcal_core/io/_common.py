"""Helpers shared by the readers: header WCS, epochs, zero points, column checks, WCS fits.

Nothing here is public API; the readers in :mod:`jointcal_core.io` re-export what users need.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from ..exceptions import InputError, JointcalWarning

__all__ = ["require_columns", "wcs_from_header", "mjd_from_header", "zp_from_header", "bbox_from_header",
           "ellipse_to_covariance", "fit_tan_sip", "pick", "visit_from_stem", "strict_fits", "fits_problem"]

#: header keywords holding a zero point (AB mag of one count), in order of preference
ZP_KEYWORDS = ("MAGZEROP", "PHOTZP", "MAGZERO", "MAGZPT")
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(\d+_\d+|ORDER|DMAX)$")
_PV_KEY = re.compile(r"^PV[12]_(\d+)$")


@contextmanager
def strict_fits():
    """Within this block a truncated FITS file raises (astropy only warns and reads what is there)
    and astropy's header-repair warnings stay quiet (they would flood the terminal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        warnings.filterwarnings("error", message=".*may have been truncated")
        yield


def fits_problem(path) -> str | None:
    """Why ``path`` cannot be read as a FITS file (empty, truncated, not FITS), or None if it can."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    try:
        with strict_fits(), fits.open(path, memmap=False) as hdus:
            hdus.readall()
    except Exception as exc:  # astropy raises OSError, ValueError, warnings-as-errors...
        first = (str(exc).splitlines() or [""])[0]
        return f"cannot read as FITS ({type(exc).__name__}: {first}); the file is truncated or not FITS"
    return None


def pick(names, candidates) -> str | None:
    """First of ``candidates`` present in ``names`` (exact match, then case-insensitive), else None."""
    names = list(names)
    for c in candidates:
        if c in names:
            return c
    lower = {n.lower(): n for n in names}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def require_columns(names, required, *, path, what="catalog", visit=None, detector=None,
                    hint: str = "") -> list[str]:
    """Resolve each entry of ``required`` (a tuple of alternatives or a name) to a present column.

    Raises
    ------
    InputError
        Naming the first missing column and listing the columns that exist.
    """
    out = []
    names = list(names)
    for alternatives in required:
        alternatives = (alternatives,) if isinstance(alternatives, str) else tuple(alternatives)
        found = pick(names, alternatives)
        if found is None:
            shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
            if "X_WORLD" in names and not any(n.endswith("_IMAGE") for n in names) and "reference" not in what:
                hint = hint + "; it looks like a reference catalog: pass it with --refcat"
            raise InputError(f"{what} has no column {' or '.join(repr(a) for a in alternatives)} "
                             f"(columns: {shown}){hint}", path=str(path), visit=visit, detector=detector)
        out.append(found)
    return out


def _normalise_distortion_keys(header: fits.Header) -> fits.Header:
    """Make SCAMP-style headers load right in astropy.

    - ``RA---TAN`` with ``PVi_j`` polynomial terms (the SCAMP/SWarp convention before the ``TPV``
      name existed) is renamed ``RA---TPV``: astropy would otherwise read the PVs as TAN projection
      parameters and silently drop the distortion.
    - A ``TPV`` header that also carries SIP ``A_p_q``... keywords (e.g. a TAN-SIP image header
      overridden by a ``.ahead`` TPV block) loses the SIP keywords, and a SIP header loses its PVs:
      one distortion convention per header.
    """
    h = header.copy()
    ctype1 = str(h.get("CTYPE1", ""))
    has_pv = any(_PV_KEY.match(k) and int(_PV_KEY.match(k).group(1)) >= 1 for k in h.keys())
    if ctype1.endswith("-TAN") and has_pv and "A_ORDER" not in h:
        h["CTYPE1"], h["CTYPE2"] = "RA---TPV", "DEC--TPV"
    ctype1 = str(h.get("CTYPE1", ""))
    drop = _PV_KEY if ctype1.endswith("-SIP") else _SIP_KEY
    for key in [k for k in h.keys() if drop.match(k)]:
        del h[key]
    return h


def wcs_from_header(header: fits.Header, *, path, visit=None, detector=None) -> WCS:
    """Celestial 2-axis WCS (TAN, TAN-SIP or TPV) from a FITS header.

    Raises
    ------
    InputError
        When the header has no usable celestial WCS (no CTYPE, linear axes, singular CD matrix).
    """
    h = _normalise_distortion_keys(header)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(h)
            if w.naxis != 2:
                w = w.celestial
    except Exception as exc:  # astropy raises many types for bad headers
        raise InputError(f"header WCS cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                         "fix the CTYPE/CRVAL/CD keywords", path=str(path), visit=visit,
                         detector=detector) from None
    if not w.has_celestial or w.naxis != 2:
        raise InputError(f"header has no celestial WCS (CTYPE = {list(w.wcs.ctype)}); give a file whose "
                         "header holds RA/Dec TAN, TAN-SIP or TPV keywords", path=str(path), visit=visit,
                         detector=detector)
    det = np.linalg.det(w.pixel_scale_matrix)
    if not np.isfinite(det) or det == 0:
        raise InputError("header WCS has a singular or missing CD/PC matrix", path=str(path), visit=visit,
                         detector=detector)
    return w


def mjd_from_header(header: fits.Header, exptime_s: float = np.nan) -> float:
    """Mid-exposure MJD: ``MJD-AVG``/``DATE-AVG``, else ``MJD-OBS``/``DATE-OBS`` (start) + EXPTIME/2.

    Returns NaN when no date keyword is present. ``DATE-OBS`` without a time part is taken as is.
    """
    half = 0.0 if not np.isfinite(exptime_s) else exptime_s / 2 / 86400.0
    for key, offset in (("MJD-AVG", 0.0), ("DATE-AVG", 0.0), ("MJD-OBS", half), ("DATE-OBS", half),
                        ("MJD", half)):
        value = header.get(key)
        if value in (None, ""):
            continue
        try:
            if key.startswith("MJD"):
                return float(value) + offset
            text = str(value).strip()
            clock = header.get("TIME-OBS") or header.get("UT")
            if "T" not in text and clock:
                text = f"{text}T{str(clock).strip()}"
            return float(Time(text, scale="utc").mjd) + offset
        except (ValueError, TypeError):
            continue
    return float("nan")


def zp_from_header(header: fits.Header) -> float:
    """Zero point (AB mag of one count) from MAGZEROP / PHOTZP / MAGZERO, else NaN."""
    for key in ZP_KEYWORDS:
        value = header.get(key)
        try:
            if value is not None and np.isfinite(float(value)):
                return float(value)
        except (TypeError, ValueError):
            pass
    return float("nan")


def header_float(header: fits.Header, *keys: str) -> float:
    """First finite float among ``keys`` of ``header``, else NaN."""
    for key in keys:
        try:
            value = float(header.get(key))
        except (TypeError, ValueError):
            continue
        if np.isfinite(value):
            return value
    return float("nan")


def bbox_from_header(header: fits.Header) -> tuple[float, float, float, float] | None:
    """Outer pixel edges ``(-0.5, -0.5, NAXIS1 - 0.5, NAXIS2 - 0.5)`` (also ZNAXISn, IMAGEW/H), or None."""
    for kx, ky in (("ZNAXIS1", "ZNAXIS2"), ("NAXIS1", "NAXIS2"), ("IMAGEW", "IMAGEH")):
        nx, ny = header.get(kx), header.get(ky)
        if isinstance(nx, (int, np.integer)) and isinstance(ny, (int, np.integer)) and nx > 0 and ny > 0:
            return (-0.5, -0.5, nx - 0.5, ny - 0.5)
    return None


def ellipse_to_covariance(a, b, theta_deg):
    """Error ellipse (semi-axes, angle of A from +x counter-clockwise, deg) -> (var_x, var_y, cov_xy)."""
    a2, b2 = np.asarray(a, float) ** 2, np.asarray(b, float) ** 2
    t = np.radians(np.asarray(theta_deg, float))
    c, s = np.cos(t), np.sin(t)
    return a2 * c * c + b2 * s * s, a2 * s * s + b2 * c * c, (a2 - b2) * s * c


def fit_tan_sip(x, y, ra_deg, dec_deg, *, sip_degree: int | None = None) -> tuple[WCS, float]:
    """Fit a TAN (or TAN-SIP) WCS to 0-based pixels -> sky points by linear least squares.

    The points are projected on the tangent plane at their mean direction (the fitted CRVAL); an
    affine fit gives CD and CRPIX; with ``sip_degree >= 2`` the SIP A/B polynomials (orders 2..degree)
    are fitted to what the affine part leaves. astropy's ``fit_wcs_from_points`` is not used: on the
    AF Vel LCO frames (flipped parity) its non-linear fit stops at 0.8 arcsec residuals where this
    linear fit reaches 0.05-0.1 arcsec.

    Returns
    -------
    wcs : astropy.wcs.WCS
        Maps 0-based pixels with ``all_pix2world(x, y, 0)``.
    median_resid_arcsec : float
        Median distance between the points and the fitted WCS.
    """
    from astropy.wcs import Sip

    from ..data import _mean_direction_deg
    from ..projection import angular_separation_arcsec, sky_to_tangent

    x, y = np.asarray(x, float), np.asarray(y, float)
    ra_deg, dec_deg = np.asarray(ra_deg, float), np.asarray(dec_deg, float)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(ra_deg) & np.isfinite(dec_deg)
    if ok.sum() < 3:
        raise InputError(f"only {int(ok.sum())} finite points to fit a WCS (need 3 or more)")
    ra0, dec0 = _mean_direction_deg(ra_deg[ok], dec_deg[ok])
    xi, eta = sky_to_tangent(ra_deg[ok], dec_deg[ok], ra0, dec0)
    xs, ys = x[ok], y[ok]
    design = np.column_stack([np.ones_like(xs), xs, ys])
    ca = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)[0]
    cd = ca[1:].T
    crpix0 = -np.linalg.solve(cd, ca[0])
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cd = [ra0, dec0], crpix0 + 1.0, cd
    degree = int(sip_degree or 0)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i) if i + j >= 2]
    if degree >= 2 and ok.sum() > 3 * len(terms):
        u, v = xs - crpix0[0], ys - crpix0[1]
        target = np.linalg.solve(cd, np.vstack([xi, eta])) - np.vstack([u, v])
        basis = np.column_stack([u**i * v**j for i, j in terms])
        coef = np.linalg.lstsq(basis, target.T, rcond=None)[0]
        a, b = np.zeros((degree + 1, degree + 1)), np.zeros((degree + 1, degree + 1))
        for k, (i, j) in enumerate(terms):
            a[i, j], b[i, j] = coef[k]
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    ra_fit, dec_fit = w.all_pix2world(x, y, 0)
    resid = angular_separation_arcsec(ra_fit, dec_fit, ra_deg, dec_deg)
    return w, float(np.nanmedian(resid))


def visit_from_stem(stem: str) -> int | None:
    """Integer visit id from the digits of a file stem ('744331p' -> 744331), or None."""
    digits = re.findall(r"\d+", stem)
    if not digits:
        return None
    return int(max(digits, key=len))


def as_path(path) -> Path:
    return Path(path).expanduser()


def warn(message: str) -> None:
    warnings.warn(message, JointcalWarning, stacklevel=3)
