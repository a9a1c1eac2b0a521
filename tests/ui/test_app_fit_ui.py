"""Browser tests of fitting in the served app, on the bundled demo (real panel serve, Debian Chromium).

Every wait is on a condition of the page (Playwright's expect, wait_for_function or
``wait_for_value``), never a fixed sleep.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from urllib.parse import urlparse

import pytest
from astropy.io import fits
from astropy.wcs import WCS
from playwright.sync_api import expect

from .conftest import screenshot, wait_for_value

pytestmark = pytest.mark.ui

#: a fit step or a whole demo run on a shared 2-core machine
FIT_TIMEOUT_MS = 120_000

#: total rows of the chi2 plot's marker source (the one holding both chi2_ndof and status)
_CHI2_POINTS_JS = """() => {
    // the chi2 sources drawn by a live renderer, each once (a replaced source can linger in
    // doc.all_models until bokeh collects it, and a source can feed several glyphs)
    const sources = new Set();
    for (const doc of Bokeh.documents) {
        for (const m of doc.all_models) {
            const d = m.data_source && m.data_source.data;
            if (d && d.chi2_ndof !== undefined && d.status !== undefined && Bokeh.index.find_one(m) != null) {
                sources.add(m.data_source);
            }
        }
    }
    let n = sources.size ? 0 : -1;
    for (const s of sources) { n += s.data.chi2_ndof.length; }
    return n;
}"""


def _off_machine(urls):
    return [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urlparse(u).hostname not in {"127.0.0.1", "localhost"}]


def _open_demo(server, page):
    page.goto(server.url("main"))
    expect(page.locator(".visit-table .tabulator-row")).to_have_count(6)
    expect(page.locator(".run-associate button")).to_be_enabled()
    expect(page.locator(".fit-stage")).to_have_text("Stage: not started")


def _tab(page, name):
    page.locator(".main-tabs").get_by_text(name, exact=True).first.click()


def _associate(page, n_ccd):
    page.locator(".run-associate button").click()
    expect(page.locator(".fit-summary")).to_contain_text(f"{n_ccd} ccdImages", timeout=FIT_TIMEOUT_MS)
    expect(page.locator(".run-step button")).to_be_enabled(timeout=FIT_TIMEOUT_MS)
    # the worker thread has finished (Cancel is enabled only while an action runs)
    expect(page.locator(".run-cancel button")).to_be_disabled(timeout=FIT_TIMEOUT_MS)


def test_demo_opens_without_console_errors_or_outside_requests(demo_server, page):
    _open_demo(demo_server, page)
    expect(page.get_by_text("6 of 6 visits selected for the fit")).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "10-demo-visits")
    assert page.jointcal_log.console_errors == []
    assert _off_machine(page.jointcal_log.requests) == []


def test_deselecting_a_visit_changes_the_ccd_images_in_the_fit(demo_server, page):
    _open_demo(demo_server, page)
    _associate(page, 216)
    page.locator(".visit-table .tabulator-row").first.get_by_role("checkbox").click()
    expect(page.get_by_text("5 of 6 visits selected for the fit")).to_be_visible()
    expect(page.locator(".fit-stale")).to_be_visible()
    expect(page.locator(".run-step button")).to_be_disabled()
    _associate(page, 180)
    expect(page.locator(".fit-stale")).to_be_hidden()
    screenshot(page, "11-visit-excluded-associated")
    assert page.jointcal_log.console_errors == []


def test_three_steps_give_three_chi2_points_and_run_converges(demo_server, page):
    _open_demo(demo_server, page)
    _associate(page, 216)
    _tab(page, "Fit")
    expect(page.locator(".chi2-caption")).to_contain_text("No fit step yet")
    stage = page.locator(".fit-stage")
    expect(stage).to_have_text("Stage: astrometry: DistortionsVisit")
    caption, steps = page.locator(".chi2-caption"), 0
    while steps < 3:
        page.locator(".run-step button").click()
        expect(caption).not_to_have_text(re.compile(rf"^{steps} steps" if steps else "No fit step yet"),
                                         timeout=FIT_TIMEOUT_MS)
        expect(page.locator(".run-step button")).to_be_enabled(timeout=FIT_TIMEOUT_MS)
        expect(caption).to_have_text(re.compile(r"\d+ steps"))
        text = caption.evaluate("e => (e.shadowRoot || e).textContent")     # Panel renders in a shadow root
        shown = int(re.search(r"(\d+) steps", text).group(1))
        # one click, one step; but a click on a button that React re-renders as it lands was once
        # delivered twice (two steps, the server saw two clicks): every step shows one chi2 point
        assert steps < shown <= steps + 2
        steps = shown
        wait_for_value(page, _CHI2_POINTS_JS, steps, FIT_TIMEOUT_MS, f"chi2 points on the page after {steps} steps")
    # each preliminary stage takes one step (as in jointcal): after DistortionsVisit,
    # Distortions and Positions the label shows the final stage
    expect(stage).to_have_text("Stage: astrometry: Distortions Positions")
    screenshot(page, "12-three-steps")
    page.locator(".run-run button").click()
    expect(page.locator(".run-cancel button")).to_be_enabled()   # running in the background
    expect(page.locator(".fit-stage")).to_have_text("Stage: converged", timeout=FIT_TIMEOUT_MS)
    expect(page.locator(".run-cancel button")).to_be_disabled()
    n_points = page.evaluate(_CHI2_POINTS_JS)
    assert n_points > 10
    expect(page.locator(".chi2-caption")).to_contain_text(f"{n_points} steps")
    screenshot(page, "13-run-converged")
    assert page.jointcal_log.console_errors == []


#: page position (CSS px) and star of the most isolated point of the residual scatter that lies in
#: the window, or null before the plot is drawn: every layer's data source (columns dx_mas, dy_mas,
#: star) mapped through the plot's own scales (bokeh's view of each renderer); "isolated" is the
#: largest distance in px to any other point, so the click cannot be read as another star's
_SCATTER_POINT_JS = """() => {
    const pts = [];
    for (const doc of Bokeh.documents) {
        for (const m of doc.all_models) {
            const d = m.data_source && m.data_source.data;
            if (!d || d.dx_mas === undefined || d.dy_mas === undefined || d.star === undefined) { continue; }
            const view = Bokeh.index.find_one(m);
            if (view == null) { continue; }
            const { x_scale, y_scale } = view.coordinates;
            const rect = view.plot_view.canvas_view.el.getBoundingClientRect();
            const frame = view.plot_view.frame.bbox;
            for (let i = 0; i < d.dx_mas.length; i++) {
                const sx = x_scale.compute(d.dx_mas[i]), sy = y_scale.compute(d.dy_mas[i]);
                const inside = frame.left + 5 < sx && sx < frame.right - 5
                    && frame.top + 5 < sy && sy < frame.bottom - 5;
                pts.push({x: rect.left + sx, y: rect.top + sy, star: Number(d.star[i]), inside: inside});
            }
        }
    }
    let best = null, best_gap = -1;
    for (const p of pts) {
        const shown = p.x > 20 && p.y > 20 && p.x < window.innerWidth - 20 && p.y < window.innerHeight - 20;
        if (!p.inside || !shown) { continue; }
        let gap = Infinity;
        for (const q of pts) { if (q !== p) { gap = Math.min(gap, Math.hypot(p.x - q.x, p.y - q.y)); } }
        if (gap > best_gap) { best = p; best_gap = gap; }
    }
    return best === null ? null : {x: best.x, y: best.y, star: best.star, gap_px: best_gap};
}"""


def test_a_star_click_shows_its_measurements(demo_server, page):
    _open_demo(demo_server, page)
    _associate(page, 216)
    _tab(page, "Residuals")
    page.locator(".main-tabs").get_by_text("Scatter", exact=True).first.click()
    canvas = page.locator(".residuals-scatter canvas").first
    expect(canvas).to_be_visible(timeout=FIT_TIMEOUT_MS)
    canvas.scroll_into_view_if_needed()
    expect(page.locator(".star-hint")).to_be_visible()
    expect(page.locator(".star-title")).to_be_hidden()
    point = page.wait_for_function(_SCATTER_POINT_JS, timeout=FIT_TIMEOUT_MS).json_value()
    assert point["gap_px"] > 6   # no other point (star) within a few pixels of the clicked one
    # a real mouse click on that point (bokeh's event layer lies over the canvas)
    page.mouse.click(point["x"], point["y"])
    expect(page.locator(".star-title")).to_contain_text(f"Star {point['star']}:", timeout=FIT_TIMEOUT_MS)
    expect(page.locator(".star-hint")).to_be_hidden()
    rows = page.locator(".star-table .tabulator-row")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 2  # a fitted star is seen on >= 2 exposures
    page.locator(".star-title").scroll_into_view_if_needed()
    screenshot(page, "14-star-detail")
    assert page.jointcal_log.console_errors == []


def test_export_download_is_a_zip_whose_wcs_headers_astropy_reads(demo_server, page, tmp_path):
    if importlib.util.find_spec("jointcal_core.models.astrometry") is None:
        pytest.skip("jointcal_core.models.astrometry is not there: no WCS to export")
    _open_demo(demo_server, page)
    _associate(page, 216)
    page.locator(".run-step button").click()
    expect(page.locator(".session-status")).to_contain_text("step 1", timeout=FIT_TIMEOUT_MS)
    expect(page.locator(".run-cancel button")).to_be_disabled(timeout=FIT_TIMEOUT_MS)   # the step has ended
    _tab(page, "Export")
    page.locator(".export-build button").click()
    download_button = page.locator(".export-download button")
    expect(download_button).to_be_enabled(timeout=FIT_TIMEOUT_MS)
    expect(page.locator(".export-message")).to_contain_text("ready")
    screenshot(page, "15-export")
    # look at the fit and come back first: the tabs are dynamic, so the server detaches the Export
    # tab while it is hidden and sends it again when it is shown; the zip's bytes must come back
    # with it, since the click saves them from the page without asking the server
    _tab(page, "Fit")
    expect(page.locator(".chi2-caption")).to_contain_text("1 steps")
    _tab(page, "Export")
    expect(download_button).to_be_enabled()
    with page.expect_download() as info:
        download_button.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "jointcal-demo.zip"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        heads = sorted(n for n in names if n.startswith("jointcal-demo/wcs/") and n.endswith(".fits"))
        assert len(heads) == 216 and "jointcal-demo/report.html" in names
        header = fits.Header.fromstring(archive.read(heads[0]), sep="")
        report = tmp_path / "report.html"
        report.write_bytes(archive.read("jointcal-demo/report.html"))
    wcs = WCS(header)
    assert wcs.has_celestial and 149 < wcs.wcs.crval[0] < 151
    assert page.jointcal_log.console_errors == []
    # the report opens offline: no console error, no request but its own file
    before = len(page.jointcal_log.requests)
    page.goto(report.as_uri())
    expect(page.locator("canvas").first).to_be_attached()
    expect(page.get_by_role("heading", name="Fit history")).to_be_visible()
    expect(page.get_by_role("heading", name="Metrics")).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "17-report")
    assert page.jointcal_log.console_errors == []
    assert [u for u in page.jointcal_log.requests[before:] if not u.startswith(("file:", "blob:", "data:"))] == []


def _write_folder(page, name: str, expected: str, attempts: int = 5) -> None:
    """Type a folder and press Write; the typed value can reach the server after the click, so the
    click is repeated (bounded) until the message shows ``expected``."""
    folder = page.locator(".export-folder input")
    folder.fill(name)
    folder.press("Tab")
    for attempt in range(attempts):
        expect(page.locator(".export-write button")).to_be_enabled(timeout=FIT_TIMEOUT_MS)
        page.locator(".export-write button").click()
        try:
            expect(page.locator(".export-message")).to_contain_text(
                expected, timeout=FIT_TIMEOUT_MS if attempt == attempts - 1 else 15_000)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def test_write_to_server_folder_stays_under_the_data_root(demo_server, page):
    _open_demo(demo_server, page)
    _associate(page, 216)
    _tab(page, "Export")
    _write_folder(page, "../escape", "'..' is not allowed")
    _write_folder(page, "fit-out", "Wrote")
    assert (demo_server.data_root / "fit-out" / "metrics.json").is_file()
    assert (demo_server.data_root / "fit-out" / "report.html").is_file()


def test_two_sessions_keep_separate_fits(demo_server, browser_context):
    first, second = browser_context.new_page(), browser_context.new_page()
    try:
        _open_demo(demo_server, first)
        _open_demo(demo_server, second)
        first.locator(".visit-table .tabulator-row").first.get_by_role("checkbox").click()
        expect(first.get_by_text("5 of 6 visits selected for the fit")).to_be_visible()
        _associate(first, 180)
        expect(second.get_by_text("6 of 6 visits selected for the fit")).to_be_visible()
        expect(second.locator(".fit-stage")).to_have_text("Stage: not started")
        _associate(second, 216)
        second.locator(".run-step button").click()
        expect(second.locator(".session-status")).to_contain_text("step 1", timeout=FIT_TIMEOUT_MS)
        expect(first.locator(".fit-summary")).to_contain_text("180 ccdImages")
        expect(first.locator(".session-status")).not_to_contain_text("step 1")
        screenshot(first, "16-session-a")
        screenshot(second, "16-session-b")
    finally:
        first.close()
        second.close()
