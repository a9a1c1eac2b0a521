"""Interrupting ``jointcal run`` (SIGTERM, SIGINT) mid-fit: exit 130, no output, no temporary leftovers.

The field is the seeded simulated MegaCam field (all 36 CCDs, 6 visits, 40,000 stars) written as
FITS_LDAC catalogs. The signal is sent as soon as the first fit progress line appears on stderr
(no blind sleep); the rest of the run (fits and export) then takes ~4 s here (16 CCDs and 6000
stars left only ~0.8 s once the fit got faster).

The child starts with SIGINT at its default disposition: a shell starts background jobs with
SIGINT ignored, Python then installs no KeyboardInterrupt handler, and the run would ignore the
signal (as it should for a background job), which made this test fail when the suite itself was
started in the background.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import badinput_cases as bc
from jointcal_core.cli import EXIT_INTERRUPTED
from jointcal_core.io.outputs import atomic_output_dir
from jointcal_core.exceptions import OutputError


#: every MegaCam CCD
DETECTORS = tuple(range(36))


@pytest.fixture(scope="module")
def big_field(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupt")
    sim = bc.simulated(n_visits=6, n_stars=40_000, seed=5)
    paths = bc.write_sim_ldac(folder, sim=sim, detectors=DETECTORS)
    return folder, paths


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_fit_leaves_no_output(big_field, tmp_path, signum):
    folder, paths = big_field
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "jointcal_core.cli", "run", *map(str, paths), "--refcat",
            str(folder / "reference.cat"), "--output", str(out), "--no-report"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint)
    seen, deadline = [], time.monotonic() + 120
    try:
        for line in proc.stderr:             # wait for the fit to be under way
            seen.append(line)
            if " step " in line and "chi2/ndof" in line:
                break
            assert time.monotonic() < deadline, "".join(seen)
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signum)
        rest_out, rest_err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest_err
    assert "wrote" not in rest_out, f"the run ended before the signal took effect (make the field larger):\n{err}"
    assert proc.returncode == EXIT_INTERRUPTED == 130, err
    assert "jointcal: interrupted; no output was written" in err
    assert "Traceback" not in err
    assert "wrote" not in rest_out
    assert not out.exists() and _leftovers(tmp_path) == []


def test_interrupt_inside_the_atomic_folder_keeps_the_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out, clobber=True) as tmp:
            (tmp / "calibration.json").write_text('{"new": 1}')
            raise KeyboardInterrupt
    assert (out / "calibration.json").read_text() == "{}"
    assert _leftovers(tmp_path) == []


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a" and _leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="--clobber"):
        with atomic_output_dir(out):
            pass
