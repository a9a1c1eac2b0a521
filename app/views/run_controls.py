"""RunControls: the fit buttons, what went into the fit, the current stage and a progress bar.

Every button except Cancel hands its action to ``FitSession.start``: the fit runs in the
session's worker thread and its progress reaches the page through the session's dispatcher, so
the page (and every other session on the server) stays responsive while it runs. Cancel stops
a Run between two steps. Buttons are disabled while nothing is loaded and, except Cancel, while
an action runs; Step, Run and Reject outliers also wait for an Associate that is up to date.
"""

from __future__ import annotations

import panel as pn
import panel_material_ui as pmui
import param

from ..session import FitSession

__all__ = ["RunControls"]

#: (label, FitSession action, button colour)
_ACTIONS = [("Associate", "associate", "primary"), ("Step", "step", "primary"), ("Run", "run", "primary"),
            ("Reject outliers", "reject_outliers", "primary"), ("Reset", "reset", "secondary"),
            ("Cancel", "cancel", "error")]
_NEED_FIT = {"step", "run", "reject_outliers", "reset"}


class RunControls(pn.viewable.Viewer):
    """Buttons Associate / Step / Run / Reject outliers / Reset / Cancel, fit input, stage, progress."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        self.buttons: dict[str, pmui.Button] = {}
        for label, method, color in _ACTIONS:
            button = pmui.Button(label=label, color=color, variant="contained" if method != "cancel" else "outlined",
                                 size="small", css_classes=["run-button", f"run-{method.replace('_', '-')}"])
            button.on_click(lambda _event, m=method: self._on_click(m))
            self.buttons[method] = button
        self._summary = pmui.Typography("", variant="caption", css_classes=["fit-summary"])
        self._stale = pmui.Typography("Visits or options changed: press Associate to refit.", variant="caption",
                                      color="warning", visible=False, css_classes=["fit-stale"])
        self._stage = pmui.Typography("", variant="body2", css_classes=["fit-stage"])
        self._progress = pmui.LinearProgress(value=0, variant="determinate", sizing_mode="stretch_width",
                                             css_classes=["fit-progress"])
        self.session.param.watch(self._update, ["field", "busy", "stage", "progress", "selected_visits", "stale",
                                                "fit_summary", "fit_version"])
        self._layout = pn.Column(pn.FlexBox(*self.buttons.values(), gap="6px"), self._summary, self._stale,
                                 self._stage, self._progress, sizing_mode="stretch_width",
                                 css_classes=["run-controls"])
        self._update()

    def __panel__(self):
        return self._layout

    def _on_click(self, method: str) -> None:
        if method == "cancel":
            self.session.cancel()
        else:
            self.session.start(method)

    def _enabled(self, method: str) -> bool:
        s = self.session
        if s.field is None:
            return False
        if method == "cancel":
            return s.busy
        if s.busy or not s.selected_visits:
            return False
        if method in _NEED_FIT:
            return s.joint is not None and (method == "reset" or not s.stale)
        return True

    def _update(self, *_):
        s = self.session
        with pn.io.hold():
            for method, button in self.buttons.items():
                button.disabled = not self._enabled(method)
            self._summary.object = s.fit_summary or ("Press Associate to build the fit from the selected visits."
                                                     if s.field is not None else "")
            self._stale.visible = s.stale
            running = " (running...)" if s.busy else ""
            self._stage.object = (f"Stage: {s.stage}{running}" if s.stage else
                                  "Stage: not started" if s.field is not None else "Stage: no field loaded")
            self._progress.value = round(100 * s.progress)
