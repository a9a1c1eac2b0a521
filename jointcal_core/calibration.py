"""The fitted calibration of every CCD as plain polynomials: ``OUT/calibration.json``.

This module owns the exact, model-agnostic record of a fit. Each (visit, detector) gets
polynomials in normalised pixel coordinates, sampled from the fitted model's own callables and
re-fitted exactly (a jointcal model is polynomial, so only rounding is lost; the fit is checked).
:func:`load_calibration` gives back a :class:`Calibration` that evaluates them without jointcal's
models.

Normalised coordinates and basis
--------------------------------
With the CCD's bbox ``(x_min, y_min, x_max, y_max)`` (0-based pixels, outer edges),
``u = 2 (x - x_min) / (x_max - x_min) - 1`` and ``v = 2 (y - y_min) / (y_max - y_min) - 1``.
A polynomial of order N is ``f(u, v) = sum_k c_k T_i(u) T_j(v)`` over the listed terms
``(i, j)``, ``i + j <= N``, where ``T_n`` is the Chebyshev polynomial of the first kind
(``numpy.polynomial.chebyshev``). The Chebyshev basis keeps the re-fit and the evaluation
accurate to ~1e-9 mas; in the monomial basis rounding would reach 1e-6 mas at order 7.

JSON schema (``version`` 1)
---------------------------
::

    {
      "schema": "jointcal.calibration",
      "version": 1,
      "conventions": {...},                  # the conventions above, as text
      "metadata": {...},                     # free: band, config, jointcal version, ...
      "ccds": [
        {
          "visit": int, "detector": int,
          "bbox": [x_min, y_min, x_max, y_max],
          "astrometry": null | {
            "tangent_point_deg": [ra, dec],
            "order": N,
            "basis": "chebyshev",
            "terms": [[i, j], ...],
            "xi_deg": [...], "eta_deg": [...]    # gnomonic tangent plane at tangent_point (deg)
          },
          "photometry": null | {
            "order": N,
            "basis": "chebyshev",
            "space": "mag" | "flux",
            "terms": [[i, j], ...],
            "coefficients": [...]
              # space "mag":  zp_mag(u, v), AB magnitude of one count
              # space "flux": calibration in nJy per count; zp_mag = 31.4 - 2.5 log10(it)
          }
        }, ...
      ]
    }

Floats are written by Python's ``json`` (shortest repr that round-trips), so reading gives back
the same doubles. Sky positions: ``tangent_to_sky(f_xi, f_eta, *tangent_point_deg)``;
magnitudes: ``zp_mag(x, y) - 2.5 log10(flux)``; fluxes in nJy:
``flux * 10**(-0.4 (zp_mag - 31.4))``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from numpy.polynomial import chebyshev

from .data import AB_NJY_ZP
from .exceptions import InputError, OutputError
from .json_text import dumps_indented
from .projection import tangent_to_sky

__all__ = ["Calibration", "CcdCalibration", "ChebyshevField", "load_calibration", "SCHEMA", "VERSION"]

SCHEMA = "jointcal.calibration"
VERSION = 1
_CONVENTIONS = {
    "pixels": "0-based; bbox = outer pixel edges (x_min, y_min, x_max, y_max)",
    "normalised": "u = 2 (x - x_min) / (x_max - x_min) - 1, v likewise with y",
    "basis": "sum_k c_k T_i(u) T_j(v), T = Chebyshev polynomials of the first kind, terms (i, j)",
    "astrometry": "(xi_deg, eta_deg) on the gnomonic tangent plane at tangent_point_deg",
    "photometry": "space mag: zp_mag = AB mag of one count; space flux: nJy per count",
}
#: largest acceptable deviation of the re-fitted polynomials from the model's callables
ASTROMETRY_TOLERANCE_MAS = 1e-6
# 1 micro-mag: far below any measurement, above the round-off of an order-7 re-fit (~2e-9 seen)
PHOTOMETRY_TOLERANCE_MAG = 1e-6
_DEG_TO_MAS = 3.6e6


@dataclass(frozen=True)
class ChebyshevField:
    """A 2-D Chebyshev series over a bbox: ``f(x, y) = sum_k coef[k] T_i(u) T_j(v)``.

    Attributes
    ----------
    bbox : tuple of 4 float
    terms : tuple of (int, int)
    coefficients : ndarray, shape (n_terms, n_outputs)
    """

    bbox: tuple
    terms: tuple
    coefficients: np.ndarray

    @staticmethod
    def terms_of(order: int) -> tuple:
        """Exponents ``(i, j)`` with ``i + j <= order``, by increasing total order."""
        return tuple((n - j, j) for n in range(order + 1) for j in range(n + 1))

    @classmethod
    def fit(cls, func: Callable, bbox, order: int) -> "ChebyshevField":
        """Interpolate ``func(x, y) -> array (n_outputs, n)`` on Chebyshev-Lobatto nodes by least squares."""
        n = order + 3
        nodes = np.cos(np.pi * np.arange(n) / (n - 1))
        gu, gv = (a.ravel() for a in np.meshgrid(nodes, nodes))
        x, y = _from_unit(bbox, gu, gv)
        values = np.atleast_2d(np.asarray(func(x, y), dtype=float))
        terms = cls.terms_of(order)
        coef, *_ = np.linalg.lstsq(_design(gu, gv, terms, order), values.T, rcond=None)
        return cls(tuple(float(b) for b in bbox), terms, coef)

    def __call__(self, x, y) -> np.ndarray:
        """Values at pixels ``x, y`` (shape (n,)): array of shape (n_outputs, n)."""
        x = np.asarray(x, dtype=float)
        return (self.design(x, y) @ self.coefficients).T.reshape((self.coefficients.shape[1],) + np.shape(x))

    def design(self, x, y) -> np.ndarray:
        """The basis at pixels ``x, y`` (flattened, n points): shape (n, n_terms); values are
        ``design @ coefficients``. Reusable for every field of the same bbox and terms."""
        u, v = _to_unit(self.bbox, np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return _design(u.ravel(), v.ravel(), self.terms, max(sum(t) for t in self.terms))


def _to_unit(bbox, x, y):
    x_min, y_min, x_max, y_max = bbox
    return 2 * (x - x_min) / (x_max - x_min) - 1, 2 * (y - y_min) / (y_max - y_min) - 1


def _from_unit(bbox, u, v):
    x_min, y_min, x_max, y_max = bbox
    return x_min + (u + 1) * (x_max - x_min) / 2, y_min + (v + 1) * (y_max - y_min) / 2


def _design(u, v, terms, order: int) -> np.ndarray:
    tu, tv = chebyshev.chebvander(u, order), chebyshev.chebvander(v, order)
    return np.stack([tu[:, i] * tv[:, j] for i, j in terms], axis=1)


@dataclass(frozen=True)
class CcdCalibration:
    """Astrometry and photometry of one (visit, detector); either may be None."""

    visit: int
    detector: int
    bbox: tuple
    tangent_point_deg: tuple | None = None
    astrometry: ChebyshevField | None = None
    photometry: ChebyshevField | None = None
    photometry_space: str = "mag"


class Calibration:
    """The calibration of every CCD of a fit, evaluable without jointcal's models.

    Build with :meth:`from_callables` (at the end of a fit) or :func:`load_calibration`.
    """

    def __init__(self, ccds: Sequence[CcdCalibration], metadata: dict | None = None):
        self.ccds = list(ccds)
        self.metadata = dict(metadata or {})
        self._index = {(c.visit, c.detector): c for c in self.ccds}

    @classmethod
    def from_callables(cls, ccd_table, astrometry=None, photometry=None,
                       metadata: dict | None = None) -> "Calibration":
        """Sample the fitted model's callables and record them exactly.

        Parameters
        ----------
        ccd_table : CcdImages or (visit, detector, bbox)
            ``visit``, ``detector`` of shape (n,) and ``bbox`` of shape (n, 4).
        astrometry : (callables, tangent_points_deg, orders) or None
            ``callables[k](x, y) -> (xi_deg, eta_deg)`` on the gnomonic plane at
            ``tangent_points_deg[k]`` (shape (n, 2)); ``orders`` an int or one per CCD, the
            model's polynomial order.
        photometry : (callables, orders) or (callables, orders, spaces) or None
            ``callables[k](x, y) -> zp_mag`` (AB mag of one count). ``spaces`` ("mag" or
            "flux", one or per CCD, default "mag") chooses what is polynomial: the magnitude
            models' zp_mag or the flux models' nJy-per-count scale.
        metadata : dict, optional

        Raises
        ------
        InputError
            If a callable is not reproduced by a polynomial of the given order (within
            1e-6 mas or 1e-6 mag): the order given is not the model's.
        """
        visit, detector, bbox = _ccd_columns(ccd_table)
        n = len(visit)
        ast = _per_ccd_astrometry(astrometry, n)
        pho = _per_ccd_photometry(photometry, n)
        from .calibration_fit import batched

        return cls.from_batch((visit, detector, bbox),
                              astrometry=None if ast is None else (batched(ast[0]), ast[1], ast[2]),
                              photometry=None if pho is None else (batched(pho[0]), pho[1], pho[2]),
                              metadata=metadata)

    @classmethod
    def from_batch(cls, ccd_table, astrometry=None, photometry=None, metadata: dict | None = None,
                   chunk: int = 256) -> "Calibration":
        """:meth:`from_callables` with one callable evaluating many CCDs at once.

        Parameters
        ----------
        ccd_table : CcdImages or (visit, detector, bbox)
        astrometry : (func, tangent_points_deg, orders) or None
            ``func(k, x, y) -> (xi_deg, eta_deg)``, ``k`` (shape (n,)) the row in ``ccd_table`` of
            each pixel ``x, y`` (shape (n,)); tangent points (n_ccd, 2); orders an int or one per CCD.
        photometry : (func, orders) or (func, orders, spaces) or None
            ``func(k, x, y) -> zp_mag``, shape (n,).
        chunk : int
            CCDs evaluated per call of ``func`` (bounds the memory of the evaluation).

        Every CCD of one order is fitted by one least-squares solve (the Chebyshev-Lobatto
        nodes, in normalised coordinates, are the same for every CCD), then checked as
        :meth:`from_callables` does.
        """
        from .calibration_fit import check_astrometry, check_photometry, fit_all, njy_of_zp

        visit, detector, bbox = _ccd_columns(ccd_table)
        n = len(visit)
        fields: list[dict] = [{} for _ in range(n)]
        if astrometry is not None:
            func, tangents, orders = astrometry
            tangents = np.asarray(tangents, dtype=float).reshape(-1, 2)
            tangents = np.broadcast_to(tangents, (n, 2)) if len(tangents) == 1 else tangents
            orders = [int(o) for o in _broadcast(orders, n, "astrometry orders")]
            for k, field in fit_all(func, bbox, orders, lambda v: v, chunk, check_astrometry(visit, detector)):
                fields[k].update(astrometry=field, tangent_point_deg=(float(tangents[k, 0]), float(tangents[k, 1])))
        if photometry is not None:
            func, orders, *rest = photometry
            orders = [int(o) for o in _broadcast(orders, n, "photometry orders")]
            spaces = _broadcast(rest[0] if rest else "mag", n, "photometry spaces")
            for space in spaces:
                if space not in ("mag", "flux"):
                    raise InputError(f"photometry space must be 'mag' or 'flux', got {space!r}")
            for space in ("mag", "flux"):
                rows = np.flatnonzero(np.asarray(spaces) == space)
                if rows.size == 0:
                    continue
                sub = (lambda k, x, y, rows=rows: func(rows[k], x, y))
                target = (lambda v: v) if space == "mag" else njy_of_zp
                check = check_photometry(visit[rows], detector[rows], space)
                for k, field in fit_all(sub, bbox[rows], [orders[r] for r in rows], target, chunk, check):
                    fields[rows[k]].update(photometry=field, photometry_space=space)
        ccds = [CcdCalibration(int(visit[k]), int(detector[k]), tuple(float(b) for b in bbox[k]), **fields[k])
                for k in range(n)]
        return cls(ccds, metadata)

    # -- evaluation ---------------------------------------------------------------------------
    def ccd(self, visit: int, detector: int) -> CcdCalibration:
        """The record of one CCD; InputError naming it if absent."""
        try:
            return self._index[(int(visit), int(detector))]
        except KeyError:
            raise InputError("no such CCD in the calibration; see Calibration.keys() for the "
                             "(visit, detector) pairs it holds", visit=visit, detector=detector) from None

    def keys(self) -> list[tuple[int, int]]:
        """The (visit, detector) pairs, in file order."""
        return [(c.visit, c.detector) for c in self.ccds]

    def tangent_plane(self, visit: int, detector: int, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (0-based, shape (n,)) -> (xi_deg, eta_deg) on the CCD's tangent plane."""
        ccd = self.ccd(visit, detector)
        if ccd.astrometry is None:
            raise InputError("the calibration holds no astrometry for this CCD", visit=visit, detector=detector)
        xi, eta = ccd.astrometry(x, y)
        return xi, eta

    def sky(self, visit: int, detector: int, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (0-based, shape (n,)) -> (ra_deg, dec_deg).

        ``functools.partial(cal.sky, visit, detector)`` is a ``pixel_to_sky`` callable for
        :func:`jointcal_core.io.wcs_fits.fit_tan_sip` and :func:`jointcal_core.io.scamp_head.fit_tpv`.
        """
        xi, eta = self.tangent_plane(visit, detector, x, y)
        return tangent_to_sky(xi, eta, *self.ccd(visit, detector).tangent_point_deg)

    def zp_mag(self, visit: int, detector: int, x, y) -> np.ndarray:
        """AB magnitude of one count at pixels ``x, y`` (shape (n,))."""
        ccd = self.ccd(visit, detector)
        if ccd.photometry is None:
            raise InputError("the calibration holds no photometry for this CCD", visit=visit, detector=detector)
        value = ccd.photometry(x, y)[0]
        if ccd.photometry_space == "mag":
            return value
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(value > 0, AB_NJY_ZP - 2.5 * np.log10(value), np.nan)

    def magnitude(self, visit: int, detector: int, x, y, flux) -> np.ndarray:
        """AB magnitude of instrumental ``flux`` (counts) at ``x, y``; NaN for flux <= 0."""
        flux = np.asarray(flux, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.zp_mag(visit, detector, x, y) - 2.5 * np.log10(np.where(flux > 0, flux, np.nan))

    def flux_njy(self, visit: int, detector: int, x, y, flux) -> np.ndarray:
        """Instrumental ``flux`` (counts) at ``x, y`` -> nJy."""
        return np.asarray(flux, dtype=float) * 10.0 ** (-0.4 * (self.zp_mag(visit, detector, x, y) - AB_NJY_ZP))

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document described in the module docstring."""
        return {"schema": SCHEMA, "version": VERSION, "conventions": _CONVENTIONS,
                "metadata": self.metadata, "ccds": [_ccd_to_dict(c) for c in self.ccds]}

    def to_json(self, path: str | Path) -> Path:
        """Write ``calibration.json`` (a folder gets ``<folder>/calibration.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "calibration.json"
        try:
            path.write_text(dumps_indented(self.to_dict(), indent=1, default=json_default) + "\n")
        except (OSError, TypeError) as err:
            raise OutputError(f"cannot write the calibration: {err}", path=str(path)) from err
        return path

    @classmethod
    def from_dict(cls, doc: dict, path: str | None = None) -> "Calibration":
        """Inverse of :meth:`to_dict`; InputError on another schema or version."""
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise InputError(f"not a jointcal calibration (schema is not '{SCHEMA}')", path=path)
        if doc.get("version") != VERSION:
            raise InputError(f"calibration version {doc.get('version')} is not supported (this jointcal "
                             f"reads version {VERSION}); re-run the fit with this version", path=path)
        try:
            ccds = [_ccd_from_dict(c) for c in doc["ccds"]]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise InputError(f"malformed calibration entry: {err!r}", path=path) from err
        return cls(ccds, doc.get("metadata"))


def load_calibration(path_or_dir: str | Path) -> Calibration:
    """Read ``calibration.json`` (or ``<dir>/calibration.json``) written by :meth:`Calibration.to_json`."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / "calibration.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("calibration file not found; give a fit's output folder or its "
                         "calibration.json", path=str(path)) from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the calibration as JSON: {err}", path=str(path)) from err
    return Calibration.from_dict(doc, path=str(path))


# -- helpers ------------------------------------------------------------------------------------
def _ccd_columns(ccd_table):
    if all(hasattr(ccd_table, name) for name in ("visit", "detector", "bbox")):
        visit, detector, bbox = ccd_table.visit, ccd_table.detector, ccd_table.bbox
    else:
        visit, detector, bbox = ccd_table
    visit, detector = np.atleast_1d(visit).astype(np.int64), np.atleast_1d(detector).astype(np.int64)
    bbox = np.asarray(bbox, dtype=float).reshape(-1, 4)
    if not len(visit) == len(detector) == len(bbox):
        raise InputError(f"ccd_table columns differ in length: {len(visit)} visits, {len(detector)} "
                         f"detectors, {len(bbox)} bboxes")
    bad = ~((bbox[:, 2] > bbox[:, 0]) & (bbox[:, 3] > bbox[:, 1]))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputError(f"empty or inverted bbox {bbox[k].tolist()}", visit=int(visit[k]), detector=int(detector[k]))
    return visit, detector, bbox


def _broadcast(value, n: int, name: str) -> list:
    if isinstance(value, (int, np.integer, str)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise InputError(f"{name} has {len(value)} entries for {n} CCDs")
    return value


def _per_ccd_astrometry(astrometry, n: int):
    if astrometry is None:
        return None
    funcs, tangents, orders = astrometry
    tangents = np.asarray(tangents, dtype=float).reshape(-1, 2)
    return (_broadcast(funcs, n, "astrometry callables"), _broadcast(tangents, n, "tangent points"),
            [int(o) for o in _broadcast(orders, n, "astrometry orders")])


def _per_ccd_photometry(photometry, n: int):
    if photometry is None:
        return None
    funcs, orders, *rest = photometry
    spaces = _broadcast(rest[0] if rest else "mag", n, "photometry spaces")
    for space in spaces:
        if space not in ("mag", "flux"):
            raise InputError(f"photometry space must be 'mag' or 'flux', got {space!r}")
    return (_broadcast(funcs, n, "photometry callables"),
            [int(o) for o in _broadcast(orders, n, "photometry orders")], spaces)


def _ccd_to_dict(ccd: CcdCalibration) -> dict:
    out = {"visit": ccd.visit, "detector": ccd.detector, "bbox": list(ccd.bbox),
           "astrometry": None, "photometry": None}
    if ccd.astrometry is not None:
        f = ccd.astrometry
        out["astrometry"] = {"tangent_point_deg": list(ccd.tangent_point_deg), "order": max(map(sum, f.terms)),
                             "basis": "chebyshev", "terms": [list(t) for t in f.terms],
                             "xi_deg": f.coefficients[:, 0].tolist(), "eta_deg": f.coefficients[:, 1].tolist()}
    if ccd.photometry is not None:
        f = ccd.photometry
        out["photometry"] = {"order": max(map(sum, f.terms)), "basis": "chebyshev", "space": ccd.photometry_space,
                             "terms": [list(t) for t in f.terms], "coefficients": f.coefficients[:, 0].tolist()}
    return out


def _ccd_from_dict(doc: dict) -> CcdCalibration:
    bbox = tuple(float(b) for b in doc["bbox"])
    fields = {}
    ast, pho = doc.get("astrometry"), doc.get("photometry")
    if ast is not None:
        _check_basis(ast)
        coef = np.stack([np.asarray(ast["xi_deg"], float), np.asarray(ast["eta_deg"], float)], axis=1)
        fields.update(astrometry=ChebyshevField(bbox, _terms(ast, len(coef)), coef),
                      tangent_point_deg=tuple(float(a) for a in ast["tangent_point_deg"][:2]))
    if pho is not None:
        _check_basis(pho)
        coef = np.asarray(pho["coefficients"], float)[:, None]
        if pho.get("space", "mag") not in ("mag", "flux"):
            raise ValueError(f"unknown photometry space {pho.get('space')!r}")
        fields.update(photometry=ChebyshevField(bbox, _terms(pho, len(coef)), coef),
                      photometry_space=pho.get("space", "mag"))
    return CcdCalibration(int(doc["visit"]), int(doc["detector"]), bbox, **fields)


def _check_basis(doc: dict) -> None:
    if doc.get("basis", "chebyshev") != "chebyshev":
        raise ValueError(f"unknown basis {doc.get('basis')!r}")


def _terms(doc: dict, n_coef: int) -> tuple:
    terms = tuple((int(i), int(j)) for i, j in doc["terms"])
    if len(terms) != n_coef:
        raise ValueError(f"{len(terms)} terms for {n_coef} coefficients")
    return terms


def json_default(value):
    """``json.dumps`` default for numpy scalars and arrays (shared by every JSON output)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
