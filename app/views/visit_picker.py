"""VisitPicker: the sky map of every CCD footprint and the visit table, driving the selection.

Click a footprint to include or exclude its visit, drag a box (box-select tool) to fit exactly
the visits centred in it, or tick rows in the table. All three set
``FitSession.selected_visits``; the map and table follow it. Built once, updated in place.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import panel_material_ui as pmui
import param

from .. import plots
from ..session import FitSession

__all__ = ["VisitPicker"]

_TABLE_TITLES = {"visit": "Visit", "band": "Band", "mjd": "Epoch (MJD)", "date": "Date (UTC)",
                 "airmass": "Airmass", "n_ccds": "CCDs", "n_sources": "Sources"}

_TABLE_FORMATS = {"visit": {"type": "plaintext"}, "n_ccds": {"type": "plaintext"},
                  "n_sources": {"type": "plaintext"},
                  "mjd": {"type": "plaintext"}, "airmass": {"type": "plaintext"}}


class VisitPicker(pn.viewable.Viewer):
    """Footprint map + visit table bound to a :class:`FitSession`."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        self._syncing = False
        self._selection_stream = hv.streams.Params(self.session, ["selected_visits"])
        self._map = pn.pane.HoloViews(None, sizing_mode="stretch_both", min_height=420,
                                      css_classes=["visit-map"])
        self._table = pn.widgets.Tabulator(
            plots.visit_table_empty(), selectable="checkbox", show_index=False, disabled=True,
            titles=_TABLE_TITLES, formatters=_TABLE_FORMATS,
            sizing_mode="stretch_width", height=260, css_classes=["visit-table"])
        self._summary = pmui.Typography("", variant="body2", css_classes=["visit-summary"])
        self._all = pmui.Button(label="Select all visits", variant="outlined", size="small")
        self._all.on_click(self._on_select_all)
        self._empty = pmui.Alert(
            object="No field is loaded. Type a directory or catalog under the data root in the sidebar "
                   "and press Load.", severity="info", css_classes=["empty-state"], sizing_mode="stretch_width")
        self._table.param.watch(self._on_table_selection, "selection")
        self.session.param.watch(self._update_field, "field")
        self.session.param.watch(self._update_selection, "selected_visits")
        self._content = pn.Column(pn.Row(self._summary, self._all), self._map, self._table,
                                  sizing_mode="stretch_both")
        self._layout = pn.Column(self._empty, self._content, sizing_mode="stretch_both")
        self._update_field()

    def __panel__(self):
        if pn.state.curdoc is not None:
            # Tabulator does not tick rows selected before its first render: push them again
            pn.state.onload(self._resend_table_selection)
        return self._layout

    def _resend_table_selection(self):
        rows = list(self._table.selection)
        self._syncing = True
        try:
            self._table.selection = []
            self._table.selection = rows
        finally:
            self._syncing = False

    # --- building -------------------------------------------------------------------------------
    def _footprints(self, selected_visits):
        return plots.footprint_map(self.session.field, selected_visits)

    def _update_field(self, *_):
        field = self.session.field
        self._empty.visible = field is None
        self._content.visible = field is not None
        if field is None:
            self._map.object = None
            self._table.value = plots.visit_table_empty()
            return
        dmap = hv.DynamicMap(self._footprints, streams=[self._selection_stream])
        hv.streams.Tap(source=dmap).add_subscriber(self._on_tap)
        hv.streams.BoundsXY(source=dmap).add_subscriber(self._on_box)
        self._map.object = dmap
        self._table.value = plots.visit_table(field)
        self._update_selection()

    def _update_selection(self, *_):
        visits = self.session.visits
        chosen = self.session.selected_visits
        self._summary.object = f"{len(chosen)} of {len(visits)} visits selected for the fit"
        rows = [int(i) for i in np.flatnonzero(np.isin(self._table.value["visit"].to_numpy(), chosen))]
        if sorted(self._table.selection) != rows:
            self._syncing = True
            try:
                self._table.selection = rows
            finally:
                self._syncing = False

    # --- events --------------------------------------------------------------------------------
    def _on_table_selection(self, event):
        if self._syncing or self.session.field is None:
            return
        visits = self._table.value["visit"].to_numpy()[list(event.new)]
        self.session.select_visits(visits)

    def _on_tap(self, x=None, y=None, **_):
        if x is None or y is None or self.session.field is None:
            return
        visit = plots.visit_at(self.session.field, x, y)
        if visit is not None:
            self.session.toggle_visit(visit)

    def _on_box(self, bounds=None, **_):
        if bounds is None or self.session.field is None:
            return
        visits = plots.visits_in_box(self.session.field, bounds)
        if visits:
            self.session.select_visits(visits)

    def _on_select_all(self, _event):
        self.session.select_visits(self.session.visits)
