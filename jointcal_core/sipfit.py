"""Fit FITS TAN-SIP WCSs to sampled pixel -> sky maps, for many CCDs at once.

Used by :mod:`jointcal_core.simulate` to turn a true (or perturbed) astrometric model into the
initial WCS headers a pipeline would hand to jointcal. All CCDs share one pixel grid, so the
forward fit is one least-squares solve with one design matrix for every CCD.

SIP convention (Shupe et al. 2005): with ``(dx, dy) = pixel - CRPIX`` (FITS, 1-based),
``(xi, eta) = CD @ (dx + A(dx, dy), dy + B(dx, dy))`` on the tangent plane at CRVAL, where A, B
hold the terms of order 2..``order``. AP/BP give the inverse, ``dx = U + AP(U, V)`` with
``(U, V) = CD^-1 (xi, eta)``.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS, Sip

from .projection import sky_to_tangent, tangent_to_sky

__all__ = ["fit_tan_sip", "sip_cards", "sip_wcs", "monomial_exponents", "perturbed_targets"]


def monomial_exponents(min_order: int, max_order: int) -> list[tuple[int, int]]:
    """Exponents (i, j) of x^i y^j with ``min_order <= i + j <= max_order``."""
    return [(i, total - i) for total in range(min_order, max_order + 1) for i in range(total, -1, -1)]


def _design(tx: np.ndarray, ty: np.ndarray, exps: list[tuple[int, int]]) -> np.ndarray:
    return np.stack([tx ** i * ty ** j for i, j in exps], axis=-1)


def fit_tan_sip(x_pix: np.ndarray, y_pix: np.ndarray, ra_deg: np.ndarray, dec_deg: np.ndarray,
                crpix0: tuple[float, float], crval_deg: np.ndarray, order: int = 3,
                inverse_order: int = 4) -> dict:
    """Fit TAN-SIP WCSs with given reference points to sampled sky positions.

    Parameters
    ----------
    x_pix, y_pix : ndarray, shape (m,)
        0-based pixel grid shared by all CCDs.
    ra_deg, dec_deg : ndarray, shape (n, m)
        Sky position of every grid point on each of n CCDs.
    crpix0 : (float, float)
        0-based reference pixel (its sky position must be ``crval_deg``: no constant term is fitted).
    crval_deg : ndarray, shape (n, 2)
        Tangent point of each CCD.
    order, inverse_order : int
        SIP orders of A/B and AP/BP.

    Returns
    -------
    dict
        ``crval`` (n, 2), ``crpix`` (2,) FITS 1-based, ``cd`` (n, 2, 2) deg/pixel, ``a``, ``b``
        (n, order+1, order+1), ``ap``, ``bp`` (n, inverse_order+1, inverse_order+1), and
        ``rms_arcsec`` (n,): rms residual of the forward fit on the grid.
    """
    dx, dy = x_pix - crpix0[0], y_pix - crpix0[1]
    scale = max(np.abs(dx).max(), np.abs(dy).max())
    tx, ty = dx / scale, dy / scale
    xi, eta = sky_to_tangent(ra_deg, dec_deg, crval_deg[:, :1], crval_deg[:, 1:2])   # (n, m)
    exps = monomial_exponents(1, order)
    design = _design(tx, ty, exps)                                                    # (m, k)
    pinv = np.linalg.pinv(design)                                                     # (k, m)
    c_xi, c_eta = xi @ pinv.T, eta @ pinv.T                                           # (n, k)
    fitted = np.stack([c_xi @ design.T, c_eta @ design.T])
    rms = np.sqrt(np.mean((fitted[0] - xi) ** 2 + (fitted[1] - eta) ** 2, axis=1)) * 3600.0
    # linear terms: exps[0] = (1, 0), exps[1] = (0, 1)
    cd = np.stack([np.stack([c_xi[:, 0], c_xi[:, 1]], -1), np.stack([c_eta[:, 0], c_eta[:, 1]], -1)], 1) / scale
    cd_inv = np.linalg.inv(cd)
    higher = np.stack([c_xi[:, 2:], c_eta[:, 2:]], axis=1)                            # (n, 2, k-2)
    sip = np.einsum("nij,njk->nik", cd_inv, higher)                                   # pixel units
    a = np.zeros((len(cd), order + 1, order + 1))
    b = np.zeros_like(a)
    for col, (i, j) in enumerate(exps[2:]):
        a[:, i, j] = sip[:, 0, col] / scale ** (i + j)
        b[:, i, j] = sip[:, 1, col] / scale ** (i + j)
    # inverse: dx - U as a polynomial of (U, V), one small normal-equation solve per CCD
    uv = np.einsum("nij,jnm->nim", cd_inv, np.stack([xi, eta]))                        # (n, 2, m)
    inv_exps = monomial_exponents(1, inverse_order)
    d_inv = _design(uv[:, 0] / scale, uv[:, 1] / scale, inv_exps)                      # (n, m, k)
    target = np.stack([dx[None] - uv[:, 0], dy[None] - uv[:, 1]], axis=-1)             # (n, m, 2)
    normal = np.einsum("nmk,nml->nkl", d_inv, d_inv)
    coef = np.linalg.solve(normal, np.einsum("nmk,nmt->nkt", d_inv, target))            # (n, k, 2)
    ap = np.zeros((len(cd), inverse_order + 1, inverse_order + 1))
    bp = np.zeros_like(ap)
    for col, (i, j) in enumerate(inv_exps):
        ap[:, i, j] = coef[:, col, 0] / scale ** (i + j)
        bp[:, i, j] = coef[:, col, 1] / scale ** (i + j)
    return dict(crval=np.asarray(crval_deg, float), crpix=np.array(crpix0, float) + 1.0, cd=cd, a=a, b=b,
                ap=ap, bp=bp, rms_arcsec=rms)


def sip_cards(fit: dict, index: int, naxis: tuple[int, int]) -> list[tuple]:
    """``(keyword, value)`` cards of CCD ``index`` of a :func:`fit_tan_sip` result (TAN-SIP, CD)."""
    crval, crpix, cd = fit["crval"][index], fit["crpix"], fit["cd"][index]
    cards = [("NAXIS", 2), ("NAXIS1", int(naxis[0])), ("NAXIS2", int(naxis[1])),
             ("CTYPE1", "RA---TAN-SIP"), ("CTYPE2", "DEC--TAN-SIP"), ("CUNIT1", "deg"), ("CUNIT2", "deg"),
             ("CRVAL1", float(crval[0])), ("CRVAL2", float(crval[1])),
             ("CRPIX1", float(crpix[0])), ("CRPIX2", float(crpix[1])),
             ("CD1_1", float(cd[0, 0])), ("CD1_2", float(cd[0, 1])), ("CD2_1", float(cd[1, 0])),
             ("CD2_2", float(cd[1, 1])), ("RADESYS", "ICRS"), ("EQUINOX", 2000.0)]
    for name, key in (("A", "a"), ("B", "b"), ("AP", "ap"), ("BP", "bp")):
        coef = fit[key][index]
        order = coef.shape[0] - 1
        cards.append((f"{name}_ORDER", order))
        cards += [(f"{name}_{i}_{j}", float(coef[i, j])) for i in range(order + 1) for j in range(order + 1 - i)
                  if coef[i, j] != 0.0]
    return cards


def sip_wcs(fit: dict, index: int) -> WCS:
    """astropy WCS of CCD ``index`` of a :func:`fit_tan_sip` result (built directly, ~0.05 ms)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crpix = fit["crpix"]
    w.wcs.crval = fit["crval"][index]
    w.wcs.cd = fit["cd"][index]
    w.wcs.radesys = "ICRS"
    w.sip = Sip(fit["a"][index], fit["b"][index], fit["ap"][index], fit["bp"][index], w.wcs.crpix)
    w.wcs.set()
    return w


def perturbed_targets(ra_deg, dec_deg, center_index: int, offset_deg: np.ndarray):
    """Move sampled sky positions by a tangent-plane error field and return the new tangent points.

    Parameters
    ----------
    ra_deg, dec_deg : ndarray, shape (n, m)
        True sky positions of the grid; column ``center_index`` is the reference pixel.
    offset_deg : ndarray, shape (2, n, m)
        Error (xi, eta) added on the tangent plane at the true position of the reference pixel.

    Returns
    -------
    ra, dec : ndarray, shape (n, m)
        Perturbed sky positions.
    crval : ndarray, shape (n, 2)
        Perturbed sky position of the reference pixel.
    """
    ra0, dec0 = ra_deg[:, center_index:center_index + 1], dec_deg[:, center_index:center_index + 1]
    xi, eta = sky_to_tangent(ra_deg, dec_deg, ra0, dec0)
    ra, dec = tangent_to_sky(xi + offset_deg[0], eta + offset_deg[1], ra0, dec0)
    return ra, dec, np.column_stack([ra[:, center_index], dec[:, center_index]])
