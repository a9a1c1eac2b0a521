"""How many threads the numpy-heavy parts use: worker threads (Schur products, export batches) and
BLAS threads (:func:`blas_threads`)."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

__all__ = ["worker_threads", "blas_threads", "parallel_map"]


def worker_threads(cap: int = 4) -> int:
    """``JOINTCAL_THREADS`` when set to a positive integer, else the CPU count, at most ``cap``.

    The parts that use them (fit/schur.py, io/wcs_batch.py) split independent work whose numpy
    products and SVDs release the GIL; BLAS itself stays on one thread there.
    """
    try:
        n = int(os.environ.get("JOINTCAL_THREADS", "0"))
    except ValueError:
        n = 0
    return max(1, n if n > 0 else min(os.cpu_count() or 1, cap))


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # scipy's wheels bring their own OpenBLAS, loaded with scipy.linalg: load it before the scan
    import scipy.linalg  # noqa: F401
    return ThreadpoolController()


def blas_threads(n: int):
    """Context manager: BLAS (numpy's and scipy's OpenBLAS) limited to ``n`` threads inside.

    The libraries are scanned once per process: ``threadpoolctl.threadpool_limits`` re-scans them
    at every call (1-3 ms), which the fitter and the exporter pay hundreds of times.
    """
    return _controller().limit(limits=n, user_api="blas")


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_worker = threading.local()


def _mark_worker() -> None:
    _worker.busy = True


def _pool(n: int) -> ThreadPoolExecutor:
    # one pool per size and process, kept: starting threads for every call cost ~1 ms a thread,
    # ~0.1 s over a small fit's ~60 calls; keyed by pid so that a forked child makes its own
    key = (os.getpid(), n)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="jointcal",
                                                    initializer=_mark_worker)
        return pool


def parallel_map(func, items, n_threads: int | None = None) -> list:
    """``[func(x) for x in items]`` (order kept), on up to ``n_threads`` kept worker threads
    (default :func:`worker_threads`).

    For independent numpy work that releases the GIL. Runs in the calling thread when there is
    one item or one thread, and when called from a worker thread itself (a nested map would wait
    on a pool its own task occupies).
    """
    items = list(items)
    n = min(worker_threads() if n_threads is None else max(1, n_threads), len(items))
    if n <= 1 or getattr(_worker, "busy", False):
        return [func(x) for x in items]
    return list(_pool(n).map(func, items))
