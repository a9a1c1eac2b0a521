"""A second ``panel serve`` entry for the browser tests: the real app on a synthetic field.

Serves ``create_app(field=make_field(...))`` (the seeded field of ``tests/conftest.py``) so the map
and table can be tested whatever readers or demo data exist.
"""

import importlib.util
from pathlib import Path

import panel as pn

from app import create_app

_spec = importlib.util.spec_from_file_location("_jointcal_test_fields", Path(__file__).parent.parent / "conftest.py")
_fields = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fields)

pn.extension("tabulator")

create_app(field=_fields.make_field(n_visits=4, n_ccds_x=3, n_ccds_y=2)).servable()
