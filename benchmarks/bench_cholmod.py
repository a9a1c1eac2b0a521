"""One Gauss-Newton step: our Schur-complement solve vs jointcal's full-system CHOLMOD LDL^T.

    python benchmarks/bench_cholmod.py [--case small|tract|large] [--runs 3] [--kind astrometry|photometry] [--json]

jointcal assembles the full normal matrix (model *and* star parameters, ``J^T J`` sparse) and
factorises it with CHOLMOD (simplicial LDL^T) at every step. This script linearises the same
problem (the simulated HSC field of ``bench_fit.py``, final stage: every parameter free), then
times on that one linearisation:

- ``ours``: :func:`jointcal_core.fit.solver.solve_step` (stars eliminated, reduced system by
  dense block products, dense Cholesky);
- ``ours_later_step``: the next step of the same stage as the Fitter takes it, after moving the
  parameters by the first step: conjugate gradients preconditioned by the first step's factor;
- ``cholmod``: building ``J`` and ``J^T J`` with scipy.sparse + ``sksparse.cholmod.cholesky(
  N, mode='simplicial')`` (LDL^T with CHOLMOD's default fill-reducing ordering) + the solve;
  ``cholmod_factor`` is the factorisation alone.

The two steps are compared (max relative difference of the model step), so the comparison is
between two solutions of the same system. Needs ``scikit-sparse`` 0.4.16 (``pip install
scikit-sparse==0.4.16`` after ``apt-get install -y libsuitesparse-dev``); falls back to
``cvxopt.cholmod`` when only cvxopt is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from bench_fit import CASES


def linearization(folder: Path, kind: str):
    """The problem of ``kind`` on the field in ``folder`` and its final-stage linearisation."""
    from jointcal_core.config import JointcalConfig
    from jointcal_core.pipeline import JointFit, prepare
    from jointcal_core.task import JointcalTask

    config = JointcalConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        field = JointcalTask(config).load(C.catalogs(folder), refcat=folder / "reference.parquet")
        joint = JointFit(prepare(field, config), kinds=[kind])
    problem = joint.problems[kind]
    groups = problem.stages()[-1].groups
    return problem, problem.linearize(jacobian=True), problem.model_param_mask(groups), problem.star_param_mask(groups)


def full_system(lin, model_free, star_free, n_stars):
    """Sparse ``J`` over (free model, free star) parameters and ``N = J^T J`` (CSC), ``g = J^T r``."""
    from jointcal_core.fit.solver import _model_matrix, _star_blocks

    free_ids = np.flatnonzero(model_free)
    free_index = np.full(model_free.size, -1, dtype=np.int64)
    free_index[free_ids] = np.arange(free_ids.size)
    jm = _model_matrix(lin, free_index, free_ids.size)
    _, js, _ = _star_blocks(lin, n_stars, star_free)
    j = sp.hstack([jm, js], format="csr")
    n = (j.T @ j).tocsc()
    return n, j.T @ lin.residual, free_ids.size


def cholmod_step(lin, model_free, star_free, n_stars):
    """Assemble, factorise (simplicial LDL^T) and solve; returns (delta_model_free, timings)."""
    t0 = time.perf_counter()
    n, g, n_free = full_system(lin, model_free, star_free, n_stars)
    # stars seen by no active row have empty columns: pin them (jointcal never creates them)
    empty = np.flatnonzero(n.diagonal() == 0)
    if empty.size:
        n = n + sp.csc_matrix((np.ones(empty.size), (empty, empty)), shape=n.shape)
    t1 = time.perf_counter()
    try:
        from sksparse.cholmod import cholesky
        factor = cholesky(n, mode="simplicial")
        t2 = time.perf_counter()
        delta = -factor(g)
        backend = "scikit-sparse CHOLMOD simplicial LDL^T"
    except ImportError:
        from cvxopt import cholmod, matrix, spmatrix
        coo = n.tocoo()
        a = spmatrix(coo.data, coo.row.tolist(), coo.col.tolist(), size=n.shape)
        cholmod.options["supernodal"] = 0
        f = cholmod.symbolic(a)
        cholmod.numeric(a, f)
        t2 = time.perf_counter()
        b = matrix(-g)
        cholmod.solve(f, b)
        delta = np.asarray(b).ravel()
        backend = "cvxopt CHOLMOD simplicial"
    t3 = time.perf_counter()
    return delta[:n_free], {"cholmod_assemble_s": t1 - t0, "cholmod_factor_s": t2 - t1, "cholmod_solve_s": t3 - t2,
                            "cholmod_step_s": t3 - t0, "n_full_params": n.shape[0], "nnz_normal": int(n.nnz),
                            "backend": backend}


def our_step(problem, lin, model_free, star_free):
    from jointcal_core.fit.solver import solve_step

    t0 = time.perf_counter()
    # as the Fitter calls it: one BLAS thread
    with threadpool_limits(limits=1, user_api="blas"):
        sol = solve_step(lin, problem.n_model_params, problem.n_stars, problem.star_dim, model_free, star_free,
                         describe=problem.describe_model_param)
    return sol.delta_model[model_free], time.perf_counter() - t0


def our_later_step(problem):
    """A later step of the final stage, as the Fitter takes it: the Fitter runs through the
    preliminary stages, the first final-stage step (which factorises) and the outlier pass after
    it; the next step's solve is timed (conjugate gradients preconditioned by the kept factor,
    fit/refine.py) and compared with a direct solve of the same linearisation.

    Returns (seconds, CG passes, max relative difference of the model step vs the direct solve)."""
    from jointcal_core.fit import FitStatus, Fitter, fitter as fitter_module
    from jointcal_core.fit.solver import solve_step

    state = problem.get_state()
    fitter = Fitter(problem)
    timed: list = []

    def timed_solve(lin, *args, **kwargs):
        t0 = time.perf_counter()
        sol = solve_step(lin, *args, **kwargs)
        timed.append((time.perf_counter() - t0, kwargs["cache"].get("cg_iterations", 0), lin, args, sol))
        return sol

    while not any(s.status is FitStatus.OUTLIERS_REJECTED for s in fitter.history):
        fitter.step()
    fitter_module.solve_step = timed_solve
    try:
        fitter.step()
    finally:
        fitter_module.solve_step = solve_step
    seconds, passes, lin, args, sol = timed[-1]
    direct = solve_step(lin, *args[:5], describe=problem.describe_model_param)
    problem.set_state(state)
    scale = max(np.max(np.abs(direct.delta_model)), 1e-300)
    return seconds, passes, float(np.max(np.abs(sol.delta_model - direct.delta_model)) / scale)


def run(case: str, runs: int, kind: str) -> dict:
    folder = C.simulated_dir("hsc", **CASES[case])
    problem, lin, model_free, star_free = linearization(folder, kind)
    ours, theirs, info = [], [], {}
    for _ in range(runs):
        dm_ours, t = our_step(problem, lin, model_free, star_free)
        ours.append(t)
        dm_chol, info = cholmod_step(lin, model_free, star_free, problem.n_stars)
        theirs.append(info)
    scale = max(np.max(np.abs(dm_chol)), 1e-300)
    out = {"case": case, "kind": kind, "n_rows": int(lin.residual.size), "n_model_free": int(model_free.sum()),
           "n_stars": int(problem.n_stars), "ours_step_s": float(np.median(ours)), "runs": runs}
    for key in ("cholmod_assemble_s", "cholmod_factor_s", "cholmod_solve_s", "cholmod_step_s"):
        out[key] = float(np.median([r[key] for r in theirs]))
    out.update({k: info[k] for k in ("n_full_params", "nnz_normal", "backend")})
    later = [our_later_step(problem) for _ in range(runs)]
    out["ours_later_step_s"] = float(np.median([t for t, _, _ in later]))
    out["ours_later_step_cg_passes"] = int(later[0][1])
    out["later_step_rel_diff_vs_direct"] = later[0][2]
    out["speedup_step"] = out["cholmod_step_s"] / out["ours_step_s"]
    out["speedup_later_step"] = out["cholmod_step_s"] / out["ours_later_step_s"]
    out["speedup_vs_factor_only"] = out["cholmod_factor_s"] / out["ours_step_s"]
    out["max_rel_diff_model_step"] = float(np.max(np.abs(dm_ours - dm_chol)) / scale)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="tract")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kind", choices=["astrometry", "photometry"], default="astrometry")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.case, args.runs, args.kind)
    result["machine"] = C.machine()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:<26} {value:.4g}" if isinstance(value, float) else f"{key:<26} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
