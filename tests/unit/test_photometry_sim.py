"""Photometric models on simulated fields with known truth (jointcal_core.simulate, MegaCam layout).

To stay fast the fields use the MegaCam CCDs nearest the focal-plane centre (the camera's real
affine pixel -> focal maps), 10 visits. Truth: per-chip zero-point scatter 0.05 mag, a smooth
illumination pattern of 0.03 mag peak to peak, 10 mmag noise at bright magnitudes, 1 % outliers.
The fitted zero points are compared with ``truth.zp_mag`` on a grid over every CCD.
"""

import dataclasses

import numpy as np
import pytest

from jointcal_core.association import associate
from jointcal_core.camera import megacam_camera
from jointcal_core.config import JointcalConfig
from jointcal_core.data import AB_NJY_ZP, Camera
from jointcal_core.fit import FitGroup, Fitter, FitStatus
from jointcal_core.models.chebyshev import chebyshev_basis, chebyshev_sum_by_group, chebyshev_terms
from jointcal_core.models.photometry import PHOTOMETRY_MODELS, make_photometry_problem
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field


def central_megacam(n_chips: int) -> Camera:
    cam = megacam_camera()
    b = cam.bbox
    u, v = cam.to_focal(cam.detector, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
    keep = np.sort(np.argsort(np.hypot(u, v))[:n_chips])
    return Camera(name=f"megacam-centre-{n_chips}", detector=cam.detector[keep], bbox=cam.bbox[keep],
                  pixel_to_focal=cam.pixel_to_focal[keep])


def fit(sim, **options):
    config = JointcalConfig(**options)
    assoc = associate(sim.field, select_sources(sim.field, config).keep, config)
    problem = make_photometry_problem(sim.field, assoc, config)
    fitter = Fitter(problem, outlier_sigma=config.outlierRejectSigma, tolerance=config.convergenceTolerance,
                    max_steps=config.maxPhotometrySteps, line_search=config.allowLineSearch)
    fitter.run()
    return problem, fitter


def zp_error_mag(problem, sim) -> np.ndarray:
    """Fitted minus true zero point on a 12 x 24 grid over every CCD, shape (n_ccd * 288,)."""
    ccds = sim.field.ccd_images
    b = ccds.bbox[0]
    gx, gy = np.meshgrid(np.linspace(b[0] + 0.5, b[2] - 0.5, 12), np.linspace(b[1] + 0.5, b[3] - 0.5, 24))
    n = len(ccds)
    ccd = np.repeat(np.arange(n), gx.size)
    x, y = np.tile(gx.ravel(), n), np.tile(gy.ravel(), n)
    return problem.zp_mag(ccd, x, y) - sim.truth.zp_mag(ccd, x, y)


@pytest.fixture(scope="module")
def sim_pattern():
    return simulate_field(central_megacam(8), n_visits=10, n_stars=9000, seed=7, zp_scatter_mag=0.05,
                          illumination_ptp_mag=0.03, bright_noise_mmag=10.0, outlier_fraction=0.01)


def test_constrained_magnitude_recovers_zero_points_and_pattern(sim_pattern):
    """Absolute reference: no offset removed. Order 3 holds the (quadratic) true pattern; the
    full-camera order-7 run is in the module report (benchmarks)."""
    problem, fitter = fit(sim_pattern, photometryModel="constrainedMagnitude", photometryVisitOrder=3)
    assert fitter.history[-1].status is FitStatus.CONVERGED
    err = zp_error_mag(problem, sim_pattern)
    input_err = sim_pattern.field.ccd_images.zp_mag_err[0]
    assert 1000 * np.sqrt(np.mean(err ** 2)) <= 3.0 < 1000 * input_err
    assert abs(fitter.chi2 / fitter.ndof - 1) <= 0.05
    # rejected measurements are (almost all) simulated outliers
    res = problem.residuals()
    rejected = res["meas"][res["outlier"]]
    assert rejected.size > 0 and np.mean(sim_pattern.truth.is_outlier_photometry[rejected]) > 0.95


@pytest.fixture(scope="module")
def sim_flat():
    return simulate_field(central_megacam(4), n_visits=5, n_stars=2500, seed=11, zp_scatter_mag=0.05,
                          illumination_ptp_mag=0.0, bright_noise_mmag=10.0, outlier_fraction=0.01)


@pytest.mark.parametrize("model", PHOTOMETRY_MODELS)
def test_every_model_converges_and_recovers_truth(sim_flat, model):
    """Without illumination every model can represent the truth: zero points to 3 mmag rms about
    their mean error. The mean (absolute) error is below 2 mmag in magnitude space; in flux space
    it is +5 mmag here, the known bias of weighting by errors computed from the measured fluxes
    (fainter-fluctuating measurements weigh more: bias ~ 1/SNR^2), so it is bounded at 8 mmag."""
    problem, fitter = fit(sim_flat, photometryModel=model, photometryVisitOrder=1)
    assert fitter.done and fitter.history[-1].status is FitStatus.CONVERGED
    assert [s.name for s in problem.stages()][-1] == "Model Fluxes"
    err = zp_error_mag(problem, sim_flat)
    assert 1000 * np.std(err) < 3.0
    assert 1000 * abs(np.mean(err)) < (8.0 if model.endswith("Flux") else 2.0)
    assert abs(fitter.chi2 / fitter.ndof - 1) < 0.1
    mags = problem.star_mags()
    ok = np.isfinite(mags)
    assert np.nanmedian(np.abs(mags[ok] - sim_flat.truth.star_mag[_true_star(problem, sim_flat)][ok])) < 0.02


def _true_star(problem, sim):
    """Truth star of every fitted star (via its first measurement)."""
    star = np.asarray(problem.assoc.star)
    first = np.full(problem.n_stars, -1)
    rows = np.flatnonzero(star >= 0)
    first[star[rows[::-1]]] = rows[::-1]
    return sim.truth.meas_star[first]


@pytest.mark.parametrize("model", ["simpleMagnitude", "constrainedMagnitude", "simpleFlux", "constrainedFlux"])
def test_jacobian_matches_finite_differences(sim_flat, model):
    config = JointcalConfig(photometryModel=model, photometryVisitOrder=2)
    assoc = associate(sim_flat.field, select_sources(sim_flat.field, config).keep, config)
    problem = make_photometry_problem(sim_flat.field, assoc, config)
    lin = problem.linearize()
    rng = np.random.default_rng(0)
    star = int(lin.star[rng.integers(lin.star.size)])
    delta = np.zeros((problem.n_stars, 1))
    delta[star] = 1e-4 * (1 if model.endswith("Magnitude") else 1e3)
    state = problem.get_state()
    problem.offset(np.zeros(problem.n_model_params), delta)
    numeric = (problem.linearize(jacobian=False).residual - lin.residual) / delta[star, 0]
    problem.set_state(state)
    analytic = np.where(lin.star == star, lin.star_vals[:, 0], 0.0)
    np.testing.assert_allclose(numeric, analytic, rtol=1e-5, atol=1e-9 * np.abs(analytic).max())
    if model.endswith("Flux"):
        return   # the error scales with the calibration, a derivative Gauss-Newton ignores (as jointcal)
    free = np.flatnonzero(problem.model_param_mask(FitGroup.MODEL))
    for k in rng.choice(free, 4, replace=False):
        step = np.zeros(problem.n_model_params)
        step[k] = 1e-6
        problem.offset(step, np.zeros((problem.n_stars, 1)))
        numeric = (problem.linearize(jacobian=False).residual - lin.residual) / 1e-6
        problem.set_state(state)
        analytic = np.where(lin.model_cols == k, lin.model_vals, 0.0).sum(axis=1)
        np.testing.assert_allclose(numeric, analytic, rtol=1e-5, atol=1e-6 * np.abs(analytic).max())


def test_without_reference_the_gauge_is_held_and_relative_zero_points_recovered(sim_flat):
    field = dataclasses.replace(sim_flat.field, reference=None, photometry_reference=None)
    sim = dataclasses.replace(sim_flat, field=field)
    for model in ("simpleMagnitude", "constrainedMagnitude"):
        problem, fitter = fit(sim, photometryModel=model, photometryVisitOrder=1)
        assert fitter.history[-1].status is FitStatus.CONVERGED
        err = zp_error_mag(problem, sim)
        assert 1000 * np.std(err) < 4.0         # after removing the global offset


def test_outlier_state_and_measurement_star(sim_flat):
    config = JointcalConfig(photometryModel="simpleMagnitude")
    assoc = associate(sim_flat.field, select_sources(sim_flat.field, config).keep, config)
    problem = make_photometry_problem(sim_flat.field, assoc, config)
    state = problem.get_state()
    used = np.flatnonzero(problem.measurement_star() >= 0)
    problem.deactivate(used[:3], np.array([assoc.star[used[5]]]))
    assert np.all(problem.measurement_star()[used[:3]] == -1)
    assert problem.metrics()["prepared_refStars"] <= state["ref_active"].sum()
    problem.set_state(state)
    assert np.all(problem.measurement_star()[used[:3]] >= 0)


def test_pedestal_is_a_flux_fraction_in_every_model(sim_flat):
    """With a 5 % pedestal the magnitude error is exactly 1.0857 x the fractional flux error."""
    sigma, calib = {}, None
    for model in ("simpleFlux", "simpleMagnitude"):
        config = JointcalConfig(photometryModel=model, photometryErrorPedestal=0.05)
        assoc = associate(sim_flat.field, select_sources(sim_flat.field, config).keep, config)
        problem = make_photometry_problem(sim_flat.field, assoc, config)
        lin = problem.linearize(jacobian=False)
        rows = lin.meas >= 0
        sigma[model] = -1.0 / lin.star_vals[rows, 0]
        if model == "simpleFlux":
            m, i = sim_flat.field.measurements, lin.meas[rows]
            calib = problem.calibrate_njy(m.ccd[i], m.x[i], m.y[i], m.flux[i])
    np.testing.assert_allclose(sigma["simpleMagnitude"], 2.5 / np.log(10) * sigma["simpleFlux"] / calib, rtol=1e-10)
    assert np.all(sigma["simpleMagnitude"] >= 2.5 / np.log(10) * 0.05)


@pytest.mark.parametrize("model", ["constrainedMagnitude", "constrainedFlux"])
def test_zero_points_at_the_measurements_are_those_of_the_fitted_terms(sim_pattern, model):
    """``zp_mag`` (per-visit sums, any point) and the fit's terms (stored basis grouped by visit)
    are two evaluations of one model: they agree at every fitted measurement."""
    rng = np.random.default_rng(11)
    # measurements in random order (the simulation writes them visit by visit)
    field = dataclasses.replace(sim_pattern.field,
                                measurements=sim_pattern.field.measurements.take(rng.permutation(
                                    len(sim_pattern.field.measurements))))
    config = JointcalConfig(photometryModel=model, photometryVisitOrder=3)
    assoc = associate(field, select_sources(field, config).keep, config)
    problem = make_photometry_problem(field, assoc, config)
    # every Chebyshev term non-zero, each visit's different
    problem.offset(rng.normal(0.0, 2e-3, problem.n_model_params), np.zeros((problem.n_stars, 1)))
    lin = problem.linearize(jacobian=False)
    rows = lin.meas >= 0
    m, i = field.measurements, lin.meas[rows]
    zp = problem.zp_mag(m.ccd[i], m.x[i], m.y[i])
    sigma = -1.0 / lin.star_vals[rows, 0]
    star_mag = problem.star_mags()[lin.star[rows]]
    if model == "constrainedMagnitude":     # residual = (inst mag + zp - M) / sigma
        np.testing.assert_allclose(lin.residual[rows] * sigma + star_mag + 2.5 * np.log10(m.flux[i]), zp,
                                   rtol=0, atol=1e-9)
    else:                                   # residual = (c f - F) / sigma, c from zp
        calib, star_flux = 10 ** (-0.4 * (zp - AB_NJY_ZP)), 10 ** (-0.4 * (star_mag - AB_NJY_ZP))
        np.testing.assert_allclose(lin.residual[rows] * sigma, calib * m.flux[i] - star_flux,
                                   rtol=0, atol=1e-9 * np.max(star_flux))


def test_chebyshev_sum_by_group_matches_numpy_per_group():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-2, 5, 300), rng.uniform(1, 3, 300)
    box, order = (-2, 1, 5, 3), 5
    terms = chebyshev_terms(order)
    coeffs = rng.normal(size=(4, terms.shape[0]))
    group = rng.choice([0, 2, 3], size=x.size)          # group 1 has no point
    got = chebyshev_sum_by_group(x, y, order, box, coeffs, group)
    xs, ys = (2 * x - 3) / 7, (2 * y - 4) / 2
    for g in (0, 2, 3):
        c = np.zeros((order + 1, order + 1))
        c[terms[:, 0], terms[:, 1]] = coeffs[g]
        sel = group == g
        np.testing.assert_allclose(got[sel], np.polynomial.chebyshev.chebval2d(xs[sel], ys[sel], c), atol=1e-12)


def test_chebyshev_basis_matches_numpy():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-2, 5, 50), rng.uniform(1, 3, 50)
    box = (-2, 1, 5, 3)
    basis = chebyshev_basis(x, y, 4, box)
    xs, ys = (2 * x - 3) / 7, (2 * y - 4) / 2
    for k, (i, j) in enumerate(chebyshev_terms(4)):
        c = np.zeros((i + 1, j + 1))
        c[i, j] = 1
        np.testing.assert_allclose(basis[:, k], np.polynomial.chebyshev.chebval2d(xs, ys, c), atol=1e-12)
