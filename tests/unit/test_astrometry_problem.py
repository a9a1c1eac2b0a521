"""AstrometryProblem on small simulated MegaCam fields: derivatives, contract, checks, errors.

The fields come from jointcal_core.simulate (real MegaCam layout from SCAMP's megacam.ahead,
seeded); the accuracy of full fits is in test_astrometry_fit.py.
"""

import dataclasses
import warnings

import numpy as np
import pytest

from jointcal_core.association import associate
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import InputError, JointcalWarning, ModelConstraintError
from jointcal_core.fit import FitGroup
from jointcal_core.models import make_astrometry_problem
from jointcal_core.selection import select_sources
from jointcal_core.simulate import simulate_field


@pytest.fixture(scope="module")
def small_sim():
    return simulate_field(camera="megacam", n_visits=3, n_stars=3000, seed=11)


def build(field, **options):
    config = JointcalConfig(**options)
    assoc = associate(field, select_sources(field, config).keep, config)
    return make_astrometry_problem(field, assoc, config), assoc


def dense_column_model(lin, j):
    return np.where(lin.model_cols == j, lin.model_vals, 0.0).sum(axis=1)


def dense_column_star(lin, s, d):
    return np.where(lin.star == s, lin.star_vals[:, d], 0.0)


def finite_difference(problem, delta_model, delta_stars):
    state = problem.get_state()
    problem.offset(delta_model, delta_stars)
    plus = problem.linearize(jacobian=False).residual
    problem.set_state(state)
    problem.offset(-delta_model, -delta_stars)
    minus = problem.linearize(jacobian=False).residual
    problem.set_state(state)
    return plus - minus


# simple order 2: the 3-visit field has CCDs with too few stars for order 3
CASES = [("simple", {"astrometrySimpleOrder": 2}), ("constrained", {}),
         ("simple", {"astrometrySimpleOrder": 2, "fitProperMotion": True}),
         ("constrained", {"fitProperMotion": True, "fitParallax": True})]


@pytest.mark.parametrize("model,extra", CASES, ids=["simple", "constrained", "simple-pm", "constrained-pm-plx"])
def test_jacobian_matches_finite_differences(small_sim, model, extra):
    problem, _ = build(small_sim.field, astrometryModel=model, **extra)
    problem.freeze_weights = True      # weights depend on the model; the Jacobian treats them as fixed
    rng = np.random.default_rng(0)
    # move away from the initial point so that residuals are not special
    problem.offset(np.zeros(problem.n_model_params), rng.normal(0, 1e-5, (problem.n_stars, problem.star_dim)))
    lin = problem.linearize()
    # 3.6 mas (deg, deg/yr): large enough that the ~1e-14 deg rounding of the sky round trip
    # (common plane -> ra, dec -> visit plane) stays negligible, small enough for curvature
    h = 1e-6
    free = np.flatnonzero(problem.model_param_mask(problem.stages()[-1].groups))
    for j in rng.choice(free, 12, replace=False):
        dm = np.zeros(problem.n_model_params)
        dm[j] = h
        fd = finite_difference(problem, dm, np.zeros((problem.n_stars, problem.star_dim))) / (2 * h)
        np.testing.assert_allclose(dense_column_model(lin, j), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max(),
                                   err_msg=problem.describe_model_param(j))
    stars = np.unique(lin.star[lin.ref_star >= 0])[:2].tolist() + np.unique(lin.star[lin.meas >= 0])[:2].tolist()
    for s in stars:
        for d in range(problem.star_dim):
            ds = np.zeros((problem.n_stars, problem.star_dim))
            ds[s, d] = h
            fd = finite_difference(problem, np.zeros(problem.n_model_params), ds) / (2 * h)
            np.testing.assert_allclose(dense_column_star(lin, s, d), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max(),
                                       err_msg=f"star {s} parameter {d}")


def test_initial_model_reproduces_input_wcs(small_sim):
    field = small_sim.field
    for model in ("simple", "constrained"):
        problem, _ = build(field, astrometryModel=model, excludeUnconstrained=True)
        for c in (0, 17, len(field.ccd_images) - 1):
            x0, y0, x1, y1 = field.ccd_images.bbox[c]
            x, y = np.meshgrid(np.linspace(x0, x1, 7), np.linspace(y0, y1, 7))
            ra, dec = problem.pixel_to_sky(c, x.ravel(), y.ravel())
            ra_w, dec_w = field.ccd_images.wcs[c].all_pix2world(x.ravel(), y.ravel(), 0)
            err_mas = np.hypot((ra - ra_w) * np.cos(np.radians(dec)), dec - dec_w) * 3.6e6
            # simple (order 3) reproduces each TAN-SIP (order 3) exactly; the constrained model can
            # only absorb the part of the per-CCD input errors (0.3 arcsec rms shifts in the
            # simulation) common to the visit, so its start is the visit's least-squares compromise
            assert err_mas.max() < (0.5 if model == "simple" else 1000.0), (model, c, err_mas.max())


def test_stages_masks_and_public_api(small_sim):
    problem, assoc = build(small_sim.field, astrometryModel="constrained", fitProperMotion=True)
    names = [s.name for s in problem.stages()]
    assert names == ["DistortionsVisit", "Distortions", "Positions", "Distortions Positions"]
    visit_only = problem.model_param_mask(FitGroup.MODEL_VISIT)
    assert visit_only.sum() == problem.mapping.visits.size * 2 * 21
    everything = problem.model_param_mask(FitGroup.MODEL)
    # one chip (6 parameters) is held fixed to break the chip/visit degeneracy
    assert problem.n_model_params - everything.sum() == 6
    assert problem.star_param_mask(FitGroup.STARS).tolist() == [True, True, False, False]
    assert problem.star_param_mask(problem.stages()[-1].groups).all()
    assert problem.pixel_order(0) == 5
    c = 4
    visit = int(small_sim.field.ccd_images.visit[c])
    assert problem.tangent_point_deg(c) == pytest.approx(small_sim.field.ccd_images.visit_centers_deg()[visit])
    ra, dec = problem.star_positions_deg()
    assert ra.shape == (assoc.n_stars,) and np.all(np.isfinite(dec))
    assert problem.star_motions_masyr().shape == (assoc.n_stars, 2)
    res = problem.residuals()
    n = len(small_sim.field.measurements)
    for key in ("ccd", "star", "x", "y", "dx_mas", "dy_mas", "chi2", "used", "outlier", "reserved"):
        assert res[key].shape == (n,)
    assert np.all(np.isfinite(res["dx_mas"][res["used"]]))
    assert "visit" in problem.describe_model_param(problem.n_model_params - 1)
    assert problem.describe_measurement([0])[0].startswith(f"visit {small_sim.field.ccd_images.visit[0]} detector")
    group, labels = problem.measurement_group()
    assert group.shape == (n,) and len(labels) == len(small_sim.field.ccd_images)


def test_simple_model_stages_and_orders(small_sim):
    problem, _ = build(small_sim.field, astrometryModel="simple", astrometrySimpleOrder=2)
    assert [s.name for s in problem.stages()] == ["Distortions", "Positions", "Distortions Positions"]
    assert problem.pixel_order(3) == 2
    assert problem.model_param_mask(FitGroup.MODEL_CHIP).all()     # the reference fixes the gauge


def test_reserved_stars_are_never_fitted_but_get_residuals(small_sim):
    problem, assoc = build(small_sim.field, reservedFraction=0.2, seed=3)
    reserved_meas = (assoc.star >= 0) & assoc.star_reserved[np.maximum(assoc.star, 0)]
    assert reserved_meas.any()
    lin = problem.linearize()
    assert not np.isin(lin.meas, np.flatnonzero(reserved_meas)).any()
    assert not np.isin(lin.star, np.flatnonzero(assoc.star_reserved)).any()
    res = problem.residuals()
    # the reserved residuals scatter about 0 (the mean of the star's own measurements)
    assert np.all(np.isfinite(res["dx_mas"][reserved_meas]))
    assert abs(np.median(res["dx_mas"][reserved_meas])) < 50


def test_too_few_stars_on_a_ccd_raises_or_excludes(small_sim):
    field = small_sim.field
    target = 7
    visit, det = int(field.ccd_images.visit[target]), int(field.ccd_images.detector[target])
    on_target = np.flatnonzero(field.measurements.ccd == target)
    drop = np.zeros(len(field.measurements), bool)
    drop[on_target[5:]] = True
    thin = dataclasses.replace(field, measurements=field.measurements.take(~drop))
    with pytest.raises(ModelConstraintError, match=f"visit {visit}, detector {det}.*excludeUnconstrained"):
        build(thin, astrometryModel="simple", astrometrySimpleOrder=2)
    with pytest.warns(JointcalWarning, match=f"visit {visit} detector {det}"):
        problem, _ = build(thin, astrometryModel="simple", astrometrySimpleOrder=2, excludeUnconstrained=True)
    assert problem.excluded_ccd[target] and problem.excluded_ccd.sum() == 1
    lin = problem.linearize()
    assert not np.any(thin.measurements.ccd[lin.meas[lin.meas >= 0]] == target)


def test_missing_reference_errors_need_astrometryReferenceErr(small_sim):
    field = small_sim.field
    ref = dataclasses.replace(field.reference, ra_err_mas=np.full(len(field.reference), np.nan))
    no_err = dataclasses.replace(field, reference=ref)
    with pytest.raises(InputError, match="astrometryReferenceErr"):
        build(no_err)
    problem, _ = build(no_err, astrometryReferenceErr=5.0)
    sigma_ra_mas = problem.ref.sigma_deg[:, 0] * 3.6e6
    # 5 mas, grown by the proper-motion error over |t0 - reference epoch|
    assert np.all(sigma_ra_mas >= 5.0) and np.median(sigma_ra_mas) == pytest.approx(5.0, rel=0.01)


def test_disconnected_visit_without_reference_is_refused(small_sim):
    field = dataclasses.replace(small_sim.field, reference=None, photometry_reference=None)
    config = JointcalConfig()
    assoc = associate(field, select_sources(field, config).keep, config)
    # give one visit's detections stars of their own: it then shares no star with the others
    reference_visit = make_astrometry_problem(field, assoc, config).reference_visit
    visit = [v for v in field.ccd_images.visits if v != reference_visit][0]
    mine = (assoc.star >= 0) & (field.ccd_images.visit[field.measurements.ccd] == visit)
    n_new = int(mine.sum())
    star = assoc.star.copy()
    star[mine] = assoc.n_stars + np.arange(n_new)
    extend = lambda a, fill: np.concatenate([a, np.full(n_new, fill, dtype=a.dtype)])   # noqa: E731
    cut = dataclasses.replace(assoc, star=star, n_stars=assoc.n_stars + n_new,
                              star_ra_deg=np.concatenate([assoc.star_ra_deg, assoc.meas_ra_deg[mine]]),
                              star_dec_deg=np.concatenate([assoc.star_dec_deg, assoc.meas_dec_deg[mine]]),
                              star_ref=extend(assoc.star_ref, -1), star_reserved=extend(assoc.star_reserved, False))
    with pytest.raises(ModelConstraintError, match=f"visits {visit} share no fitted star"):
        make_astrometry_problem(field, cut, config)
    config.excludeUnconstrained = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = make_astrometry_problem(field, cut, config)
    assert any(issubclass(w.category, JointcalWarning) for w in caught)
    assert problem.excluded_ccd[field.ccd_images.visit == visit].all()
