"""ExportView on a real fit of the bundled demo (assets/demo), without a browser.

The zip is offered from data already sent to the page: a click then saves it inside the click
itself, with no round trip to the server (see ExportView._offer_zip for why).
"""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.session import FitSession
from app.views.export import ExportView

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"

pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there")

ZIP_PREFIX = "data:application/zip;base64,"


@pytest.fixture(scope="module")
def stepped_session():
    session = FitSession()
    assert session.load(DEMO), session.error
    assert session.associate() is not None, session.error
    assert session.step() is not None, session.error
    return session


def test_built_zip_is_in_the_page_before_its_button_is_enabled(stepped_session):
    session = stepped_session
    view = ExportView(session=session)
    download = view.download
    assert download.disabled and download.data is None and download.auto is False
    data_when_enabled = []
    download.param.watch(lambda event: data_when_enabled.append(download.data) if not event.new else None,
                         "disabled")

    view.build_button.clicks += 1          # what a click on "Build zip" does
    assert session.wait(timeout=300), "the export did not finish"
    assert session.error == ""

    # enabled once, and at that moment the whole zip was already in the widget's data
    assert len(data_when_enabled) == 1 and data_when_enabled[0] == download.data
    zip_path = Path(session.last_export)
    assert download.filename == zip_path.name == "jointcal-demo.zip"
    assert download.data.startswith(ZIP_PREFIX)
    zip_bytes = base64.b64decode(download.data[len(ZIP_PREFIX):])
    assert zip_bytes == zip_path.read_bytes()
    assert view.message.object == "The zip is ready."
    assert download.auto is False           # a click saves that data; it never asks the server

    with zipfile.ZipFile(zip_path) as archive:
        heads = sorted(n for n in archive.namelist() if n.startswith("jointcal-demo/wcs/") and n.endswith(".fits"))
        header = fits.Header.fromstring(archive.read(heads[0]), sep="")
    assert len(heads) == 216 and WCS(header).has_celestial

    # the fit moves on: the zip no longer matches it and cannot be downloaded
    assert session.step() is not None, session.error
    assert download.disabled
