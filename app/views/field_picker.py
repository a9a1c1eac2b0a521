"""FieldPicker: type a directory or catalog under the data root and load it.

The path goes through ``FitSession.open``, which refuses ``..``, absolute paths outside the data
root and symlinks leading out of it; the reason shows under the input.
"""

from __future__ import annotations

from pathlib import Path

import panel as pn
import panel_material_ui as pmui
import param

from ..session import FitSession

__all__ = ["FieldPicker"]


class FieldPicker(pn.viewable.Viewer):
    """Path input + Load button + the outcome of the last attempt."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        root = self.session.data_root
        self.path_input = pmui.TextInput(label="Field (directory or catalog)", value=self._current_text(),
                                         placeholder="demo", description=f"A path under the data root {root}",
                                         sizing_mode="stretch_width", css_classes=["field-path"])
        self.load_button = pmui.Button(label="Load", color="primary", variant="contained",
                                       css_classes=["field-load"])
        self.message = pmui.Typography("", variant="caption", visible=False, css_classes=["field-message"])
        self.load_button.on_click(self._on_load)
        self.path_input.param.watch(self._on_enter, "enter_pressed")
        self._layout = pn.Column(
            pn.Row(self.path_input, self.load_button, sizing_mode="stretch_width"),
            pmui.Typography(f"Data root: {root}", variant="caption", css_classes=["data-root"]),
            self.message, sizing_mode="stretch_width", css_classes=["field-picker"])

    def __panel__(self):
        return self._layout

    def _current_text(self) -> str:
        """The loaded field's path relative to the data root, when it lies under it."""
        if not self.session.field_path:
            return ""
        try:
            return str(Path(self.session.field_path).resolve().relative_to(Path(self.session.data_root).resolve()))
        except ValueError:
            return self.session.field_path

    def _on_enter(self, _event):
        self._on_load(None)

    def _on_load(self, _event):
        self.load_button.loading = True
        try:
            ok = self.session.open(self.path_input.value_input or self.path_input.value)
        finally:
            self.load_button.loading = False
        text = self.session.status if ok else self.session.error
        self.message.param.update(object=text, color="success" if ok else "error", visible=True)
