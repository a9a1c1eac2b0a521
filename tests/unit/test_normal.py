"""fit/normal.py, fit/schur.py: the block assembly of the reduced normal equations (threads, star
chunks, the plan cached between steps, np.add.at stand-in)."""

import numpy as np
import pytest

from jointcal_core.fit import Linearization, solve_step
from jointcal_core.fit.normal import sum_by_index
from jointcal_core.fit import refine
from jointcal_core.fit.solver import forget_rows


@pytest.fixture(autouse=True)
def exact_cg(monkeypatch):
    """CG to its relative tolerance only: these small problems' steps lower chi2 by ~1e2, so the
    absolute floor (a missed decrease of 0.01) would stop it before the steps can be compared
    entry by entry (that floor is tested on its own below)."""
    monkeypatch.setattr(refine, "ABSOLUTE_TOLERANCE", 0.0)


def test_sum_by_index_equals_add_at():
    rng = np.random.default_rng(3)
    index = rng.integers(0, 50, 1000)
    values = rng.normal(size=(1000, 2, 3))
    expected = np.zeros((50, 2, 3))
    np.add.at(expected, index, values)
    np.testing.assert_allclose(sum_by_index(index, values, 50), expected, rtol=1e-12, atol=1e-12)


def _two_slot_problem(seed=11, n_star=600, per=6, n_chip=12, n_vis=30, p_chip=3, p_vis=6):
    """Many chip and visit blocks (several hundred block pairs), 2-D stars."""
    rng = np.random.default_rng(seed)
    vis = np.concatenate([rng.choice(n_vis, per, replace=False) for _ in range(n_star)])
    chip = rng.integers(0, n_chip, vis.size)
    star = np.repeat(np.arange(n_star), per)
    n_model = n_chip * p_chip + n_vis * p_vis
    cols = np.concatenate([chip[:, None] * p_chip + np.arange(p_chip),
                           n_chip * p_chip + vis[:, None] * p_vis + np.arange(p_vis)], axis=1)
    cols = np.repeat(cols, 2, axis=0)
    lin = Linearization(residual=rng.normal(size=cols.shape[0]), model_cols=cols,
                        model_vals=rng.normal(size=cols.shape), star=np.repeat(star, 2),
                        star_vals=rng.normal(size=(cols.shape[0], 2)), meas=np.repeat(np.arange(star.size), 2),
                        ref_star=np.full(cols.shape[0], -1), slot_ranges=((0, p_chip), (p_chip, p_chip + p_vis)),
                        slot_block=np.repeat(np.column_stack([chip, vis]), 2, axis=0))
    free = np.ones(n_model, bool)
    free[:p_chip] = False
    return lin, n_model, n_star, free


def test_threaded_schur_assembly_equals_sparse_reference(monkeypatch):
    lin, n_model, n_star, free = _two_slot_problem()
    star_free = np.array([True, True])
    ref = solve_step(lin, n_model, n_star, 2, free, star_free, method="sparse")
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("JOINTCAL_THREADS", threads)
        cache = {}
        fast = solve_step(lin, n_model, n_star, 2, free, star_free, method="blocks", cache=cache)
        np.testing.assert_allclose(fast.delta_model, ref.delta_model, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fast.delta_stars, ref.delta_stars, rtol=1e-8, atol=1e-10)
    # both ways of summing the rows of an entry were used: the visit slot's runs are all one
    # measurement (2 rows: stacked products); a star seen twice in a row on one chip makes longer
    # runs in the chip slot (outer products summed by reduceat)
    groups = [slot["group"] for slot in cache["plan"].schur.slots]
    assert groups == [None, 2]


def test_blocks_with_some_parameters_held_solve_like_the_sparse_reference():
    """A chip block partly held (some of its columns free, some not): its rows' derivatives are
    read column by column, and the step is still the sparse reference's."""
    lin, n_model, n_star, free = _two_slot_problem(seed=13)
    p_chip = 3
    free[[p_chip + 0, 2 * p_chip + 2]] = False      # chips 1 and 2: one parameter held each
    star_free = np.array([True, True])
    ref = solve_step(lin, n_model, n_star, 2, free, star_free, method="sparse")
    fast = solve_step(lin, n_model, n_star, 2, free, star_free, method="blocks")
    np.testing.assert_allclose(fast.delta_model, ref.delta_model, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fast.delta_stars, ref.delta_stars, rtol=1e-8, atol=1e-10)
    assert np.all(fast.delta_model[~free] == 0)


def test_results_do_not_depend_on_the_number_of_threads(monkeypatch):
    """The group sums run in a fixed number of parts: the same bits on 1, 2 or 3 threads (a
    multi-field run on single-threaded Dask workers matches the same fit run alone)."""
    from jointcal_core.fit.normal import Plan, accumulate_gradient, normal_matrix, rows_dot_model
    lin, n_model, n_star, free = _two_slot_problem(seed=15, n_star=1500)
    free_index = np.where(free, np.cumsum(free) - 1, -1)
    plan = Plan(lin, free_index)
    assert len(plan.normal_groups()) > 8          # enough groups to be cut into parts
    x = np.linspace(-1, 1, int(free.sum()))
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("JOINTCAL_THREADS", threads)
        results.append((normal_matrix(lin, plan, x.size), accumulate_gradient(lin, plan, x.size, lin.residual),
                        rows_dot_model(lin, plan, x)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_schur_assembly_in_star_chunks_equals_sparse_reference(monkeypatch):
    """Stars split into chunks of a few hundred entry pairs: the same step as the sparse reference."""
    from jointcal_core.fit import schur
    lin, n_model, n_star, free = _two_slot_problem(seed=12)
    star_free = np.array([True, True])
    ref = solve_step(lin, n_model, n_star, 2, free, star_free, method="sparse")
    monkeypatch.setattr(schur, "_PAIR_CHUNK", 500)
    monkeypatch.setattr(schur, "_CHUNK_ROWS", 101)      # row chunks cutting through entries too
    fast = solve_step(lin, n_model, n_star, 2, free, star_free, method="blocks")
    np.testing.assert_allclose(fast.delta_model, ref.delta_model, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fast.delta_stars, ref.delta_stars, rtol=1e-8, atol=1e-10)
    assert fast.predicted_decrease == pytest.approx(ref.predicted_decrease, rel=1e-9)


def _without_rows(lin: Linearization, removed: np.ndarray) -> Linearization:
    keep = ~removed
    return Linearization(residual=lin.residual[keep], model_cols=lin.model_cols[keep],
                         model_vals=lin.model_vals[keep], star=lin.star[keep], star_vals=lin.star_vals[keep],
                         meas=lin.meas[keep], ref_star=lin.ref_star[keep], slot_ranges=lin.slot_ranges,
                         slot_block=lin.slot_block[keep])


def test_cached_plan_is_reused_after_rows_are_removed():
    """The solver cache keeps the row structure across steps and outlier removals, same results."""
    lin, n_model, n_star, free = _two_slot_problem(seed=13)
    star_free = np.array([True, True])
    cache = {}
    first = solve_step(lin, n_model, n_star, 2, free, star_free, cache=cache)
    plan = cache["plan"]
    again = solve_step(lin, n_model, n_star, 2, free, star_free, cache=cache)
    assert cache["plan"] is plan
    np.testing.assert_array_equal(again.delta_model, first.delta_model)
    # remove both rows of 15 measurements (an outlier pass), twice
    rng = np.random.default_rng(5)
    current = lin
    for _ in range(2):
        gone = rng.choice(np.unique(current.meas), 15, replace=False)
        removed = np.isin(current.meas, gone)
        forget_rows(cache, removed)
        current = _without_rows(current, removed)
        cached = solve_step(current, n_model, n_star, 2, free, star_free, cache=cache)
        assert cache["plan"] is plan
        # the step after the removal is solved by CG on the earlier factorisation (fit/refine.py)
        assert 1 <= cache["cg_iterations"] <= refine.MAX_ITERATIONS
        fresh = solve_step(current, n_model, n_star, 2, free, star_free)
        _assert_same_step(cached, fresh)
    # rows that do not match the cached layout: the plan is rebuilt, not misused
    other, *_ = _two_slot_problem(seed=14)
    solve_step(other, n_model, n_star, 2, free, star_free, cache=cache)
    assert cache["plan"] is not plan


def _assert_same_step(got, want, rel=1e-4):
    """Steps equal to ``rel`` of their norm: CG stops at 1e-6 of the error's energy norm
    (fit/refine.py), so the predicted chi2 decrease, quadratic in the error, agrees to ~1e-12."""
    for a, b in ((got.delta_model, want.delta_model), (got.delta_stars, want.delta_stars)):
        assert np.linalg.norm(a - b) <= rel * np.linalg.norm(b)
    assert got.predicted_decrease == pytest.approx(want.predicted_decrease, rel=min(rel, 1e-9))


def _perturbed(lin: Linearization, seed: int, size: float) -> Linearization:
    """The same rows with derivatives and residuals moved by ``size`` (relative): a later step."""
    rng = np.random.default_rng(seed)
    return Linearization(residual=lin.residual * (1 + size * rng.normal(size=lin.residual.shape)),
                         model_cols=lin.model_cols,
                         model_vals=lin.model_vals * (1 + size * rng.normal(size=lin.model_vals.shape)),
                         star=lin.star, star_vals=lin.star_vals * (1 + size * rng.normal(size=lin.star_vals.shape)),
                         meas=lin.meas, ref_star=lin.ref_star, slot_ranges=lin.slot_ranges,
                         slot_block=lin.slot_block)


def test_later_steps_are_solved_by_cg_on_the_last_factorisation(monkeypatch):
    """A step whose matrix moved by 1 %: CG converges in a few passes to the direct solve's step;
    a matrix moved by 60 %: CG gives up (here after 4 passes) and the step is solved (and
    factorised) directly."""
    monkeypatch.setattr(refine, "MAX_ITERATIONS", 4)
    lin, n_model, n_star, free = _two_slot_problem(seed=16)
    star_free = np.array([True, True])
    cache = {}
    solve_step(lin, n_model, n_star, 2, free, star_free, cache=cache)
    first_factor = cache["factor"]
    near = _perturbed(lin, seed=1, size=0.01)
    by_cg = solve_step(near, n_model, n_star, 2, free, star_free, cache=cache)
    assert 1 <= cache["cg_iterations"] <= 3
    assert cache["factor"] is first_factor                  # no new factorisation
    _assert_same_step(by_cg, solve_step(near, n_model, n_star, 2, free, star_free))

    far = _perturbed(lin, seed=2, size=0.6)
    fallback = solve_step(far, n_model, n_star, 2, free, star_free, cache=cache)
    assert cache["cg_iterations"] == refine.MAX_ITERATIONS   # CG did not converge ...
    assert cache["factor"] is not first_factor               # ... so the step was factorised anew
    _assert_same_step(fallback, solve_step(far, n_model, n_star, 2, free, star_free), rel=1e-12)


def test_preconditioned_cg_with_the_exact_factor_takes_one_pass():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(40, 40))
    s = m @ m.T + 40 * np.eye(40)
    rhs = rng.normal(size=40)
    scale = 1 / np.sqrt(np.diag(s))
    import scipy.linalg
    exact = refine.Factor(scipy.linalg.cho_factor(s * scale[:, None] * scale[None, :], lower=True), scale)
    x, iterations = refine.preconditioned_cg(lambda v: s @ v, rhs, exact)
    assert iterations == 1
    np.testing.assert_allclose(x, np.linalg.solve(s, rhs), rtol=1e-10)
    # a rough preconditioner (the diagonal only) needs more passes and still converges
    rough = refine.Factor(scipy.linalg.cho_factor(np.eye(40), lower=True), scale)
    x, iterations = refine.preconditioned_cg(lambda v: s @ v, rhs, rough, max_iterations=200)
    assert iterations > 1
    np.testing.assert_allclose(x, np.linalg.solve(s, rhs), rtol=1e-4)
    x, _ = refine.preconditioned_cg(lambda v: s @ v, rhs, rough, tolerance=1e-12, max_iterations=200)
    np.testing.assert_allclose(x, np.linalg.solve(s, rhs), rtol=1e-9)


def test_predicted_decrease_is_the_linear_chi2_decrease():
    """-g.delta equals |r|^2 - |r + J delta|^2 for the Gauss-Newton step (dense check)."""
    lin, n_model, n_star, free = _two_slot_problem(seed=15, n_star=80, n_vis=8, n_chip=4)
    sol = solve_step(lin, n_model, n_star, 2, free, np.array([True, True]))
    n_rows = lin.residual.size
    jac = np.zeros((n_rows, n_model + 2 * n_star))
    rows = np.repeat(np.arange(n_rows), lin.model_cols.shape[1])
    np.add.at(jac, (rows, lin.model_cols.ravel()), lin.model_vals.ravel())
    for a in range(2):
        jac[np.arange(n_rows), n_model + 2 * lin.star + a] += lin.star_vals[:, a]
    delta = np.concatenate([sol.delta_model, sol.delta_stars.ravel()])
    after = lin.residual + jac @ delta
    assert sol.predicted_decrease == pytest.approx(lin.chi2 - after @ after, rel=1e-9)


def test_stars_held_steps_eliminate_the_uncoupled_visit_blocks(monkeypatch):
    """Stars held (a preliminary stage): the visit blocks share no row, the solve eliminates them
    first; the step equals the sparse reference's dense solve."""
    from jointcal_core.fit import dense, solver
    lin, n_model, n_star, free = _two_slot_problem(seed=17)
    held = np.array([False, False])
    ref = solve_step(lin, n_model, n_star, 2, free, held, method="sparse")
    used = []
    monkeypatch.setattr(solver, "ELIMINATE_ABOVE", 0)
    monkeypatch.setattr(solver, "solve_eliminating",
                        lambda a, g, blocks, d: used.append(len(blocks)) or dense.solve_eliminating(a, g, blocks, d))
    fast = solve_step(lin, n_model, n_star, 2, free, held, method="blocks")
    assert used == [30]                                  # the 30 visit blocks (6 parameters each)
    np.testing.assert_allclose(fast.delta_model, ref.delta_model, rtol=1e-9, atol=1e-12)
    assert fast.predicted_decrease == pytest.approx(ref.predicted_decrease, rel=1e-10)


def test_block_elimination_solves_and_detects_degeneracy_like_the_full_cholesky():
    from jointcal_core.exceptions import ModelConstraintError
    from jointcal_core.fit.dense import cholesky_solve, solve_eliminating
    rng = np.random.default_rng(8)
    # 5 blocks of 4 parameters coupled only to 6 shared parameters (an arrow matrix)
    blocks = [np.arange(6 + 4 * k, 10 + 4 * k) for k in range(5)]
    j = np.zeros((200, 26))
    for k, b in enumerate(blocks):
        rows = slice(40 * k, 40 * (k + 1))
        j[rows, b] = rng.normal(size=(40, 4))
        j[rows, :6] = rng.normal(size=(40, 6))
    a, rhs = j.T @ j, rng.normal(size=26)
    np.testing.assert_allclose(solve_eliminating(a, rhs, blocks, str), np.linalg.solve(a, rhs), rtol=1e-9)
    # a degenerate direction shared by a block and the rest (one parameter repeats another)
    j[:, 7] = j[:, 0]
    a = j.T @ j
    with pytest.raises(ModelConstraintError, match="degenerate") as full:
        cholesky_solve(a, rhs, lambda i: f"p{i}")
    with pytest.raises(ModelConstraintError, match="degenerate") as eliminated:
        solve_eliminating(a, rhs, blocks, lambda i: f"p{i}")
    assert str(eliminated.value) == str(full.value)


def test_first_step_at_scale_is_preconditioned_by_a_sample_of_the_stars(monkeypatch):
    """With a third of the stars (weights x3) assembled, CG still reaches the direct solve's step;
    the Schur term is assembled once, over that third of the rows only."""
    from jointcal_core.fit import schur
    lin, n_model, n_star, free = _two_slot_problem(seed=18, n_star=1500)
    star_free = np.array([True, True])
    direct = solve_step(lin, n_model, n_star, 2, free, star_free)
    assembled = []
    original = schur.schur_term
    monkeypatch.setattr(schur, "schur_term", lambda sub, *a: assembled.append(sub.residual.size) or original(sub, *a))
    monkeypatch.setattr(refine, "sample_every", lambda n_free, star: 3)
    cache = {}
    sampled = solve_step(lin, n_model, n_star, 2, free, star_free, cache=cache)
    assert len(assembled) == 1 and assembled[0] == np.sum(lin.star % 3 == 0)
    assert 2 <= cache["cg_iterations"] <= refine.MAX_ITERATIONS
    _assert_same_step(sampled, direct)


def test_cg_stops_once_the_missed_chi2_decrease_is_below_the_absolute_tolerance(monkeypatch):
    """With the floor, a later step stops as soon as the chi2 decrease it misses is < 0.01: its
    predicted decrease is within 0.01 of the exact step's, in fewer passes."""
    lin, n_model, n_star, free = _two_slot_problem(seed=20)
    star_free = np.array([True, True])
    near = _perturbed(lin, seed=3, size=0.05)
    exact = solve_step(near, n_model, n_star, 2, free, star_free)
    passes = {}
    for floor in (0.0, 1e-2):
        monkeypatch.setattr(refine, "ABSOLUTE_TOLERANCE", floor)
        cache = {}
        solve_step(lin, n_model, n_star, 2, free, star_free, cache=cache)
        step = solve_step(near, n_model, n_star, 2, free, star_free, cache=cache)
        passes[floor] = cache["cg_iterations"]
        assert exact.predicted_decrease - step.predicted_decrease < max(floor, 1e-9 * exact.predicted_decrease)
    assert passes[1e-2] < passes[0.0]
