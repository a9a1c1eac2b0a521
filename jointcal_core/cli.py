"""The ``jointcal`` command: ``inspect`` a field, ``run`` a calibration.

User mistakes (bad files, bad options, an unconstrained model) print one line
``jointcal: error: ...`` on stderr and exit with the code of their error class (README,
"Exit codes"); they never print a traceback. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings

import numpy as np

from .config import JointcalConfig
from .exceptions import ConfigError, JointcalError, JointcalWarning

__all__ = ["main", "build_parser"]

log = logging.getLogger("jointcal")

EXIT_INTERRUPTED = 130
#: at least one field group failed (the others were written)
EXIT_SOME_FAILED = 7


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jointcal", description="Joint astrometric and photometric "
                                     "calibration of many exposures of one field.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("inputs", nargs="*", help="exposure catalogs or folders (LDAC, LSST tree, tables)")
        p.add_argument("--refcat", help="reference catalog (astrometry, and photometry unless --photometry-refcat)")
        p.add_argument("--photometry-refcat", help="photometric reference catalog")
        p.add_argument("--format", choices=["ldac", "lsst", "plain", "psx"], help="force the input format")
        p.add_argument("--config", help="YAML or JSON config file")
        p.add_argument("--instrument", help="apply an instrument preset first (hsc, megacam, decam, generic)")
        p.add_argument("-c", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config option (repeatable)")
        p.add_argument("-v", "--verbose", action="count", default=0)
        p.add_argument("-q", "--quiet", action="store_true")

    inspect = sub.add_parser("inspect", help="summarise visits, selection, overlaps and reference matches")
    common(inspect)
    run = sub.add_parser("run", help="fit and write the calibrated outputs")
    common(run)
    run.add_argument("--output", "-o", required=True, help="output folder (must not exist or be empty)")
    run.add_argument("--clobber", action="store_true", help="replace an existing output folder")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    multi = run.add_argument_group("several fields at once")
    multi.add_argument("--manifest", help="YAML list of fields: {name, inputs: [...], refcat}")
    multi.add_argument("--split-fields", action="store_true",
                       help="group the inputs by band and sky overlap; fit each group into OUTPUT/<band>-<n>")
    multi.add_argument("--jobs", type=int, default=2, help="parallel workers of the local Dask cluster (default 2)")
    multi.add_argument("--scheduler", help="address of an existing Dask scheduler")
    return parser


def load_config(args) -> JointcalConfig:
    config = JointcalConfig()
    if getattr(args, "instrument", None):
        from .presets import apply_preset
        apply_preset(config, args.instrument)
    if args.config:
        config = JointcalConfig.read(args.config, base=config)
    for item in args.overrides:
        config.set_override(item)
    return config


def _setup_logging(args) -> None:
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose == 0 else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("jointcal_core")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def cmd_inspect(args, config) -> int:
    from .task import JointcalTask
    from .pipeline import prepare
    from .association import overlap_graph

    task = JointcalTask(config)
    field = task.load(args.inputs, refcat=args.refcat, photometry_refcat=args.photometry_refcat, format=args.format)
    prepared = prepare(field, config)
    ccd, sel, assoc = field.ccd_images, prepared.selection, prepared.association
    out = sys.stdout
    print(f"band: {field.band or '?'}   visits: {len(ccd.visits)}   ccdImages: {len(ccd)}   "
          f"detections: {len(field.measurements)}", file=out)
    print("\nvisit        mjd        airmass  ccds  detections  selected  associated", file=out)
    kept = sel.keep
    in_star = assoc.star >= 0
    m_ccd = field.measurements.ccd
    for v in ccd.visits:
        rows = np.flatnonzero(ccd.visit == v)
        on = np.isin(m_ccd, rows)
        print(f"{v:<10d} {np.nanmean(ccd.mjd[rows]):10.4f} {np.nanmean(ccd.airmass[rows]):8.3f} {rows.size:5d} "
              f"{on.sum():11d} {np.sum(on & kept):9d} {np.sum(on & in_star):11d}", file=out)
    print("\nselection cuts (detections removed, in order):", file=out)
    print(sel.report(), file=out)
    print(f"\nfitted stars: {assoc.n_stars}  (measured on >= {config.minMeasurements} exposures, "
          "or matched to a reference star)", file=out)
    ref = field.reference
    print(f"reference: {ref.name if ref is not None else 'none'}  stars: {len(ref) if ref is not None else 0}  "
          f"in footprint: {assoc.collected_refStars}  matched: {assoc.matched_fittedStars}", file=out)
    graph = overlap_graph(assoc, field)
    n_vis = graph.shape[0]
    if n_vis > 1:
        shared = graph[np.triu_indices(n_vis, 1)]
        print(f"visit overlaps: {np.count_nonzero(shared)} of {shared.size} visit pairs share stars "
              f"(median {int(np.median(shared[shared > 0])) if np.any(shared) else 0} stars per pair)", file=out)
    return 0


def cmd_run_many(args, config):
    from .multifield import group_inputs, read_manifest, run_groups

    if args.manifest:
        groups = read_manifest(args.manifest)
    else:
        groups = group_inputs(args.inputs, refcat=args.refcat, photometry_refcat=args.photometry_refcat,
                              config=config, format=args.format)
    log.info("%d field group(s): %s", len(groups), ", ".join(g.name for g in groups))

    def progress(outcome):
        log.info("%s: %s", outcome.name, "done" if outcome.ok else f"FAILED: {outcome.message}")

    outcomes = run_groups(groups, config, args.output, jobs=args.jobs, scheduler=args.scheduler,
                          clobber=args.clobber, write_report=not args.no_report, progress=progress)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        print(f"{o.name}: {'ok' if o.ok else 'failed'}  {o.output}" + ("" if o.ok else f"  ({o.message})"))
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} field group(s) succeeded")
    return (EXIT_SOME_FAILED if failed else 0), outcomes


def cmd_run(args, config) -> int:
    from .io.outputs import check_output_dir
    from .task import JointcalTask

    check_output_dir(args.output, args.clobber)      # refuse early, before any work
    task = JointcalTask(config)

    def progress(step):
        log.info("%-10s %-22s step %3d  chi2/ndof = %10.4f  (chi2 %.6g, ndof %d)%s", step.kind, step.stage,
                 step.iteration, step.chi2_per_ndof, step.chi2, step.ndof,
                 f"  rejected {step.n_outliers}" if step.n_outliers else "")

    log.info("reading %d input(s)", len(args.inputs))
    field = task.load(args.inputs, refcat=args.refcat, photometry_refcat=args.photometry_refcat, format=args.format)
    log.info("%d visits, %d ccdImages, %d detections", len(field.ccd_images.visits), len(field.ccd_images),
             len(field.measurements))
    result = task.run(field, progress=progress)
    writers = [] if args.no_report else _report_writers()
    task.write_outputs(result, args.output, clobber=args.clobber, extra_writers=writers)
    metrics = result.metrics
    for kind in result.joint.kinds:
        print(f"{kind}: final chi2 {metrics[f'{kind}_final_chi2']:.6g}, ndof {metrics[f'{kind}_final_ndof']}, "
              f"outliers {metrics[f'{kind}_n_outliers']}")
    print(f"wrote {args.output}")
    return 0


def _report_writers():
    """The HTML report uses the app's plotting functions; skip it when they are not installed."""
    try:
        from app.report import write_report
    except ImportError:
        log.warning("report.html skipped: the app's plotting modules are not importable")
        return []
    return [write_report]


def main(argv=None, return_results: bool = False):
    """Run the CLI (jointcal's ``parseAndRun``); returns the exit status.

    With ``return_results``, returns ``(status, outcomes)`` where ``outcomes`` lists one
    :class:`~jointcal_core.multifield.GroupOutcome` per field group for multi-field runs (None
    otherwise).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    results = None
    shown = warnings.catch_warnings()
    shown.__enter__()
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", JointcalWarning)   # each distinct warning once
    try:
        config = load_config(args)
        if not args.inputs and not getattr(args, "manifest", None):
            raise ConfigError("give input catalogs or folders (or --manifest)")
        if args.command == "run" and (args.manifest or args.split_fields):
            status, results = cmd_run_many(args, config)
        else:
            handler = cmd_inspect if args.command == "inspect" else cmd_run
            status = handler(args, config)
    except JointcalError as exc:
        print(f"jointcal: error: {exc}", file=sys.stderr)
        status = exc.exit_code
    except KeyboardInterrupt:
        print("jointcal: interrupted; no output was written", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not a user mistake: still one line (the traceback with -v)
        if args.verbose:
            log.debug("internal error", exc_info=True)
        print(f"jointcal: error: internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
              "; please report it with the command line (-v shows the traceback)", file=sys.stderr)
        status = JointcalError.exit_code
    finally:
        shown.__exit__(None, None, None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if return_results:
        return status, results
    return status


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Degraded-input warnings as one ``jointcal: warning: ...`` line; library warnings only with -v."""
    if issubclass(category, JointcalWarning):
        print(f"jointcal: warning: {message}", file=sys.stderr)
    else:
        log.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
