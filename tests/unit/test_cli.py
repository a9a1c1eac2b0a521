"""The ``jointcal`` command end to end on real data: jointcal's own cfht_minimal numbers, the
output layout, and one-line errors for user mistakes (no traceback, no output folder).

cfht_minimal: LSST jointcal's test data (/work/shared/data/lsst_jointcal_tests_data, README
there), 2 CFHT MegaCam visits of CCD 12. jointcal's tests/test_jointcal_cfht_minimal.py asserts
the final chi2 and counts checked here.
"""

import json
from pathlib import Path

import pytest

from jointcal_core.cli import main

ROOT = Path("/work/shared/data/lsst_jointcal_tests_data/tests/data/cfht_minimal/repo")
REFCAT = ROOT / "ref_cats/sdss-dr9-fink-v5b"
pytestmark = pytest.mark.skipif(not ROOT.exists(), reason="cfht_minimal test data not present")


@pytest.mark.parametrize("model, chi2", [("simpleFlux", 2.336915), ("simpleMagnitude", 2.23008)])
def test_run_reproduces_jointcal_cfht_minimal(tmp_path, model, chi2, capsys):
    out = tmp_path / "out"
    status = main(["run", str(ROOT), "--refcat", str(REFCAT), "-c", "doAstrometry=false",
                   "-c", f"photometryModel={model}", "--output", str(out), "--no-report", "-q"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["photometry_final_chi2"] == pytest.approx(chi2, rel=1e-5)
    assert metrics["photometry_final_ndof"] == 1
    assert metrics["photometry_collected_refStars"] == 346
    for name in ("prepared_refStars", "matched_fittedStars", "prepared_fittedStars", "prepared_ccdImages"):
        assert metrics[f"photometry_{name}"] == 2, name
    assert metrics["photometry_initial_ndof"] == 5
    for name in ("calibration.json", "photometry.ecsv", "residuals.parquet", "stars.parquet",
                 "config.yaml", "provenance.json"):
        assert (out / name).is_file(), name
    assert "photometry: final chi2 2." in capsys.readouterr().out


def test_initial_chi2_matches_jointcal_log_with_its_photocalibs():
    """jointcal logs 'initial chi2 9.98915 with 5 dof' for the PhotoCalibs of its processing; the
    shipped calexps carry newer ones (see tests/unit/test_photometry.py), which start at 8.468992."""
    from jointcal_core import JointcalConfig
    from jointcal_core.task import JointcalTask

    task = JointcalTask(JointcalConfig(doAstrometry=False, photometryModel="simpleFlux"))
    result = task.run_files([str(ROOT)], refcat=str(REFCAT))
    assert result.joint.initial_chi2["photometry"][0] == pytest.approx(8.468992, rel=1e-6)
    assert result.joint.initial_chi2["photometry"][1] == 5
    assert "jointcal.read" in task.metadata and "jointcal.fit_photometry" in task.metadata


def test_inspect_summarises_cfht_minimal(capsys):
    assert main(["inspect", str(ROOT), "--refcat", str(REFCAT)]) == 0
    text = capsys.readouterr().out
    assert "visits: 2" in text and "ccdImages: 2" in text and "detections: 4" in text
    assert "min_snr" in text and "kept                                   3" in text
    assert "in footprint: 346" in text and "matched: 2" in text


def test_missing_input_is_one_line_and_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["run", str(tmp_path / "nope.cat"), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    errors = [line for line in err.splitlines() if line.startswith("jointcal: error:")]
    assert len(errors) == 1 and "nope.cat" in errors[0] and "Traceback" not in err
    assert not out.exists()


def test_bad_override_names_the_field(tmp_path, capsys):
    status = main(["run", str(ROOT), "-c", "matchCut=-3", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 3 and "matchCut" in err and "Traceback" not in err


def test_existing_output_refused_without_clobber(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    status = main(["run", str(ROOT), "--refcat", str(REFCAT), "-c", "doAstrometry=false", "--output", str(out)])
    assert status == 6 and "--clobber" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"


def test_inspect_summarises_the_bundled_demo(capsys):
    """The demo (assets/demo, simulated: 6 visits x 36 MegaCam CCDs, see assets/README.md)."""
    demo = Path(__file__).resolve().parents[2] / "assets" / "demo"
    assert main(["inspect", str(demo), "--refcat", str(demo / "reference.cat")]) == 0
    text = capsys.readouterr().out
    assert "visits: 6" in text and "ccdImages: 216" in text and "detections: 12306" in text
    for visit in range(1000, 1006):
        assert f"\n{visit} " in text
    assert "15 of 15 visit pairs share stars" in text
