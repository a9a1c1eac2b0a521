"""TAN-SIP (.fits) and TPV (.head) export of pixel -> sky mappings, checked through astropy.wcs.

Real WCSs serve as the mappings to export:
- the TAN-SIP header of CFHT calexp 850587 CCD 12 (lsst/jointcal test data, HDU 1);
- MegaCam CCD headers from SCAMP's ``megacam.ahead`` (CRPIX + CD per CCD). That file has no CRVAL
  and no distortion, so the tests add CRVAL = (214.5, 52.5) and a TPV distortion chosen here
  (:data:`PV_DISTORTION`: second-order terms ~1e-4 and a third-order pincushion -0.01 deg^-2,
  ~4.6 arcsec at 0.77 deg, MegaCam-like), plus in one test a radial r^3 term so the mapping is not
  a polynomial in pixels.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jointcal_core.exceptions import InputError, JointcalWarning
from jointcal_core.io.ldac_write import measurements_to_ldac, write_ldac_exposure, write_ldac_reference
from jointcal_core.io.scamp_head import (fit_tpv, read_scamp_head, scamp_photometry, write_scamp_head)
from jointcal_core.io.wcs_fits import fit_tan_sip, measure_fidelity, pixel_grid, read_wcs_fits, write_wcs_fits
from jointcal_core.projection import angular_separation_arcsec, tangent_to_sky

DATA = Path("/work/shared/data")
CALEXP = (DATA / "lsst_jointcal_tests_data/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-06-02/r/"
          "calexp-850587-12.fits.fz")
MEGACAM_AHEAD = DATA / "scamp_tests_extra/tests/extra/megacam.ahead"
CFHT_BBOX = (-0.5, -0.5, 2047.5, 4611.5)      # 2048 x 4612 calexp
MEGACAM_BBOX = (-0.5, -0.5, 2111.5, 4643.5)   # 2112 x 4644 raw MegaCam CCD
MEGACAM_CRVAL = (214.5, 52.5)
PV_DISTORTION = {"PV1_0": 0.0, "PV1_1": 1.0, "PV1_2": 0.0, "PV1_4": 3e-4, "PV1_5": -2e-4, "PV1_6": 1e-4,
                 "PV1_7": -1e-2, "PV1_9": -1e-2,
                 "PV2_0": 0.0, "PV2_1": 1.0, "PV2_2": 0.0, "PV2_4": -1e-4, "PV2_5": 2e-4, "PV2_6": 3e-4,
                 "PV2_7": -1e-2, "PV2_9": -1e-2}


def _quiet_wcs(header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header)


@pytest.fixture(scope="module")
def calexp_wcs() -> WCS:
    return _quiet_wcs(fits.getheader(CALEXP, 1))


def megacam_wcs(ccd: int, extra: dict | None = None) -> WCS:
    header = read_scamp_head(MEGACAM_AHEAD)[ccd]
    header["CRVAL1"], header["CRVAL2"] = MEGACAM_CRVAL
    for key, value in {**PV_DISTORTION, **(extra or {})}.items():
        header[key] = value
    return _quiet_wcs(header)


def as_callable(wcs: WCS):
    return lambda x, y: wcs.all_pix2world(x, y, 0)


def jointcal_like_mapping(ccd: int = 7):
    """A constrained-model-like mapping: MegaCam chip affine (pixel -> focal, deg) followed by an
    order-5 visit polynomial (focal -> tangent plane at MEGACAM_CRVAL), so order 5 in pixels."""
    header = read_scamp_head(MEGACAM_AHEAD)[ccd]
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    crpix0 = np.array([header["CRPIX1"], header["CRPIX2"]]) - 1.0

    def pixel_to_sky(x, y):
        fx, fy = cd @ np.stack([np.asarray(x) - crpix0[0], np.asarray(y) - crpix0[1]])
        r2 = fx**2 + fy**2
        xi = 1e-5 + fx * (1 - 0.012 * r2 + 0.05 * r2**2) + 2e-4 * fx * fy
        eta = -2e-5 + fy * (1 - 0.011 * r2 + 0.05 * r2**2) + 1e-4 * fx**2 + 0.05 * fx**3 * fy**2
        return tangent_to_sky(xi, eta, *MEGACAM_CRVAL)
    return pixel_to_sky


# ---- TAN-SIP ---------------------------------------------------------------------------------
def test_calexp_tan_sip_is_reproduced_at_its_own_order(calexp_wcs):
    tangent = tuple(calexp_wcs.wcs.crval)
    wcs, report = fit_tan_sip(as_callable(calexp_wcs), CFHT_BBOX, tangent)
    assert report.meets_limits and report.order == 3          # the calexp's SIP is order 3
    assert report.max_mas < 1e-3 and report.rms_mas < 1e-3    # same format: exact to rounding
    assert wcs.wcs.ctype[0] == "RA---TAN-SIP" and wcs.sip.ap is not None
    assert report.inverse_max_pix < 1e-3
    # independent check on random points, not the check grid
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.5, 2047.5, 500), rng.uniform(-0.5, 4611.5, 500)
    rms, worst = measure_fidelity(wcs, as_callable(calexp_wcs), x, y)
    assert worst < 1e-3


def test_chosen_sip_order_is_the_lowest_meeting_the_limits(calexp_wcs):
    tangent = tuple(calexp_wcs.wcs.crval)
    _, report = fit_tan_sip(as_callable(calexp_wcs), CFHT_BBOX, tangent)
    with pytest.warns(JointcalWarning, match="no TAN-SIP up to order 2"):
        _, lower = fit_tan_sip(as_callable(calexp_wcs), CFHT_BBOX, tangent, max_order=report.order - 1)
    assert not lower.meets_limits and lower.rms_mas > 1.0


@pytest.mark.parametrize("ccd", [0, 14, 35])
def test_megacam_tpv_exported_as_tan_sip(ccd):
    truth = as_callable(megacam_wcs(ccd))
    wcs, report = fit_tan_sip(truth, MEGACAM_BBOX, MEGACAM_CRVAL)
    assert report.meets_limits and report.order == 3 and report.max_mas < 0.01
    # with the tangent point moved to the CCD centre the export is an approximation, still within limits
    _, moved = fit_tan_sip(truth, MEGACAM_BBOX, None)
    assert moved.meets_limits and moved.rms_mas <= 1.0 and moved.max_mas <= 3.0


def test_order5_polynomial_model_is_exported_exactly():
    # over one CCD the order-5 terms are ~1 mas, so ask for 0.01 mas to need them
    truth = jointcal_like_mapping()
    limits = {"rms_mas": 0.01, "max_mas": 0.03}
    wcs, report = fit_tan_sip(truth, MEGACAM_BBOX, MEGACAM_CRVAL, **limits)
    assert report.order == 5 and report.max_mas < 0.01
    header, tpv = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL, **limits)
    assert tpv.order == 5 and tpv.max_mas < 0.01
    with pytest.warns(JointcalWarning):
        _, lower = fit_tan_sip(truth, MEGACAM_BBOX, MEGACAM_CRVAL, max_order=4, **limits)
    assert not lower.meets_limits and lower.max_mas > 0.1
    with pytest.warns(JointcalWarning):
        _, lower = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL, max_order=4, **limits)
    assert not lower.meets_limits and lower.max_mas > 0.1


def test_wcs_fits_file_is_valid_header_only_and_reads_back(tmp_path, calexp_wcs):
    wcs, _ = fit_tan_sip(as_callable(calexp_wcs), CFHT_BBOX, tuple(calexp_wcs.wcs.crval))
    path = write_wcs_fits(tmp_path / "850587-12.fits", wcs, 2048, 4612, {"VISIT": 850587, "DETECTOR": 12})
    assert path.stat().st_size % 2880 == 0 and path.stat().st_size <= 3 * 2880   # header blocks only
    with fits.open(path) as hdul:
        hdul.verify("exception")                      # valid FITS
        assert len(hdul) == 1 and hdul[0].data is None
        header = hdul[0].header
    assert (header["IMAGEW"], header["IMAGEH"], header["VISIT"]) == (2048, 4612, 850587)
    plain = _quiet_wcs(header)                        # plain astropy reads the transformation
    back = read_wcs_fits(path)
    assert back.pixel_shape == (2048, 4612)
    x, y = pixel_grid(CFHT_BBOX, 30)
    for reread in (plain, back):
        _, worst = measure_fidelity(reread, as_callable(calexp_wcs), x, y)
        assert worst < 1e-3
    assert np.allclose(back.calc_footprint(), calexp_wcs.calc_footprint(), atol=1e-6)


def test_bad_bbox_is_refused(calexp_wcs):
    with pytest.raises(InputError, match="bbox"):
        fit_tan_sip(as_callable(calexp_wcs), (10, 0, 5, 100), (0, 0))


# ---- TPV / .head ---------------------------------------------------------------------------
@pytest.mark.parametrize("ccd", [0, 20])
def test_megacam_tpv_is_reproduced(ccd):
    truth = as_callable(megacam_wcs(ccd))
    header, report = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL)
    assert report.meets_limits and report.order == 3 and report.max_mas < 0.01
    assert header["CTYPE1"] == "RA---TPV" and "PV1_3" not in header and "PV1_7" in header
    # evaluate the written cards with astropy on random points
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-0.5, 2111.5, 400), rng.uniform(-0.5, 4643.5, 400)
    _, worst = measure_fidelity(_quiet_wcs(header), truth, x, y)
    assert worst < 0.01


def test_tpv_of_a_non_polynomial_mapping_uses_the_lowest_sufficient_order():
    # a radial r^3 term (PV1_11) is not a polynomial in pixels: only approximated
    truth = as_callable(megacam_wcs(0, {"PV1_11": 0.02, "PV2_11": 0.02}))
    header, report = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL)
    assert report.meets_limits and report.rms_mas <= 1.0 and report.max_mas <= 3.0
    with pytest.warns(JointcalWarning, match="no TPV"):
        _, lower = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL, max_order=report.order - 1)
    assert not lower.meets_limits


def test_tpv_swaps_axis_roles_in_pv2():
    # eta = y' + 0.01 x'^2 must go to PV2_6 (the a^0 b^2 term with a = y', b = x'), not PV2_4
    def truth(x, y):
        xp, yp = 5e-5 * (np.asarray(x) - 1000), 5e-5 * (np.asarray(y) - 2000)
        return tangent_to_sky(xp, yp + 0.01 * xp**2, 10.0, 20.0)
    header, report = fit_tpv(truth, (-0.5, -0.5, 1999.5, 3999.5), (10.0, 20.0), rms_mas=1e-4, max_mas=1e-4)
    assert report.order == 2
    assert header["PV2_6"] == pytest.approx(0.01, rel=1e-9)
    assert abs(header["PV2_4"]) < 1e-12 and abs(header["PV1_4"]) < 1e-12


def test_head_file_round_trip_matches_scamp_layout(tmp_path):
    headers = [fit_tpv(as_callable(megacam_wcs(ccd)), MEGACAM_BBOX, MEGACAM_CRVAL)[0] for ccd in (0, 1)]
    photometry = scamp_photometry([30.12, 30.18], magzerop=30.0)
    path = write_scamp_head(tmp_path / "850587.head", headers, photometry)
    lines = path.read_text(encoding="ascii").splitlines()
    assert sum(line == "END     " for line in lines) == 2 and lines[-1] == "END     "
    assert all(len(line) <= 80 for line in lines)
    assert all(len(line) == 79 for line in lines if line.startswith("CD1_1"))   # SCAMP's %.79s
    back = read_scamp_head(path)
    assert len(back) == 2
    for original, reread, (flxscale, magzerop) in zip(headers, back, photometry):
        assert reread["MAGZEROP"] == 30.0 and reread["FLXSCALE"] == pytest.approx(flxscale, rel=1e-15)
        as_written = fits.Header.fromstring(original.tostring())   # cards hold 20-character numbers
        for key in original:
            assert reread[key] == as_written[key]
    # FLXSCALE makes MAGZEROP the zero point of every CCD
    flux = 1234.5
    assert 30.0 - 2.5 * np.log10(flux * photometry[0][0]) == pytest.approx(30.12 - 2.5 * np.log10(flux), abs=1e-12)
    # SCAMP's own .ahead parses into its 36 CCD blocks
    ahead = read_scamp_head(MEGACAM_AHEAD)
    assert len(ahead) == 36 and ahead[0]["CTYPE1"] == "RA---TPV" and ahead[35]["CD2_2"] != 0


def test_head_photometry_length_must_match(tmp_path):
    header, _ = fit_tpv(as_callable(megacam_wcs(0)), MEGACAM_BBOX, MEGACAM_CRVAL)
    with pytest.raises(InputError, match="one \\(FLXSCALE, MAGZEROP\\) per CCD"):
        write_scamp_head(tmp_path / "x.head", [header], [(1.0, 30.0), (1.0, 30.0)])


def test_exported_sky_positions_agree_between_formats():
    truth = jointcal_like_mapping(20)
    wcs, _ = fit_tan_sip(truth, MEGACAM_BBOX, MEGACAM_CRVAL)
    header, _ = fit_tpv(truth, MEGACAM_BBOX, MEGACAM_CRVAL)
    x, y = pixel_grid(MEGACAM_BBOX, 12)
    sep_mas = angular_separation_arcsec(*wcs.all_pix2world(x, y, 0), *_quiet_wcs(header).all_pix2world(x, y, 0)) * 1e3
    assert np.max(sep_mas) < 0.01


@pytest.mark.skipif(shutil.which("scamp") is None, reason="SCAMP not installed")
def test_scamp_reads_our_head_as_ahead(tmp_path):
    """SCAMP 2.10 merges our .head (used as .ahead) into a catalog whose own WCS is a wrong plain TAN,
    and writes back (SOLVE_ASTROM N) a solution equal to ours: it parsed every card."""
    rng = np.random.default_rng(5)
    headers, tables, sky = [], [], []
    for ccd in (13, 14):
        truth = megacam_wcs(ccd)
        headers.append(fit_tpv(as_callable(truth), MEGACAM_BBOX, MEGACAM_CRVAL)[0])
        x, y = rng.uniform(0, 2111, 100), rng.uniform(0, 4643, 100)
        sky.append(truth.all_pix2world(x, y, 0))
        flux = rng.uniform(1e4, 1e5, 100)
        tables.append(measurements_to_ldac(x, y, np.full(100, 0.01), np.full(100, 0.01), np.zeros(100),
                                           flux, np.full(100, 100.0)))
    image_headers = []
    for _ in headers:
        h = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", 2112), ("NAXIS2", 4644),
                         ("EXPTIME", 100.0), ("MJD-OBS", 53000.0), ("FILTER", "r"), ("EQUINOX", 2000.0),
                         ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRVAL1", 214.0), ("CRVAL2", 52.0),
                         ("CRPIX1", 1000.0), ("CRPIX2", 2000.0), ("CD1_1", 5e-5), ("CD1_2", 0.0),
                         ("CD2_1", 0.0), ("CD2_2", 5e-5)])
        image_headers.append(h)
    write_ldac_exposure(tmp_path / "exp.cat", image_headers, tables)
    write_scamp_head(tmp_path / "exp.ahead", headers, scamp_photometry([30.1, 30.2], 30.0))
    ra, dec = np.concatenate([s[0] for s in sky]), np.concatenate([s[1] for s in sky])
    n = ra.size
    write_ldac_reference(tmp_path / "ref.cat", Table({
        "X_WORLD": ra, "Y_WORLD": dec, "ERRA_WORLD": np.full(n, 1e-5), "ERRB_WORLD": np.full(n, 1e-5),
        "MAG": np.full(n, 18.0), "MAGERR": np.full(n, 0.01), "OBSDATE": np.full(n, 2005.0)}))
    config = subprocess.run(["scamp", "-d"], capture_output=True, text=True, check=True).stdout
    (tmp_path / "default.scamp").write_text(config)
    subprocess.run(["scamp", "exp.cat", "-c", "default.scamp", "-ASTREF_CATALOG", "FILE", "-ASTREFCAT_NAME",
                    "ref.cat", "-SOLVE_ASTROM", "N", "-SOLVE_PHOTOM", "N", "-MATCH", "N", "-CHECKPLOT_TYPE",
                    "NONE", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    written = read_scamp_head(tmp_path / "exp.head")   # SCAMP's own file (has UTF-8 in a COMMENT)
    assert len(written) == 2
    x, y = pixel_grid(MEGACAM_BBOX, 20)
    for ours, theirs in zip(headers, written):
        sep_mas = angular_separation_arcsec(*_quiet_wcs(ours).all_pix2world(x, y, 0),
                                            *_quiet_wcs(theirs).all_pix2world(x, y, 0)) * 1e3
        assert np.max(sep_mas) < 1e-3


def test_verification_sample_covers_every_exported_order_pair():
    """io/export_models.py re-reads a few headers through astropy.wcs: the first and the last CCD
    and one of every (TAN-SIP, TPV) order pair, the rarest pairs first when there are too many."""
    from jointcal_core.io.export_models import verification_sample
    rng = np.random.default_rng(4)
    rows = np.arange(100, 400)                      # ccdImage rows, in export order
    orders = np.column_stack([rng.choice([3, 4, 5], rows.size, p=[0.1, 0.8, 0.1]),
                              rng.choice([4, 5], rows.size)])
    orders[123] = (7, 2)                            # one CCD alone with its pair
    sample = verification_sample(rows, orders)
    pairs = {tuple(p) for p in orders}
    assert {rows[0], rows[-1]} <= set(sample.tolist())
    assert {tuple(orders[rows == r][0]) for r in sample} == pairs
    assert sample.size <= len(pairs) + 2 and np.all(np.diff(sample) > 0)
    # capped: the single (7, 2) CCD is kept before the common pairs
    small = verification_sample(rows, orders, size=4)
    assert small.size <= 4 and 100 + 123 in small.tolist()
    # without orders: evenly spaced, first and last included
    even = verification_sample(rows, None, size=5)
    assert even.tolist() == [100, 175, 250, 324, 399]
