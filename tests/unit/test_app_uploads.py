"""Uploaded catalogs (app/uploads.py): size limit, name check, writing and loading, on the demo field."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import app.uploads
from app.session import FitSession
from app.uploads import (
    MAX_UPLOAD_ENV,
    MAX_UPLOAD_MB,
    check_upload,
    check_upload_name,
    load_upload,
    make_upload_dir,
    max_upload_bytes,
    remove_upload_dir,
    write_upload,
)
from jointcal_core.exceptions import InputError

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there")


@pytest.fixture(scope="module")
def demo_upload() -> dict[str, bytes]:
    """Two demo visits and the demo reference catalog, as a browser would upload them."""
    return {name: (DEMO / name).read_bytes() for name in ("1000.cat", "1001.cat", "reference.cat")}


def test_the_limit_is_200_mb_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv(MAX_UPLOAD_ENV, raising=False)
    assert MAX_UPLOAD_MB == 200 and max_upload_bytes() == 200_000_000
    monkeypatch.setenv(MAX_UPLOAD_ENV, "1.5")
    assert max_upload_bytes() == 1_500_000
    for bad in ("zero", "0", "-3"):
        monkeypatch.setenv(MAX_UPLOAD_ENV, bad)
        assert max_upload_bytes() == 200_000_000


@pytest.mark.parametrize("name", ["../1000.cat", "a/b.cat", "/etc/passwd.cat", "..\\x.cat", "x..cat", ".hidden.cat",
                                  "..", "", "nul\x00.cat", "notes.txt", "run.py", "1000.cat.sh", "x" * 300 + ".cat"])
def test_names_with_paths_dots_or_foreign_suffixes_are_refused(name):
    with pytest.raises(InputError):
        check_upload_name(name)


@pytest.mark.parametrize("name", ["1000.cat", "reference.CAT", "visit 12.fits", "refcat.parquet", "v.parq",
                                  "cat.ecsv", "cat.csv", "cat.psx"])
def test_plain_catalog_names_are_accepted(name):
    assert check_upload_name(name) == name


def test_an_upload_over_the_limit_is_refused_and_nothing_is_written(tmp_path, demo_upload):
    total = sum(map(len, demo_upload.values()))
    assert check_upload(demo_upload, limit_bytes=total) == total
    with pytest.raises(InputError, match=r"upload of 1\.6 MB exceeds the limit of 1 MB \(set JOINTCAL_MAX_UPLOAD_MB"):
        write_upload(demo_upload, tmp_path, limit_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []


def test_one_bad_name_refuses_the_whole_upload(tmp_path, demo_upload):
    with pytest.raises(InputError, match="not a plain file name"):
        write_upload({**demo_upload, "../escape.cat": b"x"}, tmp_path)
    with pytest.raises(InputError, match="ignoring case"):
        write_upload({**demo_upload, "REFERENCE.cat": b"x"}, tmp_path)
    with pytest.raises(InputError, match="no file was uploaded"):
        write_upload({}, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "escape.cat").exists()


def test_good_files_are_written_byte_for_byte_into_a_new_folder(tmp_path, demo_upload):
    first = write_upload(demo_upload, tmp_path)
    second = write_upload(demo_upload, tmp_path)
    assert first != second and first.parent == tmp_path and second.parent == tmp_path
    assert sorted(p.name for p in first.iterdir()) == ["1000.cat", "1001.cat", "reference.cat"]
    for name, content in demo_upload.items():
        assert (first / name).read_bytes() == content


def test_an_uploaded_field_loads_with_its_reference_catalog(tmp_path, demo_upload):
    session, on_disk = FitSession(data_root=str(tmp_path / "root")), FitSession()
    assert load_upload(session, demo_upload, tmp_path)
    assert on_disk.load(DEMO)  # the same visits from the demo folder, for comparison
    assert session.error == ""
    assert session.visits == [1000, 1001]
    assert session.status.startswith("Loaded 2 visits")
    on_disk.select_visits([1000, 1001])
    assert len(session.field.measurements) == len(on_disk.selected_field().measurements)
    assert session.field.reference is not None
    assert len(session.field.reference) == len(on_disk.field.reference) > 0
    assert Path(session.field_path).parent == tmp_path


def test_a_refused_upload_keeps_the_previous_field_and_says_why_in_one_line(tmp_path, demo_upload):
    session = FitSession()
    assert load_upload(session, demo_upload, tmp_path)
    before = session.field
    assert not load_upload(session, {"1002.cat": (DEMO / "1002.cat").read_bytes()}, tmp_path, limit_bytes=1000)
    assert session.field is before and session.visits == [1000, 1001]
    assert "exceeds the limit of 0.001 MB" in session.error and "\n" not in session.error
    assert not load_upload(session, {"../1002.cat": b""}, tmp_path)
    assert "not a plain file name" in session.error
    assert len(list(tmp_path.iterdir())) == 1  # only the first, loaded upload


def test_an_upload_that_does_not_read_as_a_catalog_leaves_nothing_behind(tmp_path):
    session = FitSession()
    assert not load_upload(session, {"1000.cat": b"this is not a catalog\n"}, tmp_path)
    assert session.error and "\n" not in session.error and session.field is None
    assert list(tmp_path.iterdir()) == []


def test_the_session_upload_directory_is_private_and_removed(demo_upload):
    directory = make_upload_dir()
    try:
        assert directory.is_dir() and (directory.stat().st_mode & 0o077) == 0
        write_upload(demo_upload, directory)
    finally:
        remove_upload_dir(directory)
    assert not directory.exists()
    remove_upload_dir(directory)  # twice, or never created: no error
    remove_upload_dir(None)


def test_uploads_module_does_not_import_panel():
    tree = ast.parse(Path(app.uploads.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "panel" not in imported and "panel_material_ui" not in imported
