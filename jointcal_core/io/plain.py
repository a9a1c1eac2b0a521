"""Reader of plain per-exposure source tables (ECSV, CSV, FITS, parquet, astrosource ``.psx``).

Each file is one exposure (visit) with one detector: pixel positions, an instrumental flux and its
error, and either a FITS WCS header (the table's own header, an image HDU such as BANZAI's ``SCI``,
or a sidecar ``<stem>.wcs``/``<stem>.fits`` header) or ``ra``/``dec`` columns from which a starting
TAN-SIP WCS is fitted (its median residual is logged; above 0.5 arcsec a JointcalWarning says so).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..data import CcdImages, Measurements
from ..exceptions import InputError
from ._common import (bbox_from_header, fit_tan_sip, header_float, mjd_from_header, pick, require_columns,
                      warn, wcs_from_header, zp_from_header)

__all__ = ["read_plain_catalogs", "parse_psx_name", "PSX_COLUMNS", "WCS_FIT_WARN_ARCSEC"]

log = logging.getLogger(__name__)

#: the 8 columns of an astrosource .psx file (headerless CSV)
PSX_COLUMNS = ("ra", "dec", "x", "y", "counts", "counts_err", "c7", "c8")
#: a fitted starting WCS with a larger median residual than this (arcsec) gets a warning
WCS_FIT_WARN_ARCSEC = 0.5
#: a starting WCS fitted to ra/dec with finer pixels than this (arcsec) and ra < 2 pi means radians
_MIN_PIXEL_SCALE_ARCSEC = 0.02
#: assumed seeing FWHM (px) for position errors when the table has none: sigma = FWHM / (2.355 S/N)
_ASSUMED_FWHM_PX = 3.0
_CANDIDATES = {
    "x": ["x", "X", "xcentroid", "x_image", "XWIN"], "y": ["y", "Y", "ycentroid", "y_image", "YWIN"],
    "flux": ["flux", "FLUX", "counts", "instFlux", "flux_auto", "FLUX_AUTO", "aperture_sum"],
    "flux_err": ["flux_err", "fluxerr", "FLUXERR", "counts_err", "flux_error", "instFluxErr", "FLUXERR_AUTO",
                 "aperture_sum_err"],
    "x_err": ["x_err", "xerr", "xErr", "x_error"], "y_err": ["y_err", "yerr", "yErr", "y_error"],
    "ra": ["ra", "RA", "ra_deg", "ALPHA_J2000"], "dec": ["dec", "DEC", "dec_deg", "decl", "DELTA_J2000"],
    "flags": ["flags", "FLAG", "FLAGS"], "fwhm": ["fwhm", "FWHM"],
}


def parse_psx_name(stem: str) -> dict:
    """Fields of an astrosource file name ``target_filter_JD_DATEOBS_AIRMASS_EXPTIME_CAMERA_observer``.

    'd' stands for '.', '-' or ':', and 'a' for the decimal point of the airmass.
    """
    parts = stem.split("_")
    if len(parts) < 7:
        raise ValueError(f"'{stem}' does not follow target_filter_JD_DATE_AIRMASS_EXPTIME_CAMERA_observer")
    return dict(band=parts[1], jd=float(parts[2].replace("d", ".")),
                airmass=float(parts[4].replace("a", ".")), exptime=float(parts[5].replace("d", ".")),
                camera=parts[6])


def _read_psx(path: Path) -> Table:
    try:
        data = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read .psx file ({exc})", path=str(path)) from None
    if data.shape[0] == 0:
        raise InputError("the catalog holds no sources", path=str(path))
    if data.shape[1] != len(PSX_COLUMNS):
        raise InputError(f".psx file has {data.shape[1]} columns, expected 8 ({', '.join(PSX_COLUMNS)})",
                         path=str(path))
    return Table(data, names=PSX_COLUMNS)


def _read_table(path: Path) -> tuple[Table, fits.Header | None]:
    """The source table and the header holding its WCS (when the file has one)."""
    suffix = path.suffix.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix == ".psx":
                return _read_psx(path), None
            if suffix in (".parq", ".parquet"):
                return Table.read(path, format="parquet"), None
            if suffix == ".ecsv":
                t = Table.read(path, format="ascii.ecsv")
                return t, _header_from_meta(t.meta)
            if suffix in (".csv", ".txt"):
                return Table.read(path, format="ascii.csv"), None
            with fits.open(path, memmap=False) as hdus:
                table_hdu = next((h for h in hdus if isinstance(h, fits.BinTableHDU)), None)
                if table_hdu is None:
                    raise InputError("FITS file has no table extension", path=str(path))
                header = next((h.header for h in hdus if "CTYPE1" in h.header), None)
                return Table(table_hdu.data), header
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read table ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                         path=str(path)) from None


def _header_from_meta(meta) -> fits.Header | None:
    """WCS keywords stored in an ECSV table's metadata (``meta['wcs']`` or top-level CTYPE1...)."""
    src = meta.get("wcs", meta) if isinstance(meta, dict) else {}
    if not isinstance(src, dict) or "CTYPE1" not in src:
        return None
    h = fits.Header()
    for k, v in src.items():
        if isinstance(v, (str, int, float, bool)) and len(k) <= 8:
            h[k] = v
    return h


def _sidecar_header(path: Path) -> fits.Header | None:
    for suffix in (".wcs", ".head"):
        side = path.with_suffix(suffix)
        if side.exists():
            try:
                return fits.getheader(side)
            except OSError:
                return fits.Header.fromtextfile(side)
    side = path.with_suffix(".fits")
    if side.exists() and side != path:
        with fits.open(side) as hdus:
            return next((h.header for h in hdus if "CTYPE1" in h.header), None)
    return None


def _summary_row(path: Path) -> dict | None:
    """The row of ``psx_summary.ecsv`` (beside the file or one level up) describing ``path``."""
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent.parent.parent):
        summary = folder / "psx_summary.ecsv"
        if summary.exists():
            t = Table.read(summary, format="ascii.ecsv")
            hit = np.flatnonzero(np.asarray(t["file"]) == path.stem)
            if hit.size:
                return {k: t[k][hit[0]] for k in t.colnames}
    return None


def _positions_errors(t: Table, cols: dict, path: Path, flux, flux_err):
    if cols["x_err"] and cols["y_err"]:
        return np.asarray(t[cols["x_err"]], float) ** 2, np.asarray(t[cols["y_err"]], float) ** 2
    fwhm = np.asarray(t[cols["fwhm"]], float) if cols["fwhm"] else _ASSUMED_FWHM_PX
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.maximum(fwhm / 2.355 * np.abs(flux_err / flux), 0.01)
    return sigma**2, sigma**2


def _one(path: Path, flux_col, pixel_origin, detector_shape):
    t, header = _read_table(path)
    if header is None:
        header = _sidecar_header(path)
    if len(t) == 0:
        raise InputError("the catalog holds no sources", path=str(path))
    names = t.colnames
    cols = {k: pick(names, v) for k, v in _CANDIDATES.items()}
    if flux_col:
        cols["flux"] = require_columns(names, [flux_col], path=path, what="table")[0]
        cols["flux_err"] = pick(names, [f"{flux_col}_err", f"{flux_col}Err", f"{flux_col}_error",
                                        flux_col.replace("FLUX", "FLUXERR")])
    missing = [_CANDIDATES[k] for k in ("x", "y", "flux", "flux_err") if cols[k] is None]
    require_columns(names, missing, path=path, what="table", hint="; name the flux with flux_col")
    x, y = np.asarray(t[cols["x"]], float), np.asarray(t[cols["y"]], float)
    flux, flux_err = np.asarray(t[cols["flux"]], float), np.asarray(t[cols["flux_err"]], float)
    ra = np.asarray(t[cols["ra"]], float) if cols["ra"] and cols["dec"] else None
    dec = np.asarray(t[cols["dec"]], float) if ra is not None else None
    info = {"header": header}
    if header is not None:
        wcs = wcs_from_header(header, path=path)
        origin = pixel_origin
        if origin is None and ra is not None:  # the origin that reproduces the table's ra/dec best
            from ..projection import angular_separation_arcsec
            d = [np.median(angular_separation_arcsec(*wcs.all_pix2world(x, y, o), ra, dec)) for o in (0, 1)]
            origin = int(np.argmin(d))
            info["resid_arcsec"] = float(min(d))
        x, y = x - (origin or 0), y - (origin or 0)
    elif ra is not None:
        x, y = x - (pixel_origin or 0), y - (pixel_origin or 0)
        try:
            wcs, resid = fit_tan_sip(x, y, ra, dec, sip_degree=2 if len(x) >= 30 else None)
        except InputError as exc:
            raise InputError(f"{exc.message} from its x, y, ra, dec columns", path=str(path)) from None
        except np.linalg.LinAlgError:
            raise InputError("its x, y, ra, dec columns do not determine a WCS (the points are degenerate: all on "
                             "one line or one spot); give a FITS WCS header", path=str(path)) from None
        scale_arcsec = 3600 * np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))
        if scale_arcsec < _MIN_PIXEL_SCALE_ARCSEC and np.nanmax(np.abs(ra)) <= 2 * np.pi and \
                np.nanmax(np.abs(dec)) <= np.pi / 2:
            raise InputError(f"the ra/dec columns give a pixel scale of {scale_arcsec:.3g} arcsec/px and stay below "
                             "2*pi: they look like radians; convert them to degrees", path=str(path))
        info["resid_arcsec"] = resid
        log.info("%s: starting WCS fitted to %d ra/dec points, median residual %.3f arcsec", path, len(x), resid)
        if resid > WCS_FIT_WARN_ARCSEC:
            warn(f"{path}: the TAN-SIP fitted to its ra/dec columns has a median residual of {resid:.2f} arcsec "
                 f"(> {WCS_FIT_WARN_ARCSEC}); its upstream astrometry is poor: consider dropping this exposure")
    else:
        raise InputError("no WCS: the file has neither a FITS WCS header (or a sidecar .wcs) nor ra/dec columns",
                         path=str(path))
    var_x, var_y = _positions_errors(t, cols, path, flux, flux_err)
    flags = np.asarray(t[cols["flags"]], np.int64) if cols["flags"] else None
    meas = dict(x=x, y=y, var_x=var_x, var_y=var_y, flux=flux, flux_err=flux_err, flags=flags)
    bbox = bbox_from_header(header) if header is not None else None
    if bbox is None and detector_shape is not None:
        bbox = (-0.5, -0.5, detector_shape[0] - 0.5, detector_shape[1] - 0.5)
    if bbox is None:
        bbox = (np.floor(x.min()) - 0.5, np.floor(y.min()) - 0.5, np.ceil(x.max()) + 0.5, np.ceil(y.max()) + 0.5)
    info["bbox"], info["wcs"] = bbox, wcs
    return meas, info


def read_plain_catalogs(paths, flux_col: str | None = None, *, pixel_origin: int | None = None,
                        detector_shape=None, report: dict | None = None) -> tuple[CcdImages, Measurements]:
    """Read plain per-exposure source tables, one visit and one detector per file.

    Parameters
    ----------
    paths : path or sequence of paths
        ECSV / CSV / FITS / parquet tables or astrosource ``.psx`` files.
    flux_col : str, optional
        Flux column (its error: ``<flux_col>_err``...); default the first of flux, FLUX, counts...
    pixel_origin : {0, 1}, optional
        Pixel convention of x, y. Default: found by matching a header WCS to ra/dec columns when both
        exist (BANZAI catalogs are 1-based), else 0.
    detector_shape : (nx, ny), optional
        Detector size when no header gives NAXIS1/2 (default: the sources' extent).
    report : dict, optional
        Filled with ``path -> {'resid_arcsec': median WCS-vs-ra/dec residual, 'origin': ...}``.

    Notes
    -----
    Position errors come from x_err/y_err columns, else ``FWHM / (2.355 S/N)`` (FWHM column, else 3 px),
    floored at 0.01 px. Epoch, airmass, exposure time, band: from the header (MJD-OBS + EXPTIME/2,
    AIRMASS, EXPTIME, FILTER); for ``.psx`` files from ``psx_summary.ecsv`` beside the files when it
    lists them, else the file name (MJD = JD - 2400000.5, as given). Visit id: for ``.psx`` files
    ``round(MJD * 1e4)``; else the header's EXPNUM/OBSID/IDNUM/FRAMENUM; else the digits of the stem
    (``lco-232`` -> 232); else the file's 1-based index.
    Detector id: CCDNUM/EXTVER of the header, else for ``.psx`` the index of the camera name in the
    sorted camera names of the inputs (each LCO camera is its own detector), else 0.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise InputError("no catalogs given")
    rows, parts, metas = [], [], []
    for k, path in enumerate(paths):
        meas, info = _one(path, flux_col, pixel_origin, detector_shape)
        h = info["header"] if info["header"] is not None else fits.Header()
        meta = dict(exptime=header_float(h, "EXPTIME", "EXPOSURE"), airmass=header_float(h, "AIRMASS"),
                    band=str(h.get("FILTER", "")).strip(), camera=str(h.get("INSTRUME", "")).strip(), mjd=np.nan)
        meta["mjd"] = mjd_from_header(h, meta["exptime"])
        if path.suffix.lower() == ".psx":
            row = _summary_row(path)
            try:
                named = parse_psx_name(path.stem)
            except ValueError:
                named = {}
            src = row if row is not None else named
            if src:
                meta.update(mjd=float(src["jd"]) - 2400000.5, airmass=float(src["airmass"]),
                            exptime=float(src["exptime"]), camera=str(src["camera"]))
            meta["band"] = named.get("band", meta["band"])
            visit = int(round(meta["mjd"] * 1e4)) if np.isfinite(meta["mjd"]) else k + 1
        else:
            number = next((h[key] for key in ("EXPNUM", "OBSID", "IDNUM", "FRAMENUM")
                           if isinstance(h.get(key), (int, np.integer))), None)
            digits = "".join(ch for ch in path.stem if ch.isdigit())[:18]
            visit = int(number) if number is not None else (int(digits) if digits else k + 1)
        det = h.get("CCDNUM", h.get("EXTVER"))
        meta["detector"] = int(det) if isinstance(det, (int, np.integer)) else None
        metas.append(meta)
        rows.append(dict(visit=visit, wcs=info["wcs"], bbox=info["bbox"], zp_mag=zp_from_header(h), path=str(path)))
        meas["ccd"] = np.full(len(meas["x"]), k)
        parts.append(Measurements.build(**meas))
        if report is not None:
            report[str(path)] = {"resid_arcsec": info.get("resid_arcsec", np.nan)}
    cameras = sorted({m["camera"] for m in metas})
    visits = [r["visit"] for r in rows]
    if len(set(visits)) != len(visits):
        dup = sorted({v for v in visits if visits.count(v) > 1})
        raise InputError(f"several files give the same visit id {dup}; give each exposure its own number in "
                         "its file name")
    ccds = CcdImages.build(
        visit=visits, detector=[m["detector"] if m["detector"] is not None else cameras.index(m["camera"])
                                for m in metas],
        bbox=[r["bbox"] for r in rows], wcs=[r["wcs"] for r in rows], zp_mag=[r["zp_mag"] for r in rows],
        mjd=[m["mjd"] for m in metas], exptime_s=[m["exptime"] for m in metas],
        airmass=[m["airmass"] for m in metas], band=[m["band"] for m in metas], path=[r["path"] for r in rows])
    return ccds, Measurements.concatenate(parts)
