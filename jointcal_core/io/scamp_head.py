"""SCAMP/SWarp ``.head`` files: TPV astrometry (and FLXSCALE/MAGZEROP) for each CCD of a visit.

Like :mod:`jointcal_core.io.wcs_fits`, the exporter sees only a callable
``pixel_to_sky(x, y) -> (ra_deg, dec_deg)`` (0-based pixels), the bbox and the tangent point, and
writes the lowest TPV order that reproduces it within the limits, measured through astropy.wcs.

TPV (the convention of SCAMP, evaluated by wcslib)
--------------------------------------------------
Intermediate coordinates ``(x', y') = CD @ (pixel - CRPIX)`` (deg) are distorted by
``xi = sum_k PV1_k T_k(x', y')`` and ``eta = sum_k PV2_k T_k(y', x')`` (note the swapped
arguments for the second axis), then de-projected gnomonically at CRVAL. The terms are, for
order n, ``T = a^n, a^(n-1) b, ..., b^n`` at indices ``k = 0 | 1, 2 | 4..6 | 7..10 | 12..16 |
17..22 | 24..30 | 31..38`` for n = 0..7; indices 3, 11, 23 and 39 are the radial terms ``r^n``,
which are never written. A polynomial of order N from pixels to the tangent plane is therefore
exact in TPV of order N: CD is its linear part, CRPIX the bbox centre, and the rest (including a
constant when the tangent point is not the bbox centre's sky position) goes to the PV terms.

The ``.head`` text format (matched to SCAMP 2.10's ``write_aschead``)
--------------------------------------------------------------------
Plain ASCII, one FITS card per line (card images cut to 79 characters, SCAMP's ``%.79s``,
unless the 80th is used), each CCD's block ending with a line ``END     ``; blocks in the order
of the CCDs in the image file. SCAMP and SWarp read a line at a time up to ``END``, so lines need
not be 80 characters long. The WCS cards come in SCAMP's order (EQUINOX, RADESYS, CTYPE, CUNIT,
CRVAL, CRPIX, CD, PV) followed by ``FLXSCALE`` and ``MAGZEROP`` when photometry is given.
SWarp multiplies pixel values by ``FLXSCALE``, after which ``MAGZEROP`` is the zero point of
every CCD: ``FLXSCALE = 10**(0.4 (MAGZEROP - zp_mag))`` (see :func:`scamp_photometry`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..exceptions import InputError, JointcalWarning, OutputError
from .wcs_fits import (FidelityReport, PixelToSky, _check_bbox, _header_to_wcs, _sample, _tangent_point,
                       first_candidate_order, fit_tangent_polynomial, measure_fidelity, pixel_grid)

__all__ = ["fit_tpv", "tpv_header", "write_scamp_head", "write_scamp_head_text", "read_scamp_head",
           "scamp_photometry", "TPV_TERM_START"]

#: PV index of the first (``a^n``) term of each order n = 0..7 (radial terms skipped)
TPV_TERM_START = (0, 1, 4, 7, 12, 17, 24, 31)
_MAX_TPV_ORDER = len(TPV_TERM_START) - 1


def tpv_header(crval_deg, crpix_1based, cd, terms, c_xi, c_eta) -> fits.Header:
    """TPV header cards from a polynomial in the intermediate coordinates ``(x', y')``.

    Parameters
    ----------
    crval_deg, crpix_1based : (float, float)
    cd : ndarray, shape (2, 2)
        deg/pixel.
    terms : list of (int, int)
        Exponents ``(i, j)`` of ``x'**i y'**j``, ``i + j <= 7``.
    c_xi, c_eta : ndarray, shape (len(terms),)
        Coefficients of xi and eta (deg per deg**(i+j)).
    """
    header = fits.Header()
    header["EQUINOX"] = (2000.0, "Mean equinox")
    header["RADESYS"] = ("ICRS", "Astrometric system")
    header["CTYPE1"] = ("RA---TPV", "WCS projection type for this axis")
    header["CTYPE2"] = ("DEC--TPV", "WCS projection type for this axis")
    header["CUNIT1"] = ("deg", "Axis unit")
    header["CUNIT2"] = ("deg", "Axis unit")
    header["CRVAL1"] = (float(crval_deg[0]), "World coordinate on this axis")
    header["CRVAL2"] = (float(crval_deg[1]), "World coordinate on this axis")
    header["CRPIX1"] = (float(crpix_1based[0]), "Reference pixel on this axis")
    header["CRPIX2"] = (float(crpix_1based[1]), "Reference pixel on this axis")
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = (float(cd[i, j]), "Linear projection matrix")
    pv1, pv2 = {}, {}
    for (i, j), cx, ce in zip(terms, c_xi, c_eta):
        n = i + j
        if n > _MAX_TPV_ORDER:
            raise InputError(f"TPV holds polynomials up to order {_MAX_TPV_ORDER}, got a term of order {n}")
        pv1[TPV_TERM_START[n] + j] = float(cx)   # xi: terms in (x', y')
        pv2[TPV_TERM_START[n] + i] = float(ce)   # eta: terms in (y', x')
    for axis, pv in ((1, pv1), (2, pv2)):
        for k in sorted(pv):
            header[f"PV{axis}_{k}"] = (pv[k], "Projection distortion parameter")
    return header


def fit_tpv(pixel_to_sky: PixelToSky, bbox, tangent_point_deg=None, max_order: int = 7,
            rms_mas: float = 1.0, max_mas: float = 3.0, grid: int = 40) -> tuple[fits.Header, FidelityReport]:
    """Fit the lowest-order TPV header that reproduces ``pixel_to_sky`` over the CCD.

    Parameters
    ----------
    pixel_to_sky : callable
        ``pixel_to_sky(x, y) -> (ra_deg, dec_deg)`` on 0-based pixel arrays of shape (n,).
    bbox : sequence of 4 float
        ``(x_min, y_min, x_max, y_max)``, 0-based outer pixel edges.
    tangent_point_deg : (float, float) or None
        CRVAL; None uses the sky position of the bbox centre.
    max_order : int
        Highest TPV order tried (at most 7).
    rms_mas, max_mas : float
        Limits on the RMS and maximum distance (mas) between header and callable.
    grid : int
        Points per axis of the fitting grid; the check grid has one more (both include edges).

    Returns
    -------
    header : astropy.io.fits.Header
        TPV cards in SCAMP's order (no NAXIS, no photometry).
    report : FidelityReport
        Of the chosen order; if none meets the limits, the best one with ``meets_limits=False``
        and a :class:`JointcalWarning`.
    """
    if not 1 <= max_order <= _MAX_TPV_ORDER:
        raise InputError(f"max_order must be within 1..{_MAX_TPV_ORDER} for TPV, got {max_order}")
    bbox = _check_bbox(bbox)
    centre = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2])
    crval = _tangent_point(pixel_to_sky, centre, tangent_point_deg)
    n_grid = max(grid, max_order + 2)
    x_fit, y_fit = pixel_grid(bbox, n_grid)
    _, _, xi, eta = _sample(pixel_to_sky, x_fit, y_fit, crval)
    x_chk, y_chk = pixel_grid(bbox, n_grid + 1)
    ra_chk, dec_chk, xi_chk, eta_chk = _sample(pixel_to_sky, x_chk, y_chk, crval)
    u, v = x_fit - centre[0], y_fit - centre[1]
    start = first_candidate_order(u, v, xi, eta, x_chk - centre[0], y_chk - centre[1], xi_chk, eta_chk,
                                  max_order, rms_mas, max_mas)
    best = None
    for order in range(start, max_order + 1):
        terms, c_xi, c_eta = fit_tangent_polynomial(u, v, xi, eta, order)
        lin = {t: (cx, ce) for t, cx, ce in zip(terms, c_xi, c_eta)}
        cd = np.array([[lin[(1, 0)][0], lin[(0, 1)][0]], [lin[(1, 0)][1], lin[(0, 1)][1]]])
        xp, yp = cd @ np.stack([u, v])
        # a linear change of variables keeps the order, so this refit is exact for polynomials
        terms, d_xi, d_eta = fit_tangent_polynomial(xp, yp, xi, eta, order)
        header = tpv_header(crval, centre + 1.0, cd, terms, d_xi, d_eta)
        rms, worst = measure_fidelity(_header_to_wcs(header), pixel_to_sky, x_chk, y_chk, ra_chk, dec_chk)
        report = FidelityReport(order, rms, worst, rms <= rms_mas and worst <= max_mas, len(x_chk))
        if best is None or report.meets_limits or (rms, worst) < (best[1].rms_mas, best[1].max_mas):
            best = (header, report)
        if report.meets_limits:
            break
    header, report = best
    if not report.meets_limits:
        warnings.warn(f"no TPV up to order {max_order} reproduces the mapping within {rms_mas} mas rms / "
                      f"{max_mas} mas max; best order {report.order}: {report.rms_mas:.3g} mas rms, "
                      f"{report.max_mas:.3g} mas max", JointcalWarning, stacklevel=2)
    return header, report


def scamp_photometry(zp_mag, magzerop: float | None = None) -> list[tuple[float, float]]:
    """``(FLXSCALE, MAGZEROP)`` per CCD from zero points (AB mag of one count).

    Parameters
    ----------
    zp_mag : array_like, shape (n,)
    magzerop : float, optional
        Common output zero point; defaults to the mean of ``zp_mag``.

    Returns
    -------
    list of (float, float), length n
        ``FLXSCALE = 10**(0.4 (MAGZEROP - zp_mag))``, so that
        ``MAGZEROP - 2.5 log10(flux * FLXSCALE) = zp_mag - 2.5 log10(flux)``.
    """
    zp = np.atleast_1d(np.asarray(zp_mag, dtype=float))
    magzerop = float(np.mean(zp)) if magzerop is None else float(magzerop)
    return [(float(10.0 ** (0.4 * (magzerop - z))), magzerop) for z in zp]


def _card_line(card: fits.Card) -> str:
    image = card.image
    return image[:79] if image[79:] in ("", " ") else image


def write_scamp_head(path: str | Path, headers: list, photometry: list | None = None) -> Path:
    """Write one ``.head`` file: one header block per CCD, in the order of ``headers``.

    Parameters
    ----------
    path : str or Path
    headers : list of astropy.io.fits.Header
        Typically from :func:`fit_tpv`, one per CCD of the visit.
    photometry : list of (float, float) or None
        ``(FLXSCALE, MAGZEROP)`` per CCD, appended to each block (see :func:`scamp_photometry`).
    """
    if photometry is not None and len(photometry) != len(headers):
        raise InputError(f"photometry has {len(photometry)} entries for {len(headers)} headers; "
                         "give one (FLXSCALE, MAGZEROP) per CCD")
    lines = []
    for index, header in enumerate(headers):
        block = fits.Header(header, copy=True)
        if photometry is not None:
            flxscale, magzerop = photometry[index]
            block["FLXSCALE"] = (float(flxscale), "SCAMP relative flux scale")
            block["MAGZEROP"] = (float(magzerop), "SCAMP zero-point")
        lines.append("HISTORY   Astrometric solution by jointcal")
        lines.extend(_card_line(card) for card in block.cards)
        lines.append("END     ")
    path = Path(path)
    try:
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
    except (OSError, UnicodeEncodeError) as err:
        raise OutputError(f"cannot write the .head file: {err}", path=str(path)) from err
    return path


def write_scamp_head_text(path: str | Path, blocks: list, photometry: list | None = None) -> Path:
    """:func:`write_scamp_head` with each CCD's header given as 80-character card images
    (e.g. from :func:`jointcal_core.io.wcs_cards.tpv_export`); the same file, without astropy Headers."""
    from .wcs_cards import card

    if photometry is not None and len(photometry) != len(blocks):
        raise InputError(f"photometry has {len(photometry)} entries for {len(blocks)} headers; "
                         "give one (FLXSCALE, MAGZEROP) per CCD")
    lines = []
    for index, images in enumerate(blocks):
        images = list(images)
        if photometry is not None:
            flxscale, magzerop = photometry[index]
            images += [card("FLXSCALE", float(flxscale), "SCAMP relative flux scale"),
                       card("MAGZEROP", float(magzerop), "SCAMP zero-point")]
        lines.append("HISTORY   Astrometric solution by jointcal")
        lines.extend(image[:79] if image[79:] in ("", " ") else image for image in images)
        lines.append("END     ")
    path = Path(path)
    try:
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
    except (OSError, UnicodeEncodeError) as err:
        raise OutputError(f"cannot write the .head file: {err}", path=str(path)) from err
    return path


def read_scamp_head(path: str | Path) -> list[fits.Header]:
    """Read a SCAMP ``.head``/``.ahead`` file: one Header per block ending with ``END``.

    Lines after the last ``END`` form a final block if they hold any card. Non-ASCII characters
    (SCAMP 2.10 writes some in a COMMENT) are read as ``?``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the .head file: {err}", path=str(path)) from err
    # SCAMP 2.10 writes its copyright COMMENT in UTF-8 ("Universite" with an accent); FITS cards
    # are ASCII, so any other character becomes '?'
    text = raw.decode("utf-8", errors="replace").encode("ascii", errors="replace").decode("ascii")
    blocks, current = [], []
    for line in text.splitlines():
        if line[:8].rstrip() == "END":
            blocks.append(current)
            current = []
        else:
            current.append(line.rstrip("\r"))
    if any(line.strip() for line in current):
        blocks.append(current)
    headers = []
    for number, block in enumerate(blocks, start=1):
        try:
            headers.append(fits.Header.fromstring("\n".join(block), sep="\n"))
        except ValueError as err:
            raise InputError(f"header block {number} is not valid FITS cards: {err}", path=str(path)) from err
    return headers
