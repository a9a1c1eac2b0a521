"""How many threads the numpy-heavy parts use: worker threads (Schur products, export batches) and
BLAS threads (:func:`blas_threads`)."""

from __future__ import annotations

import functools
import os

from threadpoolctl import ThreadpoolController

__all__ = ["worker_threads", "blas_threads"]


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
