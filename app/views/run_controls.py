"""RunControls: the fit buttons, the current stage and a progress bar.

Each button calls one ``FitSession`` method; the buttons are disabled while nothing is loaded
(and, except Cancel, while a fit action runs). The fit itself is wired in the session.
"""

from __future__ import annotations

import panel as pn
import panel_material_ui as pmui
import param

from ..session import FitSession

__all__ = ["RunControls"]

#: (label, FitSession method, button colour)
_ACTIONS = [("Associate", "associate", "primary"), ("Step", "step", "primary"), ("Run", "run", "primary"),
            ("Reject outliers", "reject_outliers", "primary"), ("Reset", "reset", "secondary"),
            ("Cancel", "cancel", "error")]


class RunControls(pn.viewable.Viewer):
    """Buttons Associate / Step / Run / Reject outliers / Reset / Cancel, stage and progress."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        self.buttons: dict[str, pmui.Button] = {}
        for label, method, color in _ACTIONS:
            button = pmui.Button(label=label, color=color, variant="contained" if method != "cancel" else "outlined",
                                 size="small", css_classes=["run-button", f"run-{method.replace('_', '-')}"])
            button.on_click(lambda _event, m=method: getattr(self.session, m)())
            self.buttons[method] = button
        self._stage = pmui.Typography("", variant="body2", css_classes=["fit-stage"])
        self._progress = pmui.LinearProgress(value=0, variant="determinate", sizing_mode="stretch_width",
                                             css_classes=["fit-progress"])
        self.session.param.watch(self._update, ["field", "busy", "stage", "progress", "selected_visits"])
        self._layout = pn.Column(pn.FlexBox(*self.buttons.values(), gap="6px"), self._stage, self._progress,
                                 sizing_mode="stretch_width", css_classes=["run-controls"])
        self._update()

    def __panel__(self):
        return self._layout

    def _update(self, *_):
        s = self.session
        nothing = s.field is None or not s.selected_visits
        with pn.io.hold():
            for method, button in self.buttons.items():
                button.disabled = s.field is None or (not s.busy if method == "cancel" else s.busy or nothing)
            self._stage.object = f"Stage: {s.stage}" if s.stage else (
                "Stage: not started" if s.field is not None else "Stage: no field loaded")
            self._progress.value = round(100 * s.progress)
