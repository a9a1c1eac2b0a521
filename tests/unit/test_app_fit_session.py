"""FitSession driving real fits of the bundled demo field (assets/demo), without a browser.

The demo is read once per module; every test gets its own session on that (immutable) Field.
"""

from __future__ import annotations

import queue
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.session import FitSession
from jointcal_core.fit import FitStatus

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"

pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="the bundled demo field (assets/demo) is not there")


@pytest.fixture(scope="module")
def demo_field():
    session = FitSession()
    assert session.load(DEMO), session.error
    return session.field


@pytest.fixture
def session(demo_field):
    s = FitSession()
    s.set_field(demo_field, path=str(DEMO))
    return s


def _stage_position(joint, label: str) -> tuple[int, int]:
    """(fit index, stage index) of a stage label such as 'astrometry: Distortions'."""
    if label == "converged":
        return (len(joint.kinds), 0)
    kind, stage = label.split(": ", 1)
    names = [s.name for s in joint.fitters[kind].stages]
    return (joint.kinds.index(kind), names.index(stage))


def test_associate_builds_the_fit_of_the_selected_visits(session):
    joint = session.associate()
    assert session.error == "" and joint is session.joint
    assert session.n_fit_ccd_images == len(session.field.ccd_images) == 216
    assert "216 ccdImages" in session.fit_summary
    assert session.stage == joint.stage_label() and session.history == []
    assert set(joint.kinds) == {"astrometry", "photometry"}


def test_three_steps_give_three_records_and_the_stage_advances(session):
    session.associate()
    labels, versions = [session.stage], [session.fit_version]
    for _ in range(3):
        step = session.step()
        assert step is session.history[-1]
        labels.append(session.stage)
        versions.append(session.fit_version)
    assert len(session.history) == 3
    assert [s.iteration for s in session.history] == [1, 2, 3]
    positions = [_stage_position(session.joint, label) for label in labels]
    assert positions == sorted(positions) and positions[-1] > positions[0]  # moved to a later stage
    assert versions == sorted(set(versions))                                # one bump per step
    assert 0 < session.progress < 1


def test_run_converges_every_fit_and_reset_restores_the_initial_chi2(session):
    session.associate()
    initial = {k: f.chi2 for k, f in session.joint.fitters.items()}
    last = session.run()
    assert last is session.history[-1] and last.status is FitStatus.CONVERGED
    assert {k: f.history[-1].status for k, f in session.joint.fitters.items()} == {
        "astrometry": FitStatus.CONVERGED, "photometry": FitStatus.CONVERGED}
    assert session.stage == "converged" and session.progress == 1.0
    assert all(session.joint.fitters[k].chi2 < 0.01 * initial[k] for k in ["astrometry"])
    session.reset()
    assert session.history == [] and session.stage == "astrometry: DistortionsVisit"
    for kind, fitter in session.joint.fitters.items():
        assert fitter.chi2 == pytest.approx(initial[kind], rel=1e-12)
        assert fitter.chi2 == pytest.approx(session.joint.initial_chi2[kind][0], rel=1e-12)


def test_excluding_a_visit_makes_the_fit_stale_until_associate(session):
    session.associate()
    session.exclude_visit(session.visits[0])
    assert session.stale
    assert session.step() is None and "press Associate again" in session.error
    session.associate()
    assert not session.stale and session.n_fit_ccd_images == 216 - 36
    assert len(session.joint.prepared.field.ccd_images) == 180
    session.config.minSnr = 20.0     # an option changed after Associate: stale again
    assert session.stale


def test_a_failing_action_leaves_one_line_in_error_and_the_session_usable(session):
    session.config.minSnr = 1e9      # every detection is cut
    assert session.associate() is None
    assert session.error.startswith("Associate failed:") and "\\n" not in session.error
    assert "minSnr" in session.error
    session.config.minSnr = 10.0
    assert session.associate() is not None and session.error == ""


def _drain(calls: "queue.Queue", worker_done) -> int:
    """Play the page's event loop: run dispatched updates here until the worker is done."""
    n = 0
    while not (worker_done() and calls.empty()):
        try:
            fn = calls.get(timeout=0.05)
        except queue.Empty:
            continue
        fn()
        n += 1
    return n


def test_a_background_run_changes_parameters_on_the_dispatching_thread_only_and_cancels(session):
    session.associate()
    calls: queue.Queue = queue.Queue()
    session.dispatch = calls.put
    seen_threads = set()
    session.param.watch(lambda *_: seen_threads.add(threading.current_thread()), ["history", "busy", "stage"])
    cancelled = []

    def cancel_after_two(event):
        if len(event.new) == 2 and not cancelled:
            cancelled.append(True)
            session.cancel()
    session.param.watch(cancel_after_two, "history")
    assert session.start("run") and session.busy
    assert not session.start("step") and "still running" in session.error
    _drain(calls, lambda: not session._worker.is_alive())
    assert seen_threads == {threading.current_thread()}
    assert not session.busy and len(session.history) == 2 and not session.joint.done
    assert session.status.startswith("Cancelled at astrometry")
    # the fit goes on from where it was cancelled
    assert session.start("step")
    _drain(calls, lambda: not session._worker.is_alive())
    assert [s.iteration for s in session.history] == [1, 2, 3] and not session.busy


def test_export_writes_the_cli_layout_and_a_zip_whose_wcs_headers_astropy_reads(session, tmp_path):
    session.associate()
    for _ in range(4):
        session.step()
    written = session.export(tmp_path / "out", zip_to=tmp_path / "out.zip")
    assert written == tmp_path / "out.zip" and session.last_export == str(written)
    names = zipfile.ZipFile(written).namelist()
    for expected in ["out/calibration.json", "out/metrics.json", "out/config.yaml", "out/provenance.json",
                     "out/photometry.ecsv", "out/residuals.parquet", "out/stars.parquet"]:
        assert expected in names
    heads = [n for n in names if n.startswith("out/wcs/") and n.endswith(".fits")]
    assert len(heads) == 216
    with zipfile.ZipFile(written) as archive, archive.open(heads[0]) as f:
        header = fits.Header.fromstring(f.read(), sep="")
    wcs = WCS(header)
    assert wcs.has_celestial and np.all(np.isfinite(wcs.wcs.crval))
    assert "out/scamp" in {str(Path(n).parent) for n in names}
    assert session.export(tmp_path / "out") is None and "not empty" in session.error  # no clobber
