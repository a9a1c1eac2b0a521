"""Entry point of ``panel serve app/main.py``: one app per browser session.

``JOINTCAL_FIELD`` names a field to open instead of the bundled demo (``none``: open on the empty
state); ``JOINTCAL_DATA_ROOT`` the directory typed paths must lie under.
"""

import os

import panel as pn

from app import create_app

pn.extension("tabulator")
# event callbacks on a thread pool: one session's plot updates during a fit must not hold up
# another session's clicks on the shared event loop (measured: 5 s latency with a single thread)
if not pn.config.nthreads:
    pn.config.nthreads = 4

_field = os.environ.get("JOINTCAL_FIELD", "").strip()
if _field.lower() == "none":
    create_app(field=None, path=None, open_demo=False).servable()
else:
    create_app(_field or None).servable()
