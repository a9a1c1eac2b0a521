"""One Viewer per concern of the app, each bound to a FitSession."""

from .field_picker import FieldPicker
from .options import OptionsView
from .run_controls import RunControls
from .visit_picker import VisitPicker

__all__ = ["FieldPicker", "OptionsView", "RunControls", "VisitPicker"]
