"""Write the fitted models: ``wcs/``, ``scamp/``, ``photometry.ecsv`` and ``calibration.json``.

Only the problems' public callables are used (``pixel_to_sky``, ``pixel_to_tangent``,
``tangent_point_deg``, ``pixel_order``, ``zp_mag``), so any model exports the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table
from threadpoolctl import threadpool_limits

from ..calibration import Calibration
from ..exceptions import JointcalWarning
from .scamp_head import fit_tpv, scamp_photometry, write_scamp_head
from .wcs_fits import fit_tan_sip, write_wcs_fits

__all__ = ["write_model_files", "fitted_ccds", "build_calibration", "photometry_table"]


def fitted_ccds(joint) -> np.ndarray:
    """Rows of the field's ccdImages that take part in at least one fit."""
    used = np.zeros(len(joint.prepared.field.ccd_images), bool)
    for problem in joint.problems.values():
        res = problem.residuals()
        ccd = np.asarray(res["ccd"])[np.asarray(res["used"], bool)]
        used[np.unique(ccd)] = True
    return np.flatnonzero(used)


def _sky_callable(problem, ccd):
    return lambda x, y: problem.pixel_to_sky(ccd, x, y)


def _tangent_callable(problem, ccd):
    return lambda x, y: problem.pixel_to_tangent(ccd, x, y)


def _zp_callable(problem, ccd):
    return lambda x, y: problem.zp_mag(ccd, x, y)


def build_calibration(joint, rows: np.ndarray | None = None) -> Calibration:
    """The exact, model-agnostic calibration of the fitted ccdImages."""
    field = joint.prepared.field
    rows = fitted_ccds(joint) if rows is None else rows
    ccd = field.ccd_images
    table = (ccd.visit[rows], ccd.detector[rows], ccd.bbox[rows])
    astrometry = photometry = None
    if "astrometry" in joint.problems:
        p = joint.problems["astrometry"]
        astrometry = ([_tangent_callable(p, i) for i in rows],
                      np.array([p.tangent_point_deg(i) for i in rows]),
                      [p.pixel_order(i) for i in rows])
    if "photometry" in joint.problems:
        p = joint.problems["photometry"]
        space = "flux" if joint.prepared.config.photometryModel.endswith("Flux") else "mag"
        photometry = ([_zp_callable(p, i) for i in rows], [p.pixel_order(i) for i in rows], space)
    meta = {"band": field.band, "config": joint.prepared.config.to_dict()}
    return Calibration.from_callables(table, astrometry=astrometry, photometry=photometry, metadata=meta)


def photometry_table(joint, rows: np.ndarray) -> Table:
    """Zero point at each CCD centre, its statistical error and the number of stars."""
    field = joint.prepared.field
    problem = joint.problems["photometry"]
    ccd = field.ccd_images
    res = problem.residuals()
    used = np.asarray(res["used"], bool)
    r_ccd = np.asarray(res["ccd"])[used]
    r_star = np.asarray(res["star"])[used]
    r_mmag = np.asarray(res["residual_mmag"])[used]
    centers = ccd.centers_pix()
    zp, err, n_stars = [], [], []
    for i in rows:
        zp.append(float(np.ravel(problem.zp_mag(i, centers[i:i + 1, 0], centers[i:i + 1, 1]))[0]))
        sel = r_ccd == i
        n = int(np.unique(r_star[sel]).size)
        n_stars.append(n)
        # statistical error of a mean offset: residual rms over sqrt(stars)
        err.append(float(np.sqrt(np.mean(r_mmag[sel] ** 2)) / 1000 / np.sqrt(n)) if n >= 2 else float("nan"))
    table = Table()
    table["visit"] = ccd.visit[rows]
    table["detector"] = ccd.detector[rows]
    table["zeropoint"] = np.array(zp)
    table["zeropoint"].unit = "mag"
    table["zeropoint"].description = "AB magnitude of one count at the CCD centre"
    table["zeropoint_err"] = np.array(err)
    table["zeropoint_err"].unit = "mag"
    table["n_stars"] = np.array(n_stars, dtype=np.int64)
    return table


def write_model_files(tmp: Path, joint) -> None:
    """Write everything the fitted models define into the (temporary) output folder."""
    # thousands of small least-squares fits: one BLAS thread is much faster on a shared machine
    with threadpool_limits(limits=1, user_api="blas"):
        _write_model_files(tmp, joint)


def _write_model_files(tmp: Path, joint) -> None:
    field = joint.prepared.field
    ccd = field.ccd_images
    rows = fitted_ccds(joint)
    build_calibration(joint, rows).to_json(tmp / "calibration.json")
    zp_centre = None
    if "photometry" in joint.problems:
        table = photometry_table(joint, rows)
        table.write(tmp / "photometry.ecsv", format="ascii.ecsv")
        zp_centre = dict(zip(rows, np.asarray(table["zeropoint"])))
    if "astrometry" not in joint.problems:
        return
    problem = joint.problems["astrometry"]
    (tmp / "wcs").mkdir()
    (tmp / "scamp").mkdir()
    for visit in np.unique(ccd.visit[rows]):
        visit_rows = [int(i) for i in rows if ccd.visit[i] == visit]
        headers = []
        for i in visit_rows:
            sky = _sky_callable(problem, i)
            tangent = problem.tangent_point_deg(i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JointcalWarning)
                wcs, report = fit_tan_sip(sky, ccd.bbox[i], tangent)
                header, _ = fit_tpv(sky, ccd.bbox[i], tangent)
            if not report.meets_limits:
                warnings.warn(f"visit {visit} detector {ccd.detector[i]}: the TAN-SIP export reproduces the "
                              f"model to {report.rms_mas:.2f} mas rms, {report.max_mas:.2f} mas max only",
                              JointcalWarning, stacklevel=2)
            x0, y0, x1, y1 = ccd.bbox[i]
            write_wcs_fits(tmp / "wcs" / f"{visit}-{ccd.detector[i]}.fits", wcs, int(round(x1 - x0)),
                           int(round(y1 - y0)))
            headers.append(header)
        photometry = None
        if zp_centre is not None:
            photometry = scamp_photometry([zp_centre[i] for i in visit_rows])
        write_scamp_head(tmp / "scamp" / f"{visit}.head", headers, photometry)
