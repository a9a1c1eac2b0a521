"""Reference readers: the real SCAMP Gaia-DR1 LDAC, Gaia-like tables derived from its rows, an LSST shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from jointcal_core.data import MJD_J2000, mag_to_njy
from jointcal_core.exceptions import InputError
from jointcal_core.io.refcat import read_reference

GAIA = Path("/work/shared/data/scamp_tests_extra/tests/extra/GAIA-DR1_1334+3754_r46.cat")
SHARD = Path("/work/shared/data/lsst_jointcal_tests_data/tests/data/cfht_minimal/repo/ref_cats/sdss-dr9-fink-v5b/225822.fits")


def gaia_rows(n=50) -> Table:
    with fits.open(GAIA) as f:
        return Table(f["LDAC_OBJECTS"].data[:n])


def test_scamp_ldac_reference():
    ref = read_reference(GAIA, band="G")
    assert len(ref) == 4403
    assert ref.ra_deg[0] == pytest.approx(203.949079) and ref.dec_deg[0] == pytest.approx(37.18936082)
    assert ref.ra_err_mas[1] == pytest.approx(1.6388888e-08 * 3.6e6, rel=1e-6)  # 0.059 mas
    assert ref.dec_err_mas[0] == pytest.approx(2.5194444e-07 * 3.6e6, rel=1e-6)
    np.testing.assert_allclose(ref.epoch_mjd, MJD_J2000 + 15 * 365.25)  # OBSDATE 2015.0
    assert sorted(ref.flux_njy) == ["G", "MAG"]
    mag, err = ref.mag("MAG")
    assert mag[1] == pytest.approx(15.285, abs=1e-5) and err[1] == pytest.approx(0.0007269, rel=1e-4)
    assert not ref.has_proper_motion


@pytest.mark.parametrize("suffix", [".fits", ".parq", ".ecsv"])
def test_gaia_like_tables(tmp_path, suffix):
    rows = gaia_rows()
    t = Table()
    t["source_id"] = np.arange(1000, 1000 + len(rows))
    t["ra"], t["dec"] = rows["X_WORLD"], rows["Y_WORLD"]
    t["ra_error"], t["dec_error"] = rows["ERRA_WORLD"] * 3.6e6, rows["ERRB_WORLD"] * 3.6e6
    t["pmra"], t["pmdec"] = np.linspace(-5, 5, len(rows)), np.linspace(3, -3, len(rows))
    t["pmra_error"], t["pmdec_error"] = np.full(len(rows), 0.5), np.full(len(rows), 0.6)
    t["parallax"], t["parallax_error"] = np.full(len(rows), 1.2), np.full(len(rows), 0.3)
    t["ref_epoch"] = rows["OBSDATE"]
    t["phot_g_mean_mag"] = rows["MAG"]
    t["r_flux"] = mag_to_njy(rows["MAG"]) / 1e9
    t["r_flux"].unit = "Jy"  # units are honoured: read back in nJy
    path = tmp_path / f"gaia{suffix}"
    t.write(path)
    ref = read_reference(path)
    assert len(ref) == 50 and ref.source_id[0] == 1000
    np.testing.assert_allclose(ref.ra_deg, rows["X_WORLD"])
    np.testing.assert_allclose(ref.ra_err_mas[1], 0.059, rtol=1e-6)
    np.testing.assert_allclose(ref.pm_dec_masyr[-1], -3.0)
    assert ref.has_proper_motion and ref.parallax_mas[0] == 1.2
    np.testing.assert_allclose(ref.epoch_mjd, 57023.25)
    np.testing.assert_allclose(ref.mag("phot_g_mean")[0], rows["MAG"], atol=1e-5)
    np.testing.assert_allclose(ref.flux_njy["r"], mag_to_njy(rows["MAG"]), rtol=1e-9)


def test_dispatch_lsst_shard():
    ref = read_reference(SHARD)
    assert len(ref) == 2628 and "r" in ref.flux_njy


def test_errors(tmp_path):
    t = gaia_rows()
    t.rename_column("X_WORLD", "alpha")
    bad = tmp_path / "nora.ecsv"
    Table({"alpha": t["alpha"], "dec": t["Y_WORLD"]}).write(bad)
    with pytest.raises(InputError, match="nora.ecsv: reference catalog has no column 'ra'.*alpha"):
        read_reference(bad)
    with pytest.raises(InputError, match="not found"):
        read_reference(tmp_path / "missing.fits")
    broken = tmp_path / "broken.fits"
    broken.write_bytes(GAIA.read_bytes()[:5000])
    with pytest.raises(InputError, match="broken.fits"):
        read_reference(broken)
