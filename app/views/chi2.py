"""The fit's chi2/ndof and outliers per step: pure plot functions and the Chi2View viewer.

``history_frame(history)`` turns FitStep records into a table; ``chi2_plot`` and
``outliers_plot`` draw it (one colour per fit kind, dashed lines where the stage changes) and are
shared with the HTML report. ``Chi2View`` feeds the same functions through one
``hv.streams.Pipe``: every new step is sent down the pipe and the plots update in place, so a
zoom the user made is kept (``framewise`` ranges follow the data only until the user zooms).
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the options below need)
import numpy as np
import pandas as pd
import panel as pn
import panel_material_ui as pmui
import param

from ..session import FitSession

__all__ = ["KIND_COLORS", "history_frame", "stage_changes", "chi2_plot", "outliers_plot", "chi2_layout",
           "Chi2View"]

#: line and marker colour of each fit kind
KIND_COLORS = {"astrometry": "#1f77b4", "photometry": "#d62728"}
_COLUMNS = ["step", "kind", "stage", "iteration", "chi2", "ndof", "chi2_ndof", "n_outliers", "status"]


def history_frame(history) -> pd.DataFrame:
    """One row per FitStep: step (1-based over all kinds), kind, stage, iteration, chi2, ndof,
    chi2_ndof, n_outliers, status (text)."""
    rows = [(i + 1, s.kind, s.stage, s.iteration, s.chi2, s.ndof, s.chi2_per_ndof, s.n_outliers,
             s.status.value) for i, s in enumerate(history)]
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    return frame.astype({"step": "int64", "iteration": "int64", "chi2": float, "ndof": "int64",
                         "chi2_ndof": float, "n_outliers": "int64"})


def stage_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows where the (kind, stage) differs from the previous step's: where a new stage starts."""
    label = frame["kind"] + ": " + frame["stage"]
    return frame.assign(label=label)[label.ne(label.shift())].reset_index(drop=True)


def _kind_color(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(color=[KIND_COLORS.get(k, "#555555") for k in frame["kind"]])


def _stage_marks(frame: pd.DataFrame, ydim: str, y_top: float, y_low: float) -> tuple[hv.VLines, hv.Labels]:
    """A dashed line before each step that starts a new stage, and the stage's name near the top.

    Names alternate between ``y_top`` and ``y_low`` so neighbouring short stages stay readable;
    the labels use the plot's own ``ydim`` so plots laid out together share only the step axis.
    """
    starts = stage_changes(frame) if len(frame) else frame.assign(label=pd.Series(dtype=object))
    x = starts["step"].to_numpy(float)
    lines = hv.VLines(pd.DataFrame({"step": x - 0.5}), "step").opts(
        color="#888888", line_dash="dashed", line_width=1, framewise=True)
    y = np.where(np.arange(len(starts)) % 2 == 0, y_top, y_low)
    labels = hv.Labels(pd.DataFrame({"step": x - 0.4, ydim: y, "text": starts["stage"].astype(str)}),
                       ["step", ydim], "text").opts(text_font_size="8pt", text_align="left", text_baseline="top",
                                                   text_color="#555555", framewise=True)
    return lines, labels


def chi2_plot(frame: pd.DataFrame) -> hv.Overlay:
    """chi2/ndof per step on a log axis, a line and markers per fit kind, stage starts marked.

    The overlay always has the same layers (a curve per kind in :data:`KIND_COLORS`, the markers,
    the stage lines and labels), as a DynamicMap updating in place needs.
    """
    frame = _kind_color(frame[np.isfinite(frame["chi2_ndof"]) & (frame["chi2_ndof"] > 0)])
    vdims = ["chi2_ndof", "kind", "stage", "iteration", "chi2", "ndof", "n_outliers", "status", "color"]
    curves = [hv.Curve(frame[frame["kind"] == kind], "step", "chi2_ndof", label=kind).opts(
        color=color, line_width=2, framewise=True) for kind, color in KIND_COLORS.items()]
    points = hv.Scatter(frame, "step", vdims).opts(color="color", size=7, tools=["hover"], line_color="white", framewise=True)
    top = float(frame["chi2_ndof"].max()) * 2.5 if len(frame) else 10.0
    # per element too: ranges follow the data (until the user zooms) only for framewise elements
    return hv.Overlay([*curves, points, *_stage_marks(frame, "chi2_ndof", top, top / 2.2)]).opts(
        logy=True, xlabel="step", ylabel="chi2 / ndof", title="chi2 / ndof per step", responsive=True,
        min_height=260, framewise=True, show_legend=True, legend_position="top_right",
        active_tools=["wheel_zoom"])


def outliers_plot(frame: pd.DataFrame) -> hv.Overlay:
    """Outliers rejected at each step: a bar (spike) per step, coloured by fit kind."""
    frame = _kind_color(frame)
    spikes = hv.Spikes(frame, "step", ["n_outliers", "kind", "stage", "color"]).opts(
        color="color", line_width=6, tools=["hover"], framewise=True)
    top = max(1.0, float(frame["n_outliers"].max()) * 1.3) if len(frame) else 1.0
    return hv.Overlay([spikes, *_stage_marks(frame, "n_outliers", top, top * 0.88)]).opts(
        xlabel="step", ylabel="outliers rejected", title="outliers rejected per step", responsive=True,
        min_height=180, framewise=True, active_tools=["wheel_zoom"])


def chi2_layout(history) -> hv.Layout:
    """Both plots for a finished fit (the report): chi2/ndof above, outliers below."""
    frame = history_frame(history)
    return (chi2_plot(frame) + outliers_plot(frame)).cols(1)


class Chi2View(pn.viewable.Viewer):
    """chi2/ndof and outliers per step of the session's fit, updated in place after each step."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        self._pipe = hv.streams.Pipe(data=history_frame(self.session.history))
        chi2 = hv.DynamicMap(lambda data: chi2_plot(data), streams=[self._pipe])
        outliers = hv.DynamicMap(lambda data: outliers_plot(data), streams=[self._pipe])
        self._plots = pn.pane.HoloViews((chi2 + outliers).cols(1), sizing_mode="stretch_width",
                                        min_height=480, css_classes=["chi2-plot"])
        self._caption = pmui.Typography("", variant="body2", css_classes=["chi2-caption"])
        self.session.param.watch(self._update, "history")
        self._layout = pn.Column(self._caption, self._plots, sizing_mode="stretch_width",
                                 css_classes=["chi2-view"])
        self._update()

    def __panel__(self):
        return self._layout

    def _update(self, *_):
        history = self.session.history
        frame = history_frame(history)
        self._pipe.send(frame)
        if not history:
            self._caption.object = "No fit step yet: Associate, then Step or Run."
            return
        last = history[-1]
        self._caption.object = (f"{len(history)} steps; last: {last.kind} {last.stage}, chi2/ndof = "
                                f"{last.chi2_per_ndof:.4g}, {last.n_outliers_total} outliers in total")
