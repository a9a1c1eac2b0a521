"""jointcal_core/threads.py: the kept worker pool and the BLAS limit."""

import threading

import numpy as np

from jointcal_core import threads


def test_parallel_map_keeps_order_and_reuses_its_threads(monkeypatch):
    monkeypatch.setenv("JOINTCAL_THREADS", "2")
    names = []

    def work(i):
        names.append(threading.current_thread().name)
        return np.full(3, i) @ np.ones(3)

    first = threads.parallel_map(work, range(20))
    second = threads.parallel_map(work, range(20))
    assert first == second == [3.0 * i for i in range(20)]
    workers = {n for n in names if n.startswith("jointcal")}
    # every item ran on the pool, and the second call found the same (at most 2) threads
    assert len(names) == 40 and len(workers) == len(set(names)) and 1 <= len(workers) <= 2


def test_one_thread_or_one_item_runs_in_the_caller(monkeypatch):
    caller = threading.current_thread().name
    monkeypatch.setenv("JOINTCAL_THREADS", "1")
    assert threads.parallel_map(lambda i: threading.current_thread().name, range(3)) == [caller] * 3
    monkeypatch.setenv("JOINTCAL_THREADS", "2")
    assert threads.parallel_map(lambda i: threading.current_thread().name, [0]) == [caller]
    assert threads.parallel_map(lambda i: threading.current_thread().name, range(4), n_threads=1) == [caller] * 4


def test_a_map_inside_a_worker_runs_inline_instead_of_waiting_on_its_own_pool(monkeypatch):
    """Every worker busy with an outer item that maps again: queued inner items could never start."""
    monkeypatch.setenv("JOINTCAL_THREADS", "2")

    def outer(i):
        me = threading.current_thread().name
        inner = threads.parallel_map(lambda j: (threading.current_thread().name, i * 10 + j), range(3))
        assert all(name == me for name, _ in inner)
        return [v for _, v in inner]

    result = []
    runner = threading.Thread(target=lambda: result.append(threads.parallel_map(outer, range(4))))
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "nested parallel_map deadlocked"
    assert result == [[[i * 10 + j for j in range(3)] for i in range(4)]]


def test_blas_limit_applies_inside_and_is_lifted_after():
    controller = threads._controller()

    def blas_counts():
        return [m["num_threads"] for m in controller.info() if m["user_api"] == "blas"]

    before = blas_counts()
    with threads.blas_threads(1):
        assert blas_counts() and all(n == 1 for n in blas_counts())
    assert blas_counts() == before
