"""Constrained astrometric fits of a simulated MegaCam field recover the true WCS.

Field: jointcal_core.simulate, MegaCam (SCAMP's megacam.ahead), 5 visits over 2.5 years,
4000 stars drawn (about 2100 fitted), 1 % astrometric outliers, Gaia-like reference, seeded.
The bounds are the figures measured at this size plus ~35 %. The fit is noise-limited: on the
10-visit field the rms error is 1.5 mas, and 0.55 mas when the simulated noise is divided by 4.
"""

import numpy as np
import pytest

from jointcal_core.association import associate
from jointcal_core.config import JointcalConfig
from jointcal_core.fit import Fitter, FitStatus
from jointcal_core.models import make_astrometry_problem
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field


@pytest.fixture(scope="module")
def sim():
    return simulate_field(camera="megacam", n_visits=5, n_stars=4000, seed=5)


def fit(field, **options):
    config = JointcalConfig(**options)
    assoc = associate(field, select_sources(field, config).keep, config)
    problem = make_astrometry_problem(field, assoc, config)
    fitter = Fitter(problem, outlier_sigma=config.outlierRejectSigma, tolerance=config.convergenceTolerance)
    steps = fitter.run()
    return problem, fitter, steps, assoc


def wcs_error_mas(problem, sim, n=10) -> np.ndarray:
    """Fitted minus true sky position on an n x n grid over every CCD, shape (n_ccd * n * n, 2) in mas."""
    out = []
    for c, (x0, y0, x1, y1) in enumerate(sim.field.ccd_images.bbox):
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n)))
        ra, dec = problem.pixel_to_sky(c, x, y)
        ra_t, dec_t = sim.truth.pixel_to_sky(np.full(x.size, c), x, y)
        out.append(np.column_stack([(ra - ra_t) * np.cos(np.radians(dec_t)), dec - dec_t]) * 3.6e6)
    return np.concatenate(out)


@pytest.fixture(scope="module")
def constrained(sim):
    return fit(sim.field, astrometryModel="constrained")


def test_constrained_fit_converges_through_the_stages_in_order(constrained):
    problem, fitter, steps, _ = constrained
    assert fitter.done and steps[-1].status is FitStatus.CONVERGED
    seen = list(dict.fromkeys(s.stage for s in steps))
    assert seen == ["DistortionsVisit", "Distortions", "Positions", "Distortions Positions"]
    assert steps[-1].chi2 < steps[0].chi2 / 100


def test_constrained_fit_recovers_the_true_wcs(constrained, sim):
    problem = constrained[0]
    err = wcs_error_mas(problem, sim)
    rms = np.sqrt(np.mean(np.sum(err ** 2, axis=1)))
    assert rms < 4.5, rms          # measured 3.3 mas (10 visits: 1.6 mas)


def test_injected_outliers_are_rejected(constrained, sim):
    problem = constrained[0]
    res = problem.residuals()
    bad = sim.truth.is_outlier_astrometry
    in_fit = res["used"] | res["outlier"]
    assert np.sum(bad & res["outlier"]) >= 0.95 * np.sum(bad & in_fit)
    assert np.sum(~bad & res["outlier"]) < 0.005 * np.sum(~bad & in_fit)


def test_proper_motion_fit_has_unit_chi2_and_recovers_motions(sim):
    # the simulated errors are exact: no pedestal, so chi2/ndof should be 1
    problem, fitter, steps, assoc = fit(sim.field, astrometryModel="constrained", fitProperMotion=True,
                                        positionErrorPedestal=0.0)
    assert fitter.done
    assert abs(fitter.chi2 / fitter.ndof - 1) < 0.05
    err = wcs_error_mas(problem, sim)
    assert np.sqrt(np.mean(np.sum(err ** 2, axis=1))) < 4.5      # measured 3.2 mas
    # motions of stars without a reference come from their own measurements: their errors must
    # match the errors predicted from the epochs and position errors of those measurements
    true_star = sim.truth.meas_star[assoc.star_meas_index[assoc.star_meas_ptr[:-1]]]
    pm_true = np.column_stack([sim.truth.star_pm_ra_masyr, sim.truth.star_pm_dec_masyr])[true_star]
    pm_fit = problem.star_motions_masyr()
    m = sim.field.measurements
    used = problem.active
    star, t_yr = assoc.star[used], problem.dt_yr[used]
    sigma_mas = np.sqrt((m.var_x[used] + m.var_y[used]) / 2) * 184.4      # MegaCam: 184.4 mas / px
    w = 1 / sigma_mas ** 2
    n = assoc.n_stars
    wsum = np.bincount(star, w, minlength=n)
    t_mean = np.bincount(star, w * t_yr, minlength=n) / np.maximum(wsum, 1e-300)
    info = np.bincount(star, w * (t_yr - t_mean[star]) ** 2, minlength=n)
    own = (assoc.star_ref < 0) & (info > 0) & ~problem.weak_pm
    assert own.sum() > 300
    z = (pm_fit[own] - pm_true[own]) * np.sqrt(info[own])[:, None]
    # robust scale: a few stars keep an injected outlier their 4 free parameters absorb
    assert 0.8 < 1.4826 * np.median(np.abs(z)) < 1.2
    assert np.mean(np.abs(z) > 5) < 0.02
    matched = assoc.star_ref >= 0
    assert np.sqrt(np.mean((pm_fit[matched] - pm_true[matched]) ** 2)) < 1.0


def test_reset_restores_the_initial_chi2(sim):
    config = JointcalConfig()
    assoc = associate(sim.field, select_sources(sim.field, config).keep, config)
    fitter = Fitter(make_astrometry_problem(sim.field, assoc, config))
    chi2_0 = fitter.chi2
    for _ in range(3):
        fitter.step()
    assert fitter.chi2 < chi2_0
    fitter.reset()
    assert fitter.chi2 == pytest.approx(chi2_0, rel=1e-12)
    assert fitter.history == []
