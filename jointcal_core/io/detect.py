"""Input format detection and :func:`load_field`: files or directories -> one :class:`Field`.

Formats, recognised from the content: ``ldac`` (FITS with an ``LDAC_IMHEAD``/``LDAC_OBJECTS`` table),
``lsst`` (a directory holding ``sourceTable-*.parq``, or such a parquet file), ``plain`` (``.psx``
files or a directory of them, or any ECSV/CSV/FITS/parquet table with x, y, flux columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Field
from ..exceptions import InputError
from ._common import fits_problem
from .ldac import is_ldac, read_ldac_exposures
from .lsst import is_lsst_repo, read_lsst_repo, read_lsst_source_table
from .plain import read_plain_catalogs
from .refcat import read_reference

__all__ = ["load_field", "detect_format", "FORMATS"]

FORMATS = ("ldac", "lsst", "plain")
_FITS_SUFFIXES = (".fits", ".fit", ".cat", ".ldac", ".fz")
_TABLE_SUFFIXES = (".psx", ".ecsv", ".csv", ".fits", ".fit", ".cat", ".ldac", ".parq", ".parquet")


def detect_format(path) -> str:
    """'ldac', 'lsst' or 'plain' for one file or directory (raises InputError when unknown)."""
    path = Path(path)
    if not path.exists():
        raise InputError("input not found", path=str(path))
    if path.is_dir():
        if is_lsst_repo(path):
            return "lsst"
        files = _table_files(path)
        if not files:
            raise InputError("directory holds no catalogs (.psx, .ecsv, .csv, .fits, .cat, .parq) nor an LSST "
                             "sourceTable tree", path=str(path))
        return "ldac" if is_ldac(files[0]) else "plain"
    if is_ldac(path):
        return "ldac"
    if path.suffix.lower() in _FITS_SUFFIXES and (problem := fits_problem(path)) is not None:
        raise InputError(problem, path=str(path))
    if path.suffix.lower() in (".parq", ".parquet") and path.name.startswith("sourceTable"):
        return "lsst"
    return "plain"


def _table_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES
                   and p.name != "psx_summary.ecsv")
    psx = [p for p in files if p.suffix.lower() == ".psx"]
    return psx or files


def _expand(inputs, fmt: str) -> list[Path]:
    """Files to read: folders expand to their catalogs (for LDAC: exposure catalogs only, so a
    reference catalog or a parquet beside them is left out)."""
    out = []
    for p in inputs:
        if p.is_dir() and fmt != "lsst":
            files = _table_files(p)
            if fmt == "ldac":
                files = [f for f in files if is_ldac(f) and not _is_reference_ldac(f)]
            out.extend(files)
        else:
            out.append(p)
    return out


def _is_reference_ldac(path: Path) -> bool:
    """An LDAC file with sky but no pixel columns (a SCAMP reference catalog)."""
    from astropy.io import fits
    try:
        with fits.open(path, memmap=True) as hdul:
            names = [n.upper() for hdu in hdul[1:] if getattr(hdu, "columns", None) is not None
                     for n in hdu.columns.names]
    except (OSError, ValueError):
        return False
    return "X_WORLD" in names and not any(n in names for n in ("XWIN_IMAGE", "X_IMAGE"))


def _read(fmt: str, paths: list[Path], flux_type: str):
    if fmt == "ldac":
        return read_ldac_exposures(paths, flux_type=flux_type)
    if fmt == "plain":
        return read_plain_catalogs(paths, flux_col=flux_type or None)
    parts = []
    for p in paths:
        parts.append(read_lsst_repo(p, flux_type or "apFlux_12_0") if p.is_dir()
                     else read_lsst_source_table(p, flux_type or "apFlux_12_0"))
    if len(parts) == 1:
        return parts[0]
    from ..data import CcdImages, Measurements
    ccd_parts, meas_parts, offset = [], [], 0
    for ccds, meas in parts:
        meas_parts.append(Measurements(**{**{c: getattr(meas, c) for c in Measurements._columns},
                                          "ccd": meas.ccd + offset}))
        offset += len(ccds)
        ccd_parts.append(ccds)
    ccds = CcdImages(**{c: (sum((getattr(p, c) for p in ccd_parts), []) if c == "wcs"
                            else np.concatenate([getattr(p, c) for p in ccd_parts])) for c in CcdImages._columns})
    return ccds, Measurements.concatenate(meas_parts)


def load_field(inputs, refcat=None, photometry_refcat=None, config=None, format: str | None = None) -> Field:
    """Read exposures (and reference catalogs) into one :class:`~jointcal_core.data.Field`.

    Parameters
    ----------
    inputs : path or sequence of paths
        Files or directories; the format is detected from the content unless ``format`` is given.
    refcat : path, optional
        Astrometric (and, without ``photometry_refcat``, photometric) reference, read with
        :func:`~jointcal_core.io.refcat.read_reference`.
    photometry_refcat : path, optional
        Photometric reference.
    config : JointcalConfig, optional
        ``sourceFluxType`` chooses the flux column.
    format : {'ldac', 'lsst', 'plain'}, optional
        Force a reader.

    Raises
    ------
    InputError
        Missing input, mixed formats, mixed bands (listed), or any reader error.
    """
    inputs = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if not inputs:
        raise InputError("no inputs given")
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format '{format}' (use one of {', '.join(FORMATS)})")
    formats = {p: format or detect_format(p) for p in inputs}
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        listing = "; ".join(f"{k}: {', '.join(p.name for p, f in formats.items() if f == k)}" for k in kinds)
        raise InputError(f"inputs mix formats ({listing}); fit one kind at a time or force one with --format")
    fmt = kinds[0]
    flux_type = getattr(config, "sourceFluxType", "") if config is not None else ""
    # a reference catalog caught by a glob or a folder (``*.cat``) is not an exposure
    references = {Path(r).resolve() for r in (refcat, photometry_refcat) if r is not None}
    paths = [p for p in _expand(inputs, fmt) if p.resolve() not in references]
    if not paths:
        raise InputError("no exposure catalogs among the inputs (only the reference catalog)")
    ccds, meas = _read(fmt, paths, flux_type)
    bands = sorted({b for b in ccds.band if b})
    if len(bands) > 1:
        per_band = "; ".join(f"{b}: visits {sorted(set(int(v) for v in ccds.visit[ccds.band == b]))}" for b in bands)
        raise InputError(f"inputs mix bands ({per_band}); one fit takes one band: give the visits of one band")
    band = bands[0] if bands else ""
    ref = read_reference(refcat, band=band or None) if refcat is not None else None
    phot = read_reference(photometry_refcat, band=band or None) if photometry_refcat is not None else ref
    files = sorted(set(ccds.path))
    return Field(ccd_images=ccds, measurements=meas, reference=ref, photometry_reference=phot, camera=None,
                 band=band, inputs=tuple(files))
