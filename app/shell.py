"""The app shell: JointcalApp (a Viewer for notebooks) and create_app (the served page).

``JointcalApp`` composes the views around one :class:`FitSession` with no page template, so it
displays in Jupyter. ``create_app`` puts the same views in a ``panel_material_ui.Page`` whose
fonts and scripts are all served by the app itself: the page makes no request off the machine.

Served, the session's fit actions run in a worker thread and hand their parameter changes to
:func:`page_dispatcher`, which schedules them on the page's event loop (``pn.state.execute`` on
the session's document, the way Panel applies changes made from other threads) inside
``pn.io.hold`` so one step reaches the browser as one message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import panel as pn
import panel_material_ui as pmui
import param
from panel.io.state import set_curdoc
from panel.util import edit_readonly

from jointcal_core.data import Field

from .paths import default_field_path
from .session import FitSession
from .views import Chi2View, ExportView, FieldPicker, OptionsView, RunControls, VisitPicker

__all__ = ["JointcalApp", "create_app", "page_dispatcher"]

log = logging.getLogger(__name__)


def _residual_views_class():
    """``app.views.residuals.ResidualViews`` when it is there (written separately), else None."""
    try:
        from .views.residuals import ResidualViews
    except ImportError:
        return None
    except Exception:  # noqa: BLE001  (a broken optional view must not take the app down)
        log.warning("app.views.residuals failed to import; the residual plots are left out", exc_info=True)
        return None
    return ResidualViews


def page_dispatcher() -> Callable[[Callable[[], None]], None] | None:
    """A ``dispatch(fn)`` running ``fn`` on this page's event loop, or None outside a served page.

    In a notebook (no server session) a worker's changes are applied where they are made; Panel
    sends them to the browser through the notebook's comm.
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return None

    def run_on_page(fn: Callable[[], None]) -> None:
        def held():
            with pn.io.hold(doc):
                fn()
        with set_curdoc(doc):
            pn.state.execute(held, schedule=True)
    return run_on_page


class JointcalApp(pn.viewable.Viewer):
    """The whole app for one session: field picker, run controls, options, visits, fit, export.

    Parameters
    ----------
    path : str or Path, optional
        Field to load at start (a directory or catalog; trusted, no data-root check).
    field : Field, optional
        An in-memory field to use instead of ``path``.
    data_root : str, optional
        Directory that typed paths must lie under (default ``$JOINTCAL_DATA_ROOT`` or ``assets/``).
    """

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, path: str | Path | None = None, *, field: Field | None = None,
                 data_root: str | None = None, **params):
        if "session" not in params:
            params["session"] = FitSession(**({"data_root": str(data_root)} if data_root else {}))
        super().__init__(**params)
        self.session.dispatch = page_dispatcher()
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.on_session_destroyed(lambda _ctx: self.session.cancel())
        if field is not None:
            self.session.set_field(field, path=str(path or ""))
        elif path is not None:
            self.session.load(path)
        self.field_picker = FieldPicker(session=self.session)
        self.run_controls = RunControls(session=self.session)
        self.options = OptionsView(config=self.session.config)
        self.visit_picker = VisitPicker(session=self.session)
        self.chi2 = Chi2View(session=self.session)
        self.export = ExportView(session=self.session)
        residuals = _residual_views_class()
        self.residuals = residuals(session=self.session) if residuals is not None else None
        self._status = pmui.Typography(self.session.status, variant="body2", css_classes=["session-status"])
        self._error = pmui.Alert(object="", severity="error", closeable=True, visible=False,
                                 sizing_mode="stretch_width", css_classes=["session-error"])
        tabs = [("Visits", self.visit_picker), ("Fit", self.chi2)]
        if self.residuals is not None:
            tabs.append(("Residuals", self.residuals))
        tabs.append(("Export", self.export))
        # dynamic: only the shown tab is rendered. Plots updated while hidden in a non-dynamic tab
        # froze Chromium (the residual plots), and panel_material_ui's dynamic Tabs made bokeh
        # log layout errors on every switch; panel's own Tabs does neither.
        self.tabs = pn.Tabs(*tabs, dynamic=True, sizing_mode="stretch_width", css_classes=["main-tabs"])
        self.session.param.watch(self._update_messages, ["status", "error"])
        self._update_messages()

    def sidebar(self) -> list:
        """The controls: field, fit actions, options."""
        return [self.field_picker, pmui.Divider(), self.run_controls, pmui.Divider(), self.options]

    def main(self) -> list:
        """The work area: status, error, and the Visits / Fit / Residuals / Export tabs."""
        return [self._status, self._error, self.tabs]

    def __panel__(self):
        return pn.Row(pn.Column(*self.sidebar(), width=380),
                      pn.Column(*self.main(), sizing_mode="stretch_width"), sizing_mode="stretch_width")

    def _update_messages(self, *_):
        self._status.object = self.session.status
        self._error.param.update(object=self.session.error, visible=bool(self.session.error))


def create_app(path: str | Path | None = None, *, field: Field | None = None,
               data_root: str | None = None, open_demo: bool = True) -> pmui.Page:
    """The served page. With no ``path`` nor ``field`` it opens the bundled demo when present
    (unless ``open_demo`` is False: then it starts on the empty state).

    Returns
    -------
    panel_material_ui.Page
        Call ``.servable()`` on it in a ``panel serve`` script.
    """
    if open_demo and path is None and field is None and default_field_path().exists():
        path = default_field_path()
    app = JointcalApp(path, field=field, data_root=data_root)
    page = pmui.Page(title="jointcal: joint calibration", sidebar=app.sidebar(), main=app.main(),
                     sidebar_width=400, theme_toggle=False)
    # Page.busy follows Panel's server-wide ``state.busy``: every callback of any session would
    # then re-send every session's page model (measured: 60 % of the event loop during another
    # session's fit). The run controls show this session's own progress instead.
    # Setting a value drops the link but not param's watcher on the global ``state``, which would
    # keep every closed session's page (and its field and fit) alive: remove it too.
    with edit_readonly(page):
        page.busy = False
    for _, watcher in page._param__private.ref_watchers:
        watcher.inst.param.unwatch(watcher)
    page._param__private.ref_watchers = []
    page.jointcal_app = app  # for tests and scripts: the app behind the page
    return page
