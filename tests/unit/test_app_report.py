"""report.html: standalone (inline BokehJS, no URL to fetch) with the app's plots of a demo fit."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from bokeh.document import Document
from bokeh.io.doc import curdoc, patch_curdoc
from bokeh.models import Div

from app.report import report_plots, report_sections, write_app_report, write_report
from app.session import FitSession

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"


pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there")


@pytest.fixture(scope="module")
def fitted():
    """A session on the demo field, associated and stepped 3 times; with its 3 FitSteps."""
    session = FitSession()
    assert session.load(DEMO), session.error
    session.associate()
    return session, [session.step() for _ in range(3)]


def test_report_is_standalone_and_holds_the_chi2_history(tmp_path, fitted):
    session, steps = fitted
    path = write_report(tmp_path, session.joint)
    assert path == tmp_path / "report.html"
    text = path.read_text()
    # every script is inline: no src= attribute on any <script> tag, no stylesheet link
    assert re.findall(r"<script[^>]*\bsrc=", text) == []
    assert re.findall(r"<link[^>]*stylesheet", text) == []
    assert "6 visits" in text and "3 steps" in text
    # the chi2/ndof of each step is in the embedded document
    doc = json.loads(re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text, re.DOTALL)
                     .group(1))
    blob = json.dumps(doc)
    assert '"chi2_ndof"' in blob
    titles = [title for title, _ in report_sections(session.joint)]
    assert titles[0] == "Fit history"
    assert steps[-1].iteration == 3



def _embedded_models(path: Path) -> list[dict]:
    """Every model (dict with a "name") of the bokeh document embedded in a report page."""
    text = path.read_text()
    doc = json.loads(html.unescape(
        re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text, re.DOTALL).group(1)))
    out = []

    def walk(node):  # depth first, in document order
        if isinstance(node, dict):
            out.extend([node] if "name" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(doc)
    return out


def _section_titles(models: list[dict]) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", " ".join(str(m.get("attributes", {}).get("text", "")) for m in models
                                                 if m["name"] == "Div"))


def test_app_export_report_has_the_residual_plots_and_leaves_the_served_document_alone(tmp_path, fitted):
    """The app's export writes the CLI's report, residual plots included, without touching bokeh's
    curdoc(): inside ``panel serve`` that is a live page's document (it hung the page)."""
    session, _ = fitted
    live = Document()
    live.add_root(Div(text="a served page"))
    models_before, theme_before = set(live.models), live.theme
    with patch_curdoc(live):  # what the app's export worker sees as bokeh's curdoc() when served
        assert curdoc() is live
        out = session.export(tmp_path / "app-export", extra_writers=[write_app_report])
    assert out == tmp_path / "app-export", session.error
    assert set(live.models) == models_before and live.theme is theme_before
    app_models = _embedded_models(out / "report.html")
    residual_titles = [title for title, _ in report_plots(session.joint)]
    assert len(residual_titles) == 7  # astrometry (4) and photometry (3) plots of the demo fit
    assert _section_titles(app_models) == ["Fit history", *residual_titles, "Metrics"]
    # a bokeh figure per plot: chi2/ndof and outliers, 4 astrometric (3 histograms in one), 3 photometric
    assert sum(m["name"] == "Figure" for m in app_models) >= 2 + len(residual_titles)
