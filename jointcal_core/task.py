"""JointcalTask: load -> select -> associate -> fit -> outputs, with timers and provenance.

The Python counterpart of ``lsst.jointcal.JointcalTask`` without the LSST stack: ``run_files``
reads inputs, ``run`` fits in-memory data, each stage is timed (wall time and peak memory) into
the task's ``metadata``, and ``write_outputs`` writes the DESIGN section 4 layout atomically.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import yaml

from .association import associate
from .config import JointcalConfig
from .data import Field
from .exceptions import ConfigError, OutputError
from .pipeline import JointFit, Prepared, prepare
from .selection import select_sources

__all__ = ["JointcalTask", "JointcalResult", "package_versions"]

log = logging.getLogger(__name__)

_PACKAGES = ("numpy", "scipy", "astropy", "param", "pyarrow", "yaml", "panel", "holoviews", "bokeh")


def package_versions() -> dict[str, str]:
    """Versions of python, jointcal and every dependency that is importable."""
    from importlib import metadata

    out = {"python": platform.python_version(), "jointcal": _version("jointcal")}
    names = {"yaml": "PyYAML"}
    for pkg in _PACKAGES:
        out[pkg] = _version(names.get(pkg, pkg))
    return out


def _version(dist: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _peak_rss_mb() -> float:
    # ru_maxrss is in kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class JointcalResult:
    """What a run returns: the fit (with its fitters and history), metrics and timings."""

    prepared: Prepared
    joint: JointFit
    metadata: dict = dc_field(default_factory=dict)

    @property
    def history(self):
        return self.joint.history

    @property
    def metrics(self) -> dict:
        from .metrics import compute_metrics
        return compute_metrics(self.joint)


class JointcalTask:
    """Joint calibration of the exposures of one field.

    Parameters
    ----------
    config : JointcalConfig, optional
    """

    _DefaultName = "jointcal"

    def __init__(self, config: JointcalConfig | None = None, components: dict | None = None):
        self.config = config if config is not None else JointcalConfig()
        self.metadata: dict = {}
        #: replaceable sub-steps (jointcal's subtasks): name -> callable
        self.components = dict(DEFAULT_COMPONENTS)
        if components:
            unknown = set(components) - set(DEFAULT_COMPONENTS)
            if unknown:
                raise ConfigError(f"unknown component(s) {sorted(unknown)}; known: {sorted(DEFAULT_COMPONENTS)}",
                                  field="components")
            self.components.update(components)

    def task_dict(self) -> dict[str, str]:
        """Every sub-step by full name -> the callable that implements it (``module.name``)."""
        return {f"{self._DefaultName}.{name}": f"{func.__module__}.{func.__qualname__}"
                for name, func in self.components.items()}

    def full_metadata(self) -> dict:
        """Task metadata with hierarchical names, plus the components in use."""
        out = dict(self.metadata)
        out.update({f"{name}.component": impl for name, impl in self.task_dict().items()})
        return out

    # --- timing -------------------------------------------------------------------------
    @contextmanager
    def timer(self, name: str):
        """Record wall time (s) and peak RSS (MB) of a stage under ``metadata[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.metadata[f"{self._DefaultName}.{name}"] = {
                "seconds": round(time.perf_counter() - t0, 6), "peak_rss_mb": round(_peak_rss_mb(), 1)}

    def empty_metadata(self) -> None:
        self.metadata = {}

    # --- running -----------------------------------------------------------------------
    def run(self, field: Field, progress=None, should_stop=None) -> JointcalResult:
        """Select, associate and fit ``field``; ``progress(step)`` is called after each fit step."""
        with self.timer("select"):
            selection = self.components["source_selector"](field, self.config)
        with self.timer("associate"):
            prepared = prepare(field, self.config, selection=selection,
                               associate_func=self.components["association"])
        with self.timer("build"):
            joint = JointFit(prepared)
        for kind, fitter in joint.fitters.items():
            with self.timer(f"fit_{kind}"):
                fitter.run(callback=progress, should_stop=should_stop)
        return JointcalResult(prepared=prepared, joint=joint, metadata=dict(self.metadata))

    def load(self, inputs, refcat=None, photometry_refcat=None, format=None) -> Field:
        """Read input catalogs and reference catalogs into a Field."""
        with self.timer("read"):
            return self.components["loader"](inputs, refcat=refcat, photometry_refcat=photometry_refcat, config=self.config,
                              format=format)

    def run_files(self, inputs, refcat=None, photometry_refcat=None, format=None, progress=None) -> JointcalResult:
        """``load`` then ``run``."""
        field = self.load(inputs, refcat=refcat, photometry_refcat=photometry_refcat, format=format)
        return self.run(field, progress=progress)

    # --- outputs ------------------------------------------------------------------------
    def provenance(self, result: JointcalResult) -> dict:
        """Package versions, the input files with checksums, and per-stage timings."""
        files = []
        for path in result.prepared.field.inputs:
            p = Path(path)
            if p.is_file():
                files.append({"path": str(p), "sha256": _sha256(p), "bytes": p.stat().st_size})
        return {"packages": package_versions(), "inputs": files, "timings": dict(self.metadata),
                "command": " ".join(sys.argv), "platform": platform.platform()}

    def write_outputs(self, result: JointcalResult, out_dir, clobber: bool = False, extra_writers=()):
        """Write the output folder atomically (see :func:`jointcal_core.io.outputs.write_outputs`)."""
        from .io.outputs import write_outputs
        with self.timer("export"):
            prov = self.provenance(result)
            return write_outputs(out_dir, result.joint, provenance=prov, clobber=clobber,
                                 extra_writers=extra_writers)


    # --- provenance files (jointcal's writeConfig / writePackageVersions semantics) ------------
    def write_config(self, out_dir, clobber: bool = False, backup: bool = True) -> Path:
        """Write ``config.yaml``; if one exists it must be equal, else refuse with a readable diff.

        With ``clobber`` a different existing config is replaced (kept as ``config.yaml~`` when
        ``backup``).
        """
        path = Path(out_dir) / "config.yaml"
        if path.exists():
            old = JointcalConfig.read(path)
            if old != self.config:
                if not clobber:
                    diff = "; ".join(old.diff(self.config))
                    raise OutputError(f"an existing config.yaml differs from this run's config ({diff}); use a "
                                      "new output folder or clobber", path=str(path))
                if backup:
                    path.replace(path.with_name("config.yaml~"))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.config.write(path)
        return path

    def write_package_versions(self, out_dir, clobber: bool = False, backup: bool = True) -> Path:
        """Write ``packages.yaml`` with every dependency's version; refuse on mismatch with an existing one."""
        path = Path(out_dir) / "packages.yaml"
        current = package_versions()
        if path.exists():
            old = yaml.safe_load(path.read_text()) or {}
            diff = [f"{k}: {old.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(old) | set(current))
                    if old.get(k) != current.get(k)]
            if diff and not clobber:
                raise OutputError("package versions differ from those recorded (" + "; ".join(diff) + "); "
                                  "use a new output folder or clobber", path=str(path))
            if diff and backup:
                path.replace(path.with_name("packages.yaml~"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(current, sort_keys=True))
        return path

    def write_metadata(self, out_dir) -> Path:
        """Write ``metadata.yaml``: per-stage timings and memory, components in use."""
        path = Path(out_dir) / "metadata.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.full_metadata(), sort_keys=True))
        return path

    @staticmethod
    def write_schemas(out_dir) -> Path:
        """Write ``schemas.yaml``: the columns (unit, description) of every output table."""
        from .io.outputs import OUTPUT_SCHEMAS
        path = Path(out_dir) / "schemas.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {table: {col: {"unit": u, "description": d} for col, (u, d) in cols.items()}
               for table, cols in OUTPUT_SCHEMAS.items()}
        path.write_text(yaml.safe_dump(doc, sort_keys=True))
        return path


def _default_loader(*args, **kwargs):
    from .io import load_field
    return load_field(*args, **kwargs)


#: the replaceable sub-steps and their default implementations
DEFAULT_COMPONENTS = {
    "loader": _default_loader,
    "source_selector": select_sources,
    "association": associate,
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
