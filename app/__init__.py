"""The jointcal Panel app: ``JointcalApp(path)`` in a notebook, ``panel serve app/main.py`` served.

Imports jointcal_core's public API only.
"""

from .session import FitSession
from .shell import JointcalApp, create_app

__all__ = ["JointcalApp", "FitSession", "create_app"]
