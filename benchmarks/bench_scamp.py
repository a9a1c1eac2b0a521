"""jointcal (this package) side by side with SCAMP 2.10 on the same simulated MegaCam field.

    python benchmarks/bench_scamp.py [--visits 6] [--stars 24000] [--runs 1] [--json]

A MegaCam-like field (36 CCDs, 6 visits over 2.5 years, ~73k measurements, 1 % outliers, Gaia-like
reference at epoch 2016.0 with proper motions) is simulated and written as FITS_LDAC. SCAMP reads
the same catalogs and reference (``ASTREF_CATALOG FILE``, no network, ``CHECKPLOT_TYPE NONE``,
``WRITE_XML N``, ``SOLVE_PHOTOM N``) in two set-ups:

- ``scamp-exposure``: the catalogs' own initial WCS, one distortion polynomial per exposure
  (``STABILITY_TYPE EXPOSURE``, ``DISTORT_DEGREES 2``, ``MATCH N``). SCAMP does not read SIP, so
  the initial TAN-SIP headers are given to it converted to TPV (the same mapping to < 1 mas);
- ``scamp-instrument``: a common focal-plane header (``AHEADER_GLOBAL``: SCAMP's real
  ``megacam.ahead`` layout, identity PV, CRVAL = the telescope pointing from the catalog header),
  ``STABILITY_TYPE INSTRUMENT``, ``MATCH Y``, ``CROSSID_RADIUS 8`` (DISTORT_DEGREES 3, SCAMP's default);
- ``scamp-exposure-deg3``: the first set-up with ``DISTORT_DEGREES 3`` (degree 2 cannot follow the
  simulated radial distortion, r^3 + r^5; degree 5 was tried and is unstable).

SCAMP 2.10 ignores reference proper motions, so with the reference 0-2 years from the exposures
``ASTREF_WEIGHT`` is lowered to 0.03 (with 1.0 the solution follows the reference positions at the
wrong epoch). Accuracy: each SCAMP ``.head`` applied to its catalog header (the ``.head`` cards
override the catalog's, as SCAMP/SWarp do), evaluated with astropy.wcs on a grid of every CCD,
against the simulation truth; jointcal's fitted model on the same grid (constrained astrometry,
then with ``fitProperMotion``), reading the same LDAC reference. Times are wall seconds for the
whole run: SCAMP's process; jointcal's read, fit and every export in a fresh Python process with
its modules imported (``bench_fit.py --worker``: how a pipeline calls it), and the same run as a
``jointcal run`` command (interpreter start and imports included).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

_WCS_CARD = re.compile(r"^(WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CD\d_\d|RADESYS|EQUINOX|(A|B|AP|BP)_\w+|PV\d_\d+)$")


def _cards(text: str) -> list[str]:
    return [text[i:i + 80] for i in range(0, len(text), 80)]


def _replace_wcs(header_text: str, wcs_cards: list[str], crval=None) -> str:
    """Header text with its WCS cards replaced by ``wcs_cards`` (and CRVAL by ``crval`` if given)."""
    from jointcal_core.io.wcs_cards import card
    kept = [c for c in _cards(header_text) if not _WCS_CARD.match(c[:8].strip())]
    new = list(wcs_cards)
    if crval is not None:
        new = [card("CRVAL1", float(crval[0])) if c.startswith("CRVAL1") else
               card("CRVAL2", float(crval[1])) if c.startswith("CRVAL2") else c for c in new]
    return "".join(kept + new)


def write_scamp_inputs(sim, folder: Path) -> dict:
    """SCAMP copies of the catalogs: ``exposure/`` (initial WCS as TPV) and ``instrument/``
    (CRVAL = pointing; the layout comes from ``focal.ahead``)."""
    from jointcal_core.camera import MEGACAM_AHEAD
    from jointcal_core.io.ldac_write import measurements_to_ldac, write_ldac_exposure
    from jointcal_core.io.scamp_head import read_scamp_head
    from jointcal_core.io.wcs_cards import card, sample_ccd, tpv_export

    f = sim.field
    ccds, meas = f.ccd_images, f.measurements
    bounds = np.searchsorted(meas.ccd, np.arange(len(ccds) + 1))
    texts = {"exposure": [], "instrument": []}
    for i in range(len(ccds)):
        w = ccds.wcs[i]
        s = sample_ccd(lambda x, y, w=w: w.all_pix2world(x, y, 0), ccds.bbox[i], tuple(w.wcs.crval))
        tpv, _ = tpv_export(s)
        texts["exposure"].append(_replace_wcs(sim.header_text[i], tpv))
        pointing = (ccds.boresight_ra_deg[i], ccds.boresight_dec_deg[i])
        texts["instrument"].append(_replace_wcs(sim.header_text[i], tpv, crval=pointing))
    for kind in texts:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for visit in ccds.visits:
            rows = np.flatnonzero(ccds.visit == visit)
            tables = [measurements_to_ldac(meas.x[bounds[i]:bounds[i + 1]], meas.y[bounds[i]:bounds[i + 1]],
                                           meas.var_x[bounds[i]:bounds[i + 1]], meas.var_y[bounds[i]:bounds[i + 1]],
                                           meas.cov_xy[bounds[i]:bounds[i + 1]], meas.flux[bounds[i]:bounds[i + 1]],
                                           meas.flux_err[bounds[i]:bounds[i + 1]], meas.flags[bounds[i]:bounds[i + 1]],
                                           ccds.zp_mag[i]) for i in rows]
            write_ldac_exposure(folder / kind / f"{visit}.cat", [texts[kind][i] for i in rows], tables)
    # the focal-plane header: SCAMP's MegaCam layout (CRPIX, CD per CCD) with identity TPV
    blocks = []
    for h in read_scamp_head(MEGACAM_AHEAD):
        lines = [card("CTYPE1", "RA---TPV"), card("CTYPE2", "DEC--TPV")]
        lines += [card(k, float(h[k])) for k in ("CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")]
        lines += [card("PV1_1", 1.0), card("PV2_1", 1.0)]
        blocks.append("\n".join(lines) + "\nEND     ")
    (folder / "instrument" / "focal.ahead").write_text("\n".join(blocks) + "\n")
    return texts


def run_scamp(folder: Path, kind: str, reference: Path, degree: int = 2) -> float:
    """Run SCAMP on ``folder/kind/*.cat``; returns the wall time (``degree``: DISTORT_DEGREES of the
    exposure set-up)."""
    work = folder / kind
    for old in work.glob("*.head"):
        old.unlink()
    config = subprocess.run(["scamp", "-d"], capture_output=True, text=True, check=True).stdout
    (work / "default.scamp").write_text(config)
    cats = sorted(p.name for p in work.glob("*.cat"))
    args = ["scamp", *cats, "-c", "default.scamp", "-ASTREF_CATALOG", "FILE", "-ASTREFCAT_NAME", str(reference),
            "-ASTREF_WEIGHT", "0.03", "-SOLVE_PHOTOM", "N", "-CHECKPLOT_TYPE", "NONE", "-WRITE_XML", "N",
            "-VERBOSE_TYPE", "QUIET", "-NTHREADS", "2"]
    if kind == "exposure":
        args += ["-STABILITY_TYPE", "EXPOSURE", "-DISTORT_DEGREES", str(degree), "-MATCH", "N"]
    else:
        args += ["-STABILITY_TYPE", "INSTRUMENT", "-AHEADER_GLOBAL", "focal.ahead", "-MATCH", "Y",
                 "-CROSSID_RADIUS", "8"]
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"SCAMP ({kind}) failed: {out.stderr[-2000:]}")
    return seconds


def scamp_accuracy(folder: Path, kind: str, texts: list, sim, truth) -> dict:
    """SCAMP's .head applied to every catalog header, against the truth."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from jointcal_core.io.scamp_head import read_scamp_head
    ccds = sim.field.ccd_images
    wcs = []
    for visit in ccds.visits:
        rows = np.flatnonzero(ccds.visit == visit)
        heads = read_scamp_head(folder / kind / f"{visit}.head")
        for i, head in zip(rows, heads):
            header = fits.Header.fromstring(texts[i])
            for c in head.cards:
                if c.keyword and c.keyword not in ("COMMENT", "HISTORY", ""):
                    header[c.keyword] = c.value
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs.append(WCS(header))
    return C.astrometry_rms_mas(truth, ccds.visit, ccds.detector, ccds.bbox,
                                lambda i, x, y: wcs[i].all_pix2world(x, y, 0))


def run_cli(folder: Path) -> float:
    """Wall time of ``jointcal run`` on the field (astrometry only, no report), as SCAMP is timed."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "jointcal_core.cli", "run", *map(str, C.catalogs(folder)),
                "--refcat", str(folder / "reference.cat"), "-c", "doPhotometry=False", "--no-report", "-q",
                "-o", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        out = subprocess.run(args, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"jointcal run failed: {out.stderr[-2000:]}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=6)
    parser.add_argument("--stars", type=int, default=24_000, help="24k: ~73k measurements")
    parser.add_argument("--runs", type=int, default=1, help="runs of each program (median reported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("scamp") is None:
        print("SCAMP is not installed (apt-get install scamp)")
        return 1
    from jointcal_core.simulate import simulate_field, write_simulated_field
    params = dict(n_visits=args.visits, n_stars=args.stars, seed=1)
    folder = C.CACHE / f"scamp-megacam-{args.visits}v-{args.stars}s"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_field(camera="megacam", **params)
        if not (folder / "done").exists():
            write_simulated_field(sim, folder)
            (folder / "done").write_text("ok")
    texts = write_scamp_inputs(sim, folder)
    truth = sim.truth
    # the two set-ups of the issue, plus the exposure set-up at degree 3 (degree 2 cannot follow
    # the simulated radial r^3 + r^5 distortion; degree 5 was measured unstable: 17 mas)
    setups = (("scamp-exposure", "exposure", 2), ("scamp-instrument", "instrument", 3),
              ("scamp-exposure-deg3", "exposure", 3))
    bench = str(Path(__file__).resolve().parent / "bench_fit.py")
    # jointcal reads the same LDAC reference as SCAMP (reference.cat: positions, motions, epoch)
    ours_setups = (("jointcal constrained", []), ("jointcal fitProperMotion", ["-c", "fitProperMotion=True"]))
    times = {label: [] for label, _, _ in setups}
    accuracy, ours_runs, cli_times = {}, {label: [] for label, _ in ours_setups}, []
    # the programs take turns, round after round: this shared machine's speed drifts by 20-40 %
    # over minutes, and each round's ratio compares runs made under the same conditions
    for round_ in range(args.runs):
        for label, kind, degree in setups:
            times[label].append(run_scamp(folder, kind, folder / "reference.cat", degree))
            if round_ == 0:     # SCAMP is deterministic; the exposure set-ups share their .head files
                try:
                    accuracy[label] = scamp_accuracy(folder, kind, texts[kind], sim, truth)
                except (OSError, IndexError) as err:
                    accuracy[label] = {"astrometry_rms_mas": float("nan"), "note": f"no usable .head ({err})"}
        for label, extra in ours_setups:
            ours_runs[label].append(C.run_isolated([bench, "--worker", str(folder), "--refcat", "reference.cat",
                                                    "-c", "doPhotometry=False", *extra]))
        # the same run through the command line: a new Python process, its imports included
        cli_times.append(run_cli(folder))
    rows = [{"program": label, "seconds": float(np.median(times[label])), **accuracy[label]}
            for label, _, _ in setups]
    for label, _ in ours_setups:
        r = C.median_of(ours_runs[label])
        rows.append({"program": label, "seconds": r["total_s"], "astrometry_rms_mas": r["astrometry_rms_mas"],
                     "astrometry_ccd_max_mas": r["astrometry_ccd_max_mas"], "n_measurements": r["n_measurements"]})
    rows.append({"program": "jointcal constrained, CLI (process start and imports included)",
                 "seconds": float(np.median(cli_times)), "astrometry_rms_mas": rows[-2]["astrometry_rms_mas"],
                 "astrometry_ccd_max_mas": rows[-2]["astrometry_ccd_max_mas"]})
    fastest = times["scamp-exposure"]
    paired = {"scamp_fastest_s": fastest,
              "jointcal_s": [run["total_s"] for run in ours_runs["jointcal constrained"]],
              "jointcal_cli_s": cli_times}
    paired["median_ratio_jointcal_to_scamp_fastest"] = float(np.median(
        np.divide(paired["jointcal_s"], fastest)))
    paired["median_ratio_cli_to_scamp_fastest"] = float(np.median(np.divide(cli_times, fastest)))
    ours = next(r["seconds"] for r in rows if r["program"] == "jointcal constrained")
    for row in rows:
        row["time_ratio_to_jointcal"] = row["seconds"] / ours
    report = {"machine": C.machine(), "field": dict(camera="megacam", **params), "rows": rows, "rounds": paired}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(json.dumps(report["machine"]))
        n_meas = rows[len(setups)]["n_measurements"]
        print(f"MegaCam field: {args.visits} visits, {n_meas:.0f} measurements")
        C.print_table(rows, ["program", "seconds", "time_ratio_to_jointcal", "astrometry_rms_mas",
                             "astrometry_ccd_max_mas"])
        print(f"per round, jointcal / SCAMP's fastest set-up: median {paired['median_ratio_jointcal_to_scamp_fastest']:.2f} "
              f"(in process), {paired['median_ratio_cli_to_scamp_fastest']:.2f} (command line)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
