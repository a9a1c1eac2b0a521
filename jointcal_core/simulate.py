"""Synthetic fields with known truth on a real camera layout (tests, demo, benchmarks).

:func:`simulate_field` draws stars (positions, proper motions, magnitudes), visits (dithered
boresights over a multi-year baseline), a true astrometric and photometric model
(:mod:`jointcal_core.simtruth`), the detections of every star on every CCD with realistic noise
and outliers, a Gaia-like reference catalog, and the *initial* calibration a pipeline would give
jointcal: a TAN-SIP WCS per CCD that is off from the truth by a shift and a smooth error, and
zero points off by a few hundredths of a magnitude. :func:`write_simulated_field` writes it all
as FITS_LDAC catalogs plus reference catalogs and the truth.

Everything is vectorised over stars and measurements; the only Python loops run over visits.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from scipy.spatial import cKDTree

from .camera import camera_by_name
from .data import MJD_J2000, Camera, CcdImages, Field, Measurements, ReferenceCatalog, mag_to_njy, njy_to_mag
from .exceptions import InputError
from .io.ldac_write import format_cards, measurements_to_ldac, write_ldac_exposure, write_ldac_reference
from .projection import sky_to_tangent, tangent_to_sky
from .simtruth import SimulationTruth, load_truth
from .sipfit import fit_tan_sip, perturbed_targets, sip_cards, sip_wcs

__all__ = ["simulate_field", "SimulatedField", "write_simulated_field", "load_truth", "SimulationTruth"]

_MAS_PER_DEG = 3.6e6
_LN10_OVER_2P5 = np.log(10.0) / 2.5


@dataclass(frozen=True)
class SimulatedField:
    """A simulated field: what jointcal sees (``field``, ``headers``) and the truth.

    Attributes
    ----------
    field : Field
        ccdImages with the initial (wrong) TAN-SIP WCS and zero points, measurements, reference.
    truth : SimulationTruth
    header_text : list of str, length n_ccd
        Initial image header of every ccdImage as 80-char cards (WCS, NAXIS1/2, MJD-OBS,
        EXPTIME, ...); :meth:`header` turns one into an astropy Header.
    parameters : dict
        The arguments of :func:`simulate_field`.
    wcs_fit_rms_arcsec : ndarray, shape (n_ccd,)
        Rms residual of the TAN-SIP fit to the perturbed true map (the SIP approximation error).
    """

    field: Field
    truth: SimulationTruth
    header_text: list
    parameters: dict
    wcs_fit_rms_arcsec: np.ndarray

    def header(self, ccd: int) -> fits.Header:
        """Initial image header of ccdImage row ``ccd`` (the header written to the LDAC file)."""
        return fits.Header.fromstring(self.header_text[ccd])


def _camera_corners(camera: Camera) -> np.ndarray:
    b = camera.bbox
    xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], 1)
    ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], 1)
    m = camera.pixel_to_focal
    return np.stack([m[:, 0, 0, None] * xs + m[:, 0, 1, None] * ys + m[:, 0, 2, None],
                     m[:, 1, 0, None] * xs + m[:, 1, 1, None] * ys + m[:, 1, 2, None]], -1)   # (n, 4, 2)


def _draw_stars(rng, n, ra0, dec0, radius_deg, mag_range, pm_sigma):
    """Uniform on the tangent-plane disc; dN/dm ~ 10^(0.3 m) between mag_range."""
    r = radius_deg * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * np.pi, n)
    ra, dec = tangent_to_sky(r * np.cos(phi), r * np.sin(phi), ra0, dec0)
    lo, hi = 10 ** (0.3 * mag_range[0]), 10 ** (0.3 * mag_range[1])
    mag = np.log10(lo + rng.uniform(size=n) * (hi - lo)) / 0.3
    return ra, dec, rng.normal(0, pm_sigma, n), rng.normal(0, pm_sigma, n), mag


def _true_chips(rng, camera: Camera) -> np.ndarray:
    """Camera affine perturbed per chip: centre moved by ~1 px, rotated by ~1e-4 rad."""
    m = camera.pixel_to_focal.copy()
    centre = np.column_stack([camera.bbox[:, [0, 2]].mean(1), camera.bbox[:, [1, 3]].mean(1)])
    lin = m[:, :, :2]
    centre_focal = np.einsum("nij,nj->ni", lin, centre) + m[:, :, 2]
    shift = np.einsum("nij,nj->ni", lin, rng.normal(0, 1.0, centre.shape))
    angle = rng.normal(0, 1e-4, len(m))
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], 1)
    new_lin = np.einsum("nij,njk->nik", rot, lin)
    out = np.empty_like(m)
    out[:, :, :2] = new_lin
    out[:, :, 2] = centre_focal + shift - np.einsum("nij,nj->ni", new_lin, centre)
    return out


def _visit_linear(rng, n):
    """Per-visit rotation (~1 arcmin), scale (~2e-5) and shear (~1e-5)."""
    theta = rng.normal(0, 3e-4, n)
    scale = 1.0 + rng.normal(0, 2e-5, n)
    e, g = rng.normal(0, 1e-5, n), rng.normal(0, 1e-5, n)
    rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], 1)
    shear = np.stack([np.stack([1 + e, g], -1), np.stack([g, 1 - e], -1)], 1)
    return scale[:, None, None] * np.einsum("nij,njk->nik", rot, shear)


def _detect(truth: SimulationTruth, camera: Camera, visit_row: int, n_chips: int):
    """All stars landing on a CCD of one visit: (star, ccd, x, y), noise free."""
    ra, dec = truth.star_position_at(truth.mjd[visit_row])
    xi, eta = sky_to_tangent(ra, dec, truth.boresight_ra_deg[visit_row], truth.boresight_dec_deg[visit_row])
    corners = _camera_corners(camera)
    near = np.flatnonzero(np.hypot(xi, eta) < 1.1 * np.abs(corners).max() * np.sqrt(2))
    u, v = truth.tangent_to_focal(np.full(near.size, visit_row), xi[near], eta[near])
    m = truth.chip_affine
    centres = corners.mean(1)
    k = min(6, n_chips)
    _, cand = cKDTree(centres).query(np.column_stack([u, v]), k=k)
    cand = cand.reshape(near.size, k)
    inv = np.linalg.inv(m[:, :, :2])[cand]                                    # (n, k, 2, 2)
    du, dv = u[:, None] - m[cand, 0, 2], v[:, None] - m[cand, 1, 2]
    x = inv[..., 0, 0] * du + inv[..., 0, 1] * dv
    y = inv[..., 1, 0] * du + inv[..., 1, 1] * dv
    b = camera.bbox[cand]
    inside = (x > b[..., 0]) & (x < b[..., 2]) & (y > b[..., 1]) & (y < b[..., 3])
    hit = inside.any(1)
    first = inside.argmax(1)[hit]
    rows = np.flatnonzero(hit)
    chip = cand[rows, first]
    return near[rows], visit_row * n_chips + chip, x[rows, first], y[rows, first]


def _noise(rng, truth, p, star, ccd, x, y, camera: Camera):
    """Noisy measurements from noise-free ones; returns a dict of columns and outlier flags."""
    n = star.size
    counts = 10 ** (-0.4 * (truth.star_mag[star] - truth.zp_mag(ccd, x, y)))
    fwhm_mas = p["seeing_fwhm_arcsec"] * 1000.0
    faint_photon_mas = np.sqrt(max(p["faint_noise_mas"] ** 2 - p["bright_noise_mas"] ** 2, 1e-6))
    snr_faint = fwhm_mas / (2.35 * faint_photon_mas)
    c_faint = 10 ** (-0.4 * (p["mag_range"][1] - p["zp_global_mag"]))
    background = max(c_faint ** 2 / snr_faint ** 2 - c_faint, 0.0)
    snr = counts / np.sqrt(counts + background)
    sigma_mas = np.hypot(p["bright_noise_mas"], fwhm_mas / (2.35 * snr))
    lin = truth.chip_affine[truth.ccd_chip_row[ccd], :, :2]
    pix_mas = np.sqrt(np.abs(np.linalg.det(lin))) * _MAS_PER_DEG
    sigma_pix = sigma_mas / pix_mas
    q = rng.uniform(0.8, 1.0, n)                        # axis ratio of the error ellipse
    a, b = sigma_pix / np.sqrt(q), sigma_pix * np.sqrt(q)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, n)
    c, s = np.cos(theta), np.sin(theta)
    n1, n2 = rng.normal(size=n), rng.normal(size=n)
    dx, dy = a * n1 * c - b * n2 * s, a * n1 * s + b * n2 * c
    floor = p["bright_noise_mmag"] / 1000.0 * _LN10_OVER_2P5
    flux_err = counts * np.sqrt(1.0 / snr ** 2 + floor ** 2)
    flux = counts + rng.normal(size=n) * flux_err
    outlier = rng.uniform(size=n) < p["outlier_fraction"]
    kind = rng.integers(0, 3, n)                        # 0: astrometric, 1: photometric, 2: both
    astro, photo = outlier & (kind != 1), outlier & (kind != 0)
    jump = rng.uniform(300.0, 1000.0, n) / pix_mas
    angle = rng.uniform(0, 2 * np.pi, n)
    dx, dy = dx + astro * jump * np.cos(angle), dy + astro * jump * np.sin(angle)
    flux = flux * np.where(photo, 1.0 + rng.choice([-1.0, 1.0], n) * rng.uniform(0.1, 0.5, n), 1.0)
    return dict(x=x + dx, y=y + dy, var_x=a ** 2 * c ** 2 + b ** 2 * s ** 2, var_y=a ** 2 * s ** 2 + b ** 2 * c ** 2,
                cov_xy=(a ** 2 - b ** 2) * s * c, flux=flux, flux_err=flux_err, counts=counts,
                astro=astro, photo=photo)


def _initial_wcs(rng, truth, camera, p, n_visits):
    """TAN-SIP (order 3) fitted to the true map of every CCD plus a smooth error field."""
    n_chips, n_ccd = len(camera.detector), truth.ccd_chip_row.size
    nx, ny = (camera.bbox[0, 2] - camera.bbox[0, 0]), (camera.bbox[0, 3] - camera.bbox[0, 1])
    gx, gy = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 17))
    gx, gy = gx.ravel(), gy.ravel()
    centre_index = int(np.flatnonzero((gx == 0.5) & (gy == 0.5))[0])
    x = camera.bbox[0, 0] + 0.5 + gx * (nx - 1)
    y = camera.bbox[0, 1] + 0.5 + gy * (ny - 1)
    ccd = np.arange(n_ccd)[:, None]
    ra, dec = truth.pixel_to_sky(ccd, x[None], y[None])                         # (n_ccd, m)
    tx, ty = 2 * gx - 1, 2 * gy - 1
    err = p["wcs_error_arcsec"] / np.sqrt(2) / 3600.0
    dist = p["wcs_distortion_error_arcsec"] / 3600.0
    shift = (np.repeat(rng.normal(0, err * np.sqrt(0.8), (n_visits, 2)), n_chips, axis=0)
             + rng.normal(0, err * np.sqrt(0.2), (n_ccd, 2)))                  # (n_ccd, 2)
    terms = np.stack([tx, ty, tx * tx, tx * ty, ty * ty, tx ** 3, tx * tx * ty, tx * ty * ty, ty ** 3])
    amp = np.array([0.5, 0.5] + [1.0 / np.sqrt(7)] * 7) * dist
    coef = rng.normal(size=(2, n_ccd, terms.shape[0])) * amp
    offset = shift.T[:, :, None] + np.einsum("anj,jm->anm", coef, terms)
    ra_p, dec_p, crval = perturbed_targets(ra, dec, centre_index, offset)
    crpix0 = (x[centre_index], y[centre_index])
    return fit_tan_sip(x, y, ra_p, dec_p, crpix0, crval, order=3, inverse_order=4)


def simulate_field(camera: str | Camera = "megacam", n_visits: int = 10, n_stars: int = 10000, seed: int = 0,
                   ra_deg: float = 150.1, dec_deg: float = 2.2, dither_deg: float = 0.05,
                   baseline_years: float = 2.5, first_mjd: float = 56658.0, mag_range=(17.0, 23.5),
                   pm_sigma_masyr: float = 5.0, distortion: bool = True, wcs_error_arcsec: float = 0.3,
                   wcs_distortion_error_arcsec: float = 0.1, zp_global_mag: float = 32.0,
                   zp_scatter_mag: float = 0.05, illumination_ptp_mag: float = 0.03,
                   initial_zp_error_mag: float = 0.02, bright_noise_mas: float = 5.0,
                   faint_noise_mas: float = 50.0, bright_noise_mmag: float = 10.0, seeing_fwhm_arcsec: float = 1.0,
                   outlier_fraction: float = 0.01, ref_fraction: float = 0.95, ref_mag_limit: float = 21.0,
                   ref_epoch_mjd: float = 57388.5, band: str = "r", exptime_s: float = 300.0,
                   first_visit: int = 1000) -> SimulatedField:
    """Simulate a multi-visit field with known truth on a real camera layout.

    Parameters
    ----------
    camera : 'megacam', 'hsc' or Camera
    n_visits, n_stars, seed : int
    ra_deg, dec_deg : float
        Field centre; visit boresights are dithered uniformly within ``dither_deg`` of it.
    baseline_years, first_mjd : float
        Visit epochs are uniform in ``[first_mjd, first_mjd + 365.25 baseline_years]``.
    mag_range : (float, float)
        Star magnitudes (AB, ``band``), dN/dm ~ 10^(0.3 m).
    pm_sigma_masyr : float
        Proper motion per axis ~ N(0, pm_sigma_masyr).
    distortion : bool
        Radial optical distortion (0.5 % at the field edge, plus 1 % per-visit variation of k2).
    wcs_error_arcsec, wcs_distortion_error_arcsec : float
        Initial-WCS error: rms shift (80 % of its variance shared by the visit) and amplitude
        of the smooth (linear + order 2-3) error over a CCD.
    zp_global_mag, zp_scatter_mag, illumination_ptp_mag, initial_zp_error_mag : float
        True zp = global + chip term N(0, scatter) + visit term N(0, scatter / 2) + illumination;
        initial zp = true zp at the CCD centre + N(0, initial_zp_error_mag).
    bright_noise_mas, faint_noise_mas, bright_noise_mmag, seeing_fwhm_arcsec : float
        Noise model: position sigma = hypot(bright, fwhm / (2.35 snr)); the photon S/N reaches
        ``faint_noise_mas`` at the faint end; flux error = flux hypot(1 / snr, bright floor).
    outlier_fraction : float
        Fraction of measurements displaced by 0.3-1 arcsec and/or with flux off by 10-50 %.
    ref_fraction, ref_mag_limit, ref_epoch_mjd : float
        Reference catalog: this fraction of the stars brighter than the limit, at this epoch
        (also the epoch of the truth positions).
    band : str
    exptime_s : float
    first_visit : int
        Visit ids are ``first_visit + i``.

    Returns
    -------
    SimulatedField
    """
    params = {k: v for k, v in locals().items() if k != "camera"}
    params["mag_range"] = tuple(float(m) for m in mag_range)
    cam = camera_by_name(camera) if isinstance(camera, str) else camera
    if not isinstance(cam, Camera):
        raise InputError("camera must be 'megacam', 'hsc' or a jointcal_core.data.Camera")
    params["camera"] = cam.name
    rng = np.random.default_rng(seed)
    n_chips = len(cam.detector)
    corners = _camera_corners(cam)
    cam_radius = float(np.hypot(corners[..., 0], corners[..., 1]).max())
    ra, dec, pmra, pmdec, mag = _draw_stars(rng, n_stars, ra_deg, dec_deg, cam_radius + dither_deg + 0.02,
                                            mag_range, pm_sigma_masyr)
    r_off, phi = dither_deg * np.sqrt(rng.uniform(size=n_visits)), rng.uniform(0, 2 * np.pi, n_visits)
    bra, bdec = tangent_to_sky(r_off * np.cos(phi), r_off * np.sin(phi), ra_deg, dec_deg)
    mjd = np.sort(first_mjd + rng.uniform(0, 365.25 * baseline_years, n_visits))
    k2 = 0.005 / cam_radius ** 2 if distortion else 0.0
    k4 = 0.002 / cam_radius ** 4 if distortion else 0.0
    illum_centre = np.array([0.1, -0.05]) * cam_radius
    truth = SimulationTruth(
        epoch_mjd=float(ref_epoch_mjd), star_ra_deg=ra, star_dec_deg=dec, star_pm_ra_masyr=pmra,
        star_pm_dec_masyr=pmdec, star_mag=mag, ref_star=np.zeros(0, np.int64), meas_star=np.zeros(0, np.int64),
        meas_x_true=np.zeros(0), meas_y_true=np.zeros(0), meas_flux_true=np.zeros(0),
        is_outlier_astrometry=np.zeros(0, bool), is_outlier_photometry=np.zeros(0, bool),
        visit=first_visit + np.arange(n_visits, dtype=np.int64), boresight_ra_deg=bra, boresight_dec_deg=bdec,
        mjd=mjd, visit_linear=_visit_linear(rng, n_visits), visit_k2=k2 * (1 + rng.normal(0, 0.01, n_visits)),
        k4=k4, chip_detector=cam.detector.copy(), chip_affine=_true_chips(rng, cam),
        ccd_visit_row=np.repeat(np.arange(n_visits), n_chips), ccd_chip_row=np.tile(np.arange(n_chips), n_visits),
        zp_global=float(zp_global_mag), zp_chip=rng.normal(0, zp_scatter_mag, n_chips),
        zp_visit=rng.normal(0, zp_scatter_mag / 2, n_visits), illumination_ptp_mag=float(illumination_ptp_mag),
        illumination_center_deg=illum_centre,
        illumination_radius_deg=float(np.hypot(*(corners - illum_centre).T).max()))
    return _observe(rng, truth, cam, params)


def _observe(rng, truth: SimulationTruth, cam: Camera, p: dict) -> SimulatedField:
    """Detections, reference catalog and initial calibration of a field whose truth is drawn."""
    n_visits, n_chips = truth.visit.size, len(cam.detector)
    parts = [_detect(truth, cam, v, n_chips) for v in range(n_visits)]
    star, ccd, x, y = (np.concatenate([part[i] for part in parts]) for i in range(4))
    order = np.argsort(ccd, kind="stable")
    star, ccd, x, y = star[order], ccd[order], x[order], y[order]
    m = _noise(rng, truth, p, star, ccd, x, y, cam)
    b = cam.bbox[truth.ccd_chip_row[ccd]]
    keep = (m["x"] > b[:, 0]) & (m["x"] < b[:, 2]) & (m["y"] > b[:, 1]) & (m["y"] < b[:, 3]) & (m["flux"] > 0)
    first_of_ccd = np.searchsorted(ccd[keep], ccd[keep])
    meas = Measurements.build(ccd=ccd[keep], x=m["x"][keep], y=m["y"][keep], var_x=m["var_x"][keep],
                              var_y=m["var_y"][keep], cov_xy=m["cov_xy"][keep], flux=m["flux"][keep],
                              flux_err=m["flux_err"][keep],
                              source_id=np.arange(int(keep.sum())) - first_of_ccd + 1)
    reference, ref_star = _reference(rng, truth, p)
    truth = dataclasses.replace(truth, ref_star=ref_star, meas_star=star[keep], meas_x_true=x[keep],
                                meas_y_true=y[keep], meas_flux_true=m["counts"][keep],
                                is_outlier_astrometry=m["astro"][keep], is_outlier_photometry=m["photo"][keep])
    sip = _initial_wcs(rng, truth, cam, p, n_visits)
    n_ccd = truth.ccd_chip_row.size
    centres = np.column_stack([cam.bbox[:, [0, 2]].mean(1), cam.bbox[:, [1, 3]].mean(1)])[truth.ccd_chip_row]
    zp_init = truth.zp_mag(np.arange(n_ccd), centres[:, 0], centres[:, 1]) + rng.normal(
        0, p["initial_zp_error_mag"], n_ccd)
    visit_of = truth.visit[truth.ccd_visit_row]
    airmass = (1.0 + rng.uniform(0, 0.4, n_visits))[truth.ccd_visit_row]
    naxis = (int(round(cam.bbox[0, 2] - cam.bbox[0, 0])), int(round(cam.bbox[0, 3] - cam.bbox[0, 1])))
    date_obs = Time(truth.mjd, format="mjd", scale="utc").isot
    headers = []
    for i in range(n_ccd):
        v = truth.ccd_visit_row[i]
        extra = [("DATE-OBS", date_obs[v]), ("MJD-OBS", float(truth.mjd[v])), ("EXPTIME", float(p["exptime_s"])),
                 ("AIRMASS", float(airmass[i])), ("FILTER", p["band"]), ("EXPNUM", int(visit_of[i])),
                 ("CCDNUM", int(cam.detector[truth.ccd_chip_row[i]]), "detector id"),
                 ("MAGZEROP", float(zp_init[i]), "initial zero point, AB mag of 1 count"),
                 ("RA_DEG", float(truth.boresight_ra_deg[v]), "boresight"),
                 ("DEC_DEG", float(truth.boresight_dec_deg[v]), "boresight")]
        headers.append(format_cards(sip_cards(sip, i, naxis) + extra))
    wcs = [sip_wcs(sip, i) for i in range(n_ccd)]
    ccd_images = CcdImages.build(
        visit=visit_of, detector=cam.detector[truth.ccd_chip_row], bbox=cam.bbox[truth.ccd_chip_row], wcs=wcs,
        zp_mag=zp_init, zp_mag_err=np.full(n_ccd, p["initial_zp_error_mag"]), mjd=truth.mjd[truth.ccd_visit_row],
        exptime_s=np.full(n_ccd, p["exptime_s"]), airmass=airmass, band=[p["band"]] * n_ccd,
        path=["simulated"] * n_ccd, boresight_ra_deg=truth.boresight_ra_deg[truth.ccd_visit_row],
        boresight_dec_deg=truth.boresight_dec_deg[truth.ccd_visit_row])
    field = Field(ccd_images=ccd_images, measurements=meas, reference=reference, photometry_reference=reference,
                  camera=cam, band=p["band"])
    return SimulatedField(field=field, truth=truth, header_text=headers, parameters=p,
                          wcs_fit_rms_arcsec=sip["rms_arcsec"])


def _reference(rng, truth: SimulationTruth, p: dict):
    """Gaia-like reference: noisy positions (0.2-1 mas), motions (0.1-0.5 mas/yr), fluxes (1-2 %)."""
    bright = np.flatnonzero((truth.star_mag < p["ref_mag_limit"]) & (rng.uniform(size=truth.star_mag.size)
                                                                       < p["ref_fraction"]))
    mag = truth.star_mag[bright]
    n = bright.size
    pos_err = np.clip(0.2 * 10 ** (0.175 * (mag - p["mag_range"][0])), 0.2, 1.0)
    pm_err = pos_err / 2.0
    mag_err = 0.01 + 0.01 * np.clip((mag - p["mag_range"][0]) / (p["ref_mag_limit"] - p["mag_range"][0]), 0, 1) ** 2
    dec = truth.star_dec_deg[bright] + rng.normal(size=n) * pos_err / _MAS_PER_DEG
    ra = truth.star_ra_deg[bright] + rng.normal(size=n) * pos_err / _MAS_PER_DEG / np.cos(np.radians(dec))
    flux = mag_to_njy(mag)
    frac = mag_err * _LN10_OVER_2P5
    ref = ReferenceCatalog.build(
        ra_deg=ra % 360.0, dec_deg=dec, ra_err_mas=pos_err, dec_err_mas=pos_err,
        pm_ra_masyr=truth.star_pm_ra_masyr[bright] + rng.normal(size=n) * pm_err,
        pm_dec_masyr=truth.star_pm_dec_masyr[bright] + rng.normal(size=n) * pm_err,
        pm_ra_err_masyr=pm_err, pm_dec_err_masyr=pm_err, parallax_mas=rng.normal(size=n) * pos_err,
        parallax_err_mas=pos_err, epoch_mjd=truth.epoch_mjd, source_id=bright,
        flux_njy={p["band"]: flux * (1 + rng.normal(size=n) * frac)}, flux_err_njy={p["band"]: flux * frac},
        name="simulated reference")
    return ref, bright.astype(np.int64)


def write_simulated_field(sim: SimulatedField, directory: str | Path) -> Path:
    """Write a simulated field as the files a user would have.

    Writes ``<visit>.cat`` (FITS_LDAC, one LDAC_IMHEAD + LDAC_OBJECTS per CCD in camera order,
    headers with the initial WCS, NAXIS1/2, MJD-OBS, EXPTIME, AIRMASS, FILTER, CCDNUM = detector
    id, MAGZEROP = initial zp), ``reference.cat`` (SCAMP LDAC reference with proper motions),
    ``reference.parquet`` (Gaia-like columns), ``truth.npz`` + ``truth.json`` (see
    :func:`load_truth`) and ``simulation.json`` (the parameters).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    f = sim.field
    meas, ccds = f.measurements, f.ccd_images
    bounds = np.searchsorted(meas.ccd, np.arange(len(ccds) + 1))
    for visit in ccds.visits:
        rows = np.flatnonzero(ccds.visit == visit)
        tables = []
        for i in rows:
            s = slice(bounds[i], bounds[i + 1])
            tables.append(measurements_to_ldac(meas.x[s], meas.y[s], meas.var_x[s], meas.var_y[s], meas.cov_xy[s],
                                               meas.flux[s], meas.flux_err[s], meas.flags[s], ccds.zp_mag[i]))
        write_ldac_exposure(directory / f"{visit}.cat", [sim.header_text[i] for i in rows], tables)
    _write_references(f.reference, f.band, directory)
    sim.truth.save(directory)
    (directory / "simulation.json").write_text(json.dumps(sim.parameters, indent=1))
    return directory


def _write_references(ref: ReferenceCatalog, band: str, directory: Path) -> None:
    year = 2000.0 + (ref.epoch_mjd - MJD_J2000) / 365.25
    mag, mag_err = ref.mag(band)
    err_a, err_b = np.maximum(ref.ra_err_mas, ref.dec_err_mas), np.minimum(ref.ra_err_mas, ref.dec_err_mas)
    ldac = Table({"X_WORLD": ref.ra_deg, "Y_WORLD": ref.dec_deg, "ERRA_WORLD": err_a / _MAS_PER_DEG,
                  "ERRB_WORLD": err_b / _MAS_PER_DEG, "MAG": mag, "MAGERR": mag_err, "OBSDATE": year,
                  "PMALPHA_J2000": ref.pm_ra_masyr, "PMDELTA_J2000": ref.pm_dec_masyr,
                  "PMALPHAERR_J2000": ref.pm_ra_err_masyr, "PMDELTAERR_J2000": ref.pm_dec_err_masyr})
    write_ldac_reference(directory / "reference.cat", ldac)
    gaia = Table({"source_id": ref.source_id, "ra": ref.ra_deg, "dec": ref.dec_deg, "ra_error": ref.ra_err_mas,
                  "dec_error": ref.dec_err_mas, "pmra": ref.pm_ra_masyr, "pmdec": ref.pm_dec_masyr,
                  "pmra_error": ref.pm_ra_err_masyr, "pmdec_error": ref.pm_dec_err_masyr,
                  "parallax": ref.parallax_mas, "parallax_error": ref.parallax_err_mas, "ref_epoch": year,
                  f"{band}_flux": ref.flux_njy[band], f"{band}_fluxErr": ref.flux_err_njy[band],
                  f"phot_{band}_mag": njy_to_mag(ref.flux_njy[band])})
    for name, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"),
                       ("pmra", "mas/yr"), ("pmdec", "mas/yr"), ("pmra_error", "mas/yr"), ("pmdec_error", "mas/yr"),
                       ("parallax", "mas"), ("parallax_error", "mas"), ("ref_epoch", "yr"),
                       (f"{band}_flux", "nJy"), (f"{band}_fluxErr", "nJy")):
        gaia[name].unit = unit
    gaia.write(directory / "reference.parquet", format="parquet", overwrite=True)
