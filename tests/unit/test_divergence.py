"""A diverging fit rolls back to its best state and says what happened and where.

Real-data-like problem: the 4 central MegaCam CCDs of 4 visits of the seeded simulated field
(``badinput_cases.simulated``), photometry with jointcal's ``constrainedFlux`` model, where one CCD's
starting zero point is 3 mag off (a wrong MAGZEROP keyword). Gauss-Newton on that bilinear model then
overshoots: a step raises chi2 by far more than ``chi2IncreaseLimit`` (measured: 15361 -> 908291).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import badinput_cases as bc
from jointcal_core.cli import main
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import EXIT_CODES, DivergenceError
from jointcal_core.pipeline import JointFit, _take_ccds, prepare

VISIT, DETECTOR, OFFSET_MAG = 1001, 13, 3.0


def _field(offset_mag: float = OFFSET_MAG):
    field = bc.simulated().field
    field, _ = _take_ccds(field, np.isin(field.ccd_images.detector, bc.SIM_DETECTORS))
    zp = field.ccd_images.zp_mag.copy()
    zp[field.ccd_images.index_of(VISIT, DETECTOR)] += offset_mag
    return dataclasses.replace(field, ccd_images=dataclasses.replace(field.ccd_images, zp_mag=zp))


def _fitter(offset_mag=OFFSET_MAG, **config):
    cfg = JointcalConfig(doAstrometry=False, photometryModel="constrainedFlux", **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return JointFit(prepare(_field(offset_mag), cfg)).fitters["photometry"]


def _flat(state) -> np.ndarray:
    """Every number of a problem state, in order."""
    if isinstance(state, dict):
        return np.concatenate([_flat(state[k]) for k in sorted(state)] or [np.zeros(0)])
    if isinstance(state, (list, tuple)):
        return np.concatenate([_flat(v) for v in state] or [np.zeros(0)])
    return np.ravel(np.asarray(state, dtype=float))


def test_divergence_rolls_back_to_the_best_state_and_names_the_worst_ccds():
    fitter = _fitter()
    snapshots = []
    with pytest.raises(DivergenceError) as info:
        fitter.run(callback=lambda step: snapshots.append((step.chi2, _flat(fitter.problem.get_state()))))
    err = info.value
    assert err.chi2_after > fitter.chi2_increase_limit * err.chi2_before
    # rolled back: the fitter sits at the chi2 and parameters of its last accepted step
    best_chi2, best_state = snapshots[-1]
    assert fitter.chi2 == pytest.approx(err.chi2_before, rel=1e-12) == pytest.approx(best_chi2, rel=1e-12)
    np.testing.assert_array_equal(_flat(fitter.problem.get_state()), best_state)
    assert np.isfinite(fitter.chi2) and fitter.chi2 < fitter.history[0].chi2
    text = str(err)
    assert "photometry stage" in text and "chi2 jumped from" in text and "rolled back to the best state" in text
    # where: the share of the rejected step's chi2 per visit/CCD, largest first
    assert "Largest chi2 contributions: visit " in text and "detector" in text and "%" in text
    assert "\n" not in text
    assert err.exit_code == EXIT_CODES["FitError"] == 5


def test_the_same_start_converges_when_the_zero_point_is_right():
    fitter = _fitter(offset_mag=0.0)
    fitter.run()
    assert fitter.done and fitter.chi2 / fitter.ndof < 1.5


def test_a_higher_chi2_increase_limit_only_rolls_back_the_step():
    """Below the limit a chi2 increase is undone (rolled back) and the stage ends, with no error."""
    fitter = _fitter()
    chi2 = fitter.chi2
    fitter.chi2_increase_limit = 1e12
    fitter.run()
    statuses = [s.status.value for s in fitter.history]
    assert fitter.done and fitter.chi2 < chi2 and "chi2 increased" in statuses
    rolled = [s for s in fitter.history if s.status.value == "chi2 increased"]
    assert all("rolled back" in s.message and s.step_norm == 0.0 for s in rolled)


def test_divergence_through_the_cli_is_one_line_exit_5_and_no_output(tmp_path, capsys):
    def bad_zero_point(visit, detector, header, table):
        if (visit, detector) == (VISIT, DETECTOR):
            header["MAGZEROP"] = header["MAGZEROP"] + OFFSET_MAG
    paths = bc.write_sim_ldac(tmp_path / "in", bad_zero_point)
    out = tmp_path / "out"
    status = main(["run", *map(str, paths), "--refcat", str(tmp_path / "in" / "reference.cat"),
                   "-c", "doAstrometry=false", "-c", "photometryModel=constrainedFlux", "--output", str(out),
                   "--no-report"])
    err = capsys.readouterr().err
    assert status == 5 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("jointcal: error:")]
    assert len(errors) == 1
    assert "chi2 jumped from" in errors[0] and "rolled back" in errors[0] and "visit " in errors[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
