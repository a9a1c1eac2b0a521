"""Shared helpers of the benchmark scripts: simulated-field cache, RSS sampling, accuracy, tables.

Peak memory is the maximum resident set size (``VmRSS`` of ``/proc/self/status``) sampled every
20 ms by a background thread, reset at the start of each stage, so each stage reports the peak
it reached (including what earlier stages still hold). Fields are simulated once per
parameter set into ``$JOINTCAL_BENCH_CACHE`` (default ``/tmp/jointcal_bench``) as the LDAC files
and truth a user would have (``jointcal_core.simulate.write_simulated_field``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("JOINTCAL_BENCH_CACHE", "/tmp/jointcal_bench"))
_MAS_PER_DEG = 3.6e6


def rss_mb() -> float:
    """Current resident set size (MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak_rss_mb() -> float:
    """Peak RSS of this process since it started (MB, Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StageMeter:
    """Wall time and sampled peak RSS of named stages (``with meter.stage('read'): ...``)."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_mb())
            time.sleep(self.interval_s)

    @contextmanager
    def stage(self, name: str):
        self._peak = rss_mb()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), self._peak, rss_mb())
            print(f"[bench] {name}: {self.seconds[name]:.2f} s, peak {self.peak_mb[name]:.0f} MB", file=sys.stderr,
                  flush=True)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def close(self):
        self._stop.set()
        self._thread.join()


def simulated_dir(camera: str, n_visits: int, n_stars: int, seed: int = 1, **kwargs) -> Path:
    """Simulate (once) and write a field; returns its folder (``<visit>.cat``, references, truth)."""
    from jointcal_core.simulate import simulate_field, write_simulated_field

    key = json.dumps(dict(camera=camera, n_visits=n_visits, n_stars=n_stars, seed=seed, **kwargs), sort_keys=True)
    folder = CACHE / f"{camera}-{n_visits}v-{n_stars}s-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    if (folder / "done").exists():
        return folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_field(camera=camera, n_visits=n_visits, n_stars=n_stars, seed=seed, **kwargs)
        write_simulated_field(sim, folder)
    (folder / "done").write_text(key)
    return folder


def catalogs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.cat") if p.name != "reference.cat")


def truth_rows(truth, visit: np.ndarray, detector: np.ndarray) -> np.ndarray:
    """Truth ccd index of (visit, detector) pairs."""
    vrow = np.searchsorted(truth.visit, visit)
    order = np.argsort(truth.chip_detector)
    crow = order[np.searchsorted(truth.chip_detector[order], detector)]
    return vrow * truth.chip_detector.size + crow


def ccd_grid(bbox, n: int = 8):
    x0, y0, x1, y1 = bbox
    gx, gy = np.meshgrid(np.linspace(x0 + 1, x1 - 1, n), np.linspace(y0 + 1, y1 - 1, 2 * n))
    return gx.ravel(), gy.ravel()


def astrometry_rms_mas(truth, visit, detector, bbox, pixel_to_sky) -> dict:
    """Rms (mas) over every CCD's pixel grid of ``pixel_to_sky(i, x, y)`` minus the truth.

    Also the rms after removing the mean offset of each visit (what a reference-tied fit cannot
    do better than) is not reported: the reference fixes the absolute frame, so the plain rms is
    the honest figure.
    """
    rows = truth_rows(truth, visit, detector)
    per_ccd = []
    for i, t in enumerate(rows):
        x, y = ccd_grid(bbox[i])
        ra, dec = pixel_to_sky(i, x, y)
        ra_t, dec_t = truth.pixel_to_sky(np.full(x.size, t), x, y)
        dra = ((ra - ra_t + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec_t)) * _MAS_PER_DEG
        ddec = (dec - dec_t) * _MAS_PER_DEG
        per_ccd.append(np.mean(dra ** 2 + ddec ** 2))
    per_ccd = np.sqrt(np.asarray(per_ccd))
    return {"astrometry_rms_mas": float(np.sqrt(np.mean(per_ccd ** 2))),
            "astrometry_ccd_max_mas": float(per_ccd.max())}


def photometry_rms_mmag(truth, visit, detector, bbox, zp_mag) -> dict:
    """Rms (mmag) over every CCD's pixel grid of ``zp_mag(i, x, y)`` minus the true zero point,
    plain and after removing the global mean (the reference's absolute level)."""
    rows = truth_rows(truth, visit, detector)
    diffs = []
    for i, t in enumerate(rows):
        x, y = ccd_grid(bbox[i])
        diffs.append(np.asarray(zp_mag(i, x, y), float) - truth.zp_mag(np.full(x.size, t), x, y))
    d = np.concatenate(diffs) * 1000.0
    return {"photometry_rms_mmag": float(np.sqrt(np.mean(d ** 2))),
            "photometry_rms_no_offset_mmag": float(np.std(d)), "photometry_offset_mmag": float(np.mean(d))}


def speed_probe_s() -> float:
    """Seconds for a fixed piece of work (dense products on one BLAS thread, a Python loop, a
    200 MB copy), best of 3: this shared machine's speed drifts by up to ~40 % within an hour, so
    figures taken at different times are compared through it."""
    from jointcal_core.threads import blas_threads
    a = np.linspace(0.0, 1.0, 600 * 600).reshape(600, 600)
    big = np.ones(25_000_000)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        with blas_threads(1):
            for _ in range(6):
                a @ a
        sum(i * i for i in range(1_000_000))
        big.copy()
        best = min(best, time.perf_counter() - t0)
    return best


def parallel_probe() -> float:
    """Speed-up of :func:`speed_probe_s`'s dense products on two threads over one (2.0: two
    independent cores; ~1.2 when the two virtual CPUs share a physical core, which the
    single-threaded probe cannot see)."""
    from jointcal_core.threads import blas_threads, parallel_map
    a = np.linspace(0.0, 1.0, 600 * 600).reshape(600, 600)

    def work(_):
        for _ in range(8):
            a @ a

    best = {}
    with blas_threads(1):
        for n in (1, 2, 1, 2):
            t0 = time.perf_counter()
            parallel_map(work, range(2), n_threads=n)
            best[n] = min(best.get(n, np.inf), time.perf_counter() - t0)
    return best[1] / best[2]


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 ** 2
    except OSError:
        mem_gb = float("nan")
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_gb, 1), "cpu": cpu, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "speed_probe_s": round(speed_probe_s(), 3), "two_thread_speedup": round(parallel_probe(), 2)}


def run_isolated(argv: list[str]) -> dict:
    """Run ``python <argv>`` in a fresh process (clean RSS) and parse the JSON it prints last."""
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict], columns: list[str], title: str = "") -> None:
    """Plain-text table; floats with 3 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    width = [max(len(c), *(len(row[j]) for row in cells)) if cells else len(c) for j, c in enumerate(columns)]
    if title:
        print(title)
    print("  ".join(c.rjust(w) for c, w in zip(columns, width)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, width)))


def median_of(runs: list[dict]) -> dict:
    """Per-key median of numeric entries (other entries from the first run)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.median([r[key] for r in runs]))
    out["n_runs"] = len(runs)
    return out
