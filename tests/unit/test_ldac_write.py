"""FITS_LDAC writer: blank-padded header cards (SCAMP needs them), round trip through astropy."""

import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from jointcal_core.io.ldac_write import (covariance_to_ellipse, format_cards, measurements_to_ldac,
                                         write_ldac_exposure, write_ldac_reference)


def _header(n):
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, 2112, 4644
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 150.0, 2.0, 1056.5, 2322.5
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -5.15e-5, 0.0, 0.0, 5.15e-5
    h["FILTER"], h["CCDNUM"], h["OBJECT"] = "r", n, "a"    # short strings: the padding case
    return h


def _objects(rng, n):
    return measurements_to_ldac(rng.uniform(0, 2000, n), rng.uniform(0, 4000, n), np.full(n, 0.04),
                                np.full(n, 0.02), np.full(n, 0.005), rng.uniform(1e3, 1e5, n), np.full(n, 50.0),
                                zp_mag=30.0)


def _imhead_bytes(path, hdu_index):
    with fits.open(path) as hdus:
        start = hdus.fileinfo(hdu_index)["datLoc"]
        size = hdus[hdu_index].header["NAXIS1"]
    with open(path, "rb") as stream:
        stream.seek(start)
        return stream.read(size)


def test_exposure_header_cards_are_blank_padded(tmp_path):
    rng = np.random.default_rng(1)
    path = write_ldac_exposure(tmp_path / "e.cat", [_header(0), _header(1)], [_objects(rng, 5), _objects(rng, 7)])
    for index in (1, 3):
        raw = _imhead_bytes(path, index)
        assert len(raw) % 80 == 0 and b"\x00" not in raw
        cards = [raw[i:i + 80] for i in range(0, len(raw), 80)]
        assert cards[-1] == b"END" + b" " * 77
        assert b"FILTER  = 'r       '" in raw
    with fits.open(path) as hdus:
        assert [h.name for h in hdus[1:]] == ["LDAC_IMHEAD", "LDAC_OBJECTS"] * 2
        assert hdus[1].header["TDIM1"] == f"(80, {len(cards)})"
        assert hdus[1].header["TFORM1"] == f"{80 * len(cards)}A"


def test_exposure_round_trip_through_astropy(tmp_path):
    rng = np.random.default_rng(2)
    objects = _objects(rng, 6)
    path = write_ldac_exposure(tmp_path / "e.cat", [_header(3)], [objects])
    with fits.open(path) as hdus:
        text = bytes(np.asarray(hdus[1].data).tobytes()).decode("ascii")
        header = fits.Header.fromstring(text)
        back = Table(hdus[2].data)
    assert header["CCDNUM"] == 3 and header["CD1_1"] == -5.15e-5 and header["OBJECT"] == "a"
    assert back.colnames == ["NUMBER", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE",
                             "ERRTHETAWIN_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "FLAGS", "MAG_AUTO", "MAGERR_AUTO"]
    np.testing.assert_array_equal(back["XWIN_IMAGE"], objects["XWIN_IMAGE"])
    np.testing.assert_allclose(back["MAG_AUTO"], 30.0 - 2.5 * np.log10(back["FLUX_AUTO"]), atol=1e-5)


def test_measurements_to_ldac_is_one_based_with_sextractor_error_ellipse():
    t = measurements_to_ldac([0.0, 10.0], [5.0, 0.0], [4.0, 1.0], [1.0, 4.0], [0.0, 0.0], [100.0, 200.0], [1.0, 1.0])
    assert list(t["XWIN_IMAGE"]) == [1.0, 11.0] and list(t["YWIN_IMAGE"]) == [6.0, 1.0]
    np.testing.assert_allclose(t["ERRAWIN_IMAGE"], [2.0, 2.0])
    np.testing.assert_allclose(t["ERRBWIN_IMAGE"], [1.0, 1.0])
    np.testing.assert_allclose(t["ERRTHETAWIN_IMAGE"], [0.0, 90.0])


def test_covariance_to_ellipse_rebuilds_the_covariance():
    rng = np.random.default_rng(3)
    a0, b0 = rng.uniform(1, 2, 100), rng.uniform(0.2, 1, 100)
    th = rng.uniform(-np.pi / 2, np.pi / 2, 100)
    c, s = np.cos(th), np.sin(th)
    vx, vy, cxy = a0**2 * c**2 + b0**2 * s**2, a0**2 * s**2 + b0**2 * c**2, (a0**2 - b0**2) * s * c
    a, b, theta = covariance_to_ellipse(vx, vy, cxy)
    np.testing.assert_allclose(a, a0)
    np.testing.assert_allclose(b, b0)
    np.testing.assert_allclose(np.radians(theta), th, atol=1e-9)


def test_format_cards_parses_back_exactly():
    text = format_cards([("CRVAL1", 150.65337129128612), ("CD1_1", -4.439046213316123e-05), ("NAXIS1", 2048),
                         ("FILTER", "r"), ("FLAG", True), ("ONE", 1.0), ("MAGZEROP", 31.9, "zp")])
    assert len(text) == 7 * 80
    h = fits.Header.fromstring(text)
    assert h["CRVAL1"] == pytest.approx(150.65337129128612, rel=1e-15)
    assert h["CD1_1"] == pytest.approx(-4.439046213316123e-05, rel=1e-13)
    assert h["NAXIS1"] == 2048 and h["FILTER"] == "r" and h["FLAG"] is True and isinstance(h["ONE"], float)
    assert h.comments["MAGZEROP"] == "zp"


def _reference_table(rng, n, with_pm=True):
    t = Table({"X_WORLD": 150 + rng.uniform(0, 0.1, n), "Y_WORLD": 2 + rng.uniform(0, 0.1, n),
               "ERRA_WORLD": np.full(n, 1e-7), "ERRB_WORLD": np.full(n, 1e-7), "MAG": rng.uniform(17, 21, n),
               "MAGERR": np.full(n, 0.01), "OBSDATE": np.full(n, 2016.0)})
    if with_pm:
        for name in ("PMALPHA_J2000", "PMDELTA_J2000", "PMALPHAERR_J2000", "PMDELTAERR_J2000"):
            t[name] = rng.normal(0, 3, n)
    return t


def test_reference_catalog_layout_and_padding(tmp_path):
    rng = np.random.default_rng(4)
    path = write_ldac_reference(tmp_path / "ref.cat", _reference_table(rng, 20))
    assert b"\x00" not in _imhead_bytes(path, 1)
    with fits.open(path) as hdus:
        assert [h.name for h in hdus[1:]] == ["LDAC_IMHEAD", "LDAC_OBJECTS"]
        assert hdus[2].columns.names[:7] == ["X_WORLD", "Y_WORLD", "ERRA_WORLD", "ERRB_WORLD", "MAG", "MAGERR",
                                             "OBSDATE"]
        assert hdus[2].columns["PMALPHA_J2000"].unit == "mas/yr"
        assert len(hdus[2].data) == 20


def test_reference_without_required_column_is_refused(tmp_path):
    t = _reference_table(np.random.default_rng(5), 3, with_pm=False)
    del t["OBSDATE"]
    with pytest.raises(ValueError, match="OBSDATE"):
        write_ldac_reference(tmp_path / "ref.cat", t)


@pytest.mark.skipif(shutil.which("scamp") is None, reason="SCAMP not installed")
def test_scamp_reads_written_catalogs_and_matches_them_exactly(tmp_path):
    """SCAMP 2.10 loads a written exposure and reference; with references placed exactly where the
    header WCS puts the 1-based XWIN/YWIN positions, its external residuals are ~0 (checks the +1)."""
    from astropy.wcs import WCS

    rng = np.random.default_rng(6)
    n = 50
    header = _header(0)
    header["MJD-OBS"] = 57000.0
    objects = _objects(rng, n)
    path = write_ldac_exposure(tmp_path / "e.cat", [header], [objects])
    ra, dec = WCS(header).all_pix2world(objects["XWIN_IMAGE"], objects["YWIN_IMAGE"], 1)
    ref = _reference_table(rng, n)
    ref["X_WORLD"], ref["Y_WORLD"] = ra, dec
    ref_path = write_ldac_reference(tmp_path / "ref.cat", ref)
    run = subprocess.run(["scamp", str(path), "-ASTREF_CATALOG", "FILE", "-ASTREFCAT_NAME", str(ref_path),
                          "-SOLVE_PHOTOM", "N", "-CHECKPLOT_TYPE", "NONE", "-WRITE_XML", "N", "-MATCH", "N",
                          "-VERBOSE_TYPE", "LOG"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (run.stdout + run.stderr).replace("\r", "\n")
    assert run.returncode == 0, log[-2000:]
    assert f"{n} astrometric references loaded from" in log
    after = log.split("Astrometric stats (external)")[1].splitlines()
    external = next(line for line in after if line.strip().startswith("Group")).split()
    assert abs(float(external[2].rstrip('"'))) < 1e-6 and abs(float(external[3].rstrip('"'))) < 1e-6
