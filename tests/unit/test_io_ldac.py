"""FITS_LDAC exposure reader, on catalogs built in tmp_path from REAL pieces.

There is no real SExtractor exposure catalog in /work/shared/data, so the fixtures are written here:
- CFHT: the 2 real cfht_minimal sourceTables (x, y, errors, apFlux_12_0/17_0) with the real TAN-SIP
  header of HDU 1 of each calexp (+ EXPTIME, AIRMASS, FILTER, DATE-AVG, MAGZERO of its primary header);
- HSC: the real subselected sourceTable of visit 34690 (detectors 48/56/64) with a TAN-SIP fitted to
  its x, y -> ra, decl per detector;
- TPV: the CCD-12 block of the real SCAMP megacam.ahead (CRPIX, CD) with the CFHT calexp CRVAL and
  cubic PV terms, checked against an independent numpy evaluation of the TPV polynomial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from jointcal_core.exceptions import InputError
from jointcal_core.io._common import fit_tan_sip
from jointcal_core.io.ldac import read_ahead, read_ldac_exposures
from jointcal_core.projection import angular_separation_arcsec, tangent_to_sky

DATA = Path("/work/shared/data")
CFHT = DATA / "lsst_jointcal_tests_data/tests/data/cfht_minimal/repo"
HSC_PARQ = DATA / "lsst_jointcal_tests_data/tests/data/subselected-sourceTable-0034690.parq"
MEGACAM_AHEAD = DATA / "scamp_tests_extra/tests/extra/megacam.ahead"
GAIA_LDAC = DATA / "scamp_tests_extra/tests/extra/GAIA-DR1_1334+3754_r46.cat"
CFHT_VISITS = {849375: "2006-05-20", 850587: "2006-06-02"}


def write_ldac(path: Path, ccds: list[tuple[fits.Header, dict]]) -> Path:
    """Write a FITS_LDAC exposure catalog: per CCD an LDAC_IMHEAD (cards) + LDAC_OBJECTS table."""
    hdus = [fits.PrimaryHDU()]
    for header, columns in ccds:
        cards = [c.image for c in header.cards] + ["END".ljust(80)]
        n = len(cards)
        col = fits.Column(name="Field Header Card", format=f"{80 * n}A", dim=f"(80, {n})",
                          array=np.array([cards], dtype="S80"))
        hdus.append(fits.BinTableHDU.from_columns([col], name="LDAC_IMHEAD"))
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column(name=k, format=("D" if v.ndim == 1 else f"{v.shape[1]}D"), array=v)
             if v.dtype.kind == "f" else fits.Column(name=k, format="J", array=v)
             for k, v in columns.items()], name="LDAC_OBJECTS"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def covariance_to_errwin(var_x, var_y, cov):
    """(a, b, theta_deg) of the error ellipse, SExtractor convention (A from +x, counter-clockwise)."""
    mean, diff = (var_x + var_y) / 2, np.hypot((var_x - var_y) / 2, cov)
    theta = 0.5 * np.degrees(np.arctan2(2 * cov, var_x - var_y))
    return np.sqrt(mean + diff), np.sqrt(mean - diff), theta


def cfht_source_table(visit: int) -> pd.DataFrame:
    return pd.read_parquet(CFHT / f"src/06AL01/D3/{CFHT_VISITS[visit]}/r/sourceTable-{visit}.parq")


def cfht_header(visit: int) -> fits.Header:
    """Real TAN-SIP header of the calexp HDU 1 plus the exposure keywords of its primary header."""
    with fits.open(CFHT / f"calexp/06AL01/D3/{CFHT_VISITS[visit]}/r/calexp-{visit}-12.fits.fz") as f:
        h = fits.Header([c for c in f[1].header.cards if c.keyword not in ("XTENSION", "PCOUNT", "GCOUNT")
                         and not c.keyword.endswith("A") or c.keyword.startswith(("A_", "AP_"))])
        for key in ("EXPTIME", "AIRMASS", "FILTER", "DATE-AVG", "MAGZERO"):
            h[key] = f[0].header[key]
    h["CCDNUM"] = 12
    return h


def cfht_objects(src: pd.DataFrame, corr: float = 0.3) -> dict:
    var_x, var_y = src.xErr.to_numpy() ** 2, src.yErr.to_numpy() ** 2
    cov = corr * src.xErr.to_numpy() * src.yErr.to_numpy()
    a, b, theta = covariance_to_errwin(var_x, var_y, cov)
    return {"NUMBER": np.arange(1, len(src) + 1, dtype=np.int32),
            "XWIN_IMAGE": src.x.to_numpy() + 1, "YWIN_IMAGE": src.y.to_numpy() + 1,
            "ERRAWIN_IMAGE": a, "ERRBWIN_IMAGE": b, "ERRTHETAWIN_IMAGE": theta,
            "FLUX_AUTO": src.apFlux_12_0_instFlux.to_numpy(), "FLUXERR_AUTO": src.apFlux_12_0_instFluxErr.to_numpy(),
            "FLUX_APER": np.column_stack([src.apFlux_12_0_instFlux, src.apFlux_17_0_instFlux]),
            "FLUXERR_APER": np.column_stack([src.apFlux_12_0_instFluxErr, src.apFlux_17_0_instFluxErr]),
            "FLAGS": np.array([0, 3], dtype=np.int32)}


def hsc_ldac(path: Path) -> tuple[Path, dict]:
    """One LDAC file, 3 CCDs, from the real HSC sourceTable; returns the fitted WCS per detector."""
    src = pd.read_parquet(HSC_PARQ)
    ccds, fitted = [], {}
    for det, g in src.groupby("detector"):
        w, _ = fit_tan_sip(g.x, g.y, g.ra, g.decl, sip_degree=2)
        h = w.to_header(relax=True)
        h["NAXIS1"], h["NAXIS2"], h["CCDNUM"] = 2048, 4176, int(det)
        h["EXPTIME"], h["MJD-OBS"], h["FILTER"] = 30.0, 57100.25, "HSC-R"
        fitted[int(det)] = (w, g)
        a, b, t = covariance_to_errwin(g.xErr.to_numpy() ** 2, g.yErr.to_numpy() ** 2, np.zeros(len(g)))
        ccds.append((h, {"X_IMAGE": g.x.to_numpy() + 1, "Y_IMAGE": g.y.to_numpy() + 1,
                         "ERRA_IMAGE": a, "ERRB_IMAGE": b, "ERRTHETA_IMAGE": t,
                         "FLUX_PSF": g.PsFlux.to_numpy(), "FLUXERR_PSF": g.PsFluxErr.to_numpy(),
                         "FLAGS": np.zeros(len(g), np.int32)}))
    return write_ldac(path, ccds), fitted


def test_cfht_round_trip_reproduces_source_radec(tmp_path):
    paths = [write_ldac(tmp_path / f"{v}p.cat", [(cfht_header(v), cfht_objects(cfht_source_table(v)))])
             for v in CFHT_VISITS]
    ccds, meas = read_ldac_exposures(paths)
    assert list(ccds.visit) == [849375, 850587] and list(ccds.detector) == [12, 12]
    assert len(meas) == 4
    np.testing.assert_array_equal(ccds.bbox[0], [-0.5, -0.5, 2047.5, 4611.5])
    assert ccds.exptime_s[0] == pytest.approx(300.202) and ccds.airmass[0] == pytest.approx(1.548)
    assert ccds.band[0] == "r.MP9601" and ccds.zp_mag[0] == pytest.approx(25.8690182625437)
    # DATE-AVG 2006-05-20T12:08:13.05 is the mid-exposure time
    assert ccds.mjd[0] == pytest.approx(53875.505706597, abs=1e-8)
    for i, v in enumerate(CFHT_VISITS):
        src = cfht_source_table(v)
        rows = meas.ccd == i
        ra, dec = ccds.wcs[i].all_pix2world(meas.x[rows], meas.y[rows], 0)
        # truth: the calexp's own TAN-SIP (read straight from the calexp) at the sourceTable x, y
        with fits.open(CFHT / f"calexp/06AL01/D3/{CFHT_VISITS[v]}/r/calexp-{v}-12.fits.fz") as f:
            truth = WCS(f[1].header)
        ra0, dec0 = truth.all_pix2world(src.x, src.y, 0)
        sep_mas = 1000 * angular_separation_arcsec(ra, dec, ra0, dec0)
        assert np.all(sep_mas < 1.0), sep_mas
        # a fact of the shipped data: the sourceTable coord_ra/dec were made with an older WCS than the
        # calexp's (0.18-0.24 arcsec apart; the calexp matches the visitSummary corners to 0.16 mas)
        off_mas = 1000 * angular_separation_arcsec(ra, dec, src.coord_ra, src.coord_dec)
        assert np.all((off_mas > 150) & (off_mas < 250)), off_mas
        np.testing.assert_allclose(meas.var_x[rows], src.xErr ** 2, rtol=1e-5)
        np.testing.assert_allclose(meas.var_y[rows], src.yErr ** 2, rtol=1e-5)
        np.testing.assert_allclose(meas.cov_xy[rows], 0.3 * src.xErr * src.yErr, rtol=1e-5)
    assert meas.x[0] == pytest.approx(925.092299, abs=1e-6)
    np.testing.assert_array_equal(meas.flags, [0, 3, 0, 3])
    np.testing.assert_array_equal(meas.source_id, [1, 2, 1, 2])


def test_flux_type_aper_takes_first_aperture(tmp_path):
    v = 849375
    path = write_ldac(tmp_path / f"{v}.cat", [(cfht_header(v), cfht_objects(cfht_source_table(v)))])
    _, auto = read_ldac_exposures(path)
    _, aper = read_ldac_exposures(path, flux_type="FLUX_APER")
    np.testing.assert_allclose(aper.flux, [21234.264897, 4688.903054], rtol=1e-9)
    np.testing.assert_allclose(aper.flux_err, auto.flux_err)


def test_hsc_three_ccds_ccdnum_and_fallback_columns(tmp_path):
    path, fitted = hsc_ldac(tmp_path / "hsc-0034690.cat")
    ccds, meas = read_ldac_exposures(path, flux_type="FLUX_PSF")
    assert list(ccds.visit) == [34690] * 3 and list(ccds.detector) == [48, 56, 64]
    assert len(meas) == 168 and np.bincount(meas.ccd).tolist() == [48, 56, 64]
    assert ccds.mjd[0] == pytest.approx(57100.25 + 15 / 86400)
    assert np.all(np.isnan(ccds.zp_mag))
    for i, det in enumerate(ccds.detector):
        w, g = fitted[int(det)]
        rows = meas.ccd == i
        ra, dec = ccds.wcs[i].all_pix2world(meas.x[rows], meas.y[rows], 0)
        ra0, dec0 = w.all_pix2world(g.x, g.y, 0)
        assert np.max(angular_separation_arcsec(ra, dec, ra0, dec0)) < 1e-3
        np.testing.assert_allclose(meas.flux[rows], g.PsFlux)


def test_tpv_header_from_megacam_ahead(tmp_path):
    block = read_ahead(MEGACAM_AHEAD)[12]
    v = 849375
    h = cfht_header(v)
    tpv = fits.Header()
    for key in ("NAXIS1", "NAXIS2", "EXPTIME", "FILTER", "DATE-AVG", "CCDNUM"):
        tpv[key] = h[key]
    for key in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        tpv[key] = block[key]
    tpv["CRVAL1"], tpv["CRVAL2"] = 214.870376476163, 52.6536099135581  # the calexp's BORE-RA/DEC
    pv = {"PV1_1": 1.0, "PV2_1": 1.0, "PV1_7": -0.02, "PV1_9": -0.02, "PV2_7": -0.02, "PV2_9": -0.02}
    tpv.update(pv)
    src = cfht_source_table(v)
    path = write_ldac(tmp_path / f"{v}.cat", [(tpv, cfht_objects(src))])
    ccds, meas = read_ldac_exposures(path)
    # independent TPV: CD @ (pixel + 1 - CRPIX), cubic PV terms, then the gnomonic projection
    cd = np.array([[block["CD1_1"], block["CD1_2"]], [block["CD2_1"], block["CD2_2"]]])
    u, v_ = cd @ np.vstack([meas.x + 1 - block["CRPIX1"], meas.y + 1 - block["CRPIX2"]])
    xi = u - 0.02 * u ** 3 - 0.02 * u * v_ ** 2
    eta = v_ - 0.02 * v_ ** 3 - 0.02 * v_ * u ** 2
    ra_ref, dec_ref = tangent_to_sky(xi, eta, tpv["CRVAL1"], tpv["CRVAL2"])
    ra, dec = ccds.wcs[0].all_pix2world(meas.x, meas.y, 0)
    assert np.max(angular_separation_arcsec(ra, dec, ra_ref, dec_ref)) < 1e-3
    # the distortion is real: plain TAN (no PV) differs by far more than 1 mas
    ra_tan, dec_tan = tangent_to_sky(u, v_, tpv["CRVAL1"], tpv["CRVAL2"])
    assert np.min(angular_separation_arcsec(ra, dec, ra_tan, dec_tan)) > 0.1
    # a SCAMP-style 'RA---TAN' header with the same PV terms is read as TPV too
    tpv["CTYPE1"], tpv["CTYPE2"] = "RA---TAN", "DEC--TAN"
    path2 = write_ldac(tmp_path / f"{v}b.cat", [(tpv, cfht_objects(src))])
    ra2, dec2 = read_ldac_exposures(path2)[0].wcs[0].all_pix2world(meas.x, meas.y, 0)
    assert np.max(angular_separation_arcsec(ra2, dec2, ra_ref, dec_ref)) < 1e-3


def test_sibling_ahead_overrides_header(tmp_path):
    path, fitted = hsc_ldac(tmp_path / "hsc-0034690.cat")
    text = MEGACAM_AHEAD.read_text().split("END")
    (tmp_path / "hsc-0034690.ahead").write_text("END".join(text[:3]) + "END\n")
    ccds, _ = read_ldac_exposures(path, flux_type="FLUX_PSF")
    blocks = read_ahead(MEGACAM_AHEAD)
    for i in range(3):
        w = ccds.wcs[i]
        assert w.sip is None  # the TPV block replaced the fitted TAN-SIP
        np.testing.assert_allclose(w.wcs.crpix, [blocks[i]["CRPIX1"], blocks[i]["CRPIX2"]])
        np.testing.assert_allclose(w.wcs.crval, fitted[int(ccds.detector[i])][0].wcs.crval)
    assert read_ldac_exposures(path, "FLUX_PSF", ahead=False)[0].wcs[0].sip is not None
    with pytest.raises(InputError, match="36 header blocks but the catalog has 3 CCDs"):
        read_ldac_exposures(path, "FLUX_PSF", ahead=MEGACAM_AHEAD)


def test_errors_name_file_and_ccd(tmp_path):
    v = 849375
    src = cfht_source_table(v)
    objects = cfht_objects(src)
    del objects["FLUX_AUTO"]
    bad = write_ldac(tmp_path / "849375.cat", [(cfht_header(v), objects)])
    with pytest.raises(InputError, match=r"849375.cat, visit 849375, detector 12: .*'FLUX_AUTO'.*XWIN_IMAGE"):
        read_ldac_exposures(bad)
    linear = cfht_header(v)
    linear["CTYPE1"], linear["CTYPE2"] = "LINEAR", "LINEAR"
    for k in [k for k in linear if k[:2] in ("A_", "B_", "AP", "BP")]:
        del linear[k]
    nowcs = write_ldac(tmp_path / "849376.cat", [(linear, cfht_objects(src))])
    with pytest.raises(InputError, match="detector 12: header has no celestial WCS"):
        read_ldac_exposures(nowcs)
    good = write_ldac(tmp_path / "849377.cat", [(cfht_header(v), cfht_objects(src))])
    truncated = tmp_path / "849378.cat"
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(InputError, match="849378.cat"):
        read_ldac_exposures(truncated)
    noobj = tmp_path / "849379.cat"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="D", array=np.zeros(2))])]).writeto(noobj)
    with pytest.raises(InputError, match="no LDAC_OBJECTS"):
        read_ldac_exposures(noobj)
    empty = {k: v[:0] for k, v in cfht_objects(src).items()}
    with pytest.raises(InputError, match="no sources"):
        read_ldac_exposures(write_ldac(tmp_path / "849380.cat", [(cfht_header(v), empty)]))
    # the real Gaia reference LDAC is not an exposure catalog: its header has no WCS
    with pytest.raises(InputError, match="GAIA-DR1"):
        read_ldac_exposures(GAIA_LDAC)


def test_stem_without_digits_gets_stable_index(tmp_path):
    v = 849375
    src = cfht_source_table(v)
    paths = [write_ldac(tmp_path / f"{name}.cat", [(cfht_header(v), cfht_objects(src))]) for name in ("b", "a")]
    ccds, _ = read_ldac_exposures(paths)
    assert list(ccds.visit) == [2, 1]
