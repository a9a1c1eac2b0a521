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
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.table import Table

from ..calibration import json_default as _json_default
from ..exceptions import OutputError
from .parquet import write_parquet

__all__ = ["atomic_output_dir", "check_output_dir", "write_outputs", "ExportInputs", "OUTPUT_SCHEMAS"]

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


@dataclass(frozen=True)
class ExportInputs:
    """Per-measurement results of a fitted :class:`~jointcal_core.pipeline.JointFit`, computed once
    for all the writers of one export (the fitted state does not change while it is written).

    Attributes
    ----------
    residuals : Mapping[str, dict]
        ``problem.residuals()`` per fit kind (``"astrometry"``, ``"photometry"``).
    star_mags : Mapping[str, ndarray]
        ``problem.star_mags()`` (shape (n_stars,), AB mag) per kind whose problem has it.
    """

    residuals: Mapping[str, dict]
    star_mags: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, joint) -> "ExportInputs":
        """Compute the results of every problem of ``joint``."""
        residuals = {kind: problem.residuals() for kind, problem in joint.problems.items()}
        mags = {kind: np.asarray(problem.star_mags(), dtype=float) for kind, problem in joint.problems.items()
                if callable(getattr(problem, "star_mags", None))}
        return cls(MappingProxyType(residuals), MappingProxyType(mags))

    def residuals_of(self, kind: str, problem) -> dict:
        """The residuals of ``kind`` (computed from ``problem`` if this export did not hold them)."""
        return self.residuals[kind] if kind in self.residuals else problem.residuals()

    def star_mags_of(self, kind: str, problem) -> np.ndarray:
        return self.star_mags[kind] if kind in self.star_mags else np.asarray(problem.star_mags(), dtype=float)


def residuals_of(joint, kind: str, inputs: ExportInputs | None = None) -> dict:
    """``joint.problems[kind].residuals()``, taken from ``inputs`` when given."""
    problem = joint.problems[kind]
    return problem.residuals() if inputs is None else inputs.residuals_of(kind, problem)


def write_outputs(out_dir: str | Path, joint, *, provenance: dict | None = None, clobber: bool = False,
                  extra_writers=()) -> Path:
    """Write the whole DESIGN section 4 layout for a fitted :class:`~jointcal_core.pipeline.JointFit`.

    ``extra_writers`` are callables ``writer(tmp_dir, joint)`` (e.g. the HTML report) run inside
    the same atomic folder. The problems' residuals and star magnitudes are computed once
    (:class:`ExportInputs`) and passed to the model files, the tables and the metrics.
    """
    from ..metrics import compute_metrics
    from . import export_models

    with atomic_output_dir(out_dir, clobber) as tmp:
        inputs = ExportInputs.of(joint)
        export_models.write_model_files(tmp, joint, inputs=inputs)
        _write_tables(tmp, joint, inputs)
        _json(tmp / "metrics.json", compute_metrics(joint, inputs=inputs))
        joint.prepared.config.write(tmp / "config.yaml")
        _json(tmp / "provenance.json", provenance or {})
        for writer in extra_writers:
            writer(tmp, joint)
    return Path(out_dir)


def _write_tables(tmp: Path, joint, inputs: ExportInputs | None = None) -> None:
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
    for kind in joint.problems:
        res = residuals_of(joint, kind, inputs)
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
    write_parquet(tmp / "residuals.parquet", {name: np.asarray(table[name]) for name in table.colnames})

    stars = Table()
    stars["star"] = np.arange(assoc.n_stars)
    ra, dec = assoc.star_ra_deg, assoc.star_dec_deg
    if "astrometry" in joint.problems:
        ra, dec = joint.problems["astrometry"].star_positions_deg()
    stars["ra"], stars["dec"] = ra, dec
    mag = np.full(assoc.n_stars, np.nan)
    if "photometry" in joint.problems:
        problem = joint.problems["photometry"]
        mag = np.asarray(problem.star_mags(), float) if inputs is None else inputs.star_mags_of("photometry", problem)
    stars["mag"] = mag
    stars["n_measurements"] = assoc.star_n_measurements
    stars["ref_index"] = assoc.star_ref
    stars["reserved"] = reserved_star
    write_parquet(tmp / "stars.parquet", {name: np.asarray(stars[name]) for name in stars.colnames})
