"""Columnar in-memory data: ccdImages, measurements, reference stars, camera geometry.

Everything is one numpy array per quantity with integer indices linking the tables
(measurement -> ccdImage, measurement -> star), never one Python object per star: a tract
holds 10^6-10^7 measurements.

Conventions used throughout jointcal_core
-----------------------------------------
- Pixel coordinates are **0-based** (the centre of the first pixel is 0.0), as in astropy's
  ``wcs.all_pix2world(x, y, 0)`` and LSST. Readers of 1-based formats (SExtractor ``*_IMAGE``)
  subtract 1.
- ``bbox`` is ``(x_min, y_min, x_max, y_max)`` in those coordinates, the outer pixel edges:
  a 2048 x 4096 CCD starting at 0 has bbox ``(-0.5, -0.5, 2047.5, 4095.5)``.
- Zero points ``zp_mag`` are AB magnitudes of one instrumental count (or of one unit of the
  input's flux column): ``mag_AB = zp_mag - 2.5 log10(flux)``. LSST's PhotoCalib mean in
  nJy/count converts as ``zp_mag = 31.4 - 2.5 log10(calib_mean)``.
- Reference fluxes are in nJy (``mag_AB = 31.4 - 2.5 log10(flux_njy)``).
- Epochs are MJD (float days). Proper motions are ``pm_ra_masyr = mu_alpha * cos(dec)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .exceptions import InputError

__all__ = ["CcdImages", "Measurements", "ReferenceCatalog", "Camera", "Field",
           "AB_NJY_ZP", "mag_to_njy", "njy_to_mag", "MJD_J2000"]

#: AB magnitude of 1 nJy
AB_NJY_ZP = 31.4
#: MJD of the J2000.0 epoch
MJD_J2000 = 51544.5


def mag_to_njy(mag: np.ndarray) -> np.ndarray:
    """AB magnitude -> flux in nJy."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - AB_NJY_ZP))


def njy_to_mag(flux_njy: np.ndarray) -> np.ndarray:
    """Flux in nJy -> AB magnitude (NaN for non-positive fluxes)."""
    flux = np.asarray(flux_njy, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, AB_NJY_ZP - 2.5 * np.log10(flux), np.nan)


class _Columns:
    """Shared behaviour of the columnar tables: length checks, row selection."""

    _columns: tuple[str, ...] = ()

    def __post_init__(self):
        n = None
        for name in self._columns:
            value = getattr(self, name)
            if isinstance(value, list):
                length = len(value)
            else:
                value = np.asarray(value)
                object.__setattr__(self, name, value)
                length = value.shape[0]
            if n is None:
                n = length
            elif length != n:
                raise InputError(f"{type(self).__name__}: column '{name}' has {length} rows, "
                                 f"expected {n} like '{self._columns[0]}'")

    def __len__(self) -> int:
        return len(getattr(self, self._columns[0]))

    def take(self, index: np.ndarray):
        """A new table holding the rows ``index`` (boolean mask or integer indices)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        changes = {}
        for name in self._columns:
            value = getattr(self, name)
            changes[name] = [value[i] for i in index] if isinstance(value, list) else value[index]
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CcdImages(_Columns):
    """One row per (visit, detector) exposure of a CCD.

    Attributes
    ----------
    visit, detector : ndarray of int64, shape (n,)
    bbox : ndarray of float, shape (n, 4)
        ``(x_min, y_min, x_max, y_max)`` outer pixel edges, 0-based pixels.
    wcs : list of astropy.wcs.WCS, length n
        The initial (input) WCS of each CCD.
    zp_mag : ndarray, shape (n,)
        Initial zero point, AB mag of one instrumental count.
    zp_mag_err : ndarray, shape (n,)
    mjd : ndarray, shape (n,)
        Mid-exposure epoch (MJD).
    exptime_s, airmass : ndarray, shape (n,)
    band : ndarray of str, shape (n,)
    path : ndarray of str, shape (n,)
        The file each CCD was read from (for error messages and provenance).
    boresight_ra_deg, boresight_dec_deg : ndarray, shape (n,)
        The visit's telescope pointing, the same on every CCD of a visit; NaN when the input
        does not give it (then :meth:`visit_centers_deg` computes it from the CCD centres).
    """

    visit: np.ndarray
    detector: np.ndarray
    bbox: np.ndarray
    wcs: list
    zp_mag: np.ndarray
    zp_mag_err: np.ndarray
    mjd: np.ndarray
    exptime_s: np.ndarray
    airmass: np.ndarray
    band: np.ndarray
    path: np.ndarray
    boresight_ra_deg: np.ndarray
    boresight_dec_deg: np.ndarray

    _columns = ("visit", "detector", "bbox", "wcs", "zp_mag", "zp_mag_err", "mjd", "exptime_s",
                "airmass", "band", "path", "boresight_ra_deg", "boresight_dec_deg")

    @classmethod
    def build(cls, *, visit, detector, bbox, wcs, zp_mag=None, zp_mag_err=None, mjd=None,
              exptime_s=None, airmass=None, band=None, path=None, boresight_ra_deg=None,
              boresight_dec_deg=None) -> "CcdImages":
        """Build from any iterables, filling missing optional columns with NaN / ''."""
        n = len(visit)

        def col(value, fill, dtype=float):
            if value is None:
                return np.full(n, fill, dtype=dtype)
            return np.asarray(value, dtype=dtype)

        return cls(visit=np.asarray(visit, dtype=np.int64), detector=np.asarray(detector, dtype=np.int64),
                   bbox=np.asarray(bbox, dtype=float).reshape(n, 4), wcs=list(wcs),
                   zp_mag=col(zp_mag, np.nan), zp_mag_err=col(zp_mag_err, 0.0), mjd=col(mjd, np.nan),
                   exptime_s=col(exptime_s, np.nan), airmass=col(airmass, np.nan),
                   band=col(band, "", dtype=object).astype(str), path=col(path, "", dtype=object).astype(str),
                   boresight_ra_deg=col(boresight_ra_deg, np.nan),
                   boresight_dec_deg=col(boresight_dec_deg, np.nan))

    @property
    def visits(self) -> np.ndarray:
        """Sorted unique visit ids."""
        return np.unique(self.visit)

    def index_of(self, visit: int, detector: int) -> int:
        """Row of (visit, detector); raises InputError when absent."""
        hit = np.flatnonzero((self.visit == visit) & (self.detector == detector))
        if hit.size == 0:
            raise InputError("no such ccdImage in this field", visit=int(visit), detector=int(detector))
        return int(hit[0])

    def centers_pix(self) -> np.ndarray:
        """Centre of every CCD in pixels, shape (n, 2)."""
        return np.column_stack([(self.bbox[:, 0] + self.bbox[:, 2]) / 2, (self.bbox[:, 1] + self.bbox[:, 3]) / 2])

    def _memo(self, name: str, compute) -> np.ndarray:
        """``compute()`` once per CcdImages (the WCS and bboxes never change; a copy is returned)."""
        memo = self.__dict__.setdefault("_memo_by_name", {})
        if name not in memo:
            memo[name] = compute()
        return memo[name].copy()

    def corners_deg(self) -> np.ndarray:
        """Sky corners of every CCD from its initial WCS, shape (n, 4, 2) as (ra, dec) in deg."""
        def compute():
            out = np.empty((len(self), 4, 2))
            for i, w in enumerate(self.wcs):
                x0, y0, x1, y1 = self.bbox[i]
                ra, dec = w.all_pix2world([x0, x1, x1, x0], [y0, y0, y1, y1], 0)
                out[i, :, 0], out[i, :, 1] = ra, dec
            return out
        return self._memo("corners_deg", compute)

    def centers_deg(self) -> np.ndarray:
        """Sky position of every CCD centre from its initial WCS, shape (n, 2) (ra, dec) deg."""
        def compute():
            c = self.centers_pix()
            out = np.empty((len(self), 2))
            for i, w in enumerate(self.wcs):
                out[i] = np.ravel(w.all_pix2world(c[i, 0], c[i, 1], 0))
            return out
        return self._memo("centers_deg", compute)

    def visit_centers_deg(self) -> dict[int, tuple[float, float]]:
        """Tangent point of each visit: the boresight when known, else the mean CCD centre."""
        centers = None
        out = {}
        for v in self.visits:
            rows = np.flatnonzero(self.visit == v)
            ra, dec = self.boresight_ra_deg[rows[0]], self.boresight_dec_deg[rows[0]]
            if not (np.isfinite(ra) and np.isfinite(dec)):
                if centers is None:
                    centers = self.centers_deg()
                ra, dec = _mean_direction_deg(centers[rows, 0], centers[rows, 1])
            out[int(v)] = (float(ra), float(dec))
        return out


def _mean_direction_deg(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[float, float]:
    """Mean of unit vectors, as (ra, dec) in degrees (safe across RA = 0)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    v = np.array([np.sum(np.cos(dec) * np.cos(ra)), np.sum(np.cos(dec) * np.sin(ra)), np.sum(np.sin(dec))])
    v /= np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arcsin(v[2])))


@dataclass(frozen=True)
class Measurements(_Columns):
    """One row per detection on a ccdImage.

    Attributes
    ----------
    ccd : ndarray of int64, shape (n,)
        Row in :class:`CcdImages`.
    x, y : ndarray, shape (n,)
        0-based pixel position.
    var_x, var_y, cov_xy : ndarray, shape (n,)
        Position covariance, pixel^2.
    flux, flux_err : ndarray, shape (n,)
        Instrumental flux and its error (the flux column chosen by ``sourceFluxType``).
    flags : ndarray of int64, shape (n,)
        Input flag bits (SExtractor ``FLAGS``; LSST pixel flags packed by the reader).
    source_id : ndarray of int64, shape (n,)
        Id of the detection in its input catalog.
    """

    ccd: np.ndarray
    x: np.ndarray
    y: np.ndarray
    var_x: np.ndarray
    var_y: np.ndarray
    cov_xy: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    flags: np.ndarray
    source_id: np.ndarray

    _columns = ("ccd", "x", "y", "var_x", "var_y", "cov_xy", "flux", "flux_err", "flags", "source_id")

    @classmethod
    def build(cls, *, ccd, x, y, var_x, var_y, cov_xy=None, flux, flux_err, flags=None,
              source_id=None) -> "Measurements":
        n = len(x)
        return cls(ccd=np.asarray(ccd, dtype=np.int64), x=np.asarray(x, float), y=np.asarray(y, float),
                   var_x=np.asarray(var_x, float), var_y=np.asarray(var_y, float),
                   cov_xy=np.zeros(n) if cov_xy is None else np.asarray(cov_xy, float),
                   flux=np.asarray(flux, float), flux_err=np.asarray(flux_err, float),
                   flags=np.zeros(n, np.int64) if flags is None else np.asarray(flags, np.int64),
                   source_id=np.arange(n, dtype=np.int64) if source_id is None
                   else np.asarray(source_id, np.int64))

    @staticmethod
    def concatenate(parts: list["Measurements"]) -> "Measurements":
        """Stack several tables (their ``ccd`` indices must already be global)."""
        return Measurements(**{c: np.concatenate([getattr(p, c) for p in parts]) for c in Measurements._columns})


@dataclass(frozen=True)
class ReferenceCatalog(_Columns):
    """Reference stars (astrometric and/or photometric).

    Attributes
    ----------
    ra_deg, dec_deg : ndarray, shape (n,)
        Position at ``epoch_mjd``.
    ra_err_mas, dec_err_mas : ndarray, shape (n,)
        Position errors, true angle (the RA error includes cos(dec)).
    pm_ra_masyr, pm_dec_masyr, pm_ra_err_masyr, pm_dec_err_masyr : ndarray, shape (n,)
        Proper motion (``mu_alpha * cos(dec)``) and errors; 0 with NaN errors when unknown.
    parallax_mas, parallax_err_mas : ndarray, shape (n,)
        0 with NaN error when unknown.
    epoch_mjd : ndarray, shape (n,)
    source_id : ndarray of int64, shape (n,)
    flux_njy, flux_err_njy : dict of str -> ndarray, shape (n,)
        Fluxes per band name (e.g. ``'r'``, ``'MAG'`` for an LDAC reference's single band).
    name : str
        Where it was read from.
    """

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    ra_err_mas: np.ndarray
    dec_err_mas: np.ndarray
    pm_ra_masyr: np.ndarray
    pm_dec_masyr: np.ndarray
    pm_ra_err_masyr: np.ndarray
    pm_dec_err_masyr: np.ndarray
    parallax_mas: np.ndarray
    parallax_err_mas: np.ndarray
    epoch_mjd: np.ndarray
    source_id: np.ndarray
    flux_njy: dict = field(default_factory=dict)
    flux_err_njy: dict = field(default_factory=dict)
    name: str = ""

    _columns = ("ra_deg", "dec_deg", "ra_err_mas", "dec_err_mas", "pm_ra_masyr", "pm_dec_masyr",
                "pm_ra_err_masyr", "pm_dec_err_masyr", "parallax_mas", "parallax_err_mas", "epoch_mjd",
                "source_id")

    @classmethod
    def build(cls, *, ra_deg, dec_deg, ra_err_mas=None, dec_err_mas=None, pm_ra_masyr=None,
              pm_dec_masyr=None, pm_ra_err_masyr=None, pm_dec_err_masyr=None, parallax_mas=None,
              parallax_err_mas=None, epoch_mjd=MJD_J2000, source_id=None, flux_njy=None,
              flux_err_njy=None, name="") -> "ReferenceCatalog":
        """Build from arrays; missing motions are 0 with NaN errors, missing errors NaN."""
        n = len(ra_deg)

        def col(value, fill):
            if value is None:
                return np.full(n, fill, dtype=float)
            return np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()

        return cls(ra_deg=col(ra_deg, np.nan), dec_deg=col(dec_deg, np.nan),
                   ra_err_mas=col(ra_err_mas, np.nan), dec_err_mas=col(dec_err_mas, np.nan),
                   pm_ra_masyr=col(pm_ra_masyr, 0.0), pm_dec_masyr=col(pm_dec_masyr, 0.0),
                   pm_ra_err_masyr=col(pm_ra_err_masyr, np.nan), pm_dec_err_masyr=col(pm_dec_err_masyr, np.nan),
                   parallax_mas=col(parallax_mas, 0.0), parallax_err_mas=col(parallax_err_mas, np.nan),
                   epoch_mjd=col(epoch_mjd, MJD_J2000),
                   source_id=np.arange(n, dtype=np.int64) if source_id is None
                   else np.asarray(source_id, np.int64),
                   flux_njy={k: np.asarray(v, float) for k, v in (flux_njy or {}).items()},
                   flux_err_njy={k: np.asarray(v, float) for k, v in (flux_err_njy or {}).items()},
                   name=name)

    def take(self, index):
        index = np.asarray(index)
        out = super().take(index)
        return dataclasses.replace(out, flux_njy={k: v[index] for k, v in self.flux_njy.items()},
                                   flux_err_njy={k: v[index] for k, v in self.flux_err_njy.items()})

    @property
    def has_proper_motion(self) -> bool:
        """True when any star has a measured proper motion."""
        return bool(np.any(np.isfinite(self.pm_ra_err_masyr)) or np.any(self.pm_ra_masyr != 0))

    def mag(self, band: str) -> tuple[np.ndarray, np.ndarray]:
        """AB magnitude and its error in ``band``."""
        if band not in self.flux_njy:
            raise InputError(f"reference catalog has no flux for band '{band}' "
                             f"(it has: {', '.join(sorted(self.flux_njy)) or 'none'}); "
                             "set photometryRefBand to one of them", path=self.name or None)
        flux, err = self.flux_njy[band], self.flux_err_njy.get(band, np.full(len(self), np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            return njy_to_mag(flux), 2.5 / np.log(10) * err / flux


@dataclass(frozen=True)
class Camera:
    """Camera geometry: where each detector sits in the focal plane.

    Attributes
    ----------
    name : str
    detector : ndarray of int64, shape (n,)
    bbox : ndarray, shape (n, 4)
        Detector pixel box, as in :class:`CcdImages`.
    pixel_to_focal : ndarray, shape (n, 2, 3)
        Affine map from 0-based pixels to the focal plane: ``[u, v] = M[:, :2] @ [x, y] + M[:, 2]``.
    focal_unit : str
        Unit of the focal-plane coordinates (``'deg'`` at nominal plate scale, or ``'mm'``).
    """

    name: str
    detector: np.ndarray
    bbox: np.ndarray
    pixel_to_focal: np.ndarray
    focal_unit: str = "deg"

    def row_of(self, detector: int) -> int:
        hit = np.flatnonzero(self.detector == detector)
        if hit.size == 0:
            raise InputError(f"camera '{self.name}' has no detector {detector}", detector=int(detector))
        return int(hit[0])

    def to_focal(self, detector: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map pixel positions on given detectors (arrays of equal length) to the focal plane."""
        rows = np.searchsorted(self.detector, detector, sorter=np.argsort(self.detector))
        rows = np.argsort(self.detector)[rows]
        m = self.pixel_to_focal[rows]
        return (m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2], m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2])


@dataclass(frozen=True)
class Field:
    """Everything one fit needs: the exposures of one field in one band, and references.

    Attributes
    ----------
    ccd_images : CcdImages
    measurements : Measurements
        Detections (``measurements.ccd`` indexes ``ccd_images``).
    reference : ReferenceCatalog or None
        Astrometric reference.
    photometry_reference : ReferenceCatalog or None
        Photometric reference (often the same catalog).
    camera : Camera or None
    band : str
    inputs : tuple of str
        The files read, for provenance.
    """

    ccd_images: CcdImages
    measurements: Measurements
    reference: ReferenceCatalog | None = None
    photometry_reference: ReferenceCatalog | None = None
    camera: Camera | None = None
    band: str = ""
    inputs: tuple = ()

    def __post_init__(self):
        if len(self.measurements) and (self.measurements.ccd.min() < 0
                                       or self.measurements.ccd.max() >= len(self.ccd_images)):
            raise InputError("measurements refer to ccdImages that are not in the field")

    def select_visits(self, visits) -> "Field":
        """The same field restricted to ``visits`` (ccdImage indices are renumbered)."""
        keep = np.isin(self.ccd_images.visit, np.asarray(list(visits), dtype=np.int64))
        new_index = np.full(len(self.ccd_images), -1, dtype=np.int64)
        new_index[keep] = np.arange(int(keep.sum()))
        meas_keep = keep[self.measurements.ccd]
        meas = self.measurements.take(meas_keep)
        meas = dataclasses.replace(meas, ccd=new_index[meas.ccd])
        return dataclasses.replace(self, ccd_images=self.ccd_images.take(keep), measurements=meas)
