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


# ---- CardHeader: the fast header of the LDAC reader --------------------------------------------
CALEXP = ("/work/shared/data/lsst_jointcal_tests_data/tests/data/cfht_minimal/repo/calexp/06AL01/D3/2006-06-02/r/"
          "calexp-850587-12.fits.fz")
MEGACAM_AHEAD = "/work/shared/data/scamp_tests_extra/tests/extra/megacam.ahead"


def _astropy_values(header: fits.Header) -> dict:
    return {k: header[k] for k in header if k not in ("", "COMMENT", "HISTORY")}


def test_card_header_values_equal_astropy_on_real_headers():
    from jointcal_core.io.fits_tables import CardHeader
    from jointcal_core.io.ldac import read_ahead

    # the 36 MegaCam CCD headers of SCAMP's megacam.ahead (COMMENT cards, D-less exponents, comments)
    blocks = read_ahead(MEGACAM_AHEAD)
    assert len(blocks) == 36
    for block in blocks:
        mine = CardHeader.parse(block.tostring())
        assert mine is not None
        theirs = _astropy_values(block)
        assert set(mine.keys()) == set(theirs)
        for key, value in theirs.items():
            assert mine[key] == value and type(mine[key]) is type(value), key
        assert mine.to_astropy().tostring() == block.tostring()
    # the CFHT calexp's image header: parsed like astropy, or refused (HIERARCH/CONTINUE cards)
    calexp = fits.getheader(CALEXP, 1)
    mine = CardHeader.parse(calexp.tostring())
    if mine is not None:
        for key, value in _astropy_values(calexp).items():
            assert mine.get(key) == value, key


def test_card_header_refuses_what_it_cannot_read_like_astropy():
    from jointcal_core.io.fits_tables import CardHeader

    def text(*cards):
        return "".join(c.ljust(80) for c in cards) + "END".ljust(80)

    assert CardHeader.parse(text("NAXIS1  =                 2048", "FILTER  = 'r   ''x'' ' / band")).get("FILTER") == "r   'x'"
    assert CardHeader.parse(text("EXPTIME =                  1.5D2")).get("EXPTIME") == 150.0
    for bad in ("NAXIS1  =                 2048", "HIERARCH ESO DET CHIP = 3", "UNDEF   =                  / no value",
                "CPLX    =           (1.0, 2.0)", "NANVAL  =                  nan"):
        cards = ["NAXIS1  =                 2048", bad] if bad.startswith("NAXIS1") else [bad]
        assert CardHeader.parse(text(*cards)) is None, bad
