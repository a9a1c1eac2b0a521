"""Write the fitted models: ``wcs/``, ``scamp/``, ``photometry.ecsv`` and ``calibration.json``.

Only the problems' public callables are used (``pixel_to_sky``, ``pixel_to_tangent``,
``tangent_point_deg``, ``pixel_order``, ``zp_mag``), so any model exports the same way.

Speed (a tract has thousands of CCDs): each CCD's model is sampled once for both formats, the
TAN-SIP and TPV headers are fitted, written as card text and measured in numpy on the values as
written (:mod:`jointcal_core.io.wcs_cards`; the files are byte for byte those of
``fit_tan_sip`` + ``write_wcs_fits`` and ``fit_tpv`` + ``write_scamp_head``). Every header of up to
:data:`VERIFY_ALL_UP_TO` CCDs, or an evenly spaced sample of that many, is also re-read through
``astropy.wcs`` and its fidelity must agree with the numpy figures to 0.01 mas.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from threadpoolctl import threadpool_limits

from ..calibration import Calibration
from ..exceptions import JointcalWarning, OutputError
from .scamp_head import scamp_photometry, write_scamp_head_text
from .wcs_cards import card, header_only_fits_bytes, sample_ccd, start_order, tan_sip_export, tpv_export
from .wcs_fits import measure_fidelity

__all__ = ["write_model_files", "fitted_ccds", "build_calibration", "photometry_table", "verification_sample"]


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
    verify = set(verification_sample(rows).tolist())
    for visit in np.unique(ccd.visit[rows]):
        visit_rows = [int(i) for i in rows if ccd.visit[i] == visit]
        blocks = []
        for i in visit_rows:
            sky = _sky_callable(problem, i)
            samples = sample_ccd(sky, ccd.bbox[i], problem.tangent_point_deg(i))
            start = start_order(samples)
            sip_cards, report = tan_sip_export(samples, start=start)
            tpv_cards, tpv_report = tpv_export(samples, start=start)
            if i in verify:
                _verify_with_astropy(sip_cards, report, tpv_cards, tpv_report, sky, samples, visit, ccd.detector[i])
            if not report.meets_limits:
                warnings.warn(f"visit {visit} detector {ccd.detector[i]}: the TAN-SIP export reproduces the "
                              f"model to {report.rms_mas:.2f} mas rms, {report.max_mas:.2f} mas max only",
                              JointcalWarning, stacklevel=2)
            x0, y0, x1, y1 = ccd.bbox[i]
            size = [card("IMAGEW", int(round(x1 - x0)), "[pix] CCD width (NAXIS1 of the image)"),
                    card("IMAGEH", int(round(y1 - y0)), "[pix] CCD height (NAXIS2 of the image)")]
            path = tmp / "wcs" / f"{visit}-{ccd.detector[i]}.fits"
            try:
                path.write_bytes(header_only_fits_bytes(size + sip_cards))
            except OSError as err:
                raise OutputError(f"cannot write the WCS file: {err}", path=str(path)) from err
            blocks.append(tpv_cards)
        photometry = None
        if zp_centre is not None:
            photometry = scamp_photometry([zp_centre[i] for i in visit_rows])
        write_scamp_head_text(tmp / "scamp" / f"{visit}.head", blocks, photometry)


#: every exported header is re-read through astropy.wcs when there are at most this many CCDs;
#: above, an evenly spaced deterministic sample of this size is (the numpy evaluation in
#: io/wcs_cards.py, which measures every CCD, is checked against astropy on the sample)
VERIFY_ALL_UP_TO = 64


def verification_sample(rows: np.ndarray, size: int = VERIFY_ALL_UP_TO) -> np.ndarray:
    """The ccdImage rows whose exported headers are re-read through astropy: all of them up to
    ``size``, else ``size`` evenly spaced ones (first and last included)."""
    rows = np.asarray(rows)
    if rows.size <= size:
        return rows
    return rows[np.unique(np.linspace(0, rows.size - 1, size).round().astype(int))]


def _verify_with_astropy(sip_cards, sip_report, tpv_cards, tpv_report, sky, samples, visit, detector) -> None:
    """Re-read both headers through astropy.wcs and check the numpy fidelity figures (to 0.01 mas)."""
    for cards, report, name in ((sip_cards, sip_report, "TAN-SIP"), (tpv_cards, tpv_report, "TPV")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(fits.Header.fromstring("".join(cards)))
        rms, worst = measure_fidelity(wcs, sky, samples.x_chk, samples.y_chk, samples.ra_chk, samples.dec_chk)
        if not (abs(rms - report.rms_mas) <= 0.01 and abs(worst - report.max_mas) <= 0.01):
            raise OutputError(f"visit {visit} detector {detector}: the {name} header read by astropy.wcs gives "
                              f"{rms:.4g} mas rms / {worst:.4g} mas max, the exporter computed "
                              f"{report.rms_mas:.4g} / {report.max_mas:.4g}; please report this")
