"""Many fields at once (jointcal's ``canMultiprocess``): group exposures, fit groups in parallel.

Inputs from several fields are grouped by band and by sky overlap (visits whose CCD footprints
overlap, transitively, form one field); each group is an independent fit with its own output
folder ``OUT/<band>-<n>``. Groups run on ``dask.distributed``: a local cluster of ``jobs``
single-threaded workers by default, or an existing scheduler. A failing group does not stop
the others; :func:`run_groups` returns one :class:`GroupOutcome` per group saying what happened.

Workers receive only plain data (file paths, the config as a dict) and read their own inputs,
so nothing large crosses process boundaries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
from scipy.sparse import csgraph, coo_matrix

from .config import JointcalConfig
from .data import Field
from .exceptions import InputError, JointcalError

__all__ = ["FieldGroup", "GroupOutcome", "group_field", "group_inputs", "run_group", "run_groups", "read_manifest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldGroup:
    """One independent fit: a name, its band, its input files and visits."""

    name: str
    band: str
    inputs: tuple
    visits: tuple
    refcat: str | None = None
    photometry_refcat: str | None = None


@dataclass
class GroupOutcome:
    """Result of one group's run."""

    name: str
    ok: bool
    output: str
    message: str = ""
    metrics: dict = dc_field(default_factory=dict)


def _visit_overlaps(field: Field) -> np.ndarray:
    """Boolean (n_visits, n_visits) matrix: do the visits' CCD footprints overlap on the sky?"""
    ccd = field.ccd_images
    visits = ccd.visits
    centers = ccd.centers_deg()
    corners = ccd.corners_deg()
    # radius of each CCD: largest centre-corner distance (small-angle, deg)
    cosd = np.cos(np.radians(centers[:, 1]))[:, None]
    radius = np.max(np.hypot((corners[:, :, 0] - centers[:, None, 0]) * cosd,
                             corners[:, :, 1] - centers[:, None, 1]), axis=1)
    vi = np.searchsorted(visits, ccd.visit)
    dra = (centers[:, None, 0] - centers[None, :, 0] + 180) % 360 - 180
    dist = np.hypot(dra * np.cos(np.radians(centers[:, None, 1])), centers[:, None, 1] - centers[None, :, 1])
    touch = dist < (radius[:, None] + radius[None, :])
    out = np.zeros((visits.size, visits.size), bool)
    ii, jj = np.nonzero(touch)
    out[vi[ii], vi[jj]] = True
    return out


def group_field(field: Field) -> list[tuple[str, np.ndarray]]:
    """Split a field's visits by band and sky overlap; returns (band, visits) per group."""
    ccd = field.ccd_images
    visits = ccd.visits
    band_of = {int(v): str(ccd.band[np.flatnonzero(ccd.visit == v)[0]]) for v in visits}
    overlap = _visit_overlaps(field)
    same_band = np.array([[band_of[int(a)] == band_of[int(b)] for b in visits] for a in visits])
    n, labels = csgraph.connected_components(coo_matrix(overlap & same_band), directed=False)
    groups = []
    for k in range(n):
        members = visits[labels == k]
        groups.append((band_of[int(members[0])], members))
    groups.sort(key=lambda g: (g[0], int(g[1][0])))
    return groups


def group_inputs(inputs, refcat=None, photometry_refcat=None, config=None, format=None) -> list[FieldGroup]:
    """Read the inputs once, group them, and name each group ``<band>-<k>``."""
    from .io import load_field

    field = load_field(inputs, refcat=None, config=config, format=format)
    ccd = field.ccd_images
    groups = []
    counters: dict[str, int] = {}
    for band, visits in group_field(field):
        k = counters.get(band, 0)
        counters[band] = k + 1
        rows = np.isin(ccd.visit, visits)
        paths = tuple(sorted(set(ccd.path[rows])))
        groups.append(FieldGroup(name=f"{band or 'band'}-{k}", band=band, inputs=paths,
                                 visits=tuple(int(v) for v in visits), refcat=refcat,
                                 photometry_refcat=photometry_refcat))
    return groups


def read_manifest(path) -> list[FieldGroup]:
    """Groups from a YAML manifest: a list of ``{name, inputs: [...], refcat, photometry_refcat}``."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", path=str(path)) from None
    if not isinstance(doc, list) or not doc:
        raise InputError("a manifest is a non-empty YAML list of {name, inputs, refcat}", path=str(path))
    groups = []
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or "inputs" not in entry:
            raise InputError(f"manifest entry {i} has no 'inputs'", path=str(path))
        base = path.parent
        inputs = tuple(str((base / p).resolve()) for p in entry["inputs"])
        ref = entry.get("refcat")
        pref = entry.get("photometry_refcat")
        groups.append(FieldGroup(name=str(entry.get("name", f"field-{i}")), band=str(entry.get("band", "")),
                                 inputs=inputs, visits=(),
                                 refcat=str((base / ref).resolve()) if ref else None,
                                 photometry_refcat=str((base / pref).resolve()) if pref else None))
    return groups


def run_group(group: FieldGroup, config_dict: dict, out_root: str, clobber: bool = False,
              write_report: bool = False) -> GroupOutcome:
    """Fit one group and write ``out_root/<name>``; errors become a failed outcome, not an exception."""
    from .task import JointcalTask

    out = str(Path(out_root) / group.name)
    try:
        config = JointcalConfig.from_dict(config_dict)
        task = JointcalTask(config)
        field = task.load(list(group.inputs), refcat=group.refcat, photometry_refcat=group.photometry_refcat)
        if group.visits:
            field = field.select_visits(group.visits)
        result = task.run(field)
        writers = []
        if write_report:
            try:
                from app.report import write_report as report_writer
                writers = [report_writer]
            except ImportError:
                pass
        task.write_outputs(result, out, clobber=clobber, extra_writers=writers)
        metrics = result.metrics
        return GroupOutcome(group.name, True, out, "ok",
                            {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    except JointcalError as exc:
        return GroupOutcome(group.name, False, out, str(exc))
    except Exception as exc:  # noqa: BLE001 - one group's bug must not stop the others; reported as failed
        return GroupOutcome(group.name, False, out, f"{type(exc).__name__}: {exc}")


def run_groups(groups: list[FieldGroup], config: JointcalConfig, out_root, *, jobs: int = 2,
               scheduler: str | None = None, clobber: bool = False, write_report: bool = False,
               progress=None) -> list[GroupOutcome]:
    """Run every group, in parallel on Dask when ``jobs > 1`` or a ``scheduler`` address is given."""
    Path(out_root).mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    if scheduler is None and jobs <= 1:
        outcomes = []
        for g in groups:
            outcomes.append(run_group(g, config_dict, str(out_root), clobber, write_report))
            if progress:
                progress(outcomes[-1])
        return outcomes
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError("running several fields in parallel needs dask.distributed: "
                         "pip install 'jointcal[dask]', or use --jobs 1") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {client.submit(run_group, g, config_dict, str(out_root), clobber, write_report,
                                 key=f"jointcal-{g.name}", pure=False): g.name for g in groups}
        by_name = {}
        for future in as_completed(futures):
            name = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died: report the group as failed
                outcome = GroupOutcome(name, False, str(Path(out_root) / name), f"worker failed: {exc}")
            by_name[name] = outcome
            if progress:
                progress(outcome)
        return [by_name[g.name] for g in groups]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
