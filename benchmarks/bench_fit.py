"""Time a whole calibration per stage on simulated HSC fields (103 CCDs); print a table.

    python benchmarks/bench_fit.py --case small|tract|large|scaling [--runs 3] [--json]

Cases (HSC layout from the real visitSummaries, ``jointcal_core.camera.hsc_camera``; 1 % outliers;
constrained astrometry + constrainedMagnitude photometry, the default config):

- ``small``: 5 visits, 10k stars (~30k measurements);
- ``tract``: 50 visits, 50k stars dithered over 0.9 deg (~420k measurements);
- ``large``: 200 visits, 50k stars dithered over 0.9 deg (~1.7M measurements);
- ``scaling``: 50 visits (fixed model size), stars from 1.2k to 250k (measurements 1e4 -> 2e6).

Each run happens in a fresh process on LDAC files written once (cached in
``$JOINTCAL_BENCH_CACHE``): ``read`` (LDAC + reference parquet), ``select``, ``associate``,
``build`` (both problems and fitters), ``solve`` (Gauss-Newton steps of both fits), ``clip``
(outlier passes), ``export`` (``io.outputs.write_outputs``: wcs/, scamp/, calibration.json,
tables; no HTML report). Wall seconds and sampled peak RSS per stage; accuracy of the fitted
models against the simulation's truth over a pixel grid of every CCD. Headline numbers are
medians over ``--runs`` runs.
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

CASES = {
    "small": dict(n_visits=5, n_stars=10_000, dither_deg=0.05),
    "tract": dict(n_visits=50, n_stars=50_000, dither_deg=0.9),
    "large": dict(n_visits=200, n_stars=50_000, dither_deg=0.9),
}
SCALING_STARS = (1_000, 5_000, 25_000, 100_000, 200_000)
STAGES = ("read", "select", "associate", "build", "solve", "clip", "export")


def run_once(folder: Path, overrides: list[str] | None = None, export: bool = True,
             refcat: str = "reference.parquet") -> dict:
    """One calibration of the field in ``folder`` (reference catalog ``folder/refcat``); returns
    timings, memory, sizes, accuracy."""
    from jointcal_core.config import JointcalConfig
    from jointcal_core.fit import FitStatus
    from jointcal_core.io.outputs import write_outputs
    from jointcal_core.pipeline import JointFit, prepare
    from jointcal_core.selection import select_sources
    from jointcal_core.simtruth import load_truth
    from jointcal_core.task import JointcalTask

    config = JointcalConfig()
    for item in overrides or []:
        config.set_override(item)
    meter = C.StageMeter()
    out: dict = {}
    t_all = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with meter.stage("read"):
            field = JointcalTask(config).load(C.catalogs(folder), refcat=folder / refcat)
        with meter.stage("select"):
            selection = select_sources(field, config)
        with meter.stage("associate"):
            prepared = prepare(field, config, selection=selection)
        with meter.stage("build"):
            joint = JointFit(prepared)
        with meter.stage("fit"):
            for kind, fitter in joint.fitters.items():
                t0 = time.perf_counter()
                fitter.run()
                out[f"fit_{kind}_s"] = time.perf_counter() - t0
        with meter.stage("export"):
            if export:
                with tempfile.TemporaryDirectory() as tmp:
                    write_outputs(Path(tmp) / "out", joint)
    out["total_s"] = time.perf_counter() - t_all
    meter.close()
    steps = joint.history
    clip = sum(s.seconds for s in steps if s.status == FitStatus.OUTLIERS_REJECTED)
    meter.seconds["clip"] = clip
    meter.seconds["solve"] = meter.seconds.pop("fit") - clip
    meter.peak_mb["solve"] = meter.peak_mb["clip"] = meter.peak_mb.pop("fit")
    for s in STAGES:
        out[f"{s}_s"] = meter.seconds.get(s, 0.0)
        out[f"{s}_peak_mb"] = meter.peak_mb.get(s, 0.0)
    out["peak_rss_mb"] = C.process_peak_rss_mb()
    gn = [s for s in steps if s.status != FitStatus.OUTLIERS_REJECTED and s.kind == "astrometry"]
    out["astrometry_steps"] = len(gn)
    out["astrometry_step_s"] = float(np.median([s.seconds for s in gn])) if gn else float("nan")
    out["photometry_steps"] = sum(1 for s in steps if s.status != FitStatus.OUTLIERS_REJECTED
                                  and s.kind == "photometry")
    out["outliers"] = sum(s.n_outliers for s in steps)
    out["n_ccd"] = len(field.ccd_images)
    out["n_measurements"] = len(field.measurements)
    out["n_stars"] = int(prepared.association.n_stars)
    out["n_params_astrometry"] = int(joint.problems["astrometry"].n_model_params) if "astrometry" in joint.problems else 0
    out.update(accuracy(joint, load_truth(folder)))
    return out


def accuracy(joint, truth) -> dict:
    """Fitted models (exact, not the exported approximations) against the simulation truth."""
    ccd = joint.prepared.field.ccd_images
    out = {}
    if "astrometry" in joint.problems:
        p = joint.problems["astrometry"]
        out.update(C.astrometry_rms_mas(truth, ccd.visit, ccd.detector, ccd.bbox, p.pixel_to_sky))
    if "photometry" in joint.problems:
        p = joint.problems["photometry"]
        out.update(C.photometry_rms_mmag(truth, ccd.visit, ccd.detector, ccd.bbox, p.zp_mag))
    return out


def measured(case: str, runs: int, **extra) -> dict:
    params = dict(CASES[case], **extra)
    folder = C.simulated_dir("hsc", **params)
    results = [C.run_isolated([__file__, "--worker", str(folder)]) for _ in range(runs)]
    res = C.median_of(results)
    res["case"] = case
    return res


COLUMNS = ["case", "n_measurements", "n_stars", "n_runs", *[f"{s}_s" for s in STAGES], "total_s",
           "astrometry_step_s", "peak_rss_mb", "astrometry_rms_mas", "photometry_rms_no_offset_mmag"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "scaling"], default="small")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (medians reported)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("-c", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--refcat", default="reference.parquet", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_once(Path(args.worker), args.overrides, refcat=args.refcat)))
        return 0
    if args.case == "scaling":
        rows = []
        for n_stars in SCALING_STARS:
            folder = C.simulated_dir("hsc", n_visits=50, n_stars=n_stars, dither_deg=0.9)
            runs = [C.run_isolated([__file__, "--worker", str(folder)]) for _ in range(args.runs)]
            row = C.median_of(runs)
            row["case"] = f"scaling-{n_stars}"
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)     # progress: one row per size
    else:
        rows = [measured(args.case, args.runs)]
    report = {"machine": C.machine(), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(json.dumps(report["machine"]))
        cols = COLUMNS + ([] if args.case != "scaling" else [])
        C.print_table(rows, cols)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
