"""The app's pure plot/table functions and its views, driven from Python (no browser)."""

from __future__ import annotations

import numpy as np
import pytest

from app import JointcalApp, plots
from app.session import FitSession
from app.views import Chi2View, OptionsView, RunControls, VisitPicker
from app.views.chi2 import chi2_plot, history_frame, outliers_plot, stage_changes
from app.views.export import output_dir_under_root
from app.views.options import parse_list_text
from jointcal_core.config import CONFIG_SECTIONS, JointcalConfig
from jointcal_core.exceptions import InputError
from jointcal_core.fit import FitStatus, FitStep


def test_visit_table_has_one_row_per_visit_with_counts_and_iso_dates(small_field):
    table = plots.visit_table(small_field)
    assert table["visit"].tolist() == [1001, 1002, 1003]
    assert table["n_ccds"].tolist() == [4, 4, 4]
    assert table["n_sources"].tolist() == [160, 160, 160]
    assert table["mjd"].tolist() == pytest.approx([60000.3, 60001.3, 60002.3])
    assert table["date"].tolist() == ["2023-02-25 07:12", "2023-02-26 07:12", "2023-02-27 07:12"]
    assert table["airmass"].tolist() == pytest.approx([1.1, 1.15, 1.2])


def test_unwrap_ra_keeps_a_field_across_ra_zero_in_one_piece():
    assert plots.unwrap_ra_deg(np.array([359.5, 0.5, 10.0]), 0.2).tolist() == pytest.approx([-0.5, 0.5, 10.0])
    assert plots.unwrap_ra_deg(np.array([0.5]), 359.9).tolist() == pytest.approx([360.5])


def test_footprints_colour_selected_visits_and_grey_out_the_others(small_field):
    records = plots.footprint_records(small_field, [1001, 1003])
    assert len(records) == 3                                    # one multi-polygon per visit
    assert [r["n_ccds"] for r in records] == [4, 4, 4]
    assert np.isnan(records[0]["ra"]).sum() == 3                # 4 CCD outlines, NaN-separated
    colours = {r["visit"]: r["color"] for r in records}
    assert colours[1002] == plots.EXCLUDED_COLOR
    assert len({colours[1001], colours[1003], plots.EXCLUDED_COLOR}) == 3
    element = plots.footprint_map(small_field, [1001])
    assert element.opts.get().kwargs["invert_xaxis"] is True  # RA increases to the left


def test_click_picks_the_visit_whose_ccd_centre_is_nearest_and_misses_outside(small_field):
    corners = small_field.ccd_images.corners_deg()
    centre = corners[5].mean(axis=0)  # visit 1002, detector 1
    assert plots.visit_at(small_field, *centre) == 1002
    assert plots.visit_at(small_field, 170.0, 2.0) is None


def test_box_selects_visits_centred_in_it(small_field):
    centres = small_field.ccd_images.visit_centers_deg()
    ra, dec = centres[1003]
    assert plots.visits_in_box(small_field, (ra + 1e-4, dec - 1e-4, ra - 1e-4, dec + 1e-4)) == [1003]
    assert plots.visits_in_box(small_field, (140.0, 0.0, 141.0, 1.0)) == []


def test_visit_picker_table_follows_the_session_and_drives_it(small_field):
    session = FitSession()
    picker = VisitPicker(session=session)
    assert len(picker._table.value) == 0
    session.set_field(small_field)
    assert picker._table.selection == [0, 1, 2]
    session.exclude_visit(1001)
    assert picker._table.selection == [1, 2]
    picker._table.selection = [0]
    assert session.selected_visits == [1001]
    picker._on_tap(x=None, y=None)
    ra, dec = small_field.ccd_images.corners_deg()[9].mean(axis=0)  # visit 1003
    picker._on_tap(x=ra, y=dec)
    assert session.selected_visits == [1001, 1003]


def test_options_view_applies_valid_values_and_shows_why_invalid_ones_are_refused():
    config = JointcalConfig()
    view = OptionsView(config=config)
    assert set(view._widgets) == {n for names in CONFIG_SECTIONS.values() for n in names}
    view.widget("minSnr").value = 25.0
    assert config.minSnr == 25.0 and view.message("minSnr") == ""
    view.widget("minSnr").value = -3.0
    assert config.minSnr == 25.0
    assert "config field 'minSnr'" in view.message("minSnr") and "-3.0" in view.message("minSnr")
    view.widget("astrometryReferenceErr").value = "abc"
    assert config.astrometryReferenceErr is None
    assert "cannot read 'abc'" in view.message("astrometryReferenceErr")
    view.widget("astrometryReferenceErr").value = "12.5"
    assert config.astrometryReferenceErr == 12.5
    view.widget("colorTermCoefficients").value = "0.1, -0.02"
    assert config.colorTermCoefficients == [0.1, -0.02]


def test_options_view_follows_config_changes_made_in_code():
    config = JointcalConfig()
    view = OptionsView(config=config)
    view.widget("matchCut").value = 99.0
    assert view.message("matchCut")
    config.update_from({"matchCut": 1.5, "astrometryModel": "simple"})
    assert view.widget("matchCut").value == 1.5 and view.message("matchCut") == ""
    assert view.widget("astrometryModel").value == "simple"


def test_parse_list_text():
    assert parse_list_text("g, r", str) == ["g", "r"]
    assert parse_list_text("", float) == []
    with pytest.raises(ValueError):
        parse_list_text("1, x", float)


def test_run_buttons_follow_the_session_state(small_field):
    session = FitSession()
    controls = RunControls(session=session)
    assert all(b.disabled for b in controls.buttons.values())
    session.set_field(small_field)
    assert not controls.buttons["associate"].disabled
    assert controls.buttons["step"].disabled and controls.buttons["cancel"].disabled  # nothing associated yet
    session.busy = True
    assert controls.buttons["associate"].disabled and not controls.buttons["cancel"].disabled
    assert "Stage: not started" in controls._stage.object


def _steps(kinds_stages):
    return [FitStep(kind=k, stage=st, iteration=i + 1, chi2=100.0 / (i + 1), ndof=10, n_outliers=n,
                    n_outliers_total=n, step_norm=0.1, status=FitStatus.STEPPED, seconds=0.01)
            for i, (k, st, n) in enumerate(kinds_stages)]


def test_history_frame_and_stage_changes():
    history = _steps([("astrometry", "A", 0), ("astrometry", "A", 0), ("astrometry", "B", 3),
                      ("photometry", "A", 0)])
    frame = history_frame(history)
    assert frame["step"].tolist() == [1, 2, 3, 4]
    assert frame["chi2_ndof"].tolist() == pytest.approx([10.0, 5.0, 10 / 3, 2.5])
    assert frame["n_outliers"].tolist() == [0, 0, 3, 0]
    starts = stage_changes(frame)
    assert starts["step"].tolist() == [1, 3, 4]
    assert starts["label"].tolist() == ["astrometry: A", "astrometry: B", "photometry: A"]
    assert len(history_frame([])) == 0


def test_chi2_plots_keep_their_layers_whatever_the_history():
    for history in ([], _steps([("astrometry", "A", 0)]), _steps([("astrometry", "A", 0), ("photometry", "B", 2)])):
        frame = history_frame(history)
        chi2, outliers = chi2_plot(frame), outliers_plot(frame)
        assert [type(e).__name__ for e in chi2] == ["Curve", "Curve", "Scatter", "VLines", "Labels"]
        assert [type(e).__name__ for e in outliers] == ["Spikes", "VLines", "Labels"]
    assert chi2.opts.get().kwargs["logy"] is True
    assert len(chi2.Scatter.I) == 2 and len(chi2.Labels.I) == 2


def test_chi2_view_sends_each_new_history_down_its_pipe(small_field):
    session = FitSession()
    view = Chi2View(session=session)
    assert len(view._pipe.data) == 0 and "No fit step yet" in view._caption.object
    session.history = _steps([("astrometry", "A", 0), ("astrometry", "B", 1), ("astrometry", "B", 0)])
    assert view._pipe.data["step"].tolist() == [1, 2, 3]
    assert view._caption.object.startswith("3 steps; last: astrometry B")


def test_output_folder_must_lie_under_the_data_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "out").mkdir(parents=True)
    outside.mkdir()
    (root / "leak").symlink_to(outside, target_is_directory=True)
    assert output_dir_under_root("fit1", root) == (root / "fit1").resolve()
    assert output_dir_under_root("out/fit1", root) == (root / "out" / "fit1").resolve()
    for typed, reason in [("../fit1", "'..' is not allowed"), ("leak/fit1", "through a symbolic link"),
                          (str(outside / "fit1"), "outside the data root"), ("", "no output folder"),
                          ("missing/fit1", "does not exist")]:
        with pytest.raises(InputError, match=reason):
            output_dir_under_root(typed, root)


def test_jointcal_app_builds_for_a_notebook_with_an_in_memory_field(small_field):
    app = JointcalApp(field=small_field)
    assert app.session.selected_visits == [1001, 1002, 1003]
    assert app.__panel__() is not None
    assert app.session.dispatch is None  # no served page: updates are applied where they are made
    assert app.tabs._names[:2] == ["Visits", "Fit"] and app.tabs._names[-1] == "Export"


def test_served_page_does_not_follow_the_server_wide_busy_flag(tmp_path):
    # panel_material_ui.Page links its busy flag to Panel's server-wide state.busy, so a callback
    # of any session re-sent every session's page; create_app cuts that link
    from panel.io.state import state
    from panel.util import edit_readonly

    from app.shell import create_app

    page = create_app(data_root=str(tmp_path), open_demo=False)
    before = state.busy
    try:
        with edit_readonly(state):
            state.busy = True
        assert page.busy is False
    finally:
        with edit_readonly(state):
            state.busy = before


def test_a_dropped_page_frees_its_session(tmp_path):
    # nothing global (here: param's watcher on Panel's ``state`` that Page.busy's link leaves
    # behind) may keep a closed session's page, field and fit alive
    import gc
    import weakref

    from panel.io.state import state

    from app.shell import create_app

    def busy_watchers():
        return len(state._param__private.watchers.get("busy", {}).get("value", []))

    n_before = busy_watchers()
    page = create_app(data_root=str(tmp_path), open_demo=False)
    assert busy_watchers() == n_before
    session = weakref.ref(page.jointcal_app.session)
    del page
    gc.collect()
    assert session() is None
