"""Plain-table reader on the 29 real AF Vel LCO .psx catalogs and the 2 real BANZAI files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from jointcal_core.exceptions import InputError, JointcalWarning
from jointcal_core.io.plain import parse_psx_name, read_plain_catalogs
from jointcal_core.projection import angular_separation_arcsec

ROOT = Path("/work/shared/data/astrosource_afvel_lco")
PSX = sorted((ROOT / "astrosource/test/test_files/comparison").glob("*.psx"))
BANZAI = sorted((ROOT / "astrosource/test/test_files/stars").glob("*.fits"))
FIRST = "afvel_V_2458545d6216425998_2019d03d03T02d49d27d527_1a162669_10d284_kb26_alexhewett"


def test_psx_name_parsing():
    assert parse_psx_name(FIRST) == dict(band="V", jd=2458545.6216425998, airmass=1.162669, exptime=10.284,
                                         camera="kb26")


def test_29_psx_catalogs_fit_wcs_and_flag_the_4_poor_frames():
    assert len(PSX) == 29
    report = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ccds, meas = read_plain_catalogs(PSX, report=report, detector_shape=(3072, 2048))
    poor = [w for w in caught if issubclass(w.category, JointcalWarning)]
    assert len(poor) == 4
    summary = Table.read(ROOT / "psx_summary.ecsv")
    assert len(ccds) == 29 and len(meas) == int(np.sum(summary["nsrc"])) == 12006
    resid = np.array([report[str(p)]["resid_arcsec"] for p in PSX])
    assert np.sum(resid > 0.5) == 4 and np.max(resid[resid < 0.5]) < 0.25
    k = PSX.index(next(p for p in PSX if p.stem == FIRST))
    assert ccds.visit[k] == 585451216 and ccds.band[k] == "V"
    assert ccds.mjd[k] == pytest.approx(2458545.6216426 - 2400000.5)
    assert ccds.airmass[k] == pytest.approx(1.162669) and ccds.exptime_s[k] == pytest.approx(10.284)
    assert sorted(set(ccds.detector)) == [0, 1, 2, 3]  # kb24, kb26, kb84, kb95
    assert ccds.detector[k] == 1
    np.testing.assert_array_equal(ccds.bbox[k], [-0.5, -0.5, 3071.5, 2047.5])
    rows = meas.ccd == k
    assert rows.sum() == 211
    assert meas.x[rows][0] == pytest.approx(1531.3724) and meas.flux[rows][0] == pytest.approx(3469.405)
    ra, dec = ccds.wcs[k].all_pix2world(meas.x[rows][:1], meas.y[rows][:1], 0)
    assert angular_separation_arcsec(ra, dec, 163.0197945, -49.9066554)[0] < 0.3


def test_psx_without_summary_uses_file_name(tmp_path):
    src = next(p for p in PSX if p.stem == FIRST)
    shutil.copy(src, tmp_path / src.name)
    ccds, _ = read_plain_catalogs([tmp_path / src.name])
    assert ccds.mjd[0] == pytest.approx(58545.1216425998) and ccds.airmass[0] == pytest.approx(1.162669)


def test_banzai_header_wcs_and_one_based_pixels():
    report = {}
    ccds, meas = read_plain_catalogs(BANZAI, report=report)
    assert len(ccds) == 2 and np.bincount(meas.ccd).tolist() == [106, 108]
    assert list(ccds.band) == ["ip", "ip"] and ccds.exptime_s[0] == pytest.approx(22.293)
    assert ccds.mjd[0] == pytest.approx(57757.0522793 + 22.293 / 2 / 86400)
    assert ccds.airmass[0] == pytest.approx(1.0899013)
    assert all(r["resid_arcsec"] < 1e-3 for r in report.values())  # header WCS reproduces RA/DEC
    with fits.open(BANZAI[0]) as f:
        cat = f["CAT"].data
    assert meas.x[0] == pytest.approx(cat["X"][0] - 1)  # 1-based detected and removed
    assert meas.flux[0] == pytest.approx(2178193.3436279297)


def test_sidecar_wcs_and_ecsv(tmp_path):
    with fits.open(BANZAI[0]) as f:
        cat, header = Table(f["CAT"].data), f["SCI"].header
    t = Table({"x": cat["X"] - 1, "y": cat["Y"] - 1, "flux": cat["FLUX"], "flux_err": cat["FLUXERR"]})
    t.write(tmp_path / "lco-232.ecsv")
    fits.PrimaryHDU(header=header).writeto(tmp_path / "lco-232.wcs")
    ccds, meas = read_plain_catalogs([tmp_path / "lco-232.ecsv"])
    assert ccds.visit[0] == 232
    ra, dec = ccds.wcs[0].all_pix2world(meas.x, meas.y, 0)
    assert np.max(angular_separation_arcsec(ra, dec, cat["RA"], cat["DEC"])) < 1e-3


def test_errors(tmp_path):
    bad = tmp_path / "a_V_1d5_x_1a0_1d0_kb01_o.psx"
    bad.write_text("1,2,3\n")
    with pytest.raises(InputError, match="3 columns, expected 8"):
        read_plain_catalogs([bad])
    Table({"x": [1.0], "y": [2.0], "counts": [3.0]}).write(tmp_path / "t1.ecsv")
    with pytest.raises(InputError, match="t1.ecsv: table has no column 'flux_err'"):
        read_plain_catalogs([tmp_path / "t1.ecsv"])
    Table({"x": [1.0], "y": [2.0], "flux": [3.0], "flux_err": [1.0]}).write(tmp_path / "t2.ecsv")
    with pytest.raises(InputError, match="neither a FITS WCS header"):
        read_plain_catalogs([tmp_path / "t2.ecsv"])
