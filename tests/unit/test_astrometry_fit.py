"""Constrained astrometric fits of a simulated MegaCam field recover the true WCS.

Field: jointcal_core.simulate, MegaCam (SCAMP's megacam.ahead), 5 visits over 2.5 years,
4000 stars drawn (about 2100 fitted), 1 % astrometric outliers, Gaia-like reference, seeded.
The bounds are the figures measured at this size plus ~35 %.

The fit is noise-limited and efficient (benchmarks/bench_astrometry.py, 10 visits, 10 000 stars):
with noise-free measurements the model reaches the truth to 0.001 mas, and with noise the rms
error (1.64 mas with motions fitted) equals the Cramer-Rao prediction from the fit's own normal
matrix (1.65 mas). The tests below pin both, and that the exported headers add nothing to it.
"""

import dataclasses
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from jointcal_core.association import associate
from jointcal_core.config import JointcalConfig
from jointcal_core.fit import FitStatus, Fitter
from jointcal_core.io.export_models import write_model_files
from jointcal_core.models import make_astrometry_problem
from jointcal_core.models.astrometry_covariance import predicted_wcs_rms_mas
from jointcal_core.pipeline import JointFit, prepare
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field


@pytest.fixture(scope="module")
def sim():
    return simulate_field(camera="megacam", n_visits=5, n_stars=4000, seed=5)


def fit(field, **options):
    """Astrometric fit through the pipeline; returns (problem, fitter, steps, association, joint)."""
    config = JointcalConfig(doPhotometry=False, **options)
    joint = JointFit(prepare(field, config))
    fitter = joint.fitters["astrometry"]
    steps = fitter.run()
    return joint.problems["astrometry"], fitter, steps, joint.associations["astrometry"], joint


def wcs_error_mas(problem, sim, n=10, pixel_to_sky=None) -> np.ndarray:
    """Fitted minus true sky position on an n x n grid over every CCD, shape (n_ccd * n * n, 2) in mas."""
    pixel_to_sky = problem.pixel_to_sky if pixel_to_sky is None else pixel_to_sky
    out = []
    for c, (x0, y0, x1, y1) in enumerate(sim.field.ccd_images.bbox):
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n)))
        ra, dec = pixel_to_sky(c, x, y)
        ra_t, dec_t = sim.truth.pixel_to_sky(np.full(x.size, c), x, y)
        out.append(np.column_stack([(ra - ra_t) * np.cos(np.radians(dec_t)), dec - dec_t]) * 3.6e6)
    return np.concatenate(out)


def rms2(err_mas: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(err_mas ** 2, axis=1))))


@pytest.fixture(scope="module")
def constrained(sim):
    return fit(sim.field, astrometryModel="constrained")


@pytest.fixture(scope="module")
def proper_motion(sim):
    # the simulated errors are exact: no pedestal, so chi2/ndof should be 1
    return fit(sim.field, astrometryModel="constrained", fitProperMotion=True, positionErrorPedestal=0.0)


def test_constrained_fit_converges_through_the_stages_in_order(constrained):
    _, fitter, steps, *_ = constrained
    assert fitter.done and steps[-1].status is FitStatus.CONVERGED
    seen = list(dict.fromkeys(s.stage for s in steps))
    assert seen == ["DistortionsVisit", "Distortions", "Positions", "Distortions Positions"]
    assert steps[-1].chi2 < steps[0].chi2 / 100


def test_constrained_fit_recovers_the_true_wcs(constrained, sim):
    problem = constrained[0]
    rms = rms2(wcs_error_mas(problem, sim))
    assert rms < 4.5, rms          # measured 3.3 mas (10 visits: 1.75 mas)


def test_exported_headers_reproduce_the_fitted_model(constrained, sim, tmp_path):
    # the exporter aims at 0.1 mas rms / 0.3 mas max (io/export_models.py EXPORT_TARGET_*): the
    # headers read back with astropy.wcs add nothing measurable to the fit's error. With the former
    # 1 mas / 3 mas aim it wrote orders 3-4, 0.16 mas rms off the model on the 10-visit field.
    problem, joint = constrained[0], constrained[4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_model_files(tmp_path, joint)          # the wcs/, scamp/ and calibration.json of write_outputs
    ccds = sim.field.ccd_images
    rows = np.arange(len(ccds))[::5]           # 36 of the 180 headers, every detector and visit
    orders, exported, model = [], [], []
    for c in rows:
        header = fits.getheader(tmp_path / "wcs" / f"{ccds.visit[c]}-{ccds.detector[c]}.fits")
        orders.append(header["A_ORDER"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
        x0, y0, x1, y1 = ccds.bbox[c]
        x, y = (g.ravel() for g in np.meshgrid(np.linspace(x0, x1, 10), np.linspace(y0, y1, 10)))
        ra_t, dec_t = sim.truth.pixel_to_sky(np.full(x.size, c), x, y)
        for out, (ra, dec) in ((exported, wcs.all_pix2world(x, y, 0)), (model, problem.pixel_to_sky(c, x, y))):
            out.append(np.column_stack([(ra - ra_t) * np.cos(np.radians(dec_t)), dec - dec_t]) * 3.6e6)
    exported, model = np.concatenate(exported), np.concatenate(model)
    off = np.hypot(*(exported - model).T)
    assert min(orders) >= 4, sorted(set(orders))
    # measured 0.057 mas rms, 0.19 mas max, all order 4 (the 1 mas aim: order 3, ~0.3 mas rms)
    assert np.sqrt(np.mean(off ** 2)) < 0.1 and off.max() < 0.3, (off.max(), orders)
    assert abs(rms2(exported) - rms2(model)) < 0.01


def test_noise_free_measurements_give_the_true_wcs(sim):
    # the model floor: the true map is representable (order 1 chips o order 5 visits) and the fit
    # converges onto it; noise-free positions, exact reference, no outliers
    t = sim.truth
    meas = dataclasses.replace(sim.field.measurements, x=t.meas_x_true.copy(), y=t.meas_y_true.copy())
    s = t.ref_star
    ref = dataclasses.replace(sim.field.reference, ra_deg=t.star_ra_deg[s] % 360.0, dec_deg=t.star_dec_deg[s],
                              pm_ra_masyr=t.star_pm_ra_masyr[s], pm_dec_masyr=t.star_pm_dec_masyr[s])
    field = dataclasses.replace(sim.field, measurements=meas, reference=ref)
    problem, fitter, *_ = fit(field, fitProperMotion=True, positionErrorPedestal=0.0)
    assert fitter.done
    assert rms2(wcs_error_mas(problem, sim)) < 0.02       # measured 0.003 mas (10 visits: 0.001)


def test_proper_motion_fit_is_noise_limited_and_efficient(proper_motion, sim):
    # the rms error against the truth matches the Cramer-Rao prediction of the fit's own normal
    # matrix: the weights are right and nothing but the measurement noise limits the result
    problem = proper_motion[0]
    predicted = predicted_wcs_rms_mas(problem, sim.field.ccd_images.bbox)
    actual = rms2(wcs_error_mas(problem, sim))
    assert 0.75 < actual / predicted < 1.25, (actual, predicted)


def test_injected_outliers_are_rejected(constrained, sim):
    problem = constrained[0]
    res = problem.residuals()
    bad = sim.truth.is_outlier_astrometry
    in_fit = res["used"] | res["outlier"]
    assert np.sum(bad & res["outlier"]) >= 0.95 * np.sum(bad & in_fit)
    assert np.sum(~bad & res["outlier"]) < 0.005 * np.sum(~bad & in_fit)


def test_proper_motion_fit_has_unit_chi2_and_recovers_motions(proper_motion, sim):
    problem, fitter, _, assoc, _ = proper_motion
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


@pytest.mark.parametrize("kind", ["astrometry", "photometry"])
def test_an_outlier_pass_keeps_the_linearisation_of_the_remaining_terms(sim, kind):
    """After a pass the Fitter drops the rejected rows instead of re-evaluating the models: the
    result must be what a fresh linearisation gives, row for row, derivatives included."""
    joint = JointFit(prepare(sim.field, JointcalConfig()))
    fitter, problem = joint.fitters[kind], joint.problems[kind]
    passes = 0
    while not fitter.done and passes < 2:
        step = fitter.step()
        if step.status is not FitStatus.OUTLIERS_REJECTED:
            continue
        passes += 1
        assert step.n_outliers > 0
        kept, fresh = fitter.linearization(), problem.linearize(jacobian=fitter._has_jacobian)
        for name in ("residual", "star", "meas", "ref_star", "model_cols", "model_vals", "star_vals", "slot_block"):
            a, b = getattr(kept, name), getattr(fresh, name)
            assert (a is None) == (b is None), name
            if a is not None:
                # rounding only: the fresh evaluation multiplies other group sizes in BLAS, and a
                # residual (model - star, ~1e-6 of the positions) magnifies it to ~1e-11 sigma
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=name)
    assert passes == 2


@pytest.mark.parametrize("kind", ["astrometry", "photometry"])
def test_outlier_passes_mark_rows_without_copying_and_fit_as_if_removed(sim, kind, monkeypatch):
    """A pass marks the rejected rows (Linearization.drop_rows) instead of copying the Jacobian
    without them: chi2 and ndof are those of the rows that remain, the derivative arrays are the
    same objects until the next solve, which zeroes the marked rows in its own layout (the
    Jacobian is never copied without them), and the whole fit ends as when the rows are copied out."""
    from jointcal_core.fit import Linearization

    jacobian_copies = []
    without_rows = Linearization.without_rows

    def counted(self, removed):
        if self.model_vals is not None:
            jacobian_copies.append(int(np.count_nonzero(removed)))
        return without_rows(self, removed)
    monkeypatch.setattr(Linearization, "without_rows", counted)

    def run(check: bool):
        joint = JointFit(prepare(sim.field, JointcalConfig()))
        fitter = joint.fitters[kind]
        marked = 0
        while not fitter.done:
            before = fitter._lin
            step = fitter.step()
            if check and step.status is FitStatus.OUTLIERS_REJECTED and step.n_outliers:
                lin = fitter._lin
                assert lin.dropped is not None and lin.model_vals is before.model_vals      # no copy
                assert np.count_nonzero(lin.dropped) >= np.count_nonzero(before.dropped if before.dropped
                                                                          is not None else 0) + 1
                assert not np.any(lin.residual[lin.dropped])
                compact = without_rows(lin, lin.dropped)       # (not counted as the fit's copy)
                assert compact.residual.size == lin.n_live_rows
                assert fitter.chi2 == pytest.approx(compact.chi2, rel=1e-12)
                assert fitter.ndof == fitter._ndof(compact)
                marked += 1
        return [(s.status, s.n_outliers, s.chi2, s.ndof) for s in fitter.history], marked

    marked_history, marked = run(check=True)
    assert marked >= 2
    resolves = sum(1 for a, b in zip(marked_history, marked_history[1:])
                   if a[0] is FitStatus.OUTLIERS_REJECTED and b[0] is not FitStatus.OUTLIERS_REJECTED)
    assert resolves >= 1 and jacobian_copies == []
    monkeypatch.setattr(Linearization, "drop_rows", lambda self, removed: self.without_rows(removed))
    copied_history, _ = run(check=False)
    assert [h[:2] for h in marked_history] == [h[:2] for h in copied_history]
    assert [h[3] for h in marked_history] == [h[3] for h in copied_history]
    # the same steps up to the solver's tolerance: with copied rows the cached row structure no
    # longer matches and is rebuilt (a direct solve where the marked rows take CG on the kept factor,
    # which stops once the chi2 decrease it still misses is < 0.01)
    np.testing.assert_allclose([h[2] for h in marked_history], [h[2] for h in copied_history], rtol=1e-5)
    assert marked_history[-1][2] == pytest.approx(copied_history[-1][2], rel=1e-6)


def test_linearisation_in_chunks_on_threads_gives_the_same_bits(sim, monkeypatch):
    """models/astrometry_rows.py evaluates the measurements in chunks on the worker threads: the
    same bits whatever the number of threads, and the rows of one serial evaluation up to the
    rounding of BLAS products over other row counts."""
    from jointcal_core.models import astrometry_rows
    config = JointcalConfig(doPhotometry=False)
    problem = JointFit(prepare(sim.field, config)).problems["astrometry"]
    lins = []
    for threads, chunk in (("1", 10 ** 9), ("1", 3000), ("2", 3000), ("3", 3000)):
        monkeypatch.setenv("JOINTCAL_THREADS", threads)
        monkeypatch.setattr(astrometry_rows, "CHUNK_MEASUREMENTS", chunk)
        problem._kept_cols = None
        lins.append(problem.linearize(jacobian=True))
    assert len(astrometry_rows._chunks(int(problem.active.sum()))) > 2
    names = ("residual", "model_cols", "model_vals", "star_vals", "star")
    for lin in lins[2:]:
        for name in names:
            np.testing.assert_array_equal(getattr(lin, name), getattr(lins[1], name), err_msg=name)
    for name in names:
        np.testing.assert_allclose(getattr(lins[1], name), getattr(lins[0], name), rtol=1e-9, atol=1e-9, err_msg=name)
