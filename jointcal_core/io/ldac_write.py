"""Write SExtractor/SCAMP FITS_LDAC catalogs: per-exposure source catalogs and reference catalogs.

FITS_LDAC layout: an empty primary HDU, then for every CCD two binary tables: ``LDAC_IMHEAD``
(one row, one column ``Field Header Card`` holding the CCD image header as 80-character cards,
``TDIM = (80, n_cards)``) and ``LDAC_OBJECTS`` (one row per detection).

SCAMP parses the header cards as text and needs them padded with BLANKS to 80 characters;
astropy pads short strings in text columns with NUL bytes, which SCAMP cannot read. Here every
card is formatted to exactly 80 characters, the column is written as bytes (TFORM ``nB``) and its
TFORM is then relabelled ``nA`` in the file, so no padding is ever added (tests read the file's
bytes back to check).

Conventions of the object columns (SExtractor's): ``X*_IMAGE``/``Y*_IMAGE`` are 1-BASED pixels,
``ERRAWIN_IMAGE``/``ERRBWIN_IMAGE`` the major/minor RMS axes (pixels) of the position error
ellipse, ``ERRTHETAWIN_IMAGE`` its position angle (deg, counter-clockwise from +x, in [-90, 90]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..exceptions import InputError, OutputError

__all__ = ["write_ldac_exposure", "write_ldac_reference", "header_to_ldac_imhead", "measurements_to_ldac",
           "covariance_to_ellipse", "format_cards", "REFERENCE_COLUMNS"]

#: Column -> (FITS format, unit, comment) of the object tables this module writes.
_OBJECT_FORMATS = {
    "NUMBER": ("1J", "", "Running object number"),
    "XWIN_IMAGE": ("1D", "pixel", "Windowed position estimate along x"),
    "YWIN_IMAGE": ("1D", "pixel", "Windowed position estimate along y"),
    "ERRAWIN_IMAGE": ("1E", "pixel", "RMS windowed position error along major axis"),
    "ERRBWIN_IMAGE": ("1E", "pixel", "RMS windowed position error along minor axis"),
    "ERRTHETAWIN_IMAGE": ("1E", "deg", "Windowed error ellipse position angle (CCW/x)"),
    "FLUX_AUTO": ("1E", "count", "Flux within a Kron-like elliptical aperture"),
    "FLUXERR_AUTO": ("1E", "count", "RMS error for AUTO flux"),
    "MAG_AUTO": ("1E", "mag", "Kron-like elliptical aperture magnitude"),
    "MAGERR_AUTO": ("1E", "mag", "RMS error for AUTO magnitude"),
    "FLAGS": ("1I", "", "Extraction flags"),
    "X_WORLD": ("1D", "deg", "Barycenter position along world x axis"),
    "Y_WORLD": ("1D", "deg", "Barycenter position along world y axis"),
    "ERRA_WORLD": ("1E", "deg", "World RMS position error along major axis"),
    "ERRB_WORLD": ("1E", "deg", "World RMS position error along minor axis"),
    "MAG": ("1E", "mag", "Generic magnitude"),
    "MAGERR": ("1E", "mag", "Generic magnitude RMS error"),
    "OBSDATE": ("1D", "yr", "Observation date"),
    "PMALPHA_J2000": ("1E", "mas/yr", "RA component of proper motion vector"),
    "PMDELTA_J2000": ("1E", "mas/yr", "Declination component of proper motion vector"),
    "PMALPHAERR_J2000": ("1E", "mas/yr", "Proper motion uncertainty along RA"),
    "PMDELTAERR_J2000": ("1E", "mas/yr", "Proper motion uncertainty along Dec"),
}

#: Columns of a SCAMP reference catalog: required ones first, then the optional proper motions
#: (SCAMP's default ASTREFPROP_KEYS / ASTREFPROPERR_KEYS names, mas/yr, mu_alpha * cos(dec)).
REFERENCE_COLUMNS = ("X_WORLD", "Y_WORLD", "ERRA_WORLD", "ERRB_WORLD", "MAG", "MAGERR", "OBSDATE")
_REFERENCE_OPTIONAL = ("PMALPHA_J2000", "PMDELTA_J2000", "PMALPHAERR_J2000", "PMDELTAERR_J2000")


def _format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        for digits in range(16, 8, -1):
            text = f"{float(value):.{digits}G}"
            if "." not in text and "E" not in text:
                text += ".0"
            elif "." not in text:
                text = text.replace("E", ".0E")
            if len(text) <= 20:
                return text
        return text
    text = str(value).replace("'", "''")
    return f"'{text:<8}'".ljust(20)


def format_cards(cards) -> str:
    """FITS header text (80-char cards, no END) of ``(keyword, value[, comment])`` tuples.

    Much faster than building an astropy Header card by card; values are ``bool``, ``int``,
    ``float`` (up to 16 significant digits, shortened to fit 20 columns) or ``str``.
    """
    out = []
    for card in cards:
        key, value = card[0], card[1]
        comment = card[2] if len(card) > 2 else ""
        text = f"{key:<8}= {_format_value(value):>20}"
        if comment:
            text += f" / {comment}"
        out.append(text[:80].ljust(80))
    return "".join(out)


def header_to_ldac_imhead(header: fits.Header | str) -> fits.BinTableHDU:
    """The ``LDAC_IMHEAD`` table of one CCD: its header as blank-padded 80-char cards.

    Parameters
    ----------
    header : astropy.io.fits.Header or str
        The CCD image header (WCS, NAXIS1/2, MJD-OBS, ...), or its text as 80-char cards
        (see :func:`format_cards`). ``SIMPLE = T`` and ``BITPIX = 0`` are put first when the
        header opens with neither SIMPLE nor XTENSION (SCAMP needs that), ``END`` is appended.

    Returns
    -------
    astropy.io.fits.BinTableHDU
        One row, one column ``Field Header Card`` of format ``{80 n}A`` and ``TDIM1 = (80, n)``.
    """
    body = header if isinstance(header, str) else "".join(card.image for card in header.cards)
    if not body.startswith(("SIMPLE  =", "XTENSION=")):
        # SCAMP rejects an LDAC_IMHEAD that does not open like a FITS header ("Corrupted FITS header")
        body = format_cards([("SIMPLE", True), ("BITPIX", 0)]) + body
    text = body + "END".ljust(80)
    raw = text.encode("ascii")
    n_cards = len(raw) // 80
    if len(raw) != 80 * n_cards:
        raise OutputError("header cards are not 80 characters long (long-string CONTINUE cards?)")
    # Written as bytes (format B) and relabelled 'A' in the file by _write_hdus: astropy would strip
    # the trailing blanks of a text cell and pad it with NULs (and takes ~20 ms per header doing so).
    data = np.frombuffer(raw, dtype=np.uint8).reshape(1, 80 * n_cards)
    column = fits.Column(name="Field Header Card", format=f"{80 * n_cards}B", array=data)
    hdu = fits.BinTableHDU.from_columns([column], name="LDAC_IMHEAD")
    hdu.header.set("TDIM1", f"(80, {n_cards})", after="TFORM1")
    return hdu


def _objects_hdu(table: Table) -> fits.BinTableHDU:
    columns = []
    for name in table.colnames:
        fmt, unit, _ = _OBJECT_FORMATS.get(name, (None, "", ""))
        values = np.asarray(table[name])
        if fmt is None:
            fmt = {"f": "1D", "i": "1K", "u": "1K", "b": "1L"}.get(values.dtype.kind)
            if fmt is None:
                raise OutputError(f"LDAC object column '{name}' has unsupported type {values.dtype}")
        unit = str(table[name].unit) if table[name].unit is not None else unit
        columns.append(fits.Column(name=name, format=fmt, unit=unit or None, array=values))
    return fits.BinTableHDU.from_columns(columns, name="LDAC_OBJECTS")


def write_ldac_exposure(path: str | Path, headers: list[fits.Header | str], tables: list[Table]) -> Path:
    """Write one exposure as FITS_LDAC: per CCD an ``LDAC_IMHEAD`` and an ``LDAC_OBJECTS`` table.

    Parameters
    ----------
    path : path
        Output file (overwritten).
    headers : list of astropy.io.fits.Header (or header text), length n_ccd
        Image header of every CCD, in the order they should appear.
    tables : list of astropy.table.Table, length n_ccd
        Detections of every CCD, SExtractor column names (see :func:`measurements_to_ldac`).

    Returns
    -------
    Path
        The written file.
    """
    if len(headers) != len(tables):
        raise InputError(f"{len(headers)} headers but {len(tables)} object tables; give one of each per CCD",
                         path=str(path))
    hdus = [fits.PrimaryHDU()]
    for header, table in zip(headers, tables):
        hdus += [header_to_ldac_imhead(header), _objects_hdu(table)]
    return _write_hdus(path, hdus)


def _write_hdus(path: str | Path, hdus: list) -> Path:
    """Write the HDUs, then relabel every LDAC_IMHEAD column from bytes (B) to text (A) in place."""
    path = Path(path)
    imheads = [i for i, h in enumerate(hdus) if h.name == "LDAC_IMHEAD"]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    with fits.open(path) as written:
        spans = [(written.fileinfo(i)["hdrLoc"], written.fileinfo(i)["datLoc"]) for i in imheads]
    with open(path, "r+b") as stream:
        for start, stop in spans:
            stream.seek(start)
            block = stream.read(stop - start)
            at = block.find(b"TFORM1  = '")
            end = block.index(b"B", at + 11)
            stream.seek(start + end)
            stream.write(b"A")
    return path


def write_ldac_reference(path: str | Path, table: Table, header: fits.Header | None = None) -> Path:
    """Write a SCAMP astrometric/photometric reference catalog (FITS_LDAC, one ``LDAC_OBJECTS``).

    Parameters
    ----------
    path : path
    table : astropy.table.Table
        Columns ``X_WORLD, Y_WORLD`` (deg), ``ERRA_WORLD, ERRB_WORLD`` (deg), ``MAG, MAGERR``,
        ``OBSDATE`` (Julian years), optionally ``PMALPHA_J2000, PMDELTA_J2000, PMALPHAERR_J2000,
        PMDELTAERR_J2000`` (mas/yr, SCAMP's default names). Other columns are written as they are.
    header : astropy.io.fits.Header, optional
        Header stored in ``LDAC_IMHEAD``; default a minimal one centred on the catalog.
    """
    missing = [c for c in REFERENCE_COLUMNS if c not in table.colnames]
    if missing:
        raise InputError(f"reference table lacks column(s) {', '.join(missing)}", path=str(path))
    if header is None:
        header = format_cards([("NAXIS", 2), ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"),
                               ("CRVAL1", float(np.median(table["X_WORLD"]))),
                               ("CRVAL2", float(np.median(table["Y_WORLD"])))])
    ordered = [c for c in REFERENCE_COLUMNS + _REFERENCE_OPTIONAL if c in table.colnames]
    ordered += [c for c in table.colnames if c not in ordered]
    hdus = [fits.PrimaryHDU(), header_to_ldac_imhead(header), _objects_hdu(table[ordered])]
    return _write_hdus(path, hdus)


def covariance_to_ellipse(var_x, var_y, cov_xy):
    """Position covariance (pixel^2) -> SExtractor error ellipse.

    Returns
    -------
    a, b : ndarray
        Major and minor RMS axes (pixels).
    theta_deg : ndarray
        Position angle of the major axis, counter-clockwise from +x, in [-90, 90].
    """
    var_x, var_y, cov_xy = (np.asarray(v, float) for v in (var_x, var_y, cov_xy))
    mean = 0.5 * (var_x + var_y)
    half_diff = np.sqrt((0.5 * (var_x - var_y)) ** 2 + cov_xy ** 2)
    a = np.sqrt(mean + half_diff)
    b = np.sqrt(np.maximum(mean - half_diff, 0.0))
    theta = 0.5 * np.degrees(np.arctan2(2.0 * cov_xy, var_x - var_y))
    return a, b, theta


def measurements_to_ldac(x, y, var_x, var_y, cov_xy, flux, flux_err, flags=None, zp_mag: float = 0.0) -> Table:
    """SExtractor ``LDAC_OBJECTS`` table from 0-based measurement columns (one CCD).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        0-based pixel positions (written +1: ``XWIN_IMAGE`` is 1-based).
    var_x, var_y, cov_xy : array_like, shape (n,)
        Position covariance, pixel^2.
    flux, flux_err : array_like, shape (n,)
        Instrumental flux (counts).
    flags : array_like of int, shape (n,), optional
    zp_mag : float
        Zero point for ``MAG_AUTO = zp_mag - 2.5 log10(FLUX_AUTO)`` (99 for non-positive fluxes).
    """
    flux, flux_err = np.asarray(flux, float), np.asarray(flux_err, float)
    n = flux.size
    a, b, theta = covariance_to_ellipse(var_x, var_y, cov_xy)
    positive = flux > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(positive, zp_mag - 2.5 * np.log10(flux), 99.0)
        magerr = np.where(positive, 2.5 / np.log(10) * flux_err / flux, 99.0)
    return Table({"NUMBER": np.arange(1, n + 1, dtype=np.int32),
                  "XWIN_IMAGE": np.asarray(x, float) + 1.0, "YWIN_IMAGE": np.asarray(y, float) + 1.0,
                  "ERRAWIN_IMAGE": a.astype(np.float32), "ERRBWIN_IMAGE": b.astype(np.float32),
                  "ERRTHETAWIN_IMAGE": theta.astype(np.float32),
                  "FLUX_AUTO": flux.astype(np.float32), "FLUXERR_AUTO": flux_err.astype(np.float32),
                  "FLAGS": (np.zeros(n) if flags is None else np.asarray(flags)).astype(np.int16),
                  "MAG_AUTO": mag.astype(np.float32), "MAGERR_AUTO": magerr.astype(np.float32)})
