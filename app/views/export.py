"""ExportView: the fit's output folder as a zip download, or written to a folder on the server.

Both write DESIGN section 4's layout with ``jointcal_core.io.outputs.write_outputs`` (the CLI's
writer) plus ``report.html`` (:func:`app.report.write_report`), in the session's worker thread.
The download is built first ("Build zip"), then offered by a ``FileDownload`` whose bytes are
already in the page: the zip is sent to the browser as soon as it is built, before the button is
enabled, so a click saves it at once, inside the click, with no round trip to the server (see
:meth:`ExportView._offer_zip`). A server folder
must lie under the data root: its parent is checked with :func:`app.paths.resolve_under_root`
(no ``..``, no symlink out of the root) and its name must be a plain folder name.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePath

import panel as pn
import panel_material_ui as pmui
import param

from jointcal_core.exceptions import InputError

from ..paths import resolve_under_root
from ..session import FitSession

__all__ = ["ExportView", "output_dir_under_root"]


def output_dir_under_root(text: str, root: str | Path) -> Path:
    """The output folder a person typed, checked to lie under the data root ``root``.

    The folder itself may not exist yet; its parent must (and must resolve inside ``root``).
    Raises InputError with the reason otherwise.
    """
    text = (text or "").strip()
    if not text:
        raise InputError(f"no output folder given: type a folder name under the data root {Path(root).resolve()}")
    typed = PurePath(text)
    if ".." in typed.parts:
        raise InputError(f"'..' is not allowed in the output folder: give a folder under the data root {root}")
    name = typed.name
    if not name or name == ".":
        raise InputError("the output folder needs a name, e.g. 'out/demo-fit'")
    parent = Path(root).resolve() if str(typed.parent) in ("", ".") else resolve_under_root(str(typed.parent), root)
    out = parent / name
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{text} exists and is not a folder; choose another output folder")
    return out


class ExportView(pn.viewable.Viewer):
    """Build-and-download zip of the outputs, and "write to a server folder" under the data root."""

    session = param.ClassSelector(class_=FitSession)

    def __init__(self, **params):
        super().__init__(**params)
        self._tmp = tempfile.TemporaryDirectory(prefix="jointcal-export-")
        self.build_button = pmui.Button(label="Build zip", variant="contained", color="primary",
                                        css_classes=["export-build"])
        # auto=False: a click saves the data already in the page (never a fetch from the server);
        # the label is then a link inside the button, shown without the link underline
        self.download = pmui.FileDownload(label="Download outputs (.zip)", disabled=True, auto=False,
                                          filename="jointcal-outputs.zip", sx={"& a": {"textDecoration": "none"}},
                                          css_classes=["export-download"])
        self.folder_input = pmui.TextInput(label="Server folder (under the data root)", placeholder="out/demo-fit",
                                           sizing_mode="stretch_width", css_classes=["export-folder"])
        self.clobber = pmui.Switch(label="Replace an existing folder", value=False, css_classes=["export-clobber"])
        self.write_button = pmui.Button(label="Write to server", variant="outlined", css_classes=["export-write"])
        self.message = pmui.Typography("", variant="body2", css_classes=["export-message"])
        self.build_button.on_click(self._on_build)
        self.write_button.on_click(self._on_write)
        self.session.param.watch(self._update, ["last_export", "busy", "fit_version", "stale", "error"])
        self._pending: str | None = None
        self._zip_version: int | None = None
        self._layout = pn.Column(
            pmui.Typography("Outputs: per-CCD WCS (FITS headers), SCAMP .head files, zero points, calibration.json, "
                            "residual and star tables, metrics, config, provenance and report.html.",
                            variant="body2"),
            pn.Row(self.build_button, self.download), pmui.Divider(),
            pn.Row(self.folder_input, self.write_button, sizing_mode="stretch_width"), self.clobber, self.message,
            sizing_mode="stretch_width", css_classes=["export-view"])
        self._update()

    def __panel__(self):
        return self._layout

    def _on_build(self, _event):
        if self.session.busy:
            # a second click can arrive before the disabled state reaches the browser: ignore it,
            # its refusal would otherwise end the pending export's progress message
            return
        from ..report import write_app_report  # here, not at import: app.report imports the views package
        stem = Path(self.session.field_path).name or "field"
        folder = Path(tempfile.mkdtemp(dir=self._tmp.name)) / f"jointcal-{stem}"
        self._pending = "zip"
        self.download.disabled = True
        self.message.object = "Writing the outputs..."
        if not self.session.start("export", out_dir=folder, extra_writers=[write_app_report],
                                  zip_to=folder.with_suffix(".zip")):
            self._pending = None
            self.message.object = "A fit action is still running: export once it has finished."

    def _on_write(self, _event):
        if self.session.busy:
            return                     # see _on_build
        try:
            out = output_dir_under_root(self.folder_input.value_input or self.folder_input.value,
                                        self.session.data_root)
        except InputError as exc:
            self.message.object = str(exc)
            return
        from ..report import write_app_report
        self._pending = "folder"
        self.message.object = f"Writing {out}..."
        self.session.start("export", out_dir=out, clobber=self.clobber.value, extra_writers=[write_app_report])

    def _offer_zip(self, zip_path: Path) -> None:
        """Send the built zip to the browser, then enable its download button.

        The bytes reach the page (``FileDownload.transfer``, base64 in the ``data`` property) before
        ``disabled=False`` does, so whenever the button is clickable a click saves the zip from
        data already in the page, synchronously inside the click. A download fetched on click
        instead (FileDownload's default) waits for a round trip through the server's event queue
        and thread pool and is then started by a script after the click; on a loaded machine that
        once gave no download at all.
        """
        self.download.param.update(file=str(zip_path), filename=zip_path.name)
        self.download.transfer()
        self.download.param.update(disabled=False, label=f"Download {zip_path.name}")

    def _update(self, *events):
        s = self.session
        ready = s.joint is not None and not s.stale and not s.busy
        self.build_button.disabled = not ready
        self.write_button.disabled = not ready
        names = {e.name for e in events}
        if "last_export" in names and s.last_export:
            if s.last_export.endswith(".zip") and self._pending == "zip":
                self._offer_zip(Path(s.last_export))
                self.message.object = "The zip is ready."
                self._zip_version = s.fit_version
            elif self._pending == "folder":
                self.message.object = f"Wrote {s.last_export}"
            self._pending = None
        elif "error" in names and s.error and self._pending and re.match(r"^(Export|Cannot export)", s.error):
            self.message.object = s.error
            self._pending = None
        elif self._zip_version is not None and s.fit_version != self._zip_version:
            self.download.disabled = True  # the fit moved on: the last zip no longer matches it
            self._zip_version = None
