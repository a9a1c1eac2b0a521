"""LSST readers on the real cfht_minimal repo, its refcat shard and the real HSC subselected sourceTable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from jointcal_core.exceptions import InputError
from jointcal_core.io.lsst import (LSST_FLAG_BITS, LSST_JOINTCAL_FLAG_MASK, read_lsst_refcat, read_lsst_repo,
                                   read_lsst_source_table, read_photocalib_mean)
from jointcal_core.projection import angular_separation_arcsec

DATA = Path("/work/shared/data/lsst_jointcal_tests_data/tests/data")
REPO = DATA / "cfht_minimal/repo"
SHARD = REPO / "ref_cats/sdss-dr9-fink-v5b/225822.fits"
HSC = DATA / "subselected-sourceTable-0034690.parq"


def test_cfht_minimal_repo_rows_metadata_and_zero_points():
    ccds, meas = read_lsst_repo(REPO)
    assert list(ccds.visit) == [849375, 850587] and list(ccds.detector) == [12, 12]
    assert list(ccds.band) == ["r", "r"]
    np.testing.assert_array_equal(ccds.bbox, [[-0.5, -0.5, 2047.5, 4611.5]] * 2)
    # PhotoCalib calibrationMean 0.54322421 / 0.52577558 nJy per count
    np.testing.assert_allclose(ccds.zp_mag, 31.4 - 2.5 * np.log10([0.54322421, 0.52577558]), atol=1e-7)
    np.testing.assert_allclose(ccds.zp_mag, [32.062553, 32.098], atol=2e-5)  # visitSummary zeroPoint
    np.testing.assert_allclose(ccds.exptime_s, [300.202, 300.181])
    np.testing.assert_allclose(ccds.airmass, [1.548, 1.227])
    assert ccds.mjd[0] == pytest.approx(53875.505706597, abs=1e-8)  # VisitInfo tai = DATE-AVG 12:08:13.05
    assert ccds.boresight_ra_deg[0] == pytest.approx(np.degrees(3.750195534508815))
    assert len(meas) == 4
    np.testing.assert_allclose(meas.x, [925.092299, 366.970396, 1118.219104, 63.948655], atol=1e-6)
    np.testing.assert_allclose(meas.var_x[0], 0.01853 ** 2, rtol=1e-4)
    np.testing.assert_allclose(meas.flux[:2], [21234.264897, 4688.903054], rtol=1e-9)
    # the WCS is the calexp's TAN-SIP: it reproduces the visitSummary corners to < 1 mas
    with fits.open(REPO / "calexp/06AL01/D3/2006-05-20/r/visitSummary-849375.fits") as f:
        ra_c, dec_c = f[1].data["raCorners"][0], f[1].data["decCorners"][0]
    ra, dec = ccds.wcs[0].all_pix2world([-0.5, 2047.5, 2047.5, -0.5], [-0.5, -0.5, 4611.5, 4611.5], 0)
    assert np.max(angular_separation_arcsec(ra, dec, ra_c, dec_c)) < 1e-3


def test_photocalib_from_visit_summary_matches_calexp():
    mean, err = read_photocalib_mean(REPO / "calexp/06AL01/D3/2006-06-02/r/visitSummary-850587.fits", archive_id=2)
    assert (mean, err) == pytest.approx(read_photocalib_mean(REPO / "calexp/06AL01/D3/2006-06-02/r/calexp-850587-12.fits.fz"))
    assert mean == pytest.approx(0.52577558)


def test_jointcal_selection_keeps_three_of_four():
    """jointcal's cfht_minimal case: 3 measurements survive its science source selector."""
    _, meas = read_lsst_repo(REPO)
    assert LSST_JOINTCAL_FLAG_MASK == 0xFFC
    np.testing.assert_array_equal(meas.flags, [0, 1 << LSST_FLAG_BITS["resolved"], 0, 0])
    snr = meas.flux / meas.flux_err
    keep = ((meas.flags & LSST_JOINTCAL_FLAG_MASK) == 0) & (snr >= 10)
    assert keep.tolist() == [True, False, True, True]
    assert meas.source_id[~keep][0] == 131329414033047693
    assert snr[1] == pytest.approx(7.76729, abs=1e-4)


def test_flags_pack_real_bits(tmp_path):
    table = pd.read_parquet(REPO / "src/06AL01/D3/2006-06-02/r/sourceTable-850587.parq")
    table["pixelFlags_saturated"] = [True, False]
    table["parentSourceId"] = [0, 7]
    path = tmp_path / "sourceTable-850587.parq"
    table.to_parquet(path)
    calexp = REPO / "calexp/06AL01/D3/2006-06-02/r/calexp-850587-12.fits.fz"
    _, meas = read_lsst_source_table(path, calexps={(850587, 12): calexp})
    assert meas.flags.tolist() == [1 << 2, 1 << 11]


def test_hsc_source_table_fitted_wcs():
    ccds, meas = read_lsst_source_table(HSC, "PsFlux", detector_shape=(2048, 4176))
    assert list(ccds.detector) == [48, 56, 64] and list(ccds.band) == ["HSC-R"] * 3
    assert len(meas) == 168 and np.bincount(meas.ccd).tolist() == [48, 56, 64]
    np.testing.assert_array_equal(ccds.bbox[0], [-0.5, -0.5, 2047.5, 4175.5])
    src = pd.read_parquet(HSC)
    for i, det in enumerate(ccds.detector):
        g = src[src.detector == det]
        ra, dec = ccds.wcs[i].all_pix2world(g.x, g.y, 0)
        assert np.median(angular_separation_arcsec(ra, dec, g.ra, g.decl)) < 0.05  # measured 0.020-0.034 arcsec (a 94-px strip per detector)
    assert np.all(np.isnan(ccds.zp_mag))


def test_refcat_shard_radians_to_degrees_and_bands():
    ref = read_lsst_refcat(SHARD)
    assert len(ref) == 2628
    assert sorted(ref.flux_njy) == ["g", "i", "r", "u", "z"]
    assert ref.ra_deg[0] == pytest.approx(214.18522464, abs=1e-8)
    assert ref.flux_njy["r"][0] == pytest.approx(55836.2055496)
    assert ref.flux_err_njy["r"][0] == pytest.approx(783.44656336)
    assert 213.94 < ref.ra_deg.min() and ref.ra_deg.max() < 215.45
    assert len(read_lsst_refcat(SHARD.parent)) == 2628  # directory: master_schema.fits skipped


def test_refcat_shard_in_degrees_is_rejected(tmp_path):
    t = Table.read(SHARD)
    t["coord_ra"] = np.degrees(t["coord_ra"].value)
    t["coord_ra"].unit = None
    bad = tmp_path / "225822.fits"
    t.write(bad)
    with pytest.raises(InputError, match="above 2\\*pi"):
        read_lsst_refcat(bad)


def test_missing_flux_column_lists_columns():
    with pytest.raises(InputError, match="no column 'nope_instFlux'.*columns: .*xErr.*sourceFluxType"):
        read_lsst_repo(REPO, flux_type="nope")
