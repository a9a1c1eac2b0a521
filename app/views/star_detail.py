"""StarDetail: every measurement of the star picked in a residual plot, and its residuals.

Follows ``session.selected_star`` (set by a click in :class:`~app.views.residuals.ResidualViews`)
and the residual table of that view (``views.residuals``, refreshed after every fit step): a
Tabulator of :func:`app.plots_fit.star_measurements` and the plot of
:func:`app.plots_fit.star_residuals`. Built once; the table and the plot are updated in place.
"""

from __future__ import annotations

import pandas as pd
import panel as pn
import panel_material_ui as pmui
import param

from .. import plots_fit as pf
from ..session import FitSession

__all__ = ["StarDetail"]

_TITLES = {"visit": "Visit", "detector": "Detector", "x": "x (px)", "y": "y (px)", "dx_mas": "dx (mas)",
           "dy_mas": "dy (mas)", "residual_mmag": "mag residual (mmag)", "astro_outlier": "Astrometric outlier",
           "photo_outlier": "Photometric outlier", "reserved": "Reserved"}
_FORMATS = {c: {"type": "plaintext"} for c in ("visit", "detector")}
_FORMATS.update({c: {"type": "tickCross"} for c in ("astro_outlier", "photo_outlier", "reserved")})


class StarDetail(pn.viewable.Viewer):
    """The measurements and per-visit residuals of ``session.selected_star``.

    Parameters
    ----------
    session : FitSession
    views : param.Parameterized
        Holds ``residuals`` (the :func:`app.plots_fit.fit_residuals` table), usually the
        ResidualViews this detail sits in.
    """

    session = param.ClassSelector(class_=FitSession)
    views = param.Parameter(doc="Object with a 'residuals' DataFrame parameter.")

    def __init__(self, **params):
        super().__init__(**params)
        empty = pf.star_measurements(_empty_frame(), 0)
        self._title = pmui.Typography("", variant="subtitle1", css_classes=["star-title"])
        self._table = pn.widgets.Tabulator(
            empty, show_index=False, disabled=True, titles=_TITLES, formatters=_FORMATS, height=220,
            sizing_mode="stretch_width", css_classes=["star-table"],
            text_align={"astro_outlier": "center", "photo_outlier": "center", "reserved": "center"})
        self._plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=280,
                                       css_classes=["star-plot"])
        self._hint = pmui.Typography("Click a point in the Scatter, vs magnitude or Photometry map plot "
                                     "to see that star's measurements.",
                                     variant="body2", css_classes=["star-hint"])
        self._content = pn.Column(self._title, self._table, self._plot, sizing_mode="stretch_width")
        self._layout = pn.Column(self._hint, self._content, sizing_mode="stretch_width")
        self.session.param.watch(self._update, "selected_star")
        self.views.param.watch(self._update, "residuals")
        self._update()

    def __panel__(self):
        return self._layout

    def _update(self, *_):
        star, frame = self.session.selected_star, self.views.residuals
        shown = star is not None and frame is not None and bool((frame["star"] == star).any())
        self._hint.visible, self._content.visible = not shown, shown
        if not shown:
            return
        table = pf.star_measurements(frame, star)
        with pn.io.hold():
            self._title.object = (f"Star {star}: {len(table)} measurements on {table['visit'].nunique()} visits"
                                  + (" (reserved: not in the fit)" if table["reserved"].any() else ""))
            self._table.value = table.round({"x": 2, "y": 2, "dx_mas": 2, "dy_mas": 2, "residual_mmag": 1})
            self._plot.object = pf.star_residuals(frame, star)


def _empty_frame():
    """A residual table with no rows (the columns of plots_fit.fit_residuals that the table shows)."""
    return pd.DataFrame({c: pd.Series(dtype=bool if c.endswith(("outlier", "reserved")) else float)
                         for c in [*pf.STAR_TABLE_COLUMNS, "star"]})
