"""Many fields at once (jointcal's ``canMultiprocess``): group exposures, fit groups in parallel.

Inputs from several fields are grouped by band and by sky overlap (visits whose CCD footprints
overlap, transitively, form one field); each group is an independent fit with its own output
folder ``OUT/<band>-<n>``. A manifest names the fields instead. Groups run on
``dask.distributed``: a local cluster of ``jobs`` single-threaded worker processes by default,
or an existing scheduler. A failing group does not stop the others; :func:`run_groups` returns
one :class:`GroupOutcome` per group saying what happened.

Workers receive only plain data (file paths, the config as a dict) and read their own inputs,
so nothing large crosses process boundaries; they must be able to import ``jointcal_core``
(checked when the client connects).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix, csgraph
from scipy.spatial import cKDTree

from .config import JointcalConfig
from .data import Field
from .exceptions import ConfigError, InputError, JointcalError

__all__ = [
    "FieldGroup",
    "GroupOutcome",
    "group_field",
    "group_inputs",
    "read_exposures",
    "read_manifest",
    "run_group",
    "run_groups",
]

log = logging.getLogger(__name__)

#: seconds to wait for a scheduler connection or for a local cluster to start
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class FieldGroup:
    """One independent fit: a name (its output sub-folder), band, input files and visits.

    ``visits`` empty means every visit of ``inputs``.
    """

    name: str
    band: str
    inputs: tuple
    visits: tuple = ()
    refcat: str | None = None
    photometry_refcat: str | None = None
    format: str | None = None


@dataclass
class GroupOutcome:
    """Result of one group's run: ``ok``, the output folder, a message (the error when failed),
    the scalar metrics and the wall time."""

    name: str
    ok: bool
    output: str
    message: str = ""
    metrics: dict = dc_field(default_factory=dict)
    seconds: float = float("nan")


# --- grouping ----------------------------------------------------------------------------------
def _unit(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _ccd_overlap_pairs(field: Field) -> np.ndarray:
    """Pairs (i, j), i < j, of ccdImages whose circumscribed circles on the sky overlap; shape (m, 2)."""
    ccd = field.ccd_images
    centers = _unit(*ccd.centers_deg().T)  # (n, 3)
    corners = ccd.corners_deg()
    corner_xyz = _unit(corners[..., 0], corners[..., 1])  # (n, 4, 3)
    radius = np.arccos(np.clip(np.einsum("nk,nck->nc", centers, corner_xyz), -1, 1)).max(axis=1)
    chord = 2 * np.sin(min(2 * float(radius.max()), np.pi) / 2)
    pairs = cKDTree(centers).query_pairs(chord * (1 + 1e-9), output_type="ndarray")
    if pairs.size == 0:
        return pairs.reshape(0, 2)
    sep = np.arccos(np.clip(np.einsum("mk,mk->m", centers[pairs[:, 0]], centers[pairs[:, 1]]), -1, 1))
    return pairs[sep < radius[pairs[:, 0]] + radius[pairs[:, 1]]]


def group_field(field: Field) -> list[tuple[str, np.ndarray]]:
    """Split a field's visits by band and sky overlap.

    Returns
    -------
    list of (band, visits)
        One entry per group, ``visits`` a sorted int64 array; ordered by band, then first visit.
    """
    ccd = field.ccd_images
    visits, first, vrow = np.unique(ccd.visit, return_index=True, return_inverse=True)
    band = np.asarray(ccd.band, dtype=str)[first]  # the band of each visit's first CCD
    pairs = _ccd_overlap_pairs(field)
    a, b = vrow[pairs[:, 0]], vrow[pairs[:, 1]]
    same = band[a] == band[b]
    n = visits.size
    graph = coo_matrix(
        (np.ones(int(same.sum()) + n), (np.r_[a[same], np.arange(n)], np.r_[b[same], np.arange(n)])),
        shape=(n, n),
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    groups = [(str(band[labels == k][0]), visits[labels == k]) for k in np.unique(labels)]
    groups.sort(key=lambda g: (g[0], int(g[1][0])))
    return groups


def read_exposures(
    inputs, config: JointcalConfig | None = None, format: str | None = None
) -> tuple[Field, str]:
    """Read exposure catalogs of any bands into one Field (no reference); returns (field, format).

    Unlike :func:`~jointcal_core.io.load_field` this accepts several bands, so that they can be
    grouped.
    """
    from .io.detect import FORMATS, _expand, _read, detect_format

    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no inputs given")
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format '{format}' (use one of {', '.join(FORMATS)})")
    kinds = sorted({format or detect_format(p) for p in paths})
    if len(kinds) > 1:
        raise InputError(
            f"inputs mix formats ({', '.join(kinds)}); give one kind at a time or force one with --format"
        )
    flux_type = config.sourceFluxType if config is not None else ""
    ccds, meas = _read(kinds[0], _expand(paths, kinds[0]), flux_type)
    field = Field(ccd_images=ccds, measurements=meas, inputs=tuple(sorted(set(ccds.path))))
    return field, kinds[0]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text) or "band"


def group_inputs(inputs, refcat=None, photometry_refcat=None, config=None, format=None) -> list[FieldGroup]:
    """Read the inputs once, group them by band and overlap, and name each group ``<band>-<k>``.

    For per-exposure files (LDAC, plain tables) each group lists only its own files; for LSST
    trees it keeps the given inputs and selects its visits when it runs.
    """
    field, fmt = read_exposures(inputs, config=config, format=format)
    ccd = field.ccd_images
    original = tuple(str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs))
    groups = []
    counters: dict[str, int] = {}
    for band, visits in group_field(field):
        key = _safe_name(band)
        k = counters.get(key, 0)
        counters[key] = k + 1
        rows = np.isin(ccd.visit, visits)
        files = tuple(sorted(set(ccd.path[rows])))
        use_files = fmt != "lsst" and all(Path(p).is_file() for p in files)
        groups.append(
            FieldGroup(
                name=f"{key}-{k}",
                band=band,
                inputs=files if use_files else original,
                visits=tuple(int(v) for v in visits),
                refcat=refcat,
                photometry_refcat=photometry_refcat,
                format=fmt,
            )
        )
    log.info("grouped %d visits into %d field group(s)", len(ccd.visits), len(groups))
    return groups


_MANIFEST_KEYS = {"name", "inputs", "refcat", "photometry_refcat", "band", "format", "visits"}


def read_manifest(path) -> list[FieldGroup]:
    """Groups from a YAML manifest: a list of ``{name, inputs: [...], refcat, photometry_refcat,
    format, visits}``; relative paths are relative to the manifest's folder."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the manifest: {first}", path=str(path)) from None
    if not isinstance(doc, list) or not doc:
        raise InputError("a manifest is a non-empty YAML list of {name, inputs, refcat}", path=str(path))
    groups, base = [], path.parent

    def resolve(p):
        return str((base / str(p)).resolve())

    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or not entry.get("inputs"):
            raise InputError(f"manifest entry {i} has no 'inputs'", path=str(path))
        unknown = sorted(set(entry) - _MANIFEST_KEYS)
        if unknown:
            raise InputError(
                f"manifest entry {i} has unknown key(s) {unknown}; known: {sorted(_MANIFEST_KEYS)}",
                path=str(path),
            )
        inputs = entry["inputs"] if isinstance(entry["inputs"], list) else [entry["inputs"]]
        name = str(entry.get("name", f"field-{i}"))
        if _safe_name(name) != name or name in (".", ".."):
            raise InputError(
                f"manifest entry {i}: name '{name}' must be a plain folder name (letters, digits, _ . + -)",
                path=str(path),
            )
        groups.append(
            FieldGroup(
                name=name,
                band=str(entry.get("band", "")),
                inputs=tuple(resolve(p) for p in inputs),
                visits=tuple(int(v) for v in entry.get("visits", ()) or ()),
                refcat=resolve(entry["refcat"]) if entry.get("refcat") else None,
                photometry_refcat=resolve(entry["photometry_refcat"])
                if entry.get("photometry_refcat")
                else None,
                format=entry.get("format"),
            )
        )
    names = [g.name for g in groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(
            f"manifest names repeat ({', '.join(dupes)}); each field needs its own name", path=str(path)
        )
    return groups


# --- running -----------------------------------------------------------------------------------
def _load_group(task, group: FieldGroup) -> Field:
    if not group.visits:
        return task.load(
            list(group.inputs),
            refcat=group.refcat,
            photometry_refcat=group.photometry_refcat,
            format=group.format,
        )
    field, _ = read_exposures(list(group.inputs), config=task.config, format=group.format)
    missing = sorted(set(group.visits) - {int(v) for v in field.ccd_images.visits})
    if missing:
        raise InputError(f"visits {missing} of field group '{group.name}' are not in its inputs")
    field = field.select_visits(group.visits)
    bands = sorted(set(field.ccd_images.band) - {""})
    if len(bands) > 1:
        raise InputError(
            f"field group '{group.name}' mixes bands ({', '.join(bands)}); list one band's visits"
        )
    field = replace(field, band=bands[0] if bands else "", inputs=tuple(sorted(set(field.ccd_images.path))))
    ref = phot = None
    if group.refcat:
        ref = task.components["astrometry_reference_loader"](group.refcat, field.band or None)
    phot = ref
    if group.photometry_refcat:
        phot = task.components["photometry_reference_loader"](group.photometry_refcat, field.band or None)
    return replace(field, reference=ref, photometry_reference=phot)


def run_group(
    group: FieldGroup, config_dict: dict, out_root: str, clobber: bool = False, write_report: bool = False
) -> GroupOutcome:
    """Fit one group and write ``out_root/<name>``; any error becomes a failed outcome, not an exception."""
    from .task import JointcalTask

    out = str(Path(out_root) / group.name)
    t0 = time.perf_counter()
    try:
        config = JointcalConfig.from_dict(config_dict)
        task = JointcalTask(config)
        result = task.run(_load_group(task, group))
        writers = []
        if write_report:
            try:
                from app.report import write_report as report_writer

                writers = [report_writer]
            except ImportError:
                log.warning("%s: report.html skipped (the app is not importable here)", group.name)
        task.write_outputs(result, out, clobber=clobber, extra_writers=writers)
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        return GroupOutcome(group.name, True, out, "ok", metrics, time.perf_counter() - t0)
    except JointcalError as exc:
        return GroupOutcome(group.name, False, out, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:
        log.debug("group %s failed", group.name, exc_info=True)
        return GroupOutcome(
            group.name, False, out, f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0
        )


def _worker_probe() -> dict:
    """Run on each worker: can it import jointcal_core, and which version."""
    import platform
    from importlib import metadata

    import jointcal_core  # noqa: F401 - the import is the check

    try:
        version = metadata.version("jointcal")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"jointcal": version, "python": platform.python_version()}


def _connect(jobs: int, scheduler: str | None, memory_limit):
    """A Dask client (and the LocalCluster it owns, or None); ConfigError when it cannot connect."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "running several fields in parallel needs dask.distributed: "
            "pip install 'jointcal[dask]', or use --jobs 1"
        ) from None
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=memory_limit,
            )
            client = Client(cluster, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        where = f"the Dask scheduler at {scheduler}" if scheduler else "a local Dask cluster"
        raise ConfigError(
            f"cannot connect to {where} within {CONNECT_TIMEOUT_S} s ({type(exc).__name__}: {exc})",
            field="scheduler" if scheduler else "jobs",
        ) from None
    except RuntimeError as exc:
        # typically "Nanny failed to start": worker processes are spawned and re-import the calling
        # script, which then must guard its entry point
        raise ConfigError(
            f"the local Dask workers did not start ({exc}); when calling from a script, put the "
            "call under `if __name__ == '__main__':`, or use --jobs 1",
            field="jobs",
        ) from None
    try:
        if scheduler is not None:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        probes = client.run(_worker_probe)
    except Exception as exc:  # noqa: BLE001 - any failure here means the workers are unusable
        client.close()
        if cluster is not None:
            cluster.close()
        raise ConfigError(
            f"the Dask workers cannot run jointcal ({type(exc).__name__}: {exc}); install jointcal "
            "in the workers' environment",
            field="scheduler",
        ) from None
    mine = _worker_probe()["jointcal"]
    for address, info in probes.items():
        if info["jointcal"] != mine:
            log.warning("Dask worker %s runs jointcal %s, this client %s", address, info["jointcal"], mine)
    return client, cluster


def run_groups(
    groups: list[FieldGroup],
    config: JointcalConfig,
    out_root,
    *,
    jobs: int = 2,
    scheduler: str | None = None,
    clobber: bool = False,
    write_report: bool = False,
    progress=None,
    memory_limit="auto",
) -> list[GroupOutcome]:
    """Run every group; on Dask when ``jobs > 1`` or a ``scheduler`` address is given.

    Parameters
    ----------
    groups : list of FieldGroup
        Names must be unique (they are the output sub-folders).
    config : JointcalConfig
    out_root : path
        Each group writes ``out_root/<name>`` atomically.
    jobs : int
        Worker processes of the local cluster (no more than there are groups are started);
        1 runs the groups one after the other in this process.
    scheduler : str, optional
        Address of an existing Dask scheduler (its workers need jointcal installed).
    memory_limit : str or int
        Per-worker memory limit of the local cluster (Dask's ``'auto'``: system memory / workers);
        a worker exceeding it is restarted and its group reported as failed.
    progress : callable, optional
        ``progress(outcome)`` as each group finishes.

    Returns
    -------
    list of GroupOutcome, in the order of ``groups``.
    """
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"field group names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}", field="jobs")
    Path(out_root).mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    if scheduler is None and (jobs == 1 or len(groups) <= 1):
        outcomes = []
        for g in groups:
            outcomes.append(run_group(g, config_dict, str(out_root), clobber, write_report))
            if progress:
                progress(outcomes[-1])
        return outcomes
    from dask.distributed import as_completed

    client, cluster = _connect(min(jobs, len(groups)), scheduler, memory_limit)
    tag = uuid.uuid4().hex[:8]  # unique keys: a shared scheduler may run other jointcal jobs
    futures = {}
    try:
        futures = {
            client.submit(
                run_group,
                g,
                config_dict,
                str(Path(out_root).resolve()),
                clobber,
                write_report,
                key=f"jointcal-{g.name}-{tag}",
                pure=False,
            ): g.name
            for g in groups
        }
        by_name = {}
        for future in as_completed(futures, loop=client.loop):
            name = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died (memory limit, crash): report the group
                outcome = GroupOutcome(
                    name, False, str(Path(out_root) / name), f"worker failed ({type(exc).__name__}: {exc})"
                )
            by_name[name] = outcome
            if progress:
                progress(outcome)
        return [by_name[n] for n in names]
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
