"""JointcalTask: load -> select -> associate -> fit -> outputs, with timers and provenance.

The Python counterpart of ``lsst.jointcal.JointcalTask`` without the LSST stack: ``run`` fits a
:class:`~jointcal_core.data.Field` or in-memory tables (:mod:`jointcal_core.inmemory`),
``run_files`` reads inputs first, each stage is timed (wall and CPU time, memory) into the task's
``metadata``, the sub-steps (loader, reference loaders, source selector, association) are
replaceable components like jointcal's subtasks, and the ``write_*`` methods record the config,
package versions, metadata and output schemas with jointcal's refuse-on-mismatch semantics.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from .association import associate
from .config import JointcalConfig
from .data import Field
from .exceptions import ConfigError, OutputError
from .pipeline import JointFit, prepare
from .result import JointcalResult
from .selection import select_sources

__all__ = ["DEFAULT_COMPONENTS", "JointcalResult", "JointcalTask", "package_versions"]

log = logging.getLogger(__name__)

#: optional extras recorded with the runtime dependencies (test-only extras are not)
_RUNTIME_EXTRAS = ("dask",)
_FALLBACK_DEPENDENCIES = (
    "numpy",
    "scipy",
    "astropy",
    "param",
    "pyarrow",
    "PyYAML",
    "threadpoolctl",
    "panel",
    "holoviews",
    "bokeh",
    "panel-material-ui",
    "dask",
    "distributed",
)


def package_versions() -> dict[str, str]:
    """Versions of python, jointcal and every runtime dependency (``'not installed'`` when absent).

    The dependency names come from the installed ``jointcal`` distribution's requirements
    (including the ``dask`` extra), so a new dependency is recorded without editing this list.
    """
    import re
    from importlib import metadata

    try:
        requires = metadata.requires("jointcal") or []
    except metadata.PackageNotFoundError:
        requires = []
    names = set(_FALLBACK_DEPENDENCIES)
    for req in requires:
        name, _, marker = req.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker)
        if extra and extra.group(1) not in _RUNTIME_EXTRAS:
            continue
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[([^\]]*)\])?", name)
        if match:
            names.add(match.group(1))
            if match.group(3) and match.group(1) == "dask":
                names.update(x.strip() for x in match.group(3).split(","))
    out = {"python": platform.python_version(), "jointcal": _version("jointcal")}
    for dist in sorted(names, key=str.lower):
        out[dist.lower()] = _version(dist)
    return out


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB); ru_maxrss is kB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _rss_mb() -> float:
    """Current resident memory (MB) from /proc; the peak where /proc is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mb()


def _default_loader(inputs, refcat=None, photometry_refcat=None, config=None, format=None) -> Field:
    from .io import load_field

    return load_field(
        inputs, refcat=refcat, photometry_refcat=photometry_refcat, config=config, format=format
    )


def _default_reference_loader(path, band: str | None = None):
    from .io.refcat import read_reference

    return read_reference(path, band=band or None)


#: the replaceable sub-steps and their default implementations (jointcal's subtasks)
DEFAULT_COMPONENTS = {
    "loader": _default_loader,
    "astrometry_reference_loader": _default_reference_loader,
    "photometry_reference_loader": _default_reference_loader,
    "source_selector": select_sources,
    "association": associate,
}


class JointcalTask:
    """Joint calibration of the exposures of one field.

    Parameters
    ----------
    config : JointcalConfig, optional
    components : dict of str -> callable, optional
        Replacements for sub-steps, by name (see :data:`DEFAULT_COMPONENTS`):
        ``loader(inputs, refcat=None, photometry_refcat=None, config=, format=) -> Field``,
        ``astrometry_reference_loader(path, band) -> ReferenceCatalog`` (and ``photometry_...``),
        ``source_selector(field, config) -> SelectionResult``,
        ``association(field, keep, config) -> Association``.
    """

    _DefaultName = "jointcal"

    def __init__(self, config: JointcalConfig | None = None, components: dict | None = None):
        self.config = config if config is not None else JointcalConfig()
        self.metadata: dict = {}
        self.component_metadata: dict = {}
        self._timer_stack: list[str] = []
        self.components = dict(DEFAULT_COMPONENTS)
        for name, func in (components or {}).items():
            self.set_component(name, func)

    def set_component(self, name: str, func) -> None:
        """Replace the sub-step ``name`` by ``func`` (ConfigError for unknown names or non-callables)."""
        if name not in DEFAULT_COMPONENTS:
            raise ConfigError(
                f"unknown component '{name}'; known: {', '.join(sorted(DEFAULT_COMPONENTS))}",
                field="components",
            )
        if not callable(func):
            raise ConfigError(
                f"component '{name}' must be callable, got {type(func).__name__}", field="components"
            )
        self.components[name] = func

    def task_dict(self) -> dict[str, str]:
        """Every sub-step by full name (``jointcal.<name>``) -> its implementation (``module.qualname``)."""
        return {
            f"{self._DefaultName}.{name}": f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"
            for name, func in self.components.items()
        }

    # --- metadata -----------------------------------------------------------------------
    def full_metadata(self) -> dict:
        """The task's entries and one entry per component, keyed by hierarchical name.

        ``jointcal.<stage>``: timings of each stage; ``jointcal.metrics``: the scalar metrics of the
        last run; ``jointcal.<component>``: ``{"component": implementation, ...counts it produced}``.
        """
        out = dict(self.metadata)
        for full, impl in self.task_dict().items():
            name = full.split(".", 1)[1]
            out[full] = {"component": impl, **self.component_metadata.get(name, {})}
        return out

    def empty_metadata(self) -> None:
        """Forget the metadata of previous runs (timings, metrics, component counts)."""
        self.metadata = {}
        self.component_metadata = {}

    @contextmanager
    def timer(self, name: str):
        """Time a stage into ``metadata['jointcal.<outer>.<name>']`` (nested timers nest the name).

        Records ``seconds`` (wall), ``cpu_seconds`` (this process), ``rss_mb`` (resident memory at
        the end), ``rss_delta_mb`` (change over the stage) and ``peak_rss_mb`` (process peak so far).
        """
        full = ".".join([self._DefaultName, *self._timer_stack, name])
        self._timer_stack.append(name)
        t0, c0, m0 = time.perf_counter(), time.process_time(), _rss_mb()
        try:
            yield
        finally:
            self._timer_stack.pop()
            m1 = _rss_mb()
            self.metadata[full] = {
                "seconds": round(time.perf_counter() - t0, 6),
                "cpu_seconds": round(time.process_time() - c0, 6),
                "rss_mb": round(m1, 1),
                "rss_delta_mb": round(m1 - m0, 1),
                "peak_rss_mb": round(_peak_rss_mb(), 1),
            }
            log.debug("%s: %.3f s", full, self.metadata[full]["seconds"])

    # --- running -----------------------------------------------------------------------
    def run(
        self,
        sources,
        ccd_images=None,
        reference=None,
        photometry_reference=None,
        camera=None,
        *,
        wcs: dict | None = None,
        progress=None,
        should_stop=None,
    ) -> JointcalResult:
        """Select, associate and fit one field.

        Parameters
        ----------
        sources : Field or table-like
            A :class:`~jointcal_core.data.Field`, or the detections table (see
            :mod:`jointcal_core.inmemory` for the columns) together with ``ccd_images``.
        ccd_images : table-like, optional
            Required with a sources table: one row per (visit, detector) with its initial WCS.
        reference, photometry_reference : ReferenceCatalog or table-like, optional
        camera : Camera or str, optional
        wcs : dict of (visit, detector) -> astropy.wcs.WCS, optional
            Initial WCS when ``ccd_images`` has no ``wcs`` column.
        progress : callable, optional
            ``progress(step)`` after each fit step (a :class:`~jointcal_core.fit.FitStep`).
        should_stop : callable, optional
            Polled between steps; True stops the fit.

        Returns
        -------
        JointcalResult
        """
        if isinstance(sources, Field):
            if ccd_images is not None:
                raise ConfigError("give either a Field or sources + ccd_images tables, not both")
            field = sources
        else:
            from .exceptions import InputError
            from .inmemory import field_from_tables

            if ccd_images is None:
                raise InputError(
                    "run() with a sources table needs the ccd_images table (visit, detector, "
                    "bbox or width/height, mjd, exptime, airmass, band, wcs)"
                )
            with self.timer("convert"):
                field = field_from_tables(
                    sources, ccd_images, reference, photometry_reference, camera, wcs=wcs
                )
        with self.timer("select"):
            selection = self.components["source_selector"](field, self.config)
        self.component_metadata["source_selector"] = {
            "n_input": int(selection.keep.size),
            "n_kept": int(selection.keep.sum()),
            "removed": {str(k): int(v) for k, v in selection.removed.items()},
        }
        with self.timer("associate"):
            prepared = prepare(
                field, self.config, selection=selection, associate_func=self.components["association"]
            )
        a = prepared.association
        self.component_metadata["association"] = {
            "n_stars": int(a.n_stars),
            "collected_refStars": int(a.collected_refStars),
            "matched_fittedStars": int(a.matched_fittedStars),
        }
        with self.timer("build"):
            joint = JointFit(prepared)
        for kind, fitter in joint.fitters.items():
            with self.timer(f"fit_{kind}"):
                fitter.run(callback=progress, should_stop=should_stop)
        result = JointcalResult(prepared=prepared, joint=joint)
        with self.timer("summarise"):
            self.metadata[f"{self._DefaultName}.metrics"] = {
                k: v
                for k, v in result.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        result.metadata = self.full_metadata()
        return result

    def load(self, inputs, refcat=None, photometry_refcat=None, format=None) -> Field:
        """Read input catalogs (``loader``) and reference catalogs (the reference loaders) into a Field."""
        import dataclasses

        with self.timer("read"):
            field = self.components["loader"](
                inputs, refcat=None, photometry_refcat=None, config=self.config, format=format
            )
        self.component_metadata["loader"] = {
            "n_inputs": len(field.inputs),
            "n_ccd_images": len(field.ccd_images),
            "n_measurements": len(field.measurements),
        }
        if refcat is None and photometry_refcat is None:
            return field
        with self.timer("read_reference"):
            ref = phot = None
            if refcat is not None:
                ref = self.components["astrometry_reference_loader"](refcat, field.band or None)
                self.component_metadata["astrometry_reference_loader"] = {
                    "path": str(refcat),
                    "n_stars": len(ref),
                }
            phot = ref
            if photometry_refcat is not None:
                phot = self.components["photometry_reference_loader"](photometry_refcat, field.band or None)
                self.component_metadata["photometry_reference_loader"] = {
                    "path": str(photometry_refcat),
                    "n_stars": len(phot),
                }
        return dataclasses.replace(field, reference=ref, photometry_reference=phot)

    def run_files(
        self, inputs, refcat=None, photometry_refcat=None, format=None, progress=None, should_stop=None
    ) -> JointcalResult:
        """``load`` then ``run``."""
        field = self.load(inputs, refcat=refcat, photometry_refcat=photometry_refcat, format=format)
        return self.run(field, progress=progress, should_stop=should_stop)

    # --- outputs ------------------------------------------------------------------------
    def provenance(self, result: JointcalResult) -> dict:
        """Package versions, the input files with checksums, per-stage timings and components."""
        files = []
        for path in result.prepared.field.inputs:
            p = Path(path)
            if p.is_file():
                files.append({"path": str(p), "sha256": _sha256(p), "bytes": p.stat().st_size})
        return {
            "packages": package_versions(),
            "inputs": files,
            "timings": dict(self.metadata),
            "components": self.task_dict(),
            "command": " ".join(sys.argv),
            "platform": platform.platform(),
        }

    def write_outputs(self, result: JointcalResult, out_dir, clobber: bool = False, extra_writers=()):
        """Write the output folder atomically (see :func:`jointcal_core.io.outputs.write_outputs`)."""
        from .io.outputs import write_outputs

        with self.timer("export"):
            prov = self.provenance(result)
            return write_outputs(
                out_dir, result.joint, provenance=prov, clobber=clobber, extra_writers=extra_writers
            )

    # --- provenance files (jointcal's writeConfig / writePackageVersions semantics) ------------
    def write_config(self, out_dir, clobber: bool = False, backup: bool = True) -> Path:
        """Write ``out_dir/config.yaml``; an existing one must be equal, else refuse with a readable diff.

        With ``clobber`` a different existing config is replaced (kept as ``config.yaml~`` when
        ``backup``). An equal existing config is left as it is.
        """
        path = Path(out_dir) / "config.yaml"
        if path.exists():
            old = JointcalConfig.read(path)
            if old == self.config:
                return path
            if not clobber:
                diff = "; ".join(old.diff(self.config))
                raise OutputError(
                    f"config.yaml differs from this run's config (recorded -> now: {diff}); use a "
                    "new output folder or clobber",
                    path=str(path),
                )
            if backup:
                path.replace(path.with_name("config.yaml~"))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.config.write(path)
        return path

    def write_package_versions(self, out_dir, clobber: bool = False, backup: bool = True) -> Path:
        """Write ``out_dir/packages.yaml``; refuse (OutputError listing the differences) when an
        existing record differs, unless ``clobber`` (the old one kept as ``packages.yaml~`` when ``backup``)."""
        path = Path(out_dir) / "packages.yaml"
        current = package_versions()
        if path.exists():
            try:
                old = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                old = {"<unreadable>": path.read_text()[:40]}
            diff = [
                f"{k}: {old.get(k)!r} -> {current.get(k)!r}"
                for k in sorted(set(old) | set(current))
                if old.get(k) != current.get(k)
            ]
            if not diff:
                return path
            if not clobber:
                raise OutputError(
                    "package versions differ from those recorded (recorded -> now: "
                    + "; ".join(diff)
                    + "); use a new output folder or clobber",
                    path=str(path),
                )
            if backup:
                path.replace(path.with_name("packages.yaml~"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(current, sort_keys=True))
        return path

    def write_metadata(self, out_dir) -> Path:
        """Write ``out_dir/metadata.yaml``: :meth:`full_metadata` (timings, metrics, components)."""
        path = Path(out_dir) / "metadata.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_plain(self.full_metadata()), sort_keys=True))
        return path

    @staticmethod
    def write_schemas(out_dir) -> Path:
        """Write ``out_dir/schemas.yaml``: the columns (unit, description) of every output table."""
        from .io.outputs import OUTPUT_SCHEMAS

        path = Path(out_dir) / "schemas.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            table: {col: {"unit": u, "description": d} for col, (u, d) in cols.items()}
            for table, cols in OUTPUT_SCHEMAS.items()
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))  # columns in table order
        return path


def _plain(value):
    """numpy scalars and tuples -> plain Python for YAML."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
