"""Write the fitted models: ``wcs/``, ``scamp/``, ``photometry.ecsv`` and ``calibration.json``.

Only the problems' public callables are used (``pixel_to_sky``, ``pixel_to_tangent``,
``tangent_point_deg``, ``pixel_order``, ``zp_mag``), so any model exports the same way.

Speed (a tract has thousands of CCDs): the problems are evaluated for many CCDs per call (``ccd``
given per pixel). ``calibration.json`` is fitted first (:meth:`Calibration.from_batch`, exact to
1e-6 mas); each CCD is then sampled once from those polynomials for both formats
(:func:`all_samples`), the TAN-SIP and TPV headers are fitted, written as card text and measured
in numpy on the values as written (:mod:`jointcal_core.io.wcs_cards`; the files are byte for byte
those of ``fit_tan_sip`` + ``write_wcs_fits`` and ``fit_tpv`` + ``write_scamp_head`` on the same
samples). A few headers (:func:`verification_sample`: the first and last CCD and one of every
exported order pair) are also re-read through ``astropy.wcs``, compared with the model's own
``pixel_to_sky``, and their fidelity must agree with the numpy figures to 0.01 mas.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..calibration import Calibration
from ..exceptions import InputError, JointcalWarning, OutputError
from ..threads import blas_threads
from .outputs import ExportInputs, residuals_of
from .scamp_head import scamp_photometry, write_scamp_head_text
from .wcs_batch import SampleBatch, batch_start_orders, tan_sip_batch, tpv_batch
from .wcs_cards import CcdSamples, card, header_only_fits_bytes
from .wcs_fits import _check_bbox, measure_fidelity, pixel_grid

__all__ = ["write_model_files", "fitted_ccds", "build_calibration", "photometry_table", "verification_sample",
           "all_samples", "sample_batches"]


def fitted_ccds(joint, *, inputs: ExportInputs | None = None) -> np.ndarray:
    """Rows of the field's ccdImages that take part in at least one fit."""
    used = np.zeros(len(joint.prepared.field.ccd_images), bool)
    for kind in joint.problems:
        res = residuals_of(joint, kind, inputs)
        ccd = np.asarray(res["ccd"])[np.asarray(res["used"], bool)]
        used[np.unique(ccd)] = True
    return np.flatnonzero(used)


def _sky_callable(problem, ccd):
    return lambda x, y: problem.pixel_to_sky(ccd, x, y)


def build_calibration(joint, rows: np.ndarray | None = None, *, inputs: ExportInputs | None = None) -> Calibration:
    """The exact, model-agnostic calibration of the fitted ccdImages.

    The problems' ``pixel_to_tangent`` and ``zp_mag`` are evaluated for many CCDs per call
    (``ccd`` given per pixel), see :meth:`~jointcal_core.calibration.Calibration.from_batch`.
    """
    field = joint.prepared.field
    rows = np.asarray(fitted_ccds(joint, inputs=inputs) if rows is None else rows, dtype=np.int64)
    ccd = field.ccd_images
    table = (ccd.visit[rows], ccd.detector[rows], ccd.bbox[rows])
    astrometry = photometry = None
    if "astrometry" in joint.problems:
        p = joint.problems["astrometry"]
        astrometry = (lambda k, x, y, p=p: p.pixel_to_tangent(rows[k], x, y),
                      np.array([p.tangent_point_deg(i) for i in rows]).reshape(-1, 2),
                      [p.pixel_order(i) for i in rows])
    if "photometry" in joint.problems:
        p = joint.problems["photometry"]
        space = "flux" if joint.prepared.config.photometryModel.endswith("Flux") else "mag"
        photometry = (lambda k, x, y, p=p: p.zp_mag(rows[k], x, y), [p.pixel_order(i) for i in rows], space)
    meta = {"band": field.band, "config": joint.prepared.config.to_dict()}
    return Calibration.from_batch(table, astrometry=astrometry, photometry=photometry, metadata=meta)


def _group_slices(key: np.ndarray):
    """(order, {value: slice of order}) grouping ``key`` once (stable: rows keep their order)."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    values, starts = np.unique(sorted_key, return_index=True)
    ends = np.r_[starts[1:], sorted_key.size]
    return order, {int(v): slice(int(a), int(b)) for v, a, b in zip(values, starts, ends)}


def photometry_table(joint, rows: np.ndarray, *, inputs: ExportInputs | None = None) -> Table:
    """Zero point at each CCD centre, its statistical error and the number of stars."""
    field = joint.prepared.field
    problem = joint.problems["photometry"]
    ccd = field.ccd_images
    rows = np.asarray(rows, dtype=np.int64)
    res = residuals_of(joint, "photometry", inputs)
    used = np.asarray(res["used"], bool)
    r_ccd = np.asarray(res["ccd"])[used].astype(np.int64)
    r_star = np.asarray(res["star"])[used].astype(np.int64)
    r_mmag = np.asarray(res["residual_mmag"], float)[used]
    centers = ccd.centers_pix()
    zp = np.asarray(problem.zp_mag(rows, centers[rows, 0], centers[rows, 1]), dtype=float).reshape(rows.size)
    # per CCD at once (not one np.unique per CCD: 20,600 of them at 200 visits): distinct stars,
    # and the statistical error of a mean offset, residual rms over sqrt(stars)
    n_ccd, n_star_ids = len(ccd), int(r_star.max(initial=0)) + 1
    # distinct (ccd, star) pairs by a sort: numpy 2's hashing np.unique took 2.4 s on these 1.8M
    # keys (a range of 1e9), the sort 0.03 s
    pairs = np.sort(r_ccd * n_star_ids + r_star)
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if pairs.size else pairs
    n_stars = np.bincount(pairs // n_star_ids, minlength=n_ccd)[rows]
    count = np.bincount(r_ccd, minlength=n_ccd)[rows]
    sum_sq = np.bincount(r_ccd, weights=r_mmag ** 2, minlength=n_ccd)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(n_stars >= 2, np.sqrt(sum_sq / count) / 1000 / np.sqrt(n_stars), np.nan)
    table = Table()
    table["visit"] = ccd.visit[rows]
    table["detector"] = ccd.detector[rows]
    table["zeropoint"] = zp
    table["zeropoint"].unit = "mag"
    table["zeropoint"].description = "AB magnitude of one count at the CCD centre"
    table["zeropoint_err"] = err
    table["zeropoint_err"].unit = "mag"
    table["n_stars"] = n_stars.astype(np.int64)
    return table


def write_model_files(tmp: Path, joint, *, inputs: ExportInputs | None = None) -> None:
    """Write everything the fitted models define into the (temporary) output folder.

    ``inputs``: the problems' residuals when already computed (:class:`ExportInputs`).
    """
    # many small array operations: one BLAS thread is faster on a shared machine
    with blas_threads(1):
        _write_model_files(tmp, joint, inputs)


def all_samples(calibration: Calibration) -> list[CcdSamples]:
    """:func:`~jointcal_core.io.wcs_cards.sample_ccd` of every CCD of ``calibration`` (same grids),
    evaluated with the calibration's polynomials instead of the model's callables."""
    out: list = [None] * len(calibration.ccds)
    for index, batch in sample_batches(calibration):
        for k, i in enumerate(index.tolist()):
            out[i] = batch.ccd(k)
    return out


def sample_batches(calibration: Calibration) -> list[tuple[np.ndarray, SampleBatch]]:
    """The CCDs of ``calibration`` sampled on the grids of ``sample_ccd``, one :class:`SampleBatch`
    per (bbox, polynomial terms): ``(indices into calibration.ccds, batch)``.

    The calibration reproduces the model to 1e-6 mas (checked when it is built) and is cheap to
    evaluate: the CCDs of one bbox share the Chebyshev design matrix of the grid, so a batch is
    one matrix product (the check grid is de-projected to the sky only on demand).
    """
    groups: dict = {}
    for i, c in enumerate(calibration.ccds):
        box = _check_bbox(c.bbox)
        groups.setdefault((tuple(box.tolist()), c.astrometry.terms), []).append(i)
    out = []
    for (box, _), members in groups.items():
        box = np.asarray(box)
        field = calibration.ccds[members[0]].astrometry
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        x_fit, y_fit = pixel_grid(box, _SAMPLE_GRID)
        x_chk, y_chk = pixel_grid(box, _SAMPLE_GRID + 1)
        design = field.design(np.r_[x_fit, x_chk], np.r_[y_fit, y_chk])
        coef = np.stack([calibration.ccds[i].astrometry.coefficients for i in members])     # (K, terms, 2)
        values = np.matmul(design, coef)                                                    # (K, points, 2)
        xi, eta = values[..., 0], values[..., 1]
        crval = np.array([[float(t) for t in calibration.ccds[i].tangent_point_deg] for i in members])
        n = x_fit.size
        bad = ~np.all(np.isfinite(values), axis=(1, 2))
        if bad.any():
            c = calibration.ccds[members[int(np.flatnonzero(bad)[0])]]
            raise InputError("the model gave non-finite tangent-plane positions on the CCD; check the fit",
                             visit=c.visit, detector=c.detector)
        batch = SampleBatch(centre, x_fit - centre[0], y_fit - centre[1], x_chk, y_chk, crval,
                            np.ascontiguousarray(xi[:, :n]), np.ascontiguousarray(eta[:, :n]),
                            np.ascontiguousarray(xi[:, n:]), np.ascontiguousarray(eta[:, n:]))
        out.append((np.asarray(members), batch))
    return out


#: fidelity the exported headers must reach (issue 8: 1 mas rms, 3 mas max over the CCD); a header
#: that does not is still written, with a JointcalWarning
EXPORT_LIMIT_RMS_MAS, EXPORT_LIMIT_MAX_MAS = 1.0, 3.0
#: fidelity the exporter aims for: the lowest TAN-SIP / TPV order reaching it is written (up to
#: order 7; else the best order). A fit can be accurate to < 1 mas (0.9-1.6 mas rms measured on the
#: simulated MegaCam fields), so an export error of up to 1 mas would add ~40 % to it; 0.1 mas rms
#: adds < 1 % in quadrature. The constrained model of chip order 1 and visit order 5 is a pixel
#: polynomial of order 5 in its visit tangent plane (CRVAL), so order 5 reproduces it exactly.
EXPORT_TARGET_RMS_MAS, EXPORT_TARGET_MAX_MAS = 0.1, 0.3

#: sample grid of ``sample_ccd`` (its defaults: max_order 7, grid 40)
_SAMPLE_GRID = 40


def _write_model_files(tmp: Path, joint, inputs: ExportInputs | None) -> None:
    field = joint.prepared.field
    ccd = field.ccd_images
    rows = fitted_ccds(joint, inputs=inputs)
    calibration = build_calibration(joint, rows)
    calibration.to_json(tmp / "calibration.json")
    zp_centre = None
    if "photometry" in joint.problems:
        table = photometry_table(joint, rows, inputs=inputs)
        table.write(tmp / "photometry.ecsv", format="ascii.ecsv")
        zp_centre = dict(zip(rows.tolist(), np.asarray(table["zeropoint"]).tolist()))
    if "astrometry" not in joint.problems:
        return
    (tmp / "wcs").mkdir()
    (tmp / "scamp").mkdir()
    exported = _export_headers(calibration, rows)
    orders = np.array([[exported[int(i)][1].order, exported[int(i)][3].order] for i in rows]).reshape(-1, 2)
    verify = set(verification_sample(rows, orders).tolist())
    order, groups = _group_slices(ccd.visit[rows])
    # thousands of small files: creating them is mostly waiting on the filesystem, which two
    # threads overlap (measured 2.3 -> 0.6-0.9 s for 5150 files)
    with ThreadPoolExecutor(max_workers=2) as writer:
        pending = []
        _write_visits(tmp, joint, rows, exported, verify, order, groups, zp_centre, writer, pending)
        for future in pending:
            future.result()         # the first failure, as an OutputError naming its file


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as err:
        raise OutputError(f"cannot write the WCS file: {err}", path=str(path)) from err


def _write_visits(tmp, joint, rows, exported, verify, order, groups, zp_centre, writer, pending) -> None:
    ccd = joint.prepared.field.ccd_images
    for visit, sel in groups.items():
        visit_rows = [int(i) for i in rows[order[sel]]]
        blocks = []
        for i in visit_rows:
            sip_text, report, tpv_text, tpv_report, samples = exported[i]
            if i in verify:
                _verify_with_astropy(sip_text, report, tpv_text, tpv_report,
                                     _sky_callable(joint.problems["astrometry"], i), samples(), visit, ccd.detector[i])
            if not (report.rms_mas <= EXPORT_LIMIT_RMS_MAS and report.max_mas <= EXPORT_LIMIT_MAX_MAS):
                warnings.warn(f"visit {visit} detector {ccd.detector[i]}: the TAN-SIP export reproduces the "
                              f"model to {report.rms_mas:.2f} mas rms, {report.max_mas:.2f} mas max only",
                              JointcalWarning, stacklevel=2)
            x0, y0, x1, y1 = ccd.bbox[i]
            size = card("IMAGEW", int(round(x1 - x0)), "[pix] CCD width (NAXIS1 of the image)") + \
                card("IMAGEH", int(round(y1 - y0)), "[pix] CCD height (NAXIS2 of the image)")
            path = tmp / "wcs" / f"{visit}-{ccd.detector[i]}.fits"
            pending.append(writer.submit(_write_bytes, path, header_only_fits_bytes(size + sip_text)))
            blocks.append([tpv_text[k:k + 80] for k in range(0, len(tpv_text), 80)])
        photometry = None
        if zp_centre is not None:
            photometry = scamp_photometry([zp_centre[i] for i in visit_rows])
        pending.append(writer.submit(write_scamp_head_text, tmp / "scamp" / f"{visit}.head", blocks, photometry))


def _export_headers(calibration: Calibration, rows: np.ndarray) -> dict:
    """ccdImage row -> (TAN-SIP text, its report, TPV text, its report, samples getter), every CCD
    fitted in batches of one sampling grid (:mod:`jointcal_core.io.wcs_batch`)."""
    out = {}
    for index, batch in sample_batches(calibration):
        starts = batch_start_orders(batch, rms_mas=EXPORT_TARGET_RMS_MAS, max_mas=EXPORT_TARGET_MAX_MAS)
        sip, sip_reports = tan_sip_batch(batch, starts, rms_mas=EXPORT_TARGET_RMS_MAS, max_mas=EXPORT_TARGET_MAX_MAS)
        tpv, tpv_reports = tpv_batch(batch, starts, rms_mas=EXPORT_TARGET_RMS_MAS, max_mas=EXPORT_TARGET_MAX_MAS)
        for k, i in enumerate(index.tolist()):
            out[int(rows[i])] = (sip[k], sip_reports[k], tpv[k], tpv_reports[k], lambda k=k, b=batch: b.ccd(k))
    return out


#: at most this many headers are re-read through astropy.wcs (each costs ~15 ms; checking 64 took
#: 1.9 s, half the whole run of a 6-visit field)
VERIFY_AT_MOST = 16


def verification_sample(rows: np.ndarray, orders: np.ndarray | None = None,
                        size: int = VERIFY_AT_MOST) -> np.ndarray:
    """The ccdImage rows whose exported headers are re-read through astropy.wcs.

    The check guards the numpy evaluation of the written cards (io/wcs_cards.py), whose code
    path depends only on the exported orders: so the first and last row, and the first row of
    every distinct order pair, are checked; up to ``size`` rows, the rarest pairs first.

    Parameters
    ----------
    rows : ndarray of int, shape (n,)
        The exported ccdImage rows, in export order.
    orders : ndarray of int, shape (n, k), optional
        Each row's exported orders (TAN-SIP, TPV); without it, ``size`` evenly spaced rows.
    """
    rows = np.asarray(rows)
    if rows.size <= 2:
        return rows
    if orders is None:
        return rows[np.unique(np.linspace(0, rows.size - 1, min(size, rows.size)).round().astype(int))]
    _, first, counts = np.unique(np.asarray(orders), axis=0, return_index=True, return_counts=True)
    firsts = first[np.argsort(counts, kind="stable")][:max(0, size - 2)]
    return rows[np.unique(np.r_[0, rows.size - 1, firsts])]


def _verify_with_astropy(sip_cards, sip_report, tpv_cards, tpv_report, sky, samples, visit, detector) -> None:
    """Re-read both headers through astropy.wcs and check the numpy fidelity figures (to 0.01 mas)."""
    for cards, report, name in ((sip_cards, sip_report, "TAN-SIP"), (tpv_cards, tpv_report, "TPV")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(fits.Header.fromstring("".join(cards)))
        # the model itself, not the samples (taken from calibration.json's polynomials)
        rms, worst = measure_fidelity(wcs, sky, samples.x_chk, samples.y_chk)
        if not (abs(rms - report.rms_mas) <= 0.01 and abs(worst - report.max_mas) <= 0.01):
            raise OutputError(f"visit {visit} detector {detector}: the {name} header read by astropy.wcs gives "
                              f"{rms:.4g} mas rms / {worst:.4g} mas max, the exporter computed "
                              f"{report.rms_mas:.4g} / {report.max_mas:.4g}; please report this")
