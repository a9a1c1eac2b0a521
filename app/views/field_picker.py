"""FieldPicker: type a directory or catalog under the data root and load it.

The path goes through ``FitSession.open``, which refuses ``..``, absolute paths outside the data
root and symlinks leading out of it; the reason shows under the input. Load is disabled while
the server holds no typed path: served, a typed value reaches the server (debounced) separately
from a click, and Panel's thread pool may run the two concurrently, so a Load enabled by the
typed value itself is the page's sign that a click will see that value.

Catalogs can also be uploaded (:mod:`app.uploads`): they are written to this browser session's
temporary directory, removed when the session ends, and loaded from there.
"""

from __future__ import annotations

from pathlib import Path

import panel as pn
import panel_material_ui as pmui
import param

from jointcal_core.exceptions import InputError

from ..paths import resolve_under_root
from ..session import FitSession
from ..uploads import UPLOAD_SUFFIXES, load_upload, make_upload_dir, max_upload_bytes, remove_upload_dir

__all__ = ["FieldPicker"]


class FieldPicker(pn.viewable.Viewer):
    """Path input + Load button, an upload button, and the outcome of the last attempt."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        root = self.session.data_root
        self.path_input = pmui.TextInput(label="Field (directory or catalog)", value=self._current_text(),
                                         placeholder="demo", description=f"A path under the data root {root}",
                                         sizing_mode="stretch_width", css_classes=["field-path"])
        self.load_button = pmui.Button(label="Load", color="primary", variant="contained",
                                       css_classes=["field-load"])
        limit_mb = max_upload_bytes() / 1e6
        self.upload_input = pmui.FileInput(
            label="Upload catalogs", multiple=True, accept=",".join(UPLOAD_SUFFIXES),
            description=f"Exposure catalogs (+ reference.* or refcat.*), {limit_mb:g} MB in all",
            max_total_file_size=max_upload_bytes(), css_classes=["field-upload"])
        self.message = pmui.Typography("", variant="caption", visible=False, css_classes=["field-message"])
        self._upload_dir = None
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.on_session_destroyed(lambda _ctx: self.discard_uploads())
        self.load_button.on_click(self._on_load)
        self.path_input.param.watch(self._on_enter, "enter_pressed")
        self.path_input.param.watch(self._on_typed, ["value_input", "value"])
        self.upload_input.param.watch(self._on_upload, "value")
        self._layout = pn.Column(
            pn.Row(self.path_input, self.load_button, self.upload_input, sizing_mode="stretch_width"),
            pmui.Typography(f"Data root: {root}", variant="caption", css_classes=["data-root"]),
            self.message, sizing_mode="stretch_width", css_classes=["field-picker"])
        self._on_typed()

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

    def typed_text(self) -> str:
        """What is in the path box as typed (``value_input``; ``value`` before any keystroke)."""
        text = self.path_input.value_input
        return (self.path_input.value if text is None else text).strip()

    def _on_typed(self, *_):
        self.load_button.disabled = not self.typed_text()

    def _on_enter(self, _event):
        self._on_load(None)

    def _on_load(self, _event):
        text = self.typed_text()
        try:
            resolve_under_root(text, self.session.data_root)
        except InputError:
            # refused at once (the session words the reason): no spinner. Toggling ``loading`` on
            # and off within one callback sometimes left the button spinning (and disabled) for good
            self._show(self.session.open(text))
            return
        self.load_button.loading = True
        try:
            ok = self.session.open(text)
        finally:
            self.load_button.loading = False
        self._show(ok)

    def upload(self, files: dict[str, bytes]) -> bool:
        """Write uploaded catalogs (name -> bytes) to this session's temporary directory and load them."""
        if self._upload_dir is None:
            self._upload_dir = make_upload_dir()
        ok = load_upload(self.session, files, self._upload_dir)
        self._show(ok)
        return ok

    def discard_uploads(self) -> None:
        """Remove this session's upload directory (called when the browser session ends)."""
        remove_upload_dir(self._upload_dir)
        self._upload_dir = None

    def _on_upload(self, event):
        values, names = event.new, self.upload_input.filename
        if values is None or names is None:
            return
        if not isinstance(values, list):
            values, names = [values], [names]
        self.upload_input.loading = True
        try:
            self.upload(dict(zip(names, values)))
        finally:
            self.upload_input.loading = False

    def _show(self, ok: bool) -> None:
        text = self.session.status if ok else self.session.error
        self.message.param.update(object=text, color="success" if ok else "error", visible=True)
