"""fit/normal.py: the block assembly of the reduced normal equations (threads, np.add.at stand-in)."""

import numpy as np

from jointcal_core.fit import Linearization, solve_step
from jointcal_core.fit.normal import sum_by_index


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
        fast = solve_step(lin, n_model, n_star, 2, free, star_free, method="blocks")
        np.testing.assert_allclose(fast.delta_model, ref.delta_model, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fast.delta_stars, ref.delta_stars, rtol=1e-8, atol=1e-10)
