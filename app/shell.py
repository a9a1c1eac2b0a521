"""The app shell: JointcalApp (a Viewer for notebooks) and create_app (the served page).

``JointcalApp`` composes the views around one :class:`FitSession` with no page template, so it
displays in Jupyter. ``create_app`` puts the same views in a ``panel_material_ui.Page`` whose
fonts and scripts are all served by the app itself: the page makes no request off the machine.
"""

from __future__ import annotations

from pathlib import Path

import panel as pn
import panel_material_ui as pmui
import param

from jointcal_core.data import Field

from .paths import default_field_path
from .session import FitSession
from .views import FieldPicker, OptionsView, RunControls, VisitPicker

__all__ = ["JointcalApp", "create_app"]


class JointcalApp(pn.viewable.Viewer):
    """The whole app for one session: field picker, run controls, options, visit picker.

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
        if field is not None:
            self.session.set_field(field, path=str(path or ""))
        elif path is not None:
            self.session.load(path)
        self.field_picker = FieldPicker(session=self.session)
        self.run_controls = RunControls(session=self.session)
        self.options = OptionsView(config=self.session.config)
        self.visit_picker = VisitPicker(session=self.session)
        self._status = pmui.Typography(self.session.status, variant="body2", css_classes=["session-status"])
        self._error = pmui.Alert(object="", severity="error", closeable=True, visible=False,
                                 sizing_mode="stretch_width", css_classes=["session-error"])
        self.session.param.watch(self._update_messages, ["status", "error"])
        self._update_messages()

    def sidebar(self) -> list:
        """The controls: field, fit actions, options."""
        return [self.field_picker, pmui.Divider(), self.run_controls, pmui.Divider(), self.options]

    def main(self) -> list:
        """The work area: status, error, visit picker."""
        return [self._status, self._error, self.visit_picker]

    def __panel__(self):
        return pn.Row(pn.Column(*self.sidebar(), width=380),
                      pn.Column(*self.main(), sizing_mode="stretch_both"), sizing_mode="stretch_width")

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
    return pmui.Page(title="jointcal: joint calibration", sidebar=app.sidebar(), main=app.main(),
                     sidebar_width=400, theme_toggle=False)
