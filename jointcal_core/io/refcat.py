"""Reference catalog readers: SCAMP FITS_LDAC references, Gaia-like tables, LSST (afw) refcat shards.

:func:`read_reference` looks at the content to choose: an ``LDAC_OBJECTS`` table with ``X_WORLD``
(SCAMP), a table with ``coord_ra`` (afw shard: radians, nJy) or a directory of shards, or any
FITS/parquet/ECSV/CSV table with ``ra``/``dec`` (Gaia-like). Everything becomes a
:class:`~jointcal_core.data.ReferenceCatalog`: degrees, mas, mas/yr, MJD epochs, fluxes in nJy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from ..data import MJD_J2000, ReferenceCatalog, mag_to_njy
from ..exceptions import InputError
from ._common import pick, require_columns, warn
from .parquet import read_parquet

__all__ = ["read_reference", "read_scamp_reference", "read_gaia_like", "read_lsst_refcat", "julian_year_to_mjd"]

_LN10_2p5 = np.log(10) / 2.5


def julian_year_to_mjd(year):
    """Julian epoch (e.g. 2015.5) -> MJD."""
    return MJD_J2000 + (np.asarray(year, float) - 2000.0) * 365.25


def _read_table(path: Path, hdu=None) -> Table:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("error", message=".*may have been truncated")
            suffix = "".join(path.suffixes).lower()
            if suffix.endswith(".parq") or suffix.endswith(".parquet"):
                return read_parquet(path)
            if suffix.endswith(".ecsv"):
                return Table.read(path, format="ascii.ecsv")
            if suffix.endswith(".csv"):
                return Table.read(path, format="ascii.csv")
            return Table.read(path, hdu=hdu, format="fits")
    except Exception as exc:
        raise InputError(f"cannot read reference catalog ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                         path=str(path)) from None


def _col(table: Table, name: str | None, unit=None, default_unit=None):
    """Column as a float array, converted to ``unit`` from its own unit (or ``default_unit``)."""
    if name is None:
        return None
    col = table[name]
    values = np.ma.filled(np.asarray(col, dtype=float) if not np.ma.isMaskedArray(col.data)
                          else col.data.astype(float), np.nan)
    if unit is None:
        return values
    have = col.unit if col.unit is not None else default_unit
    if have is None:
        return values
    try:
        return (values * u.Unit(have)).to_value(unit)
    except (u.UnitConversionError, ValueError):
        raise InputError(f"column '{name}' has unit '{have}', not convertible to {unit}") from None


def _flux_from_mag(mag, mag_err):
    flux = mag_to_njy(mag)
    return flux, None if mag_err is None else flux * _LN10_2p5 * mag_err


def read_scamp_reference(path, band: str | None = None) -> ReferenceCatalog:
    """SCAMP FITS_LDAC reference (X_WORLD, Y_WORLD, ERRA/B_WORLD deg, MAG, MAGERR, OBSDATE years).

    Errors: ``ra_err = ERRA_WORLD``, ``dec_err = ERRB_WORLD`` (SCAMP's Gaia catalogs store the RA and
    Dec errors there); with ``ERRTHETA_WORLD`` the ellipse is projected on RA/Dec. Proper motions from
    ``PMALPHA[_J2000]``/``PMDELTA[_J2000]`` (mas/yr, mu_alpha cos dec) and their ``*ERR``. ``MAG`` is
    taken as AB and stored under the key ``'MAG'`` (and under ``band`` when given).
    """
    path = Path(path)
    t = _read_table(path, hdu="LDAC_OBJECTS")
    names = t.colnames
    ra, dec, ea, eb, mag = require_columns(names, ["X_WORLD", "Y_WORLD", "ERRA_WORLD", "ERRB_WORLD", "MAG"],
                                           path=path, what="SCAMP reference")
    if len(t) == 0:
        raise InputError("the reference catalog is empty", path=str(path))
    a, b = _col(t, ea, "mas", "deg"), _col(t, eb, "mas", "deg")
    theta = _col(t, pick(names, ["ERRTHETA_WORLD"]))
    if theta is not None:  # angle of A from the RA axis
        c, s = np.cos(np.radians(theta)), np.sin(np.radians(theta))
        a, b = np.sqrt(a**2 * c**2 + b**2 * s**2), np.sqrt(a**2 * s**2 + b**2 * c**2)
    obsdate = _col(t, pick(names, ["OBSDATE"]))
    flux, err = _flux_from_mag(_col(t, mag), _col(t, pick(names, ["MAGERR"])))
    fluxes, errs = {"MAG": flux}, {"MAG": err if err is not None else np.full(len(t), np.nan)}
    if band:
        fluxes[band], errs[band] = flux, errs["MAG"]
    pm = [_col(t, pick(names, c)) for c in (["PMALPHA_J2000", "PMALPHA"], ["PMDELTA_J2000", "PMDELTA"],
                                            ["PMALPHAERR_J2000", "PMALPHAERR"], ["PMDELTAERR_J2000", "PMDELTAERR"])]
    return ReferenceCatalog.build(
        ra_deg=_col(t, ra), dec_deg=_col(t, dec), ra_err_mas=a, dec_err_mas=b,
        pm_ra_masyr=pm[0], pm_dec_masyr=pm[1], pm_ra_err_masyr=pm[2], pm_dec_err_masyr=pm[3],
        epoch_mjd=MJD_J2000 if obsdate is None else julian_year_to_mjd(obsdate),
        source_id=_col(t, pick(names, ["NUMBER", "SOURCE_ID"])), flux_njy=fluxes, flux_err_njy=errs,
        name=str(path))


def _band_fluxes(t: Table, path: Path) -> tuple[dict, dict]:
    """Fluxes (nJy) per band from ``<band>_flux`` (nJy-convertible units) or ``<band>_mag`` (AB) columns."""
    fluxes, errs = {}, {}
    for name in t.colnames:
        low = name.lower()
        for suffix in ("_flux", "_mag"):
            if not low.endswith(suffix):
                continue
            band = name[: -len(suffix)]
            err_name = pick(t.colnames, [f"{name}Err", f"{name}_error", f"{name}_err", f"{name}err"])
            if suffix == "_flux":
                try:
                    flux, err = _col(t, name, "nJy", "nJy"), _col(t, err_name, "nJy", "nJy")
                except InputError:
                    warn(f"{path}: column '{name}' is not a flux density (unit {t[name].unit}); ignored")
                    continue
            else:
                if band in fluxes:
                    continue
                flux, err = _flux_from_mag(_col(t, name), _col(t, err_name))
            fluxes[band] = flux
            errs[band] = err if err is not None else np.full(len(t), np.nan)
    return fluxes, errs


def read_gaia_like(path, table: Table | None = None) -> ReferenceCatalog:
    """A Gaia-like table (FITS, parquet, ECSV, CSV).

    Columns: ``ra``, ``dec`` (deg); ``ra_error``, ``dec_error`` (mas, RA error already x cos dec);
    ``pmra``, ``pmdec``, ``pmra_error``, ``pmdec_error`` (mas/yr); ``parallax``, ``parallax_error``
    (mas); ``ref_epoch`` (Julian year) or ``epoch`` (Julian year when < 3000, else MJD); fluxes from
    ``<band>_flux`` (nJy unless the column unit says otherwise) or ``<band>_mag`` (AB), e.g.
    ``phot_g_mean_mag`` -> key ``'phot_g_mean'``. Column units, when present, are honoured.
    """
    path = Path(path)
    t = _read_table(path) if table is None else table
    names = t.colnames
    ra, dec = require_columns(names, [("ra", "RA_ICRS", "RAJ2000"), ("dec", "DE_ICRS", "DEJ2000")], path=path,
                              what="reference catalog")
    if len(t) == 0:
        raise InputError("the reference catalog is empty", path=str(path))
    ra_deg = _col(t, ra, "deg", "deg")
    if np.nanmax(np.abs(ra_deg)) <= 2 * np.pi + 1e-9 and t[ra].unit is None and len(t) > 3:
        warn(f"{path}: every 'ra' value is below 2*pi; if they are radians, convert them to degrees")

    def get(cands, unit, default):
        return _col(t, pick(names, cands), unit, default)

    epoch = get(["ref_epoch", "epoch"], None, None)
    if epoch is not None:
        epoch = np.where(epoch < 3000, julian_year_to_mjd(epoch), epoch)
    fluxes, errs = _band_fluxes(t, path)
    return ReferenceCatalog.build(
        ra_deg=ra_deg, dec_deg=_col(t, dec, "deg", "deg"),
        ra_err_mas=get(["ra_error", "ra_err", "e_RA_ICRS"], "mas", "mas"),
        dec_err_mas=get(["dec_error", "dec_err", "e_DE_ICRS"], "mas", "mas"),
        pm_ra_masyr=get(["pmra", "pm_ra"], "mas/yr", "mas/yr"), pm_dec_masyr=get(["pmdec", "pm_dec"], "mas/yr", "mas/yr"),
        pm_ra_err_masyr=get(["pmra_error", "pm_ra_error", "pm_raErr"], "mas/yr", "mas/yr"),
        pm_dec_err_masyr=get(["pmdec_error", "pm_dec_error", "pm_decErr"], "mas/yr", "mas/yr"),
        parallax_mas=get(["parallax", "plx"], "mas", "mas"),
        parallax_err_mas=get(["parallax_error", "parallaxErr", "e_plx"], "mas", "mas"),
        epoch_mjd=MJD_J2000 if epoch is None else epoch,
        source_id=get(["source_id", "id", "objid"], None, None), flux_njy=fluxes, flux_err_njy=errs,
        name=str(path))


def read_lsst_refcat(paths_or_dir) -> ReferenceCatalog:
    """LSST/afw reference catalog shards (FITS) -> ReferenceCatalog.

    ``coord_ra``/``coord_dec`` (and ``coord_raErr``/``coord_decErr``, ``parallax``) are in radians,
    ``pm_ra``/``pm_dec`` in rad/yr, ``epoch`` in MJD (TAI), ``<band>_flux``/``<band>_fluxErr`` in nJy;
    column units (TUNITn), when present, are honoured. A directory means every ``*.fits`` in it
    except ``master_schema.fits``. The ``flags`` bits (TFLAGn: 'photometric', 'resolved') are not
    kept. Raises InputError when ``coord_ra`` holds values above 2*pi (degrees in a radian column).
    """
    if isinstance(paths_or_dir, (str, Path)) and Path(paths_or_dir).is_dir():
        paths = sorted(p for p in Path(paths_or_dir).glob("*.fits") if p.name != "master_schema.fits")
        if not paths:
            raise InputError("no refcat shards (*.fits) in this directory", path=str(paths_or_dir))
    else:
        paths = [Path(paths_or_dir)] if isinstance(paths_or_dir, (str, Path)) else [Path(p) for p in paths_or_dir]
    tables = []
    for p in paths:
        t = _read_table(p, hdu=1)
        require_columns(t.colnames, ["coord_ra", "coord_dec"], path=p, what="refcat shard")
        ra = np.asarray(t["coord_ra"], float)
        if (t["coord_ra"].unit is None or str(t["coord_ra"].unit) == "rad") and np.nanmax(np.abs(ra)) > 2 * np.pi + 1e-9:
            raise InputError(f"coord_ra reaches {np.nanmax(ra):.3f}, above 2*pi: the values look like degrees but "
                             "afw refcats store radians; convert the column or read the file as a Gaia-like table",
                             path=str(p))
        if "flags" in t.colnames:
            t.remove_column("flags")
        tables.append(t)
    t = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    name = str(paths[0].parent if len(paths) > 1 else paths[0])
    if len(t) == 0:
        raise InputError("the reference catalog is empty", path=name)
    names = t.colnames
    fluxes, errs = {}, {}
    for c in names:
        if c.endswith("_flux"):
            band = c[:-5]
            fluxes[band] = _col(t, c, "nJy", "nJy")
            e = pick(names, [f"{c}Err"])
            errs[band] = _col(t, e, "nJy", "nJy") if e else np.full(len(t), np.nan)

    def get(col, unit, default):
        return _col(t, col if col in names else None, unit, default)

    epoch = get("epoch", None, None)
    return ReferenceCatalog.build(
        ra_deg=_col(t, "coord_ra", "deg", "rad"), dec_deg=_col(t, "coord_dec", "deg", "rad"),
        ra_err_mas=get("coord_raErr", "mas", "rad"), dec_err_mas=get("coord_decErr", "mas", "rad"),
        pm_ra_masyr=get("pm_ra", "mas/yr", "rad/yr"), pm_dec_masyr=get("pm_dec", "mas/yr", "rad/yr"),
        pm_ra_err_masyr=get("pm_raErr", "mas/yr", "rad/yr"), pm_dec_err_masyr=get("pm_decErr", "mas/yr", "rad/yr"),
        parallax_mas=get("parallax", "mas", "rad"), parallax_err_mas=get("parallaxErr", "mas", "rad"),
        epoch_mjd=MJD_J2000 if epoch is None else epoch,
        source_id=get("id", None, None), flux_njy=fluxes, flux_err_njy=errs, name=name)


def read_reference(path, band: str | None = None, format: str | None = None) -> ReferenceCatalog:
    """Read a reference catalog, choosing the reader from the content.

    Parameters
    ----------
    path : path
        SCAMP FITS_LDAC reference, afw refcat shard or directory of shards, or a Gaia-like table.
    band : str, optional
        Band name under which a single-band catalog's magnitude is also stored (SCAMP ``MAG``).
    format : {'scamp', 'lsst', 'gaia'}, optional
        Force a reader.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("reference catalog not found", path=str(path))
    if format is None:
        if path.is_dir():
            format = "lsst"
        elif path.suffix.lower() in (".fits", ".fit", ".cat", ".ldac", ".fz"):
            try:
                with warnings.catch_warnings(), fits.open(path, memmap=False) as hdus:
                    warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                    names = [h.name for h in hdus]
                    cols = hdus[1].columns.names if len(hdus) > 1 and hasattr(hdus[1], "columns") else []
            except Exception as exc:
                raise InputError(f"cannot read reference catalog ({type(exc).__name__}: {exc})",
                                 path=str(path)) from None
            format = "scamp" if "LDAC_OBJECTS" in names else ("lsst" if "coord_ra" in cols else "gaia")
        else:
            format = "gaia"
    readers = {"scamp": lambda: read_scamp_reference(path, band), "lsst": lambda: read_lsst_refcat(path),
               "gaia": lambda: read_gaia_like(path)}
    if format not in readers:
        raise InputError(f"unknown reference format '{format}' (use scamp, lsst or gaia)", path=str(path))
    return readers[format]()
