"""The output folder of a fit (DESIGN section 4), written atomically.

Everything goes into a temporary sibling folder that is renamed into place only once complete,
so a failed or interrupted run leaves no half-written output. An existing, non-empty output is
refused unless ``clobber``; with ``clobber`` it is swapped out only after the new one is done.
The CLI and the app's export call the same :func:`write_outputs`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..calibration import json_default as _json_default
from ..exceptions import OutputError

__all__ = ["atomic_output_dir", "check_output_dir", "write_outputs", "OUTPUT_SCHEMAS"]

#: column schema of every output table: name -> (unit, description)
OUTPUT_SCHEMAS = {
    "photometry.ecsv": {
        "visit": ("", "visit id"), "detector": ("", "detector id"),
        "zeropoint": ("mag", "AB magnitude of one count at the CCD centre"),
        "zeropoint_err": ("mag", "statistical error of the zero point (residual rms / sqrt(n_stars))"),
        "n_stars": ("", "fitted stars measured on the CCD"),
    },
    "residuals.parquet": {
        "visit": ("", ""), "detector": ("", ""), "star": ("", "fitted star index (-1: not associated)"),
        "x": ("pix", "0-based"), "y": ("pix", "0-based"),
        "dx_mas": ("mas", "astrometric residual along xi (model - star), visit tangent plane"),
        "dy_mas": ("mas", "astrometric residual along eta"),
        "astrometry_chi2": ("", ""), "astrometry_outlier": ("", ""),
        "mag_residual_mmag": ("mmag", "photometric residual (measurement - star)"),
        "photometry_chi2": ("", ""), "photometry_outlier": ("", ""), "reserved": ("", "held out of the fit"),
    },
    "stars.parquet": {
        "star": ("", "fitted star index"), "ra": ("deg", "at the fit epoch"), "dec": ("deg", ""),
        "mag": ("mag", "fitted AB magnitude"), "n_measurements": ("", ""),
        "ref_index": ("", "row in the reference catalog, -1 if unmatched"), "reserved": ("", ""),
    },
}


def check_output_dir(path: str | Path, clobber: bool) -> Path:
    """Refuse an existing non-empty output folder unless ``clobber``; return the resolved path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError("the output path exists and is not a folder; choose another --output", path=str(path))
    if path.is_dir() and any(path.iterdir()) and not clobber:
        raise OutputError("the output folder exists and is not empty; choose another --output or pass "
                          "--clobber to replace it", path=str(path))
    if not path.parent.exists():
        raise OutputError("the parent folder of the output does not exist", path=str(path))
    return path


@contextmanager
def atomic_output_dir(path: str | Path, clobber: bool = False):
    """Yield a temporary folder; on success it replaces ``path``, on failure it is removed."""
    path = check_output_dir(path, clobber)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_outputs(out_dir: str | Path, joint, *, provenance: dict | None = None, clobber: bool = False,
                  extra_writers=()) -> Path:
    """Write the whole DESIGN section 4 layout for a fitted :class:`~jointcal_core.pipeline.JointFit`.

    ``extra_writers`` are callables ``writer(tmp_dir, joint)`` (e.g. the HTML report) run inside
    the same atomic folder.
    """
    from ..metrics import compute_metrics
    from . import export_models

    with atomic_output_dir(out_dir, clobber) as tmp, _results_computed_once(joint):
        export_models.write_model_files(tmp, joint)
        _write_tables(tmp, joint)
        _json(tmp / "metrics.json", compute_metrics(joint))
        joint.prepared.config.write(tmp / "config.yaml")
        _json(tmp / "provenance.json", provenance or {})
        for writer in extra_writers:
            writer(tmp, joint)
    return Path(out_dir)


@contextmanager
def _results_computed_once(joint):
    """Within the block, each problem's ``residuals()`` and ``star_mags()`` (when it has them) are
    computed once and then returned as is: the exporters, tables and metrics each ask for them,
    and the fitted state does not change while the outputs are written."""
    patched = []
    for problem in joint.problems.values():
        for name in ("residuals", "star_mags"):
            method = getattr(type(problem), name, None)
            if callable(method) and name not in vars(problem):
                value = method(problem)
                setattr(problem, name, lambda value=value: value)
                patched.append((problem, name))
    try:
        yield
    finally:
        for problem, name in patched:
            delattr(problem, name)


def _write_tables(tmp: Path, joint) -> None:
    field = joint.prepared.field
    assoc = joint.prepared.association
    meas = field.measurements
    n = len(meas)
    table = Table()
    table["visit"] = field.ccd_images.visit[meas.ccd]
    table["detector"] = field.ccd_images.detector[meas.ccd]
    table["star"] = assoc.star
    table["x"], table["y"] = meas.x, meas.y
    columns = {"dx_mas": np.nan, "dy_mas": np.nan, "astrometry_chi2": np.nan, "astrometry_outlier": False,
               "mag_residual_mmag": np.nan, "photometry_chi2": np.nan, "photometry_outlier": False}
    for name, fill in columns.items():
        table[name] = np.full(n, fill)
    for kind, problem in joint.problems.items():
        res = problem.residuals()
        index = np.asarray(res["meas"]) if "meas" in res else np.arange(n)
        if kind == "astrometry":
            table["dx_mas"][index] = res["dx_mas"]
            table["dy_mas"][index] = res["dy_mas"]
            table["astrometry_chi2"][index] = res["chi2"]
            table["astrometry_outlier"][index] = res["outlier"]
        else:
            table["mag_residual_mmag"][index] = res["residual_mmag"]
            table["photometry_chi2"][index] = res["chi2"]
            table["photometry_outlier"][index] = res["outlier"]
    reserved_star = np.asarray(assoc.star_reserved, bool)
    table["reserved"] = np.where(assoc.star >= 0, reserved_star[np.maximum(assoc.star, 0)], False)
    table.write(tmp / "residuals.parquet", format="parquet")

    stars = Table()
    stars["star"] = np.arange(assoc.n_stars)
    ra, dec = assoc.star_ra_deg, assoc.star_dec_deg
    if "astrometry" in joint.problems:
        ra, dec = joint.problems["astrometry"].star_positions_deg()
    stars["ra"], stars["dec"] = ra, dec
    mag = np.full(assoc.n_stars, np.nan)
    if "photometry" in joint.problems:
        mag = np.asarray(joint.problems["photometry"].star_mags(), float)
    stars["mag"] = mag
    stars["n_measurements"] = assoc.star_n_measurements
    stars["ref_index"] = assoc.star_ref
    stars["reserved"] = reserved_star
    stars.write(tmp / "stars.parquet", format="parquet")
