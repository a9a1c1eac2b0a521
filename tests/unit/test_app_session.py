"""FitSession and the data-root check, driven from Python (no browser, no panel)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import app.files
import app.paths
import app.session
from app.paths import resolve_under_root
from app.session import FitSession, field_inputs
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import InputError


@pytest.fixture
def session(small_field):
    s = FitSession()
    s.set_field(small_field, path="synthetic")
    return s


def test_new_session_has_no_field_and_its_own_default_config():
    a, b = FitSession(), FitSession()
    assert a.field is None and a.visits == [] and a.selected_visits == []
    assert a.selected_field() is None
    assert a.config == JointcalConfig()
    a.config.minSnr = 50.0
    assert b.config.minSnr == 10.0  # no state shared between sessions


def test_setting_a_field_selects_every_visit_and_reports_it(session):
    assert session.visits == [1001, 1002, 1003]
    assert session.selected_visits == [1001, 1002, 1003]
    assert session.status == "Loaded 3 visits, 12 CCD images and 480 sources from synthetic."
    assert session.error == ""


def test_excluding_a_visit_removes_its_ccds_and_sources_from_the_selected_field(session):
    session.exclude_visit(1002)
    assert session.selected_visits == [1001, 1003]
    sub = session.selected_field()
    assert sorted(np.unique(sub.ccd_images.visit)) == [1001, 1003]
    assert len(sub.ccd_images) == 8 and len(sub.measurements) == 320
    assert session.field.ccd_images.visit.size == 12  # the loaded field itself is untouched
    session.toggle_visit(1002)
    assert session.selected_visits == [1001, 1002, 1003]


def test_select_visits_sorts_dedups_and_refuses_unknown_visits(session):
    session.select_visits([1003, 1001, 1003])
    assert session.selected_visits == [1001, 1003]
    assert session.status == "2 of 3 visits selected."
    with pytest.raises(InputError, match=r"visits \[42\] are not in the loaded field"):
        session.select_visits([1001, 42])
    assert session.selected_visits == [1001, 1003]


def test_fit_actions_explain_why_they_cannot_run(session):
    empty = FitSession()
    assert empty.step() is None
    assert empty.error == "Cannot step: no field is loaded."
    session.select_visits([])
    assert session.run() is None
    assert session.error == "Cannot run: no visit is selected."
    session.select_visits(session.visits)
    assert session.step() is None
    assert session.error == "Cannot step: press Associate first."
    session.reset()
    assert session.history == [] and session.stage == "" and session.progress == 0.0


def test_cancel_is_recorded_until_the_next_run(session):
    session.cancel()
    assert session.cancel_requested
    session.run()
    assert not session.cancel_requested


def test_open_refuses_paths_leaving_the_data_root_and_keeps_the_field(session, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "field").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.cat").write_text("x")
    (root / "leak").symlink_to(outside, target_is_directory=True)
    session.data_root = str(root)
    before = session.field
    for typed, reason in [("../outside/secret.cat", "'..' is not allowed"),
                          ("leak/secret.cat", "through a symbolic link"),
                          (str(outside / "secret.cat"), "outside the data root"),
                          ("missing", "does not exist"), ("  ", "no path given")]:
        assert session.open(typed) is False
        assert reason in session.error
        assert session.field is before


def test_resolve_under_root_accepts_relative_and_absolute_paths_inside(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "v1.cat").write_text("x")
    assert resolve_under_root("demo/v1.cat", tmp_path) == (tmp_path / "demo" / "v1.cat").resolve()
    assert resolve_under_root(str(tmp_path / "demo"), tmp_path) == (tmp_path / "demo").resolve()
    assert resolve_under_root("demo/./v1.cat", tmp_path) == (tmp_path / "demo" / "v1.cat").resolve()


def test_load_failure_keeps_the_previous_field_and_sets_the_error(session, tmp_path):
    before = session.field
    assert session.load(tmp_path / "nothing-here") is False
    assert session.error  # either the reader's message or "load_field is missing"
    assert session.field is before


def test_session_and_paths_modules_import_no_ui_library():
    for module in (app.session, app.paths, app.files):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert not imported & {"panel", "holoviews", "bokeh", "panel_material_ui"}, module.__name__


def test_field_directory_with_a_reference_splits_into_exposures_and_refcat(tmp_path):
    for name in ["v1.cat", "v2.cat", "reference.cat", "v1.ahead", "notes.txt"]:
        (tmp_path / name).write_text("x")
    inputs, refcat = field_inputs(tmp_path)
    assert [p.name for p in inputs] == ["v1.cat", "v2.cat"] and refcat.name == "reference.cat"
    assert field_inputs(tmp_path / "v1.cat") == (tmp_path / "v1.cat", None)


DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"


@pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there yet")
def test_the_bundled_demo_loads_with_every_visit_selected():
    session = FitSession()
    assert session.open("demo"), session.error
    assert session.field is not None and session.selected_visits == session.visits
    assert len(session.visits) >= 2 and session.field.reference is not None
