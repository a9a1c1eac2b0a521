"""report.html: standalone (inline BokehJS, no URL to fetch) with the app's plots of a demo fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.report import report_sections, write_report
from app.session import FitSession

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"


@pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there")
def test_report_is_standalone_and_holds_the_chi2_history(tmp_path):
    session = FitSession()
    assert session.load(DEMO), session.error
    session.associate()
    steps = [session.step() for _ in range(3)]
    path = write_report(tmp_path, session.joint)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    # every script is inline: no src= attribute on any <script> tag, no stylesheet link
    assert re.findall(r"<script[^>]*\bsrc=", text) == []
    assert re.findall(r"<link[^>]*stylesheet", text) == []
    assert "6 visits" in text and "3 steps" in text
    # the chi2/ndof of each step is in the embedded document
    doc = json.loads(re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text, re.S)
                     .group(1))
    blob = json.dumps(doc)
    assert '"chi2_ndof"' in blob
    titles = [title for title, _ in report_sections(session.joint)]
    assert titles[0] == "Fit history"
    assert steps[-1].iteration == 3
