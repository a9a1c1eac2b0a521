"""report.html: a standalone page with the app's plots of a fit, for the output folder.

``write_report(out_dir, joint)`` is an extra writer of
:func:`jointcal_core.io.outputs.write_outputs` (the CLI's ``jointcal run`` and the app's export
both pass it). The page holds the metrics, the chi2/ndof and outlier plots of
:mod:`app.views.chi2` and the residual and zero-point plots of :mod:`app.plots_fit`
(:func:`report_plots`). BokehJS is inlined: the page opens offline and requests nothing from anywhere.

Every plot is rendered on a fresh bokeh ``Document`` of the report's own. ``hv.render`` would
attach them to bokeh's ``curdoc()``, which inside ``panel serve`` is the document of whichever
session the event loop is serving at that moment (a module global, seen from every thread):
the app's export, rendering in its worker thread, then set the theme of, and attached models to, a
live page's document without its lock, and the page hung. With a private document the worker
touches nothing the server shares, so the app's export writes the same report as ``jointcal run``.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # registers the bokeh backend
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import Div
from bokeh.resources import Resources

from jointcal_core.metrics import compute_metrics

from .views.chi2 import chi2_layout

__all__ = ["report_sections", "write_app_report", "write_report"]

log = logging.getLogger(__name__)



class _PlainInline(Resources):
    """BokehJS inlined, without the scripts other imported libraries (panel) attach to every page:
    the report uses bokeh's own models only, and must not reference files it does not carry."""

    def __init__(self, components=None):
        super().__init__(mode="inline", components=components)

    def clone(self, *, components=None) -> _PlainInline:
        return _PlainInline(components=components if components is not None else list(self.components))

    def _collect_external_resources(self, resource_attr):
        return []


def _fit_plots(joint) -> list[tuple[str, object]]:
    """The residual and zero-point plots of :mod:`app.plots_fit` (the app's Residuals tab)."""
    try:
        return report_plots(joint)
    except Exception:  # a failing optional plot must not lose the whole output folder
        log.warning("report.html: the residual plots failed; the report has the chi2 plots only", exc_info=True)
        return []


def report_plots(joint) -> list[tuple[str, object]]:
    """(title, HoloViews object) of the residual diagnostics over all visits, as in the app."""
    from . import plots_fit as pf

    frame = pf.fit_residuals(joint)
    out = []
    if "astrometry" in joint.kinds:
        out += [("Astrometric residuals binned over each CCD (all visits)", pf.residual_whiskers(frame)),
                ("Astrometric residuals dx vs dy", pf.residual_scatter(frame)),
                ("Residual histograms", pf.residual_histograms(frame)),
                ("Astrometric residual vs magnitude", pf.residual_vs_mag(frame, "astrometry"))]
    if "photometry" in joint.kinds:
        visit = int(frame["visit"].min())
        grid = pf.zero_point_grid(joint.problems["photometry"], joint.prepared.field, visit,
                                  astrometry=joint.problems.get("astrometry"),
                                  center_ra_deg=joint.prepared.association.field_center_deg[0])
        out += [("Photometric residual vs magnitude", pf.residual_vs_mag(frame, "photometry")),
                ("Photometric residual map (all visits)", pf.photometry_residual_map(frame)),
                (f"Fitted zero points relative to the visit mean, visit {visit}", pf.zero_point_map(grid, visit))]
    return out


def _metrics_table(metrics: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{_fmt(v)}</td></tr>"
                   for k, v in sorted(metrics.items()) if not isinstance(v, dict))
    return f"<table style='border-collapse:collapse; font-size:13px'>{rows}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def report_sections(joint, residual_plots: bool = True) -> list[tuple[str, object]]:
    """(title, HoloViews object) of every plot in the report, in page order."""
    return [("Fit history", chi2_layout(joint.history)), *(_fit_plots(joint) if residual_plots else [])]


def write_report(out_dir: str | Path, joint, residual_plots: bool = True) -> Path:
    """Write ``out_dir/report.html`` for a :class:`~jointcal_core.pipeline.JointFit`; returns its path.

    ``residual_plots=False`` writes the fit history and metrics only. Safe to call from a worker
    thread of a served app: nothing is attached to any session's document (module docstring).
    """
    field = joint.prepared.field
    visits = [int(v) for v in field.ccd_images.visits]
    head = (f"<h1>jointcal report</h1><p>{len(visits)} visits ({', '.join(map(str, visits))}), "
            f"{len(field.ccd_images)} ccdImages, {len(field.measurements)} detections, band "
            f"{html.escape(str(field.band or '?'))}; fits: {', '.join(joint.kinds)}; stage: "
            f"{html.escape(joint.stage_label())}, {len(joint.history)} steps.</p>")
    items = [Div(text=head, styles={"font-family": "sans-serif"}, sizing_mode="stretch_width")]
    doc = Document()  # the report's own: never bokeh's curdoc(), a served session's document
    for title, obj in report_sections(joint, residual_plots):
        items.append(Div(text=f"<h2>{html.escape(title)}</h2>", styles={"font-family": "sans-serif"}))
        items.append(_render(obj, doc))
    items.append(Div(text="<h2>Metrics</h2>" + _metrics_table(compute_metrics(joint)),
                     styles={"font-family": "sans-serif"}))
    page = column(*items, sizing_mode="stretch_width", styles={"max-width": "1100px"})
    path = Path(out_dir) / "report.html"
    path.write_text(file_html(page, _PlainInline(), title="jointcal report"), encoding="utf-8")
    return path


def _render(obj, doc: Document):
    """A HoloViews object as a fixed-size bokeh model (responsive sizing needs a page around it),
    its plot attached to ``doc`` (``hv.render`` would attach it to ``curdoc()``)."""
    sized = obj.map(lambda e: e.opts(responsive=False, width=1000, height=300, min_height=None),
                    lambda e: isinstance(e, (hv.Element, hv.Overlay)) and not isinstance(e, hv.Layout))
    # mode="server": the only mode in which holoviews attaches the plot to the ``doc`` it is given
    return hv.renderer("bokeh").instance(mode="server").get_plot(sized, doc=doc).state


def write_app_report(out_dir: str | Path, joint) -> Path:
    """The report written by the app's export: the same as ``jointcal run``'s (:func:`write_report`)."""
    return write_report(out_dir, joint)
