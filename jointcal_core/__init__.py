"""jointcal: joint astrometric and photometric calibration of multi-exposure imaging.

The fitting library. It never imports panel, holoviews or bokeh.
"""

from .calibration import Calibration, load_calibration
from .config import JointcalConfig
from .data import Camera, CcdImages, Field, Measurements, ReferenceCatalog
from .exceptions import (ConfigError, FitError, InputError, JointcalError, JointcalWarning,
                         ModelConstraintError, OutputError)

__version__ = "0.1.0"

__all__ = ["JointcalConfig", "Camera", "CcdImages", "Field", "Measurements", "ReferenceCatalog",
           "JointcalError", "InputError", "ConfigError", "FitError", "ModelConstraintError", "OutputError",
           "JointcalWarning", "Calibration", "load_calibration", "__version__"]
