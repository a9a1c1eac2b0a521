"""Astrometric accuracy on issue 8's "Done when" field: exported WCS headers against the truth.

    python benchmarks/bench_astrometry.py [--visits 10] [--stars 10000] [--seed 1] [--budget] [--json]

Field (``jointcal_core.simulate.simulate_field`` defaults): MegaCam layout (36 CCDs), 10 dithered
visits over 2.5 years, radial optical distortion (r^3 varying per visit + r^5), initial WCS off by
~0.3 arcsec with ~0.1 arcsec smooth per-CCD errors, position noise from S/N (5 mas bright to
50 mas faint), 1 % gross outliers, stars moving by N(0, 5 mas/yr) per axis, Gaia-like reference
(G < 21, 0.2-1 mas, with motions) at epoch 2016.0. 10 000 stars over the 1.86 deg^2 the dithered
camera covers is 5400 stars / deg^2 (17 < r < 23.5; ~900 / deg^2 in the reference).

Two fits of the in-memory field through the pipeline (``prepare``, ``JointFit``,
``io.outputs.write_outputs``), astrometry only:

- ``constrained``: the default configuration;
- ``fitProperMotion``: the same with ``fitProperMotion=True`` and ``positionErrorPedestal=0``
  (the simulated position errors are exact, so the default 0.02 px pedestal would only bias
  chi2/ndof low, to 0.89; the accuracy is the same within 0.01 mas).

For each: the rms (2-D and per axis, mas) of the *exported* ``wcs/<visit>-<detector>.fits``
headers read back with ``astropy.wcs`` against the true WCS on a 10 x 10 grid over every CCD, the
same for the fitted model itself, the export order(s) and fidelity, chi2/ndof, the fraction of
injected outliers rejected and of good measurements rejected, and the wall time of the fit.

``--budget`` adds the error budget of each fit (mas, 2-D rms over the same grid):

- ``floor``: the same fit of noise-free measurements (true positions, no outliers) with an exact
  reference: what the model cannot represent plus what the convergence leaves;
- ``cramer_rao``: the rms error expected from the measurement and reference noise, from the
  fit's own final normal matrix (model covariance = inverse of the star-marginalised matrix),
  propagated to the grid; ``..._exact_reference``: the same with the reference rows weighted
  x10^6 (a noise-free reference); ``..._chips_known``: with the chip parameters known.

On the default field (seed 1) the fit with motions is at its Cramer-Rao bound (1.64 mas measured,
1.65 predicted), the floor is 0.001 mas and the export adds 0.06 mas (in quadrature: nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

_MAS_PER_DEG = 3.6e6
CONFIGS = {"constrained": {}, "fitProperMotion": {"fitProperMotion": True, "positionErrorPedestal": 0.0}}


def grid_error_mas(sim, pixel_to_sky, n: int = 10) -> np.ndarray:
    """``pixel_to_sky(ccd, x, y)`` minus the truth on an n x n grid (bbox edges included) of every
    ccdImage: (dra cos dec, ddec) in mas, shape (n_ccd * n * n, 2)."""
    out = []
    for c, (x0, y0, x1, y1) in enumerate(sim.field.ccd_images.bbox):
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n)))
        ra, dec = pixel_to_sky(c, x, y)
        ra_t, dec_t = sim.truth.pixel_to_sky(np.full(x.size, c), x, y)
        dra = ((np.asarray(ra) - ra_t + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec_t))
        out.append(np.column_stack([dra, np.asarray(dec) - dec_t]) * _MAS_PER_DEG)
    return np.concatenate(out)


def rms_figures(err: np.ndarray, prefix: str) -> dict:
    return {f"{prefix}_rms_mas": float(np.sqrt(np.mean(np.sum(err ** 2, axis=1)))),
            f"{prefix}_rms_ra_mas": float(np.sqrt(np.mean(err[:, 0] ** 2))),
            f"{prefix}_rms_dec_mas": float(np.sqrt(np.mean(err[:, 1] ** 2)))}


def exported_wcs(out: Path, ccd_images) -> list:
    """astropy WCS of every exported ``wcs/<visit>-<detector>.fits``, in ccdImage order."""
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = []
    for visit, detector in zip(ccd_images.visit, ccd_images.detector):
        with fits.open(out / "wcs" / f"{visit}-{detector}.fits") as hdul, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs.append(WCS(hdul[0].header))
    return wcs


def cramer_rao(problem, sim, ref_weight: float = 1.0, chips_known: bool = False, n: int = 5) -> float:
    """Expected 2-D rms error (mas) of the fitted WCS over every CCD of ``sim``
    (:func:`jointcal_core.models.astrometry_covariance.predicted_wcs_rms_mas`)."""
    from jointcal_core.models.astrometry_covariance import predicted_wcs_rms_mas

    return predicted_wcs_rms_mas(problem, sim.field.ccd_images.bbox, ref_weight=ref_weight,
                                 chips_known=chips_known, n=n)


def noise_free(sim):
    """The simulated field with the true measurement positions and an exact reference."""
    import dataclasses

    t, f = sim.truth, sim.field
    meas = dataclasses.replace(f.measurements, x=t.meas_x_true.copy(), y=t.meas_y_true.copy())
    s = t.ref_star
    ref = dataclasses.replace(f.reference, ra_deg=t.star_ra_deg[s] % 360.0, dec_deg=t.star_dec_deg[s],
                              pm_ra_masyr=t.star_pm_ra_masyr[s], pm_dec_masyr=t.star_pm_dec_masyr[s])
    return dataclasses.replace(f, measurements=meas, reference=ref)


def fit_only(field, overrides: dict):
    from jointcal_core.config import JointcalConfig
    from jointcal_core.pipeline import JointFit, prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = JointFit(prepare(field, JointcalConfig(doPhotometry=False, **overrides)))
        joint.fitters["astrometry"].run()
    return joint


def budget(sim, joint, overrides: dict) -> dict:
    problem = joint.problems["astrometry"]
    out = {"cramer_rao_mas": cramer_rao(problem, sim),
           "cramer_rao_exact_reference_mas": cramer_rao(problem, sim, ref_weight=1e3),
           "cramer_rao_chips_known_mas": cramer_rao(problem, sim, chips_known=True)}
    floor = fit_only(noise_free(sim), overrides).problems["astrometry"]
    out["floor_mas"] = rms_figures(grid_error_mas(sim, floor.pixel_to_sky), "f")["f_rms_mas"]
    return out


def run_case(sim, overrides: dict, with_budget: bool = False) -> dict:
    """Fit the simulated field with ``overrides``, export, and compare with the truth."""
    from astropy.io import fits

    from jointcal_core.config import JointcalConfig
    from jointcal_core.io.outputs import write_outputs
    from jointcal_core.pipeline import JointFit, prepare

    config = JointcalConfig(doPhotometry=False, **overrides)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(sim.field, config)
        if len(prepared.field.measurements) != len(sim.field.measurements):
            raise RuntimeError("the pipeline excluded ccdImages; the truth rows no longer match")
        joint = JointFit(prepared)
        fitter = joint.fitters["astrometry"]
        fitter.run()
    fit_s = time.perf_counter() - t0
    problem = joint.problems["astrometry"]
    out = {"fit_s": fit_s, "converged": bool(fitter.done), "chi2_per_ndof": float(fitter.chi2 / fitter.ndof),
           "n_stars": int(problem.n_stars), "n_model_params": int(problem.n_model_params)}
    res = problem.residuals()
    bad = sim.truth.is_outlier_astrometry
    in_fit = np.asarray(res["used"]) | np.asarray(res["outlier"])
    rejected = np.asarray(res["outlier"])
    out["outliers_rejected_pct"] = 100.0 * np.sum(bad & rejected) / max(np.sum(bad & in_fit), 1)
    out["good_rejected_pct"] = 100.0 * np.sum(~bad & rejected) / max(np.sum(~bad & in_fit), 1)
    out.update(rms_figures(grid_error_mas(sim, problem.pixel_to_sky), "model"))
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_outputs(Path(tmp) / "out", joint)
        out["export_s"] = time.perf_counter() - t1
        ccds = prepared.field.ccd_images
        wcs = exported_wcs(Path(tmp) / "out", ccds)
        orders = [int(fits.getheader(Path(tmp) / "out" / "wcs" / f"{v}-{d}.fits")["A_ORDER"])
                  for v, d in zip(ccds.visit, ccds.detector)]
    out["export_orders"] = {int(k): int(n) for k, n in zip(*np.unique(orders, return_counts=True))}
    exported = grid_error_mas(sim, lambda c, x, y: wcs[c].all_pix2world(x, y, 0))
    out.update(rms_figures(exported, "exported"))
    fidelity = exported - grid_error_mas(sim, problem.pixel_to_sky)
    out["export_vs_model_rms_mas"] = float(np.sqrt(np.mean(np.sum(fidelity ** 2, axis=1))))
    if with_budget:
        out.update(budget(sim, joint, overrides))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--stars", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", action="store_true", help="also the error budget (noise-free fit, Cramer-Rao)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from jointcal_core.simulate import simulate_field

    params = {"camera": "megacam", "n_visits": args.visits, "n_stars": args.stars, "seed": args.seed}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_field(**params)
    rows = []
    for label, overrides in CONFIGS.items():
        rows.append({"fit": label, **run_case(sim, overrides, args.budget)})
    report = {"machine": C.machine(), "field": dict(params, n_measurements=len(sim.field.measurements)),
              "rows": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(json.dumps(report["machine"]))
    print(f"MegaCam field: {args.visits} visits, {args.stars} stars, {len(sim.field.measurements)} measurements, "
          f"seed {args.seed}")
    C.print_table(rows, ["fit", "exported_rms_mas", "exported_rms_ra_mas", "exported_rms_dec_mas", "model_rms_mas",
                         "export_vs_model_rms_mas", "chi2_per_ndof", "outliers_rejected_pct", "good_rejected_pct",
                         "fit_s"])
    if args.budget:
        C.print_table(rows, ["fit", "model_rms_mas", "export_vs_model_rms_mas", "floor_mas", "cramer_rao_mas",
                             "cramer_rao_exact_reference_mas", "cramer_rao_chips_known_mas"], title="error budget (mas)")
    for row in rows:
        print(f"{row['fit']}: export orders {row['export_orders']}, {row['n_model_params']} model parameters, "
              f"{row['n_stars']} fitted stars, converged {row['converged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
