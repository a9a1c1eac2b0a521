"""Readers of LSST data products: sourceTable parquet files, calexp/visitSummary metadata, refcat shards.

A repository such as ``cfht_minimal/repo`` holds per-visit ``sourceTable-<visit>.parq`` (or
``sourceTable-<visit>-<detector>.parq``) files, the calexps (``calexp-<visit>-<detector>.fits[.fz]``:
primary header with EXPTIME/AIRMASS, HDU 1 header with the TAN-SIP approximation of the WCS, afw
archive HDUs with the PhotoCalib) and per-visit ``visitSummary-<visit>.fits`` (VisitInfo: epoch,
airmass, boresight). Without a calexp (e.g. the HSC ``subselected-sourceTable``), the starting WCS
is a TAN-SIP fitted to the sources' x, y -> ra, dec.

afw archives: the ``ARCHIVE_INDEX`` table maps an archive id (e.g. the primary header's
``PHOTOCALIB_ID`` or the visitSummary's ``photoCalib`` column) to ``cat.archive``; the data table
is HDU ``index_hdu + cat.archive`` at row ``row0``.

Flag packing (:data:`LSST_FLAG_BITS`): boolean columns become bits of ``Measurements.flags`` so the
generic ``flagMask`` selection can reproduce jointcal's "science" source selector. jointcal's
defaults (``JointcalConfig.setDefaults``) reject sources with any of ``pixelFlags_edge``,
``pixelFlags_saturated``, ``pixelFlags_interpolatedCenter``, ``pixelFlags_interpolated``,
``pixelFlags_crCenter``, ``pixelFlags_bad``, ``hsmPsfMoments_flag``, ``<sourceFluxType>_flag``; keep
only unresolved sources (``extendedness < 0.5``) and isolated ones (``parentSourceId == 0`` and
``deblend_nChild == 0``); and require S/N = instFlux / instFluxErr >= 10 in ``sourceFluxType``
(``apFlux_12_0``). Those ten conditions are bits 2..11, :data:`LSST_JOINTCAL_FLAG_MASK` (0xFFC).

cfht_minimal under that selection: of the 4 sources (2 per visit, CCD 12) the one cut is visit
849375, sourceId 131329414033047693 (x = 366.97, y = 737.99): extendedness = 1.0 (bit ``resolved``)
and S/N = 4688.90 / 603.67 = 7.77 < 10. That leaves 3 measurements: the star seen in both visits
(ra 215.0398, dec 52.8579) and 850587's second star (214.9492, 52.8578): 2 fitted stars, which
jointcal matches to 2 reference stars.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from ..data import AB_NJY_ZP, CcdImages, Measurements
from ..exceptions import InputError
from ._common import (bbox_from_header, fit_tan_sip, fits_problem, header_float, pick, require_columns, strict_fits,
                      warn, wcs_from_header)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_lsst_repo", "read_lsst_source_table", "read_lsst_refcat", "read_photocalib_mean", "read_visit_info",
           "LSST_FLAG_BITS", "LSST_JOINTCAL_FLAG_MASK", "is_lsst_repo", "DEFAULT_LSST_FLUX"]

DEFAULT_LSST_FLUX = "apFlux_12_0"
#: name -> bit of Measurements.flags ('{flux}' is the flux_type; 'resolved' and 'blended' are derived)
LSST_FLAG_BITS = {
    "pixelFlags_cr": 0, "pixelFlags_suspect": 1,
    "pixelFlags_saturated": 2, "pixelFlags_edge": 3, "pixelFlags_interpolatedCenter": 4,
    "pixelFlags_crCenter": 5, "pixelFlags_bad": 6, "{flux}_flag": 7, "pixelFlags_interpolated": 8,
    "hsmPsfMoments_flag": 9, "resolved": 10, "blended": 11,
    "centroid_flag": 12, "pixelFlags_saturatedCenter": 13, "pixelFlags_suspectCenter": 14,
    "pixelFlags_offimage": 15, "psfFlux_flag": 16,
}
#: the bits jointcal's default science source selector rejects (bits 2..11)
LSST_JOINTCAL_FLAG_MASK = sum(1 << b for b in range(2, 12))
_MJD_UNIX_EPOCH = 40587.0


def pack_flags(table: "pd.DataFrame", flux_type: str) -> np.ndarray:
    """Pack the boolean flag columns of ``table`` into int64 bits (see :data:`LSST_FLAG_BITS`)."""
    n, names = len(table), list(table.columns)
    flags = np.zeros(n, np.int64)
    for name, bit in LSST_FLAG_BITS.items():
        if name == "resolved":
            col = pick(names, ["extendedness", "sizeExtendedness"])
            on = None if col is None else ~(table[col].to_numpy(float) < 0.5)
        elif name == "blended":
            parent, nchild = pick(names, ["parentSourceId", "parent"]), pick(names, ["deblend_nChild"])
            on = np.zeros(n, bool)
            if parent is not None:
                on |= table[parent].to_numpy() != 0
            if nchild is not None:
                on |= table[nchild].to_numpy() > 0
        else:
            col = pick(names, [name.format(flux=flux_type)])
            on = None if col is None else table[col].to_numpy().astype(bool)
        if on is not None:
            flags |= on.astype(np.int64) << bit
    return flags


def _archive_row(hdus: fits.HDUList, archive_id: int, name: str):
    """Row of the afw archive table holding object ``archive_id`` (class ``name``), or None."""
    index_hdu = next((i for i, h in enumerate(hdus) if h.name == "ARCHIVE_INDEX"), None)
    if index_hdu is None:
        return None
    index = hdus[index_hdu].data
    hit = np.flatnonzero((index["id"] == archive_id) & (np.char.strip(index["name"]) == name))
    if hit.size == 0:
        return None
    k = hit[0]
    return hdus[index_hdu + int(index["cat.archive"][k])].data[int(index["row0"][k])]


def read_photocalib_mean(path, archive_id: int | None = None) -> tuple[float, float]:
    """PhotoCalib ``calibrationMean`` and ``calibrationErr`` (nJy per count) of a calexp or visitSummary.

    ``archive_id`` defaults to the primary header's ``PHOTOCALIB_ID`` (calexp); for a visitSummary
    pass the row's ``photoCalib`` value.
    """
    with fits.open(path, memmap=False) as hdus:
        if archive_id is None:
            archive_id = hdus[0].header.get("PHOTOCALIB_ID", hdus[0].header.get("ARCHIVE_ID_PHOTOCALIB"))
        row = None if archive_id is None else _archive_row(hdus, int(archive_id), "PhotoCalib")
        if row is None:
            raise InputError("no PhotoCalib in the afw archive", path=str(path))
        return float(row["calibrationMean"]), float(row["calibrationErr"])


def read_visit_info(path) -> dict[int, dict]:
    """Per-detector metadata of a visitSummary: bbox, PhotoCalib mean, epoch, exptime, airmass, boresight."""
    problem = fits_problem(path)
    if problem is not None:
        raise InputError(problem, path=str(path))
    out = {}
    with fits.open(path, memmap=False) as hdus:
        table = hdus[1].data
        for row in table:
            info = _archive_row(hdus, int(row["visitInfo"]), "VisitInfo")
            calib = _archive_row(hdus, int(row["photoCalib"]), "PhotoCalib")
            entry = dict(bbox=(row["bbox_min_x"] - 0.5, row["bbox_min_y"] - 0.5, row["bbox_max_x"] + 0.5,
                               row["bbox_max_y"] + 0.5), band=str(row["band"]).strip())
            if calib is not None:
                entry["calib_mean"], entry["calib_err"] = float(calib["calibrationMean"]), float(calib["calibrationErr"])
            if info is not None:
                entry.update(mjd=info["tai"] / 1e9 / 86400.0 + _MJD_UNIX_EPOCH,
                             exptime_s=float(info["exposuretime"]), airmass=float(info["boresightairmass"]),
                             boresight_ra_deg=float(np.degrees(info["boresightradec_ra"])),
                             boresight_dec_deg=float(np.degrees(info["boresightradec_dec"])))
            out[int(row["id"])] = entry
    return out


def _calexp_info(path: Path) -> dict:
    try:
        with strict_fits(), fits.open(path, memmap=False) as hdus:
            primary = hdus[0].header
            image = next(h.header for h in hdus[1:] if "CTYPE1" in h.header)
            wcs = wcs_from_header(image, path=path)
            info = dict(wcs=wcs, bbox=bbox_from_header(image), exptime_s=header_float(primary, "EXPTIME"),
                        airmass=header_float(primary, "AIRMASS"),
                        boresight_ra_deg=header_float(primary, "BORE-RA"),
                        boresight_dec_deg=header_float(primary, "BORE-DEC"))
    except (OSError, StopIteration, ValueError, UserWarning) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read calexp ({type(exc).__name__}: {exc}); the file is truncated or not a "
                         "calexp", path=str(path)) from None
    try:
        mean, err = read_photocalib_mean(path)
        info["calib_mean"], info["calib_err"] = mean, err
    except InputError:
        pass
    return info


def read_lsst_source_table(path, flux_type: str = DEFAULT_LSST_FLUX, *, calexps: dict | None = None,
                           visit_info: dict | None = None, detector_shape=None):
    """Read one sourceTable parquet (any number of visits/detectors) into (CcdImages, Measurements).

    Parameters
    ----------
    path : path
        ``sourceTable*.parq``: x, y, xErr, yErr (0-based px), ``<flux_type>_instFlux(+Err)`` (any case,
        e.g. HSC's ``ApFlux_12_0_instFlux``), boolean flags, visit, detector, and ra/dec (deg).
    flux_type : str
        Flux column stem (default ``apFlux_12_0``).
    calexps : dict, optional
        ``(visit, detector) -> calexp path``; their header WCS / PhotoCalib / metadata are used.
    visit_info : dict, optional
        ``visit -> read_visit_info(...)`` output (epoch, airmass, boresight, PhotoCalib).
    detector_shape : (nx, ny), optional
        Detector size in pixels when no calexp/visitSummary gives it; default: the sources' extent.

    Without a calexp the WCS is a TAN-SIP (degree 2) fitted to x, y -> ra, dec per detector; a
    JointcalWarning is emitted when its median residual exceeds 0.5 arcsec.
    """
    path = Path(path)
    try:
        import pandas as pd     # here: pandas costs ~0.3 s to import, only LSST parquet needs it
        table = pd.read_parquet(path)
    except Exception as exc:
        raise InputError(f"cannot read parquet file ({type(exc).__name__}: {exc})", path=str(path)) from None
    if len(table) == 0:
        raise InputError("the source table is empty", path=str(path))
    names = list(table.columns)
    stem = flux_type or DEFAULT_LSST_FLUX
    x, y, xe, ye, fcol, ecol, vcol, dcol = require_columns(
        names, ["x", "y", "xErr", "yErr", (f"{stem}_instFlux", stem), (f"{stem}_instFluxErr", f"{stem}Err"),
                "visit", ("detector", "ccd")], path=path, what="sourceTable",
        hint="; choose the flux with sourceFluxType")
    rac, decc = pick(names, ["coord_ra", "ra"]), pick(names, ["coord_dec", "decl", "dec"])
    flags = pack_flags(table, stem)
    ids = table[pick(names, ["sourceId"])].to_numpy() if pick(names, ["sourceId"]) else np.asarray(table.index)
    rows, parts = [], []
    band_col = pick(names, ["band", "filter"])
    groups = table.groupby([vcol, dcol]).indices
    for (visit, det) in sorted(groups):
        sel = groups[(visit, det)]
        g = table.iloc[sel]
        visit, det = int(visit), int(det)
        info = dict((visit_info or {}).get(visit, {}).get(det, {}))
        calexp = (calexps or {}).get((visit, det))
        if calexp is not None:
            info.update({k: v for k, v in _calexp_info(calexp).items()
                         if v is not None and not (isinstance(v, float) and np.isnan(v) and k in info)})
        if "wcs" not in info:
            if rac is None or decc is None:
                raise InputError("no calexp and no ra/dec columns to fit a starting WCS", path=str(path),
                                 visit=visit, detector=det)
            w, resid = fit_tan_sip(g[x], g[y], g[rac], g[decc], sip_degree=2 if len(g) >= 12 else None)
            if resid > 0.5:
                warn(f"{path}, visit {visit}, detector {det}: the TAN-SIP fitted to ra/dec has a median "
                     f"residual of {resid:.2f} arcsec")
            info["wcs"], info["wcs_fit_resid_arcsec"] = w, resid
        if info.get("bbox") is None:
            if detector_shape is not None:
                info["bbox"] = (-0.5, -0.5, detector_shape[0] - 0.5, detector_shape[1] - 0.5)
            else:
                info["bbox"] = (np.floor(g[x].min()) - 0.5, np.floor(g[y].min()) - 0.5,
                                np.ceil(g[x].max()) + 0.5, np.ceil(g[y].max()) + 0.5)
        mean = info.get("calib_mean", np.nan)
        rows.append(dict(visit=visit, detector=det, wcs=info["wcs"], bbox=info["bbox"],
                         zp_mag=AB_NJY_ZP - 2.5 * np.log10(mean) if mean > 0 else np.nan,
                         zp_mag_err=2.5 / np.log(10) * info.get("calib_err", 0.0) / mean if mean > 0 else 0.0,
                         mjd=info.get("mjd", np.nan), exptime_s=info.get("exptime_s", np.nan),
                         airmass=info.get("airmass", np.nan),
                         band=info.get("band") or (str(g[band_col].iloc[0]) if band_col else ""),
                         path=str(path), boresight_ra_deg=info.get("boresight_ra_deg", np.nan),
                         boresight_dec_deg=info.get("boresight_dec_deg", np.nan)))
        parts.append(Measurements.build(
            ccd=np.full(len(sel), len(rows) - 1), x=table[x].to_numpy(float)[sel], y=table[y].to_numpy(float)[sel],
            var_x=table[xe].to_numpy(float)[sel] ** 2, var_y=table[ye].to_numpy(float)[sel] ** 2,
            flux=table[fcol].to_numpy(float)[sel], flux_err=table[ecol].to_numpy(float)[sel],
            flags=flags[sel], source_id=ids[sel]))
    ccds = CcdImages.build(**{k: [r[k] for r in rows] for k in rows[0]})
    return ccds, Measurements.concatenate(parts)


_SRC = re.compile(r"^sourceTable-(\d+)(?:-(\d+))?\.parq$")
_CALEXP = re.compile(r"^calexp-(\d+)-(\d+)\.fits(\.fz)?$")
_SUMMARY = re.compile(r"^visitSummary-(\d+)\.fits$")


def is_lsst_repo(root) -> bool:
    """True when ``root`` is a directory holding ``sourceTable-*.parq`` files."""
    root = Path(root)
    return root.is_dir() and any(_SRC.match(p.name) for p in root.rglob("sourceTable-*.parq"))


def read_lsst_repo(root, flux_type: str = DEFAULT_LSST_FLUX, visits=None) -> tuple[CcdImages, Measurements]:
    """Read an LSST-style tree (e.g. ``cfht_minimal/repo``) into (CcdImages, Measurements).

    Per visit the file ``sourceTable-<visit>.parq`` is read (else its ``sourceTable-<visit>-<det>.parq``
    files); each (visit, detector) takes its WCS and bbox from ``calexp-<visit>-<det>.fits[.fz]`` HDU 1,
    its zero point ``31.4 - 2.5 log10(PhotoCalib mean)`` from the calexp (else the visitSummary), and
    epoch (VisitInfo mid-exposure TAI as MJD), exposure time, airmass and boresight from
    ``visitSummary-<visit>.fits`` (else the calexp primary header). Flags are packed as
    :data:`LSST_FLAG_BITS` documents.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("LSST repository directory does not exist", path=str(root))
    per_visit, per_det = {}, {}
    for p in sorted(root.rglob("sourceTable-*.parq")):
        m = _SRC.match(p.name)
        if m:
            if m.group(2) is None:
                per_visit[int(m.group(1))] = p
            else:
                per_det.setdefault(int(m.group(1)), {})[int(m.group(2))] = p
    calexps = {(int(m.group(1)), int(m.group(2))): p for p in sorted(root.rglob("calexp-*"))
               if (m := _CALEXP.match(p.name))}
    summaries = {int(m.group(1)): p for p in sorted(root.rglob("visitSummary-*.fits")) if (m := _SUMMARY.match(p.name))}
    all_visits = sorted(set(per_visit) | set(per_det))
    if visits is not None:
        all_visits = [v for v in all_visits if v in set(int(v) for v in visits)]
    if not all_visits:
        raise InputError("no sourceTable-<visit>[-<detector>].parq files found", path=str(root))
    ccd_parts, meas_parts, offset = [], [], 0
    for visit in all_visits:
        info = {visit: read_visit_info(summaries[visit])} if visit in summaries else None
        files = [per_visit[visit]] if visit in per_visit else list(per_det[visit].values())
        for path in files:
            ccds, meas = read_lsst_source_table(path, flux_type, calexps=calexps, visit_info=info)
            meas = Measurements(**{**{c: getattr(meas, c) for c in Measurements._columns}, "ccd": meas.ccd + offset})
            offset += len(ccds)
            ccd_parts.append(ccds)
            meas_parts.append(meas)
    ccd_images = CcdImages(**{c: (sum((getattr(p, c) for p in ccd_parts), []) if c == "wcs"
                                  else np.concatenate([getattr(p, c) for p in ccd_parts]))
                              for c in CcdImages._columns})
    return ccd_images, Measurements.concatenate(meas_parts)


from .refcat import read_lsst_refcat  # noqa: E402  (re-exported: the afw shard reader lives in refcat.py)
