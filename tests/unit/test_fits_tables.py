"""io/fits_tables.py: the numpy reader of plain binary-table FITS files agrees with astropy."""

import numpy as np
from astropy.io import fits
from astropy.table import Table

from jointcal_core.io.fits_tables import read_fits_tables
from jointcal_core.io.ldac import read_ldac_header
from jointcal_core.io.ldac_write import format_cards, measurements_to_ldac, write_ldac_exposure


def _exposure(path, rng):
    headers, tables = [], []
    for ccd in range(3):
        n = 50 + ccd
        headers.append(format_cards([("NAXIS", 2), ("NAXIS1", 2048), ("NAXIS2", 4176), ("CTYPE1", "RA---TAN"),
                                     ("CTYPE2", "DEC--TAN"), ("CCDNUM", ccd + 1)]))
        tables.append(measurements_to_ldac(rng.uniform(0, 2000, n), rng.uniform(0, 4000, n), np.full(n, 0.01),
                                           np.full(n, 0.02), np.zeros(n), rng.uniform(1e3, 1e5, n),
                                           np.full(n, 30.0), rng.integers(0, 4, n)))
    return write_ldac_exposure(path, headers, tables)


def test_ldac_tables_equal_astropy(tmp_path):
    path = _exposure(tmp_path / "1.cat", np.random.default_rng(2))
    fast = read_fits_tables(path)
    with fits.open(path) as hdus:
        assert [h.name for h in fast] == [h.name for h in hdus]
        for mine, theirs in zip(fast[1:], hdus[1:]):
            assert mine.columns.names == theirs.columns.names
            if mine.name == "LDAC_IMHEAD":     # the header as the LDAC reader decodes it
                assert read_ldac_header(mine).tostring() == read_ldac_header(theirs).tostring()
                continue
            for name in mine.columns.names:
                np.testing.assert_array_equal(np.asarray(mine.data[name]), np.asarray(theirs.data[name]))


def test_nul_padded_header_cells_read_as_blanks(tmp_path):
    cards = [fits.Card("CTYPE1", "RA---TAN").image, "END".ljust(80)]
    column = fits.Column(name="Field Header Card", format="160A", dim="(80, 2)", array=np.array([cards], "S80"))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column], name="LDAC_IMHEAD")]).writeto(
        tmp_path / "h.fits")
    text = read_fits_tables(tmp_path / "h.fits")[1].data["Field Header Card"][0].decode()
    assert text == "".join(c.ljust(80) for c in cards)


def test_unusual_files_are_left_to_astropy(tmp_path):
    path = _exposure(tmp_path / "1.cat", np.random.default_rng(4))
    raw = path.read_bytes()
    (tmp_path / "cut.cat").write_bytes(raw[:-2880])               # truncated
    assert read_fits_tables(tmp_path / "cut.cat") is None
    scaled = Table({"A": np.arange(5, dtype=np.uint16)})          # unsigned: TZERO scaling
    scaled.write(tmp_path / "u.fits")
    assert read_fits_tables(tmp_path / "u.fits") is None
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "img.fits")   # an image with data
    assert read_fits_tables(tmp_path / "img.fits") is None
    (tmp_path / "x.txt").write_text("not fits")
    assert read_fits_tables(tmp_path / "x.txt") is None
