"""ResidualViews: the fit's residual diagnostics, one tab per plot of :mod:`app.plots_fit`.

A visit selector and tabs (Whiskers, Scatter, Histograms, vs magnitude, Photometry map, Zero
points), with :class:`~app.views.star_detail.StarDetail` below. Every plot is a DynamicMap fed by
one ``hv.streams.Pipe``: after each fit step (``session.fit_version``) or visit change the new
residuals go down the pipe and the plots update in place, keeping a zoom the user made. A click
on the scatter, a vs-magnitude plot or the photometry map picks the star of the nearest
measurement into ``session.selected_star`` (the whiskers are per-CCD cells, not stars).
"""

from __future__ import annotations

from functools import partial

import holoviews as hv
import panel as pn
import panel_material_ui as pmui
import param

from .. import plots_fit as pf
from ..session import FitSession
from .star_detail import StarDetail

__all__ = ["ResidualViews"]

_ALL = "All visits"


class ResidualViews(pn.viewable.Viewer):
    """Residual plots of ``session.joint``, refreshed on ``session.fit_version``."""

    session = param.ClassSelector(class_=FitSession)
    residuals = param.DataFrame(default=None, allow_None=True, doc="plots_fit.fit_residuals of the fit.")
    visit = param.Integer(default=None, allow_None=True, doc="Visit shown (None: all visits).")

    def __init__(self, **params):
        super().__init__(**params)
        self._joint = None
        self._taps: dict[str, hv.streams.Tap] = {}   # plot name -> its Tap stream
        self._pipe = hv.streams.Pipe(data=None)
        self._visit_select = pmui.Select(label="Visit", options=[_ALL], value=_ALL, width=220)
        self._visit_select.param.watch(self._on_visit, "value")
        names = ["Whiskers", "Scatter", "Histograms", "vs magnitude", "Photometry map", "Zero points"]
        self._panes = {n: pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=440,
                                            css_classes=[f"residuals-{n.split()[0].lower()}"]) for n in names}
        self._tabs = pn.Tabs(*self._panes.items(), dynamic=True, sizing_mode="stretch_width")
        self.star_detail = StarDetail(session=self.session, views=self)
        self._empty = pmui.Alert(object="No fit yet: press Associate, then Step or Run, to see the residuals.",
                                 severity="info", sizing_mode="stretch_width", css_classes=["residuals-empty"])
        self._content = pn.Column(self._visit_select, self._tabs, self.star_detail, sizing_mode="stretch_width")
        self._layout = pn.Column(self._empty, self._content, sizing_mode="stretch_width")
        self._stale = False
        self.session.param.watch(self._update_fit, ["fit_version", "field"])
        self.session.param.watch(self._on_busy, "busy")
        self._update_fit()

    def __panel__(self):
        return self._layout

    # --- building (once per JointFit) ------------------------------------------------------------
    def _dmap(self, func):
        return hv.DynamicMap(lambda data: func(data), streams=[self._pipe])

    def _points(self, kind: str, x: str | None, y: str | None, opts: dict):
        """Fitted measurements (rasterised when many) under the outliers and reserved ones.

        Each state is its own DynamicMap of one element: HoloViews links a stream only to a
        DynamicMap that returns an element (one returning an Overlay gets no plot callback), so
        the click is taken on the fitted layer, whose plot spans the whole frame.
        """
        x = x or ("dx_mas" if kind == "astrometry" else "mag")
        y = y or ("dy_mas" if kind == "astrometry" else "residual_mmag")
        layers = {s: self._dmap(lambda data, s=s: pf.residual_points(data["frame"], kind, s, x, y))
                  for s in pf.STATE_COLORS}
        if len(self.residuals) > pf.RASTERIZE_ABOVE:
            layers["used"] = pf.rasterize_points(layers["used"], dynamic=True)
        self._tap(f"{kind}: {y} vs {x}", layers["used"], x, y)
        plot = layers["used"] * layers["outlier"] * layers["reserved"]
        return plot.opts(responsive=True, min_height=420, **opts)

    def _tap(self, name: str, source, x_col: str, y_col: str) -> None:
        """A Tap on ``source`` (a DynamicMap of one element) picking the star nearest the click."""
        self._taps[name] = hv.streams.Tap(source=source)
        self._taps[name].add_subscriber(partial(self._on_tap, x_col, y_col))

    def _build(self):
        # a whisker is a CCD cell, not a star: the whiskers take no click
        whiskers = self._dmap(lambda d: pf.residual_whiskers(d["frame"], d["visit"]))
        hists = [self._dmap(lambda d, c=c: pf.residual_histogram(d["frame"], c, d["visit"]))
                 for c in ("dx_mas", "dy_mas", "residual_mmag")]
        photmap = self._dmap(lambda d: pf.photometry_residual_map(d["frame"], d["visit"]))
        self._tap("photometry map", photmap, "ra", "dec")
        objects = {
            "Whiskers": whiskers,
            "Scatter": self._points("astrometry", None, None, {"data_aspect": 1, "title": "dx vs dy"}),
            "Histograms": hv.Layout(hists).cols(3),
            "vs magnitude": (self._points("astrometry", "mag", "dr_mas", {"title": "astrometry vs magnitude"})
                             + self._points("photometry", "mag", "residual_mmag",
                                            {"title": "photometry vs magnitude"})).cols(2),
            "Photometry map": photmap,
            "Zero points": self._dmap(lambda d: pf.zero_point_map(d["zp"], d["zp_visit"])),
        }
        kinds = self._joint.kinds
        for name, obj in objects.items():
            needs = {"Whiskers": "astrometry", "Scatter": "astrometry", "Photometry map": "photometry",
                     "Zero points": "photometry"}.get(name)
            self._panes[name].param.update(object=obj, visible=needs is None or needs in kinds)

    # --- updating ----------------------------------------------------------------------------------
    def _data(self) -> dict:
        joint, visit = self._joint, self.visit
        frame = self.residuals
        zp_visit = visit if visit is not None else int(frame["visit"].min())
        zp = None
        if "photometry" in joint.problems:
            zp = pf.zero_point_grid(joint.problems["photometry"], joint.prepared.field, zp_visit,
                                    astrometry=joint.problems.get("astrometry"),
                                    center_ra_deg=joint.prepared.association.field_center_deg[0])
        return {"frame": pf.select_visit(frame, visit), "visit": visit, "zp": zp, "zp_visit": zp_visit}

    def _update_fit(self, *_):
        joint = self.session.joint
        if joint is not None and joint is self._joint and self.session.busy:
            # a Run is stepping: each refresh costs ~0.3 s of the server's shared event loop, which
            # other sessions wait on; refresh once when the action ends (_on_busy)
            self._stale = True
            return
        self._stale = False
        self._empty.visible, self._content.visible = joint is None, joint is not None
        if joint is None:
            self._joint = None
            self.residuals = None
            return
        with pn.io.hold():
            self.residuals = pf.fit_residuals(joint)
            if joint is not self._joint:
                self._joint = None            # no pipe update from _on_visit while rebuilding
                visits = [int(v) for v in joint.prepared.field.ccd_images.visits]
                self._visit_select.options = [_ALL, *map(str, visits)]
                self.visit = visits[0] if self.visit not in visits else self.visit
                self._visit_select.value = str(self.visit)
                self._joint = joint
                self._pipe.event(data=self._data())
                self._build()
            else:
                self._pipe.send(self._data())

    def _on_busy(self, event):
        if not event.new and self._stale:
            self._update_fit()

    def _on_visit(self, event):
        self.visit = None if event.new == _ALL else int(event.new)
        if self._joint is not None and self.residuals is not None:
            self._pipe.send(self._data())

    def _on_tap(self, x_col: str, y_col: str, x=None, y=None, **_):
        if x is None or y is None or self.residuals is None:
            return
        frame = pf.select_visit(self.residuals, self.visit)
        star = pf.nearest_star(frame, x_col, y_col, x, y)
        if star is not None:
            self.session.selected_star = star
