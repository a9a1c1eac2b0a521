"""In-memory inputs for :meth:`JointcalTask.run`: astropy Tables, numpy arrays and astropy WCS.

The seed's ``JointcalTask.run`` takes catalogs and WCS objects already in memory; this module turns
the same kind of input into the columnar :class:`~jointcal_core.data.Field`, with an
:class:`~jointcal_core.exceptions.InputError` naming the missing column when a table is incomplete.

Tables (anything ``astropy.table.Table`` accepts: a Table, a dict of arrays, a numpy structured
array, a pandas DataFrame):

``sources``, one row per detection
    ``visit``, ``detector``; ``x``, ``y`` (0-based pixels); the position errors as ``xErr``, ``yErr``
    (sigma, px) or ``var_x``, ``var_y`` [``cov_xy``] (px^2); ``flux``, ``flux_err`` (instrumental
    counts; ``instFlux``/``instFluxErr`` also accepted); optional ``flags``, ``source_id``.
``ccd_images``, one row per (visit, detector)
    ``visit``, ``detector``; the pixel box as ``bbox`` (n, 4: x_min, y_min, x_max, y_max outer
    edges) or ``width``, ``height`` (pixels, the box then starts at -0.5); ``mjd``, ``exptime``,
    ``airmass``, ``band`` (or ``filter``), ``zp_mag`` (AB mag of one count; optional) and the
    initial WCS as a ``wcs`` column of ``astropy.wcs.WCS`` objects or the ``wcs`` argument, a dict
    ``{(visit, detector): WCS}``.
``reference``
    A :class:`~jointcal_core.data.ReferenceCatalog`, or a Gaia-like table read by
    :func:`~jointcal_core.io.refcat.read_gaia_like` (``ra``, ``dec`` deg; ``ra_error``,
    ``dec_error`` mas; ``pmra``, ``pmdec``, ``parallax`` and errors; ``epoch`` (MJD, or Julian
    year when < 3000); ``<band>_flux`` nJy and ``<band>_fluxErr``). Column units are honoured.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from .data import CcdImages, Field, Measurements, ReferenceCatalog
from .exceptions import InputError

__all__ = ["as_table", "field_from_tables", "reference_from_table"]


def as_table(data, what: str) -> Table:
    """Anything table-like as an astropy Table (InputError when it is not)."""
    if isinstance(data, Table):
        return data
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        return Table.from_pandas(data)
    try:
        return Table(data)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for bad input
        raise InputError(
            f"{what} is not a table ({type(exc).__name__}: {exc}); give an astropy Table, "
            "a dict of arrays or a numpy structured array"
        ) from None


def _pick(t: Table, names, what: str, required: bool = True):
    for n in names:
        if n in t.colnames:
            return n
    if required:
        raise InputError(
            f"{what} has no column {' or '.join(repr(n) for n in names)} (columns: {', '.join(t.colnames)})"
        )
    return None


def _float(t: Table, name: str | None, unit: str | None = None):
    """Float column converted to ``unit`` when the column carries a unit."""
    if name is None:
        return None
    col = t[name]
    values = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    if unit is not None and getattr(col, "unit", None) is not None:
        values = (values * col.unit).to_value(unit)
    return np.asarray(values, float)


def _ccd_table(ccd_images, wcs) -> CcdImages:
    t = as_table(ccd_images, "ccd_images")
    what = "the ccd_images table"
    if len(t) == 0:
        raise InputError("the ccd_images table is empty")
    visit = np.asarray(t[_pick(t, ["visit"], what)], np.int64)
    detector = np.asarray(t[_pick(t, ["detector", "ccd"], what)], np.int64)
    keys = list(zip(visit.tolist(), detector.tolist()))
    if len(set(keys)) != len(keys):
        raise InputError(
            "the ccd_images table repeats a (visit, detector) pair; give one row per CCD exposure"
        )
    if "bbox" in t.colnames:
        bbox = np.asarray(t["bbox"], float).reshape(len(t), 4)
    elif all(c in t.colnames for c in ("x_min", "y_min", "x_max", "y_max")):
        bbox = np.column_stack([_float(t, c) for c in ("x_min", "y_min", "x_max", "y_max")])
    else:
        w = _float(t, _pick(t, ["width", "naxis1"], what + " (or a 'bbox' column)"))
        h = _float(t, _pick(t, ["height", "naxis2"], what + " (or a 'bbox' column)"))
        bbox = np.column_stack([np.full(len(t), -0.5), np.full(len(t), -0.5), w - 0.5, h - 0.5])
    wcs_list = []
    for i, key in enumerate(keys):
        w = t["wcs"][i] if "wcs" in t.colnames else (wcs or {}).get(key)
        if not isinstance(w, WCS):
            raise InputError(
                "no astropy.wcs.WCS for this ccdImage: give a 'wcs' column or wcs={(visit, detector): WCS}",
                visit=key[0],
                detector=key[1],
            )
        wcs_list.append(w)
    band_col = _pick(t, ["band", "filter"], what, required=False)
    return CcdImages.build(
        visit=visit,
        detector=detector,
        bbox=bbox,
        wcs=wcs_list,
        zp_mag=_float(t, _pick(t, ["zp_mag", "zeropoint"], what, required=False), "mag"),
        zp_mag_err=_float(t, _pick(t, ["zp_mag_err", "zeropoint_err"], what, required=False), "mag"),
        mjd=_float(t, _pick(t, ["mjd"], what)),
        exptime_s=_float(t, _pick(t, ["exptime", "exptime_s"], what), "s"),
        airmass=_float(t, _pick(t, ["airmass"], what)),
        band=None if band_col is None else [str(b) for b in t[band_col]],
        path=["in-memory"] * len(t),
        boresight_ra_deg=_float(t, _pick(t, ["boresight_ra_deg", "boresight_ra"], what, False), "deg"),
        boresight_dec_deg=_float(t, _pick(t, ["boresight_dec_deg", "boresight_dec"], what, False), "deg"),
    )


def _measurements(sources, ccds: CcdImages) -> Measurements:
    t = as_table(sources, "sources")
    what = "the sources table"
    visit = np.asarray(t[_pick(t, ["visit"], what)], np.int64)
    detector = np.asarray(t[_pick(t, ["detector", "ccd"], what)], np.int64)
    # (visit, detector) -> ccdImage row, vectorised through a sorted key
    span = int(max(ccds.detector.max(), detector.max() if detector.size else 0)) + 1
    ccd_key = ccds.visit * span + ccds.detector
    order = np.argsort(ccd_key)
    src_key = visit * span + detector
    pos = np.clip(np.searchsorted(ccd_key[order], src_key), 0, len(order) - 1)
    ccd = order[pos]
    missing = ccd_key[ccd] != src_key
    if np.any(missing):
        i = int(np.flatnonzero(missing)[0])
        raise InputError(
            f"{int(missing.sum())} source(s) are on a CCD exposure missing from ccd_images; add its row",
            visit=int(visit[i]),
            detector=int(detector[i]),
        )
    if "var_x" in t.colnames or "var_y" in t.colnames:
        var_x = _float(t, _pick(t, ["var_x"], what))
        var_y = _float(t, _pick(t, ["var_y"], what))
        cov = _float(t, _pick(t, ["cov_xy"], what, required=False))
    else:
        var_x = _float(t, _pick(t, ["xErr", "x_err", "xerr"], what + " (or var_x/var_y)"), "pix") ** 2
        var_y = _float(t, _pick(t, ["yErr", "y_err", "yerr"], what + " (or var_x/var_y)"), "pix") ** 2
        cov = None
    flags = _pick(t, ["flags", "flag"], what, required=False)
    sid = _pick(t, ["source_id", "id"], what, required=False)
    meas = Measurements.build(
        ccd=ccd,
        x=_float(t, _pick(t, ["x"], what), "pix"),
        y=_float(t, _pick(t, ["y"], what), "pix"),
        var_x=var_x,
        var_y=var_y,
        cov_xy=cov,
        flux=_float(t, _pick(t, ["flux", "instFlux"], what)),
        flux_err=_float(t, _pick(t, ["flux_err", "fluxErr", "instFluxErr"], what)),
        flags=None if flags is None else np.asarray(t[flags], np.int64),
        source_id=None if sid is None else np.asarray(t[sid], np.int64),
    )
    order = np.argsort(meas.ccd, kind="stable")  # measurements grouped by ccdImage, as the readers give
    return meas.take(order)


def reference_from_table(reference, name: str = "in-memory reference") -> ReferenceCatalog | None:
    """A ReferenceCatalog from a ReferenceCatalog (returned as is), a Gaia-like table, or None."""
    if reference is None or isinstance(reference, ReferenceCatalog):
        return reference
    from .io.refcat import read_gaia_like

    return read_gaia_like(name, table=as_table(reference, "reference"))


def field_from_tables(
    sources, ccd_images, reference=None, photometry_reference=None, camera=None, wcs: dict | None = None
) -> Field:
    """Build a :class:`~jointcal_core.data.Field` from in-memory tables (see the module docstring).

    Parameters
    ----------
    sources, ccd_images : table-like
    reference, photometry_reference : ReferenceCatalog or table-like, optional
        Without ``photometry_reference`` the ``reference`` serves both fits.
    camera : Camera or str, optional
        A :class:`~jointcal_core.data.Camera` or a known camera name ('megacam', 'hsc').
    wcs : dict of (visit, detector) -> astropy.wcs.WCS, optional
        Initial WCS when ``ccd_images`` has no ``wcs`` column.

    Raises
    ------
    InputError
        A missing column (named, with the columns present), a source on an unknown CCD, a CCD
        without WCS, mixed bands.
    """
    ccds = _ccd_table(ccd_images, wcs)
    meas = _measurements(sources, ccds)
    bands = sorted({b for b in ccds.band if b})
    if len(bands) > 1:
        raise InputError(f"ccd_images mix bands ({', '.join(bands)}); one fit takes one band")
    ref = reference_from_table(reference)
    phot = (
        ref
        if photometry_reference is None
        else reference_from_table(photometry_reference, "in-memory photometry reference")
    )
    if isinstance(camera, str):
        from .camera import camera_by_name

        camera = camera_by_name(camera)
    return Field(
        ccd_images=ccds,
        measurements=meas,
        reference=ref,
        photometry_reference=phot,
        camera=camera,
        band=bands[0] if bands else "",
        inputs=(),
    )
