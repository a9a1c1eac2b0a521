"""Time reading, selecting and associating ~10^6 detections; print a table (no pass/fail).

    python benchmarks/bench_association.py [--stars 200000] [--visits 10] [--seed 3] [--no-io] [--json]

A MegaCam field (36 CCDs per visit) is simulated with ``jointcal_core.simulate``; unless
``--no-io`` it is written as FITS_LDAC catalogs (one per visit) and read back with
``jointcal_core.io.ldac.read_ldac_exposures``, so the read time is that of real files. Then
``select_sources`` and ``associate`` run on the field as read. Completeness and purity are the
pair scores of ``jointcal_core.association.pair_completeness_purity`` against the simulation's
truth. Peak RSS is the process maximum (``resource.getrusage``), so it includes the simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from jointcal_core.association import associate, pair_completeness_purity
from jointcal_core.config import JointcalConfig
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field, write_simulated_field


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 1024 ** 2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _read_back(sim, directory: Path):
    """Write the simulated field as LDAC and read it back; returns (field, seconds write, seconds read)."""
    from jointcal_core.io.ldac import read_ldac_exposures

    t0 = time.perf_counter()
    write_simulated_field(sim, directory)
    t1 = time.perf_counter()
    ccds, meas = read_ldac_exposures([directory / f"{visit}.cat" for visit in sim.field.ccd_images.visits])
    t2 = time.perf_counter()
    field = dataclasses.replace(sim.field, ccd_images=ccds, measurements=meas)
    return field, t1 - t0, t2 - t1


def run(n_stars: int, n_visits: int, seed: int, do_io: bool) -> dict:
    out = {"n_stars_simulated": n_stars, "n_visits": n_visits, "seed": seed}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_field(camera="megacam", n_visits=n_visits, n_stars=n_stars, seed=seed)
    out["simulate_s"] = time.perf_counter() - t0
    field, truth_star = sim.field, sim.truth.meas_star
    out["read"] = "in-memory"
    if do_io:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read, out["write_ldac_s"], out["read_ldac_s"] = _read_back(sim, Path(tmp))
        same_rows = (len(read.measurements) == len(field.measurements)
                     and np.allclose(read.measurements.x, field.measurements.x, atol=1e-3))
        out["read"] = "LDAC files" + ("" if same_rows else " (row order differs: no truth scores)")
        truth_star = truth_star if same_rows else None
        field = read
    out["n_ccd_images"] = len(field.ccd_images)
    out["n_detections"] = len(field.measurements)
    config = JointcalConfig()
    t0 = time.perf_counter()
    selection = select_sources(field, config)
    out["select_s"] = time.perf_counter() - t0
    out["n_selected"] = selection.n_kept
    t0 = time.perf_counter()
    assoc = associate(field, selection.keep, config)
    out["associate_s"] = time.perf_counter() - t0
    out.update({k: assoc.summary()[k] for k in ("n_stars", "n_associated_measurements", "n_duplicates",
                                                 "collected_refStars", "matched_fittedStars")})
    if truth_star is not None:
        visit = field.ccd_images.visit[field.measurements.ccd]
        c, p = pair_completeness_purity(assoc.star, np.where(selection.keep, truth_star, -1), visit)
        out["pair_completeness"], out["pair_purity"] = c, p
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=200_000, help="simulated stars (200k: ~10^6 detections)")
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-io", action="store_true", help="skip writing and reading LDAC files")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    result = run(args.stars, args.visits, args.seed, not args.no_io)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        text = f"{value:.4f}" if isinstance(value, float) and value < 1.5 else (
            f"{value:.2f}" if isinstance(value, float) else str(value))
        print(f"{key:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
