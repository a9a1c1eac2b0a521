"""How many worker threads the numpy-heavy parts use (Schur products, export batches)."""

from __future__ import annotations

import os

__all__ = ["worker_threads"]


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
