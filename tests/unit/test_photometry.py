"""Photometric models on LSST jointcal's own cfht_minimal data: jointcal's numbers, exactly.

cfht_minimal (``/work/shared/data/lsst_jointcal_tests_data``, README there): 2 visits of CFHT
MegaCam CCD 12, 2 sources per catalog; one source (S/N 7.8, resolved) fails the selection, leaving
3 measurements of 2 fitted stars, both matched to SDSS r-band reference stars. jointcal's
tests/test_jointcal_cfht_minimal.py asserts final chi2 2.336915 (simpleFlux) and 2.23008
(simpleMagnitude) with ndof 1 (5 terms - 2 calibrations - 2 star fluxes); its notebook
cfht_minimal_direct_calculation.ipynb logs chi2 9.98915 initially, 7.76225 after 'Model' and
4.57832 after 'Fluxes' with the PhotoCalibs of that processing (1.524685827e-13 and
1.465319951e-13 maggies per count). The shipped calexps have newer PhotoCalibs (0.54322421 and
0.52577558 nJy per count), which give an initial chi2 of 8.468992 and the same final chi2.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from jointcal_core.association import associate, count_collected_reference, reference_loading_circle
from jointcal_core.config import JointcalConfig
from jointcal_core.data import Field
from jointcal_core.fit import Fitter, FitStatus
from jointcal_core.io.lsst import read_lsst_repo
from jointcal_core.io.refcat import read_lsst_refcat
from jointcal_core.models.photometry import make_photometry_problem
from jointcal_core.projection import angular_separation_arcsec
from jointcal_core.selection import select_sources

ROOT = Path("/work/shared/data/lsst_jointcal_tests_data/tests/data/cfht_minimal/repo")
pytestmark = pytest.mark.skipif(not ROOT.exists(), reason="cfht_minimal test data not present")


@pytest.fixture(scope="module")
def field() -> Field:
    ccds, meas = read_lsst_repo(ROOT)
    ref = read_lsst_refcat(ROOT / "ref_cats/sdss-dr9-fink-v5b")
    return Field(ccd_images=ccds, measurements=meas, reference=ref, photometry_reference=ref, band="r")


def _fit(field, model, **overrides):
    config = JointcalConfig(photometryModel=model, **overrides)
    assoc = associate(field, select_sources(field, config).keep, config)
    problem = make_photometry_problem(field, assoc, config)
    fitter = Fitter(problem, outlier_sigma=config.outlierRejectSigma, tolerance=config.convergenceTolerance,
                    max_steps=config.maxPhotometrySteps, line_search=config.allowLineSearch)
    return assoc, problem, fitter


@pytest.mark.parametrize("model, chi2", [("simpleFlux", 2.336915), ("simpleMagnitude", 2.23008)])
def test_final_chi2_and_counts_match_jointcal(field, model, chi2):
    assoc, problem, fitter = _fit(field, model)
    assert fitter.ndof == 1
    steps = fitter.run()
    assert steps[-1].status is FitStatus.CONVERGED and fitter.n_outliers == 0
    assert fitter.chi2 == pytest.approx(chi2, rel=1e-5)
    assert fitter.ndof == 1
    assert assoc.matched_fittedStars == 2
    assert problem.metrics() == {"prepared_refStars": 2, "prepared_fittedStars": 2, "prepared_ccdImages": 2}
    # the star seen twice has two measurements, the other one (reference-matched) only one
    assert sorted(np.bincount(problem.measurement_star()[problem.measurement_star() >= 0])) == [1, 2]


def test_initial_chi2_with_shipped_photocalibs(field):
    _, _, fitter = _fit(field, "simpleFlux")
    assert fitter.chi2 == pytest.approx(8.468992, rel=1e-6)


def test_jointcal_logged_steps_with_the_notebook_photocalibs(field):
    """Initial, 'Model' and 'Fluxes' chi2 exactly as jointcal logged them for its PhotoCalibs."""
    calib_njy = np.array([1.524685827e-13, 1.465319951e-13]) * 3631e9     # maggies -> nJy per count
    ccds = dataclasses.replace(field.ccd_images, zp_mag=31.4 - 2.5 * np.log10(calib_njy))
    _, _, fitter = _fit(dataclasses.replace(field, ccd_images=ccds), "simpleFlux")
    assert fitter.chi2 == pytest.approx(9.98915, rel=1e-6)
    fitter.run()
    values = [s.chi2 for s in fitter.history]
    assert values[0] == pytest.approx(7.76225, rel=1e-6)                      # the 'Model' step
    assert [v for v in values if v < 7.7][0] == pytest.approx(4.57832, rel=1e-6)  # the 'Fluxes' step
    assert fitter.chi2 == pytest.approx(2.336915, rel=1e-5)


def test_outputs_are_consistent(field):
    _, problem, fitter = _fit(field, "simpleFlux")
    fitter.run()
    res = problem.residuals()
    assert res["meas"].size == 3 and np.all(res["used"]) and not np.any(res["reserved"])
    # calibrated flux of a measurement from zp_mag and calibrate_njy agree
    m = field.measurements
    i = res["meas"]
    njy = problem.calibrate_njy(m.ccd[i], m.x[i], m.y[i], m.flux[i])
    np.testing.assert_allclose(31.4 - 2.5 * np.log10(njy), res["mag"], atol=1e-12)
    np.testing.assert_allclose(res["chi2"].sum() + 0.0, fitter.linearization().chi2_per_measurement(
        problem.n_measurements).sum(), rtol=1e-12)
    assert problem.pixel_order(0) == 0
    assert problem.to_dict()["unit"] == "nJy/count"


def test_collected_refstars_is_jointcals_bounding_circle_count(field):
    """jointcal's collected_refStars (346) counts the reference stars with a valid flux inside the
    circle it loads the reference in; the nearest star outside is 0.35 arcsec beyond the edge."""
    c_ra, c_dec, radius = reference_loading_circle(field)
    ref = field.photometry_reference
    sep = angular_separation_arcsec(c_ra, c_dec, ref.ra_deg, ref.dec_deg)
    flux, err = ref.flux_njy["r"], ref.flux_err_njy["r"]
    valid = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    assert np.count_nonzero((sep < radius) & valid) == 346
    assert count_collected_reference(field, ref, "r") == 346
