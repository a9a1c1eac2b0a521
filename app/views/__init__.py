"""One Viewer per concern of the app, each bound to a FitSession."""

from .chi2 import Chi2View
from .export import ExportView
from .field_picker import FieldPicker
from .options import OptionsView
from .run_controls import RunControls
from .visit_picker import VisitPicker

__all__ = ["Chi2View", "ExportView", "FieldPicker", "OptionsView", "RunControls", "VisitPicker"]
