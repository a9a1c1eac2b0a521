"""The bad-input corpus: every broken input gives one ``jointcal: error:`` line (or, when degraded but
usable, a ``jointcal: warning:`` line and the item excluded), its documented exit code, and no output.

The cases (``badinput_cases.CASES``) break copies of real files: LSST jointcal's cfht_minimal repository
and refcat, the AF Vel LCO ``.psx`` catalogs, SCAMP's Gaia DR1 reference, and FITS_LDAC catalogs of a
seeded simulated MegaCam field written with :mod:`jointcal_core.io.ldac_write`. A few run through a real
``python -m jointcal_core.cli`` process to prove no traceback reaches the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.table import Table

import badinput_cases as bc
from jointcal_core.cli import main
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import EXIT_CODES, ConfigError, OutputError
from jointcal_core.task import JointcalTask

pytestmark = pytest.mark.skipif(not bc.HAVE_DATA, reason="real test data not present")

CODE_OF = {**EXIT_CODES, "JointcalWarning": 0}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".old" in p.name)


def _check(case, status, err: str, out: Path):
    assert "Traceback" not in err, err
    assert status == case.code == CODE_OF[case.error], (status, err)
    errors = [line for line in err.splitlines() if line.startswith("jointcal: error:")]
    if case.code == 0:
        assert errors == [], err
        warned = [line for line in err.splitlines() if line.startswith("jointcal: warning:")]
        assert any(all(s in line for s in case.says) for line in warned), err
        assert (out / "calibration.json").is_file()
    else:
        assert len(errors) == 1, err
        for text in case.says:
            assert text in errors[0], (text, errors[0])
        assert not out.exists()
    assert _leftovers(out.parent) == []


def _astrometry_importable() -> bool:
    try:
        import jointcal_core.models.astrometry  # noqa: F401
    except ImportError:
        return False
    return True


NO_ASTROMETRY = pytest.mark.skipif(not _astrometry_importable(), reason="astrometry fit not installed")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[NO_ASTROMETRY] if c.needs_astrometry else [])
                                  for c in bc.CASES])
def test_bad_input(case, tmp_path, capsys):
    argv = case.build(tmp_path / "in")
    out = tmp_path / "out"
    status = main(["run", *argv, "--output", str(out), "--no-report"])
    _check(case, status, capsys.readouterr().err, out)


def test_excluded_ccd_is_absent_from_the_outputs(tmp_path, capsys):
    case = next(c for c in bc.CASES if c.name == "ldac_empty_ccd_excluded")
    out = tmp_path / "out"
    assert main(["run", *case.build(tmp_path / "in"), "--output", str(out), "--no-report", "-q"]) == 0
    zp = Table.read(out / "photometry.ecsv")
    pairs = set(zip(zp["visit"].tolist(), zp["detector"].tolist()))
    assert (1001, 13) not in pairs and (1001, 12) in pairs and len(pairs) == 4 * 4 - 1


SUBPROCESS_CASES = ["ldac_truncated", "lsst_calexp_truncated", "disconnected_overlap_graph"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(name, tmp_path):
    case = next(c for c in bc.CASES if c.name == name)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "jointcal_core.cli", "run", *case.build(tmp_path / "in"), "--output", str(out),
            "--no-report"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    _check(case, proc.returncode, proc.stderr, out)
    assert proc.stdout == ""


def test_corpus_has_every_kind():
    names = {c.name for c in bc.CASES}
    assert len(names) == len(bc.CASES)
    for word in ("truncated", "missing", "radians", "nan", "zero", "negative", "empty", "wcs", "overlaps_nothing",
                 "reference", "disconnected", "fewer_stars", "duplicate", "mixed_bands"):
        assert any(word in n for n in names), word


# --- config safety --------------------------------------------------------------------------------------

def test_python_object_tag_in_config_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"minSnr: 5\nseed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError) as info:
        JointcalConfig.read(config)
    assert "evil.yaml" in str(info.value) and not marker.exists()
    out = tmp_path / "out"
    status = main(["run", str(bc.CFHT), "--config", str(config), "--output", str(out)])
    err = capsys.readouterr().err
    assert status == EXIT_CODES["ConfigError"] == 3 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("jointcal: error:")]
    assert len(errors) == 1 and "evil.yaml" in errors[0] and "not valid YAML/JSON" in errors[0]
    assert not marker.exists() and not out.exists()


def test_json_config_with_unknown_option_names_the_field(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"minsnr": 3}')
    with pytest.raises(ConfigError, match="minsnr.*did you mean 'minSnr'"):
        JointcalConfig.read(config)


def test_rerun_into_existing_output_with_another_config_is_refused_with_a_diff(tmp_path):
    out = tmp_path / "out"
    JointcalTask(JointcalConfig(minSnr=10)).write_config(out)
    JointcalTask(JointcalConfig(minSnr=10)).write_config(out)      # same config: fine
    with pytest.raises(OutputError) as info:
        JointcalTask(JointcalConfig(minSnr=5, matchCut=2.0)).write_config(out)
    text = str(info.value)
    assert "config.yaml" in text and "minSnr: 10 -> 5" in text and "matchCut: 3.0 -> 2.0" in text
    assert JointcalConfig.read(out / "config.yaml").minSnr == 10
    path = JointcalTask(JointcalConfig(minSnr=5)).write_config(out, clobber=True)
    assert JointcalConfig.read(path).minSnr == 5 and JointcalConfig.read(out / "config.yaml~").minSnr == 10
