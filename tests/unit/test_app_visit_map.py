"""The visit picker's footprint map: one patch per CCD, recoloured in place on a toggle."""

from __future__ import annotations

import numpy as np
from bokeh.document import Document
from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent
from bokeh.events import SelectionGeometry, Tap
from bokeh.models import ColumnDataSource

from app import plots
from app.session import FitSession
from app.views import VisitPicker


def test_footprint_columns_hold_every_ccd_with_its_visit_colour_or_grey(small_field):
    cols = plots.footprint_columns(small_field, [1001, 1003])
    ccds = small_field.ccd_images
    assert len(cols["xs"]) == len(ccds) == 12
    assert cols["visit"] == ccds.visit.tolist() and cols["detector"] == ccds.detector.tolist()
    corners = ccds.corners_deg()
    assert np.allclose(np.array(cols["xs"]), corners[..., 0]) and np.allclose(np.array(cols["ys"]), corners[..., 1])
    colors = plots.visit_colors(ccds.visits)
    for visit, color, state in zip(cols["visit"], cols["color"], cols["state"]):
        assert (color, state) == ((plots.EXCLUDED_COLOR, "excluded") if visit == 1002 else (colors[visit], "fitted"))
    assert plots.footprint_figure(ColumnDataSource(cols)).x_range.flipped  # RA increases to the left


def _picker_in_document(field):
    session = FitSession()
    session.set_field(field)
    picker = VisitPicker(session=session)
    doc = Document()
    doc.add_root(picker._figure)
    events = []
    doc.on_change(lambda event: events.append(event))
    return session, picker, events


def test_a_toggle_patches_the_colours_of_that_visits_ccds_only(small_field):
    session, picker, events = _picker_in_document(small_field)
    calls = []
    session.param.watch(lambda *evs: calls.append([e.name for e in evs]), ["selected_visits", "stale", "status"])
    ra, dec = small_field.ccd_images.corners_deg()[5].mean(axis=0)  # a CCD of visit 1002
    picker._on_tap_event(Tap(picker._figure, x=ra, y=dec))
    assert session.selected_visits == [1001, 1003]
    assert len(calls) == 1  # the session's watchers ran once for the whole toggle
    assert not any(isinstance(e, ColumnDataChangedEvent) for e in events)  # the polygons were not resent
    patches = [e for e in events if isinstance(e, ColumnsPatchedEvent)]
    assert len(patches) == 1
    rows = sorted(i for i, _ in patches[0].patches["color"])
    assert rows == np.flatnonzero(small_field.ccd_images.visit == 1002).tolist()
    assert {c for _, c in patches[0].patches["color"]} == {plots.EXCLUDED_COLOR}
    assert picker._table.selection == [0, 2]
    assert "2 of 3 visits" in picker._summary.object


def test_a_box_selects_the_visits_centred_in_it_and_the_table_drives_the_map(small_field):
    session, picker, _ = _picker_in_document(small_field)
    ra, dec = small_field.ccd_images.visit_centers_deg()[1003]
    box = {"type": "rect", "x0": ra + 1e-4, "y0": dec - 1e-4, "x1": ra - 1e-4, "y1": dec + 1e-4}
    picker._on_box_event(SelectionGeometry(picker._figure, geometry=box, final=False))
    assert session.selected_visits == [1001, 1002, 1003]  # not until the box is drawn
    picker._on_box_event(SelectionGeometry(picker._figure, geometry=box, final=True))
    assert session.selected_visits == [1003]
    picker._table.selection = [0, 2]
    assert session.selected_visits == [1001, 1003]
    expected = plots.footprint_style(small_field, [1001, 1003])
    assert list(picker._source.data["color"]) == expected["color"]
